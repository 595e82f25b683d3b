"""S3 operations a Nix cache, Hydra and a CDN rely on, driven with boto3 and curl against a
running `cairn gateway`. Run by tests/gateway_s3.rs; every check raises on failure."""

import base64
import hashlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zlib

import boto3
import botocore
from botocore.config import Config

ENDPOINT = os.environ["CAIRN_S3_ENDPOINT"]
KEY_ID = os.environ["CAIRN_S3_KEY"]
SECRET = os.environ["CAIRN_S3_SECRET"]
BUCKET = os.environ["CAIRN_S3_BUCKET"]
PUBLIC = os.environ["CAIRN_S3_PUBLIC_BUCKET"]


def client(secret=SECRET, checksums="when_required"):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation=checksums,
            response_checksum_validation="when_required",
            retries={"max_attempts": 1},
        ),
    )


s3 = client()


def error_code(call):
    try:
        call()
    except botocore.exceptions.ClientError as err:
        return err.response["Error"]["Code"]
    raise AssertionError("call succeeded but should have failed")


def data(n, seed):
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok  {name}")


# Buckets.
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
check("list_buckets", BUCKET in names, names)
s3.create_bucket(Bucket="made-by-s3")
s3.head_bucket(Bucket="made-by-s3")
again = s3.create_bucket(Bucket="made-by-s3")
check("create owned bucket again (us-east-1: 200)", again["ResponseMetadata"]["HTTPStatusCode"] == 200, again)
s3.delete_bucket(Bucket="made-by-s3")
check("head deleted bucket", error_code(lambda: s3.head_bucket(Bucket="made-by-s3")) in ("404", "NoSuchBucket"))
s3.get_bucket_location(Bucket=BUCKET)

# A small object (inline) with its metadata.
small = b"StorePath: /nix/store/abc-hello\n"
put = s3.put_object(
    Bucket=BUCKET, Key="abc.narinfo", Body=small, ContentType="text/x-nix-narinfo",
    ContentEncoding="br", CacheControl="max-age=3600", Metadata={"builder": "hydra"},
)
check("small etag is md5", put["ETag"] == '"%s"' % hashlib.md5(small).hexdigest(), put["ETag"])
head = s3.head_object(Bucket=BUCKET, Key="abc.narinfo")
check("head size", head["ContentLength"] == len(small))
check("content-type round-trips", head["ContentType"] == "text/x-nix-narinfo", head)
check("content-encoding round-trips", head.get("ContentEncoding") == "br", head)
check("cache-control round-trips", head.get("CacheControl") == "max-age=3600", head)
check("metadata round-trips", head["Metadata"] == {"builder": "hydra"}, head["Metadata"])
check("small body", s3.get_object(Bucket=BUCKET, Key="abc.narinfo")["Body"].read() == small)

# A larger object on nodes, with default (CRC) checksums from the SDK.
big = data(3 * 1024 * 1024 + 17, "big")
put = client(checksums="when_supported").put_object(Bucket=BUCKET, Key="nar/big.nar", Body=big)
etag = put["ETag"]
check("big etag", etag == '"%s"' % hashlib.md5(big).hexdigest())
check("big body", s3.get_object(Bucket=BUCKET, Key="nar/big.nar")["Body"].read() == big)
got = s3.get_object(Bucket=BUCKET, Key="nar/big.nar", Range="bytes=1048570-1048700")
check("range body", got["Body"].read() == big[1048570:1048701])
check("range header", got["ContentRange"] == f"bytes 1048570-1048700/{len(big)}", got["ContentRange"])
got = s3.get_object(Bucket=BUCKET, Key="nar/big.nar", Range="bytes=-10")
check("suffix range", got["Body"].read() == big[-10:])
check("range past the end", error_code(lambda: s3.get_object(Bucket=BUCKET, Key="nar/big.nar", Range=f"bytes={len(big)}-")) == "InvalidRange")

# Declared checksums are checked before anything is stored.
def crc32_b64(body):
    return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()


