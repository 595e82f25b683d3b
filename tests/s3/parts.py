"""A multipart upload left open, then completed, through a gateway with boto3.

    python3 parts.py start BUCKET KEY           start an upload of two parts; print its id
    python3 parts.py complete BUCKET KEY ID     complete it and read the object back

The parts' contents are generated from the key, so `complete` checks the object byte for
byte against what `start` uploaded. The endpoint and key come from CAIRN_S3_ENDPOINT,
CAIRN_S3_KEY, CAIRN_S3_SECRET."""

import os
import random
import sys

import boto3
from botocore.config import Config

SIZES = [6 * 1024 * 1024 + 4321, 3 * 1024 * 1024 + 17]


def parts(key):
    rng = random.Random(key)
    return [rng.randbytes(size) for size in SIZES]


def main():
    mode, bucket, key = sys.argv[1], sys.argv[2], sys.argv[3]
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
    bodies = parts(key)
    if mode == "start":
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        for number, body in enumerate(bodies, start=1):
            s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body)
        print(upload)
    elif mode == "complete":
        upload = sys.argv[4]
        listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload)["Parts"]
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
                                       for p in listed]})
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if got != b"".join(bodies):
            sys.exit(f"{key}: {len(got)} bytes differ from the {sum(SIZES)} uploaded")
        print(f"complete: {key} ok")
    else:
        sys.exit(f"unknown mode {mode}")


main()
