#!/usr/bin/env python3
"""S3 throughput of a running Cairn gateway, measured with boto3 (the way Hydra-like
clients talk to it): PUT and GET MiB/s for large objects, and ops/s for 2 KiB objects with
1 and 16 concurrent clients. Prints a table and one JSON line.

    cairn dev &          # prints the endpoint and credentials
    AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… ops/bench/s3_bench.py --endpoint http://127.0.0.1:9000
"""

import argparse
import concurrent.futures
import json
import os
import time

import boto3
from botocore.config import Config


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=64,
            retries={"max_attempts": 1},
        ),
    )


def timed(fn, count, workers):
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(fn, range(count)))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", default="cache")
    parser.add_argument("--large-mib", type=int, default=64)
    parser.add_argument("--large-count", type=int, default=4)
    parser.add_argument("--small-count", type=int, default=400)
    args = parser.parse_args()
    s3 = client(args.endpoint)
    results = {}

    large = os.urandom(args.large_mib << 20)

    def put_large(i):
        s3.put_object(Bucket=args.bucket, Key=f"bench/large-{i}", Body=large)

    def get_large(i):
        body = s3.get_object(Bucket=args.bucket, Key=f"bench/large-{i}")["Body"].read()
        assert len(body) == len(large)

    total = args.large_mib * args.large_count
    results["put_large_mib_s"] = total / timed(put_large, args.large_count, 1)
    results["get_large_mib_s"] = total / timed(get_large, args.large_count, 1)

    small = os.urandom(2048)
    for workers in (1, 16):
        def put_small(i, workers=workers):
            s3.put_object(Bucket=args.bucket, Key=f"bench/small-{workers}-{i}", Body=small)

        def get_small(i, workers=workers):
            s3.get_object(Bucket=args.bucket, Key=f"bench/small-{workers}-{i}")["Body"].read()

        results[f"put_small_ops_s_c{workers}"] = args.small_count / timed(put_small, args.small_count, workers)
        results[f"get_small_ops_s_c{workers}"] = args.small_count / timed(get_small, args.small_count, workers)

    for name, value in results.items():
        print(f"{name:<28} {value:10.1f}")
    print(json.dumps({k: round(v, 1) for k, v in results.items()}))


if __name__ == "__main__":
    main()