summed = data(200 * 1024, "summed")
s3.put_object(Bucket=BUCKET, Key="summed", Body=summed, ChecksumCRC32=crc32_b64(summed))
check("declared crc32 accepted", s3.get_object(Bucket=BUCKET, Key="summed")["Body"].read() == summed)
check("wrong crc32 refused", error_code(lambda: s3.put_object(Bucket=BUCKET, Key="missummed", Body=summed, ChecksumCRC32=crc32_b64(b"other"))) == "BadDigest")
check("wrong sha256 refused", error_code(lambda: s3.put_object(Bucket=BUCKET, Key="missummed", Body=summed, ChecksumSHA256=base64.b64encode(hashlib.sha256(b"other").digest()).decode())) == "BadDigest")
check("refused body not stored", error_code(lambda: s3.head_object(Bucket=BUCKET, Key="missummed")) in ("404", "NoSuchKey"))

# Conditional GETs.
check("if-none-match hit", error_code(lambda: s3.get_object(Bucket=BUCKET, Key="nar/big.nar", IfNoneMatch=etag)) == "304")
check("if-match miss", error_code(lambda: s3.get_object(Bucket=BUCKET, Key="nar/big.nar", IfMatch='"0000"')) == "PreconditionFailed")
s3.get_object(Bucket=BUCKET, Key="nar/big.nar", IfMatch=etag)
modified = s3.head_object(Bucket=BUCKET, Key="nar/big.nar")["LastModified"]
check("if-modified-since", error_code(lambda: s3.get_object(Bucket=BUCKET, Key="nar/big.nar", IfModifiedSince=modified)) == "304")
check("if-unmodified-since", error_code(lambda: s3.get_object(Bucket=BUCKET, Key="nar/big.nar", IfUnmodifiedSince="2001-01-01T00:00:00Z")) == "PreconditionFailed")

# Content-MD5 is checked, and a refused body leaves nothing.
import base64
wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
check("bad content-md5", error_code(lambda: s3.put_object(Bucket=BUCKET, Key="md5", Body=b"x" * 5000, ContentMD5=wrong)) == "BadDigest")
check("nothing stored after a bad digest", error_code(lambda: s3.head_object(Bucket=BUCKET, Key="md5")) in ("404", "NoSuchKey"))

# Listing with paging and a delimiter, v2 and v1.
for i in range(5):
    s3.put_object(Bucket=BUCKET, Key=f"list/{i}", Body=b"x")
