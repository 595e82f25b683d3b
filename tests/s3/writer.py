"""Concurrent writers that record what the gateway acknowledged, and a checker that reads it back.

    python3 writer.py write BUCKET PREFIX THREADS STOPFILE HISTORY
        THREADS writers each PUT fresh keys PREFIX<thread>/<n> until STOPFILE exists, appending
        one line per finished request to HISTORY: `ok KEY` (acknowledged) or `fail KEY REASON`
        (the outcome is unknown: the write may or may not have taken effect).
    python3 writer.py check BUCKET HISTORY
        Reads every acknowledged key back and compares it byte for byte; prints
        `checked N acknowledged` and exits non-zero naming each key that is missing or differs.

A key's body (5 to 40 KiB, so it is erasure-coded rather than kept inline) is derived from the
key alone, so the checker needs nothing but the history. The endpoint and key come from
CAIRN_S3_ENDPOINT, CAIRN_S3_KEY, CAIRN_S3_SECRET."""

import os
import random
import sys
import threading

import boto3
from botocore.config import Config


def body(key):
    rng = random.Random(key)
    return rng.randbytes(rng.randrange(5 * 1024, 40 * 1024))


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["CAIRN_S3_ENDPOINT"],
        aws_access_key_id=os.environ["CAIRN_S3_KEY"],
        aws_secret_access_key=os.environ["CAIRN_S3_SECRET"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def write(bucket, prefix, threads, stopfile, history):
    lock = threading.Lock()
    out = open(history, "a", buffering=1)

    def record(line):
        with lock:
            out.write(line + "\n")

    def writer(t):
        s3 = client()
        n = 0
        while not os.path.exists(stopfile):
            key = f"{prefix}{t}/{n:06d}"
            n += 1
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=body(key))
                record(f"ok {key}")
            except Exception as err:  # any failure leaves the outcome unknown
                record(f"fail {key} {type(err).__name__}")

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.close()


def check(bucket, history):
    s3 = client()
    acked = [line.split()[1] for line in open(history) if line.startswith("ok ")]
    bad = []
    for key in acked:
        try:
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as err:
            bad.append(f"{key}: {err}")
            continue
        if got != body(key):
            bad.append(f"{key}: {len(got)} bytes read back differ from the {len(body(key))} written")
    print(f"checked {len(acked)} acknowledged")
    if bad:
        print(f"{len(bad)} acknowledged writes lost or corrupt:", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
