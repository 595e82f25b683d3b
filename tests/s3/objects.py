"""A fixed set of objects of mixed sizes, written and checked through a gateway with boto3.

    python3 objects.py put BUCKET PREFIX      upload every object
    python3 objects.py check BUCKET PREFIX    read every object back, byte-exact
    python3 objects.py delete BUCKET PREFIX   delete every object
    python3 objects.py names BUCKET PREFIX    print every object's key, one a line

Contents are generated from the object's name, so `check` needs nothing from `put` but the
bucket. The endpoint and key come from CAIRN_S3_ENDPOINT, CAIRN_S3_KEY, CAIRN_S3_SECRET.
Exits non-zero, naming each object that failed, if anything differs."""

import io
import os
import random
import sys

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

# Inline bodies (up to 4 KiB), single-segment and multi-segment bodies (with 1 MiB
# segments), and one multipart upload.
SIZES = [64, 700, 4096, 5000, 100_000, 250_000, 777_777, 1_048_576, 1_500_000, 2_097_152,
         2_600_000, 3_300_000]
MULTIPART = 11 * 1024 * 1024 + 12345


def body(name, size):
    return random.Random(name).randbytes(size)


def objects(prefix):
    for i, size in enumerate(SIZES):
        yield f"{prefix}obj-{i:02}-{size}", size
    yield f"{prefix}multipart-{MULTIPART}", MULTIPART


def main():
    mode, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "names":
        for name, _ in objects(prefix):
            print(name)
        return
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["CAIRN_S3_ENDPOINT"],
        aws_access_key_id=os.environ["CAIRN_S3_KEY"],
        aws_secret_access_key=os.environ["CAIRN_S3_SECRET"],
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 1},
            read_timeout=120,
        ),
    )
    failed = []
    for name, size in objects(prefix):
        try:
            if mode == "put":
                data = body(name, size)
                if size >= 8 * 1024 * 1024:
                    s3.upload_fileobj(io.BytesIO(data), bucket, name,
                                      Config=TransferConfig(multipart_threshold=5 * 1024 * 1024,
                                                            multipart_chunksize=5 * 1024 * 1024))
                else:
                    s3.put_object(Bucket=bucket, Key=name, Body=data)
            elif mode == "check":
                got = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
                if got != body(name, size):
                    failed.append(f"{name}: {len(got)} bytes differ from the {size} written")
            elif mode == "delete":
                s3.delete_object(Bucket=bucket, Key=name)
            else:
                sys.exit(f"unknown mode {mode}")
        except Exception as err:  # every failure is reported, not just the first
            failed.append(f"{name}: {err}")
    if failed:
        sys.exit("\n".join(failed))
    print(f"{mode}: {len(SIZES) + 1} objects ok")


main()