s3.put_object(Bucket=BUCKET, Key="list/sub/a", Body=b"x")
keys, token = [], None
while True:
    args = dict(Bucket=BUCKET, Prefix="list/", MaxKeys=2)
    if token:
        args["ContinuationToken"] = token
    page = s3.list_objects_v2(**args)
    keys += [o["Key"] for o in page.get("Contents", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
check("v2 paging", keys == [f"list/{i}" for i in range(5)] + ["list/sub/a"], keys)
page = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/", Delimiter="/")
check("v2 delimiter", [p["Prefix"] for p in page.get("CommonPrefixes", [])] == ["list/sub/"] and len(page["Contents"]) == 5, page)
page = s3.list_objects(Bucket=BUCKET, Prefix="list/", Marker="list/2", MaxKeys=2)
check("v1 marker", [o["Key"] for o in page["Contents"]] == ["list/3", "list/4"] and page["IsTruncated"], page)
paginator = s3.get_paginator("list_objects")
keys = [o["Key"] for p in paginator.paginate(Bucket=BUCKET, Prefix="list/", PaginationConfig={"PageSize": 2}) for o in p.get("Contents", [])]
check("v1 paginator", len(keys) == 6, keys)

# Copy, delete, delete-many.
s3.copy_object(Bucket=BUCKET, Key="copy.nar", CopySource={"Bucket": BUCKET, "Key": "nar/big.nar"})
check("copy", s3.get_object(Bucket=BUCKET, Key="copy.nar")["Body"].read() == big)
s3.delete_object(Bucket=BUCKET, Key="copy.nar")
check("deleted", error_code(lambda: s3.get_object(Bucket=BUCKET, Key="copy.nar")) == "NoSuchKey")
out = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": f"list/{i}"} for i in range(5)]})
check("delete_objects", len(out.get("Deleted", [])) == 5, out)

# Multipart: parts, listing, completion, abort.
up = s3.create_multipart_upload(Bucket=BUCKET, Key="multi.nar", ContentType="application/x-nix-nar")
part1, part2 = data(5 * 1024 * 1024, "p1"), data(1024 * 1024 + 3, "p2")
e1 = s3.upload_part(Bucket=BUCKET, Key="multi.nar", UploadId=up["UploadId"], PartNumber=1, Body=part1)["ETag"]
e2 = s3.upload_part(Bucket=BUCKET, Key="multi.nar", UploadId=up["UploadId"], PartNumber=2, Body=part2)["ETag"]
parts = s3.list_parts(Bucket=BUCKET, Key="multi.nar", UploadId=up["UploadId"])["Parts"]
check("list_parts", [p["PartNumber"] for p in parts] == [1, 2], parts)
uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
check("list_multipart_uploads", [u["UploadId"] for u in uploads] == [up["UploadId"]], uploads)
done = s3.complete_multipart_upload(
    Bucket=BUCKET, Key="multi.nar", UploadId=up["UploadId"],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
)
expected = hashlib.md5(hashlib.md5(part1).digest() + hashlib.md5(part2).digest()).hexdigest() + "-2"
check("multipart etag", done["ETag"] == f'"{expected}"', done["ETag"])
got = s3.get_object(Bucket=BUCKET, Key="multi.nar")
check("multipart body", got["Body"].read() == part1 + part2)
check("multipart content-type", got["ContentType"] == "application/x-nix-nar")
up = s3.create_multipart_upload(Bucket=BUCKET, Key="aborted")
s3.abort_multipart_upload(Bucket=BUCKET, Key="aborted", UploadId=up["UploadId"])
check("aborted upload gone", error_code(lambda: s3.list_parts(Bucket=BUCKET, Key="aborted", UploadId=up["UploadId"])) == "NoSuchUpload")

# Presigned URLs with curl.
url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "nar/big.nar"}, ExpiresIn=300)
fetched = subprocess.run(["curl", "-sf", url], capture_output=True, check=True).stdout
check("presigned GET", fetched == big)
url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "presigned"}, ExpiresIn=300)
subprocess.run(["curl", "-sf", "-X", "PUT", "--data-binary", "uploaded with curl", url], check=True)
check("presigned PUT", s3.get_object(Bucket=BUCKET, Key="presigned")["Body"].read() == b"uploaded with curl")
up = s3.create_multipart_upload(Bucket=BUCKET, Key="presigned-multi")
url = s3.generate_presigned_url("upload_part", Params={"Bucket": BUCKET, "Key": "presigned-multi", "UploadId": up["UploadId"], "PartNumber": 1}, ExpiresIn=300)
headers = subprocess.run(["curl", "-sf", "-D", "-", "-o", "/dev/null", "-X", "PUT", "--data-binary", "part", url], capture_output=True, check=True).stdout.decode()
check("presigned UploadPart", hashlib.md5(b"part").hexdigest() in headers, headers)
s3.abort_multipart_upload(Bucket=BUCKET, Key="presigned-multi", UploadId=up["UploadId"])

# Wrong secrets and anonymous access.
check("wrong secret", error_code(lambda: client(secret="wrong" * 8).list_buckets()) == "SignatureDoesNotMatch")
s3.put_object(Bucket=PUBLIC, Key="nix-cache-info", Body=b"StoreDir: /nix/store\n")
with urllib.request.urlopen(f"{ENDPOINT}/{PUBLIC}/nix-cache-info") as response:
    check("anonymous GET of a public bucket", response.read() == b"StoreDir: /nix/store\n")


def anonymous_status(method, url, body=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method)) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


check("anonymous miss in a public bucket is 404", anonymous_status("GET", f"{ENDPOINT}/{PUBLIC}/missing.narinfo") == 404)
check("anonymous GET of a private bucket", anonymous_status("GET", f"{ENDPOINT}/{BUCKET}/abc.narinfo") == 403)
check("anonymous PUT", anonymous_status("PUT", f"{ENDPOINT}/{PUBLIC}/x", b"x") == 403)
print("boto3 suite passed")
