"""S3's semantics behind the operations, checked with boto3 and curl against a running
`cairn gateway`: error answers and request ids, request bodies, headers, presigned URL
limits, listing details and UploadPartCopy. Run by tests/gateway_s3_semantics.rs as

    python3 semantics.py errors|bodies|headers|presigned|listing|copy|acls|expires|parts|...

with CAIRN_S3_ENDPOINT, CAIRN_S3_KEY, CAIRN_S3_SECRET, CAIRN_S3_BUCKET (private) and
CAIRN_S3_PUBLIC_BUCKET (public-read) set. Every check raises on failure; the last line
printed is `semantics <part> passed`."""

import base64
import email.header
import email.utils
import hashlib
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
import zlib
from urllib.parse import urlparse

import boto3
import botocore
from botocore.config import Config

ENDPOINT = os.environ["CAIRN_S3_ENDPOINT"]
KEY_ID = os.environ["CAIRN_S3_KEY"]
SECRET = os.environ["CAIRN_S3_SECRET"]
BUCKET = os.environ["CAIRN_S3_BUCKET"]
PUBLIC = os.environ["CAIRN_S3_PUBLIC_BUCKET"]


def client(secret=SECRET):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 1},
        ),
    )


s3 = client()


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok  {name}")


def refusal(call):
    """(HTTP status, S3 error code, message) of a boto3 call that must fail."""
    try:
        out = call()
    except botocore.exceptions.ClientError as err:
        return (
            err.response["ResponseMetadata"]["HTTPStatusCode"],
            err.response["Error"].get("Code"),
            err.response["Error"].get("Message", ""),
        )
    raise AssertionError(f"call succeeded but should have failed: {out}")


def data(n, seed):
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def curl(*args, stdin=None):
    """Runs curl; returns (status, headers as a lower-cased dict, body bytes)."""
    with tempfile.NamedTemporaryFile() as head:
        out = subprocess.run(
            ["curl", "-sS", "-D", head.name, "-o", "-", *args],
            input=stdin,
            capture_output=True,
            check=True,
        )
        lines = open(head.name, "rb").read().decode("latin-1").splitlines()
    # The last response block (after any `100 Continue`).
    starts = [i for i, line in enumerate(lines) if line.startswith("HTTP/")]
    block = lines[starts[-1]:]
    status = int(block[0].split()[1])
    headers = {}
    for line in block[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers, out.stdout


def signed(*args):
    """curl arguments that sign a request with SigV4 as the test's key, unsigned payload."""
    return [
        "--aws-sigv4", "aws:amz:us-east-1:s3",
        "--user", f"{KEY_ID}:{SECRET}",
        "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
        *args,
    ]


def set_header(name, value):
    """A botocore event handler that gives a request header `name` the value `value`
    (botocore's header map appends on assignment, so the old value goes first)."""

    def handler(request, **kw):
        if name in request.headers:
            del request.headers[name]
        request.headers[name] = value

    return handler


def xml_field(body, name):
    found = re.search(rf"<{name}>(.*?)</{name}>".encode(), body)
    return found.group(1).decode() if found else None


def raw_responses(c):
    """Every HTTP response `c` receives from now on: (status, headers, body); the body is
    None for a successful streaming answer (GetObject), which is left for the caller."""
    seen = []

    def record(http_response, model, **kw):
        streaming = model.has_streaming_output and http_response.status_code < 300
        body = None if streaming else http_response.content
        seen.append((http_response.status_code, dict(http_response.headers), body))

    c.meta.events.register("after-call.s3", record)
    return seen


def errors():
    """Item 3: anonymous requests, request ids, CreateBucket again, ListBuckets pages."""
    # An anonymous request to a bucket that does not exist: 404 NoSuchBucket, whatever it
    # asks (read, write, listing), as S3 tells anyone.
    for method, path in [("GET", "/no-such-bucket/key"), ("PUT", "/no-such-bucket/key"),
                         ("GET", "/no-such-bucket")]:
        payload = ["--data-binary", "x"] if method == "PUT" else []
        status, _, body = curl("-X", method, *payload, f"{ENDPOINT}{path}")
        check(f"anonymous {method} {path}", status == 404 and b"<Code>NoSuchBucket</Code>" in body,
              (status, body))
    status, _, _ = curl("-I", f"{ENDPOINT}/no-such-bucket/key")
    check("anonymous HEAD in a missing bucket", status == 404, status)
    # A missing key of a public bucket: 404 NoSuchKey (a reader of the bucket may know).
    status, _, body = curl(f"{ENDPOINT}/{PUBLIC}/no-such-key")
    check("anonymous GET of a missing key", status == 404 and b"<Code>NoSuchKey</Code>" in body,
          (status, body))
    status, _, _ = curl("-I", f"{ENDPOINT}/{PUBLIC}/no-such-key")
    check("anonymous HEAD of a missing key", status == 404, status)
    # A private bucket that exists still refuses strangers.
    s3.put_object(Bucket=BUCKET, Key="private", Body=b"x")
    status, _, body = curl(f"{ENDPOINT}/{BUCKET}/private")
    check("anonymous GET in a private bucket", status == 403 and b"AccessDenied" in body,
          (status, body))

    # The request id: on every answer, and in an error's body the same as in its header,
    # whoever wrote the error (the gateway, s3s's signature check, the gateway's checks in
    # front of s3s).
    def same_id(name, status, headers, body):
        header = headers.get("x-amz-request-id")
        in_body = xml_field(body, "RequestId")
        check(f"request id: {name}", header and re.fullmatch(r"[0-9A-F]{16}", header)
              and header == in_body, (status, headers, body))
        return header

    ids = set()
    status, headers, body = curl(f"{ENDPOINT}/{PUBLIC}/no-such-key")
    ids.add(same_id("anonymous NoSuchKey", status, headers, body))
    wrong = client(secret="wrong" + SECRET)
    seen = raw_responses(wrong)
    code = refusal(lambda: wrong.list_objects_v2(Bucket=BUCKET))
    status, headers, body = seen[-1]
    check("a wrong signature is refused", code[1] == "SignatureDoesNotMatch", (code, body))
    ids.add(same_id("SignatureDoesNotMatch", status, headers, body))
    seen = raw_responses(s3)
    refusal(lambda: s3.get_object(Bucket=BUCKET, Key="no-such-key"))
    status, headers, body = seen[-1]
    ids.add(same_id("signed NoSuchKey", status, headers, body))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "private"},
                                    ExpiresIn=604801)
    status, headers, body = curl(url)
    ids.add(same_id("presigned limit", status, headers, body))
    s3.get_object(Bucket=BUCKET, Key="private")
    status, headers, _ = seen[-1]
    check("a success carries a request id too", re.fullmatch(r"[0-9A-F]{16}",
          headers.get("x-amz-request-id", "")), headers)
    ids.add(headers["x-amz-request-id"])
    check("request ids differ", len(ids) == 5, ids)

    # CreateBucket of a bucket one already owns: us-east-1 answers 200 and leaves it be.
    s3.create_bucket(Bucket="owned-twice")
    s3.put_object(Bucket="owned-twice", Key="kept", Body=b"still here")
    again = s3.create_bucket(Bucket="owned-twice")
    check("CreateBucket again answers 200", again["ResponseMetadata"]["HTTPStatusCode"] == 200, again)
    check("CreateBucket again keeps the bucket",
          s3.get_object(Bucket="owned-twice", Key="kept")["Body"].read() == b"still here")
    out = subprocess.run(
        ["aws", "--endpoint-url", ENDPOINT, "--region", "us-east-1", "s3", "mb", "s3://owned-twice"],
        env={**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
             "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"},
        capture_output=True, text=True)
    check("aws s3 mb of an owned bucket succeeds", out.returncode == 0, out.stderr)
    status, code, _ = refusal(lambda: s3.create_bucket(
        Bucket="owned-twice", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}))
    check("CreateBucket again in another region is refused",
          (status, code) == (409, "BucketAlreadyOwnedByYou"), (status, code))
    s3.delete_object(Bucket="owned-twice", Key="kept")
    s3.delete_bucket(Bucket="owned-twice")

    # ListBuckets in pages: max-buckets, continuation tokens, a prefix.
    made = [f"page-{i}" for i in range(5)]
    for name in made:
        s3.create_bucket(Bucket=name)
    everything = sorted(made + [BUCKET, PUBLIC])
    first = s3.list_buckets(MaxBuckets=2)
    check("ListBuckets max-buckets", [b["Name"] for b in first["Buckets"]] == everything[:2]
          and "ContinuationToken" in first, first)
    names, token = [], None
    while True:
        page = s3.list_buckets(MaxBuckets=2, **({"ContinuationToken": token} if token else {}))
        check("ListBuckets page size", len(page["Buckets"]) <= 2, page)
        names += [b["Name"] for b in page["Buckets"]]
        token = page.get("ContinuationToken")
        if not token:
            break
    check("ListBuckets pages cover every bucket once", names == everything, names)
    paged = [b["Name"] for p in s3.get_paginator("list_buckets").paginate(
        PaginationConfig={"PageSize": 3}) for b in p["Buckets"]]
    check("boto3's ListBuckets paginator", paged == everything, paged)
    prefixed = s3.list_buckets(Prefix="page-", MaxBuckets=10)
    check("ListBuckets prefix", [b["Name"] for b in prefixed["Buckets"]] == made
          and prefixed.get("Prefix") == "page-" and "ContinuationToken" not in prefixed, prefixed)
    check("ListBuckets max-buckets out of range",
          refusal(lambda: s3.list_buckets(MaxBuckets=10001))[:2] == (400, "InvalidArgument"))
    for name in made:
        s3.delete_bucket(Bucket=name)


def bodies():
    """Item 4: chunked uploads, Content-MD5 refusals, MissingContentLength."""
    body = data((3 << 20) + 12345, "chunked")
    md5 = hashlib.md5(body).hexdigest()
    # curl -T - sends Transfer-Encoding: chunked and no Content-Length; the signature says
    # UNSIGNED-PAYLOAD. Spans several 1 MiB segments, so it is streamed, not inlined.
    status, headers, answer = curl(*signed("-T", "-", "-H", "Transfer-Encoding: chunked",
                                           f"{ENDPOINT}/{BUCKET}/chunked.bin"), stdin=body)
    check("chunked PUT (unsigned payload)", status == 200 and headers.get("etag") == f'"{md5}"',
          (status, headers, answer))
    got = s3.get_object(Bucket=BUCKET, Key="chunked.bin")
    check("chunked PUT stored the body", got["Body"].read() == body and got["ContentLength"] == len(body))
    # The same with the payload's SHA-256 signed: checked as the body streams.
    sha = hashlib.sha256(body).hexdigest()
    status, _, answer = curl("--aws-sigv4", "aws:amz:us-east-1:s3", "--user", f"{KEY_ID}:{SECRET}",
                             "-H", f"x-amz-content-sha256: {sha}", "-H", "Transfer-Encoding: chunked",
                             "-T", "-", f"{ENDPOINT}/{BUCKET}/chunked-signed.bin", stdin=body)
    check("chunked PUT (signed payload hash)", status == 200, (status, answer))
    check("chunked PUT (signed payload hash) stored",
          s3.get_object(Bucket=BUCKET, Key="chunked-signed.bin")["Body"].read() == body)
    status, _, answer = curl("--aws-sigv4", "aws:amz:us-east-1:s3", "--user", f"{KEY_ID}:{SECRET}",
                             "-H", f"x-amz-content-sha256: {sha}", "-H", "Transfer-Encoding: chunked",
                             "-T", "-", f"{ENDPOINT}/{BUCKET}/chunked-tampered.bin",
                             stdin=body[:-1] + b"!")
    check("chunked PUT whose body is not the signed one",
          status == 400 and xml_field(answer, "Code") == "XAmzContentSHA256Mismatch", (status, answer))
    check("nothing stored for it", refusal(lambda: s3.head_object(
        Bucket=BUCKET, Key="chunked-tampered.bin"))[0] == 404)
    # A presigned PUT URL used with a chunked body.
    url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "presigned-chunked"},
                                    ExpiresIn=300)
    status, _, answer = curl("-T", "-", "-H", "Transfer-Encoding: chunked", url, stdin=body)
    check("chunked PUT to a presigned URL", status == 200, (status, answer))
    check("chunked presigned PUT stored",
          s3.get_object(Bucket=BUCKET, Key="presigned-chunked")["Body"].read() == body)
    # A chunked part of a multipart upload.
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="chunked-parts")["UploadId"]
    status, headers, answer = curl(*signed(
        "-T", "-", "-H", "Transfer-Encoding: chunked",
        f"{ENDPOINT}/{BUCKET}/chunked-parts?partNumber=1&uploadId={upload}"), stdin=body)
    check("chunked UploadPart", status == 200 and headers.get("etag") == f'"{md5}"',
          (status, headers, answer))
    s3.complete_multipart_upload(Bucket=BUCKET, Key="chunked-parts", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": f'"{md5}"'}]})
    check("chunked part assembled",
          s3.get_object(Bucket=BUCKET, Key="chunked-parts")["Body"].read() == body)

    # Content-MD5 that is empty or not an MD5: InvalidDigest, nothing stored.
    for name, value in [("empty", ""), ("not base64", "not base64!"),
                        ("not 16 bytes", base64.b64encode(b"short").decode())]:
        c = client()
        c.meta.events.register("before-sign.s3.PutObject", set_header("Content-MD5", value))
        status, code, _ = refusal(lambda: c.put_object(Bucket=BUCKET, Key="digest", Body=b"hello"))
        check(f"Content-MD5 {name}", (status, code) == (400, "InvalidDigest"), (status, code))
    check("no object for a bad digest", refusal(lambda: s3.head_object(Bucket=BUCKET, Key="digest"))[0] == 404)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    status, code, _ = refusal(lambda: s3.put_object(Bucket=BUCKET, Key="digest", Body=b"hello",
                                                    ContentMD5=wrong))
    check("Content-MD5 of other bytes", (status, code) == (400, "BadDigest"), (status, code))

    # MissingContentLength where S3 answers it: an object PUT that says neither how long its
    # body is nor that it is chunked. A bucket PUT needs no length.
    status, _, answer = curl(*signed("-X", "PUT", f"{ENDPOINT}/{BUCKET}/no-length"))
    check("PUT without Content-Length", status == 411 and
          xml_field(answer, "Code") == "MissingContentLength", (status, answer))
    status, _, answer = curl(*signed("-X", "PUT", f"{ENDPOINT}/made-by-curl"))
    check("CreateBucket without Content-Length", status == 200, (status, answer))
    s3.delete_bucket(Bucket="made-by-curl")
    empty = s3.put_object(Bucket=BUCKET, Key="empty", Body=b"")
    check("empty PUT with Content-Length: 0", empty["ETag"] == f'"{hashlib.md5(b"").hexdigest()}"', empty)

    # One PUT (object or part) declaring more than S3's 5 GiB: EntityTooLarge from the
    # declared length alone, before a body byte is read.
    where = urlparse(ENDPOINT)
    for path in [f"/{BUCKET}/too-large", f"/{BUCKET}/too-large?partNumber=1&uploadId=x"]:
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=20)
        conn.putrequest("PUT", path)
        conn.putheader("Content-Length", str((5 << 30) + 1))
        conn.endheaders()
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
        check(f"PUT of more than 5 GiB ({path})",
              answer.status == 400 and xml_field(body, "Code") == "EntityTooLarge",
              (answer.status, body))


def headers():
    """Item 5: SigV4 dated by Date, by both Date and x-amz-date; non-ASCII metadata."""
    # botocore signs with Date alone when the caller sets one (no x-amz-date is sent).
    sent = []
    dated = client()

    dated.meta.events.register("before-sign.s3", set_header("Date", email.utils.formatdate(usegmt=True)))
    dated.meta.events.register("before-send.s3", lambda request, **kw: sent.append(dict(request.headers)))
    dated.put_object(Bucket=BUCKET, Key="dated", Body=b"signed by Date")
    check("request signed with Date only", "Date" in sent[-1] and "X-Amz-Date" not in sent[-1]
          and "date;" in sent[-1]["Authorization"].decode(), sent[-1])
    check("GET signed with Date only",
          dated.get_object(Bucket=BUCKET, Key="dated")["Body"].read() == b"signed by Date")
    # Both: x-amz-date is the signing time, whatever Date says.
    both = client()
    both.meta.events.register("before-send.s3", set_header("Date", "Mon, 01 Jan 2024 00:00:00 GMT"))
    both.meta.events.register("before-send.s3", lambda request, **kw: sent.append(dict(request.headers)))
    got = both.get_object(Bucket=BUCKET, Key="dated")["Body"].read()
    check("Date and x-amz-date: x-amz-date wins", got == b"signed by Date"
          and "X-Amz-Date" in sent[-1] and "Date" in sent[-1], sent[-1])

    # Non-ASCII user metadata: stored as text, answered RFC 2047-encoded as AWS does,
    # whether it came as raw UTF-8 (curl) or already encoded (boto3 refuses non-ASCII).
    value = "héllo wörld ☃"
    encoded = "=?UTF-8?B?" + base64.b64encode(value.encode()).decode() + "?="
    status, _, answer = curl(*signed("-X", "PUT", "--data-binary", "x",
                                     "-H", f"x-amz-meta-name: {value}",
                                     f"{ENDPOINT}/{BUCKET}/meta-raw"))
    check("PUT with raw UTF-8 metadata", status == 200, (status, answer))
    s3.put_object(Bucket=BUCKET, Key="meta-encoded", Body=b"x", Metadata={"name": encoded})
    for key in ["meta-raw", "meta-encoded"]:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        check(f"{key}: HEAD answers RFC 2047", head["Metadata"] == {"name": encoded}, head["Metadata"])
        got = s3.get_object(Bucket=BUCKET, Key=key)
        check(f"{key}: GET answers RFC 2047", got["Metadata"] == {"name": encoded}, got["Metadata"])
        decoded = str(email.header.make_header(email.header.decode_header(encoded)))
        check(f"{key}: decodes to the value sent", decoded == value, decoded)
    plain = s3.put_object(Bucket=BUCKET, Key="meta-ascii", Body=b"x", Metadata={"name": "plain"})
    check("ASCII metadata answered as is", s3.head_object(Bucket=BUCKET, Key="meta-ascii")["Metadata"]
          == {"name": "plain"}, plain)


def presigned():
    """Item 7: X-Amz-Expires limits (the expired URL is checked by the Rust test)."""
    s3.put_object(Bucket=BUCKET, Key="shared", Body=b"shared")
    week = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "shared"},
                                     ExpiresIn=604800)
    status, _, body = curl(week)
    check("a URL valid for a week works", status == 200 and body == b"shared", (status, body))
    for expires, message in [(604801, "X-Amz-Expires must be less than a week (in seconds) that is 604800"),
                             (-1, "X-Amz-Expires must be non-negative")]:
        url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "shared"},
                                        ExpiresIn=expires)
        status, _, body = curl(url)
        check(f"X-Amz-Expires={expires}", status == 400
              and xml_field(body, "Code") == "AuthorizationQueryParametersError"
              and xml_field(body, "Message") == message, (status, body))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "shared"}, ExpiresIn=60)
    status, _, body = curl(url.replace("X-Amz-Expires=60", "X-Amz-Expires=soon"))
    check("X-Amz-Expires not a number", status == 400
          and xml_field(body, "Code") == "AuthorizationQueryParametersError", (status, body))
    put = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "never"},
                                    ExpiresIn=700000)
    status, _, body = curl("-X", "PUT", "--data-binary", "x", put)
    check("an over-long PUT URL stores nothing", status == 400
          and refusal(lambda: s3.head_object(Bucket=BUCKET, Key="never"))[0] == 404, (status, body))


def listing():
    """Item 8: empty delimiter, fetch-owner, encoding-type=url."""
    for key in ["list/dir/a", "list/dir/b/c", "list/top"]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"1")
    seen = raw_responses(s3)
    out = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/", Delimiter="")
    check("v2 delimiter= is not echoed", b"<Delimiter>" not in seen[-1][2] and "Delimiter" not in out
          and [o["Key"] for o in out["Contents"]] == ["list/dir/a", "list/dir/b/c", "list/top"],
          seen[-1][2])
    out = s3.list_objects(Bucket=BUCKET, Prefix="list/", Delimiter="")
    check("v1 delimiter= is not echoed", b"<Delimiter>" not in seen[-1][2]
          and len(out["Contents"]) == 3, seen[-1][2])
    out = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/", Delimiter="/")
    check("a delimiter is echoed", out.get("Delimiter") == "/" and
          [p["Prefix"] for p in out["CommonPrefixes"]] == ["list/dir/"], out)

    out = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/", FetchOwner=True)
    check("v2 fetch-owner=true names owners", all("ID" in o.get("Owner", {}) for o in out["Contents"]),
          out["Contents"])
    out = s3.list_objects_v2(Bucket=BUCKET, Prefix="list/")
    check("v2 without fetch-owner names none", all("Owner" not in o for o in out["Contents"]),
          out["Contents"])
    out = s3.list_objects(Bucket=BUCKET, Prefix="list/")
    check("v1 names owners", all("ID" in o.get("Owner", {}) for o in out["Contents"]), out["Contents"])

    # encoding-type=url: keys a raw XML document cannot hold (a control character) list,
    # page and come back exact; boto3 asks for url encoding on its own and decodes.
    odd = ["enc/a b", "enc/a+b", "enc/é", "enc/ctl\x01x", "enc/p%q", "enc/tab\tx"]
    for key in odd:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"1")
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="enc/", PaginationConfig={"PageSize": 1}) for o in p["Contents"]]
    check("v2 pages over keys with control characters", keys == sorted(odd), keys)
    tokens = [xml_field(body, "NextContinuationToken") for _, _, body in seen[-len(odd):]]
    check("continuation tokens are opaque", all(t is None or re.fullmatch(r"[A-Za-z0-9+/=]+", t)
                                                for t in tokens), tokens)
    keys = [o["Key"] for p in s3.get_paginator("list_objects").paginate(
        Bucket=BUCKET, Prefix="enc/", PaginationConfig={"PageSize": 2}) for o in p["Contents"]]
    check("v1 pages over the same keys", keys == sorted(odd), keys)
    body = seen[-1][2]
    check("v1 without a delimiter names no NextMarker", b"<NextMarker>" not in body, body)
    s3.list_objects(Bucket=BUCKET, Prefix="enc/", Delimiter=" ", MaxKeys=1, EncodingType="url")
    body = seen[-1][2]
    check("v1 encodes prefix, delimiter, next marker and common prefixes",
          xml_field(body, "Delimiter") == "%20" and xml_field(body, "NextMarker") == "enc/a%20"
          and b"<Prefix>enc/a%20</Prefix>" in body, body)
    s3.list_objects_v2(Bucket=BUCKET, Prefix="enc/a ", StartAfter="enc/a b", EncodingType="url")
    body = seen[-1][2]
    check("v2 encodes prefix and start-after", xml_field(body, "Prefix") == "enc/a%20"
          and xml_field(body, "StartAfter") == "enc/a%20b", body)
    status, code, _ = refusal(lambda: s3.list_objects_v2(Bucket=BUCKET, ContinuationToken="!not a token!"))
    check("a made-up continuation token", (status, code) == (400, "InvalidArgument"), (status, code))
    # ListMultipartUploads encodes keys too.
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="enc/up é+")["UploadId"]
    out = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="enc/", EncodingType="url")
    body = seen[-1][2]
    check("ListMultipartUploads encodes keys", xml_field(body, "Key") == "enc/up%20%C3%A9%2B"
          and xml_field(body, "EncodingType") == "url", body)
    s3.abort_multipart_upload(Bucket=BUCKET, Key="enc/up é+", UploadId=upload)


def copy():
    """Item 10: UploadPartCopy, whole and ranged, percent-encoded sources, bad ranges."""
    source_key = "src dir/sóurce+1.bin"
    source = data((6 << 20) + 321, "copy source")
    s3.put_object(Bucket=PUBLIC, Key=source_key, Body=source)
    small = b"a small source"
    s3.put_object(Bucket=BUCKET, Key="small", Body=small)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="assembled")["UploadId"]
    sent = []
    s3.meta.events.register("before-send.s3.UploadPartCopy",
                            lambda request, **kw: sent.append(request.headers["x-amz-copy-source"]))
    first = s3.upload_part_copy(Bucket=BUCKET, Key="assembled", UploadId=upload, PartNumber=1,
                                CopySource={"Bucket": PUBLIC, "Key": source_key},
                                CopySourceRange=f"bytes=0-{(5 << 20) - 1}")
    check("the copy source went percent-encoded", sent[-1] == f"{PUBLIC}/src%20dir/s%C3%B3urce%2B1.bin".encode(),
          sent[-1])
    check("ranged part ETag", first["CopyPartResult"]["ETag"] ==
          f'"{hashlib.md5(source[:5 << 20]).hexdigest()}"', first)
    second = s3.upload_part_copy(Bucket=BUCKET, Key="assembled", UploadId=upload, PartNumber=2,
                                 CopySource=f"{PUBLIC}/{source_key}")
    check("whole-object part ETag", second["CopyPartResult"]["ETag"] ==
          f'"{hashlib.md5(source).hexdigest()}"', second)
    # The header as a client that encodes it itself sends it (lower-case escapes).
    c = client()
    c.meta.events.register("before-sign.s3.UploadPartCopy",
                           set_header("x-amz-copy-source", f"/{BUCKET}/sm%61ll"))
    third = c.upload_part_copy(Bucket=BUCKET, Key="assembled", UploadId=upload, PartNumber=3,
                               CopySource={"Bucket": BUCKET, "Key": "placeholder"})
    check("hand-encoded copy source", third["CopyPartResult"]["ETag"] ==
          f'"{hashlib.md5(small).hexdigest()}"', third)
    for bad in ["bytes=0-7000000", f"bytes=10-9", f"bytes={len(source)}-{len(source)}"]:
        status, code, _ = refusal(lambda: s3.upload_part_copy(
            Bucket=BUCKET, Key="assembled", UploadId=upload, PartNumber=4,
            CopySource={"Bucket": PUBLIC, "Key": source_key}, CopySourceRange=bad))
        check(f"unsatisfiable range {bad}", (status, code) == (416, "InvalidRange"), (status, code))
    for bad in ["bytes=0", "0-10", "bytes=a-b", "bytes=0-1,2-3", "bytes=-5"]:
        status, code, _ = refusal(lambda: s3.upload_part_copy(
            Bucket=BUCKET, Key="assembled", UploadId=upload, PartNumber=4,
            CopySource={"Bucket": PUBLIC, "Key": source_key}, CopySourceRange=bad))
        check(f"malformed range {bad}", (status, code) == (400, "InvalidArgument"), (status, code))
    status, code, _ = refusal(lambda: s3.upload_part_copy(
        Bucket=BUCKET, Key="assembled", UploadId=upload, PartNumber=4,
        CopySource={"Bucket": PUBLIC, "Key": source_key}, CopySourceIfMatch='"0000"'))
    check("copy-source-if-match that fails", (status, code) == (412, "PreconditionFailed"), (status, code))
    status, code, _ = refusal(lambda: s3.upload_part_copy(
        Bucket=BUCKET, Key="assembled", UploadId=upload, PartNumber=4,
        CopySource={"Bucket": PUBLIC, "Key": "no such source"}))
    check("a missing source", (status, code) == (404, "NoSuchKey"), (status, code))
    status, code, _ = refusal(lambda: s3.upload_part_copy(
        Bucket=BUCKET, Key="assembled", UploadId="no-such-upload", PartNumber=1,
        CopySource={"Bucket": PUBLIC, "Key": source_key}))
    check("a missing upload", (status, code) == (404, "NoSuchUpload"), (status, code))
    parts = [{"PartNumber": n, "ETag": p["CopyPartResult"]["ETag"]}
             for n, p in [(1, first), (2, second), (3, third)]]
    listed = s3.list_parts(Bucket=BUCKET, Key="assembled", UploadId=upload)["Parts"]
    check("ListParts shows the copied parts", [(p["PartNumber"], p["Size"]) for p in listed]
          == [(1, 5 << 20), (2, len(source)), (3, len(small))], listed)
    s3.complete_multipart_upload(Bucket=BUCKET, Key="assembled", UploadId=upload,
                                 MultipartUpload={"Parts": parts})
    got = s3.get_object(Bucket=BUCKET, Key="assembled")["Body"].read()
    check("the assembled object is the copied bytes", got == source[:5 << 20] + source + small, len(got))


def delete_bucket():
    """DeleteBucket: a bucket whose only contents are incomplete uploads is deleted (the
    uploads with it); one holding an object is still refused. (Both buckets come empty
    from the cluster, coded for its three nodes.)"""
    upload = s3.create_multipart_upload(Bucket=PUBLIC, Key="half.nar")["UploadId"]
    s3.upload_part(Bucket=PUBLIC, Key="half.nar", UploadId=upload, PartNumber=1,
                   Body=data(6 << 20, "abandoned"))
    s3.delete_bucket(Bucket=PUBLIC)
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    check("the bucket with only an abandoned upload is gone", PUBLIC not in names, names)
    status, code, _ = refusal(lambda: s3.list_parts(Bucket=PUBLIC, Key="half.nar",
                                                    UploadId=upload))
    check("its upload went with it", status == 404, (status, code))
    s3.put_object(Bucket=BUCKET, Key="kept", Body=b"still here")
    s3.create_multipart_upload(Bucket=BUCKET, Key="other")
    status, code, _ = refusal(lambda: s3.delete_bucket(Bucket=BUCKET))
    check("a bucket with an object is not deleted", (status, code) == (409, "BucketNotEmpty"),
          (status, code))
    check("and keeps it", s3.get_object(Bucket=BUCKET, Key="kept")["Body"].read()
          == b"still here")


def overwrite_during_read():
    """A GET that spans more segments than one window of read orders (16) goes on with the
    version it began when the key is overwritten meanwhile, even with the same bytes, and
    returns exactly that version; the next GET reads the new one."""
    old = data(20 << 20, "version one")
    s3.put_object(Bucket=BUCKET, Key="big", Body=old)
    body = s3.get_object(Bucket=BUCKET, Key="big")["Body"]
    first = body.read(1 << 20)
    # The same bytes again: a new version with the same ETag, new shards and mask nonces.
    s3.put_object(Bucket=BUCKET, Key="big", Body=old)
    rest = body.read()
    got = first + rest
    check("the read begun before the overwrite returns the version it began",
          got == old, f"{len(got)} bytes")
    new = data(20 << 20, "version two")
    s3.put_object(Bucket=BUCKET, Key="big", Body=new)
    body = s3.get_object(Bucket=BUCKET, Key="big")["Body"]
    first = body.read(1 << 20)
    s3.delete_object(Bucket=BUCKET, Key="big")
    rest = body.read()
    check("a read begun before a delete finishes too", first + rest == new)


def conditional_writes():
    """If-None-Match: * and If-Match on PutObject and CompleteMultipartUpload: 412 when the
    condition does not hold (nothing is written), 404 for If-Match on a missing key."""
    first = s3.put_object(Bucket=BUCKET, Key="nar", Body=b"first", IfNoneMatch="*")
    check("If-None-Match: * creates an absent key", "ETag" in first)
    status, code, _ = refusal(lambda: s3.put_object(Bucket=BUCKET, Key="nar", Body=b"second",
                                                    IfNoneMatch="*"))
    check("If-None-Match: * never overwrites", (status, code) == (412, "PreconditionFailed"),
          (status, code))
    check("the first body stays",
          s3.get_object(Bucket=BUCKET, Key="nar")["Body"].read() == b"first")
    status, code, _ = refusal(lambda: s3.put_object(Bucket=BUCKET, Key="nar", Body=b"third",
                                                    IfMatch='"0123456789abcdef0123456789abcdef"'))
    check("If-Match with another ETag is refused", (status, code) == (412, "PreconditionFailed"),
          (status, code))
    s3.put_object(Bucket=BUCKET, Key="nar", Body=b"fourth", IfMatch=first["ETag"])
    check("If-Match with the current ETag writes",
          s3.get_object(Bucket=BUCKET, Key="nar")["Body"].read() == b"fourth")
    status, code, _ = refusal(lambda: s3.put_object(Bucket=BUCKET, Key="absent", Body=b"x",
                                                    IfMatch=first["ETag"]))
    check("If-Match on a missing key answers NoSuchKey", (status, code) == (404, "NoSuchKey"),
          (status, code))
    # Multipart: the condition is checked at completion, and a refusal keeps the upload.
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="nar")["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key="nar", UploadId=upload, PartNumber=1,
                          Body=data(1000, "part"))
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    status, code, _ = refusal(lambda: s3.complete_multipart_upload(
        Bucket=BUCKET, Key="nar", UploadId=upload, MultipartUpload=parts, IfNoneMatch="*"))
    check("a completion with If-None-Match: * over an existing key is refused",
          (status, code) == (412, "PreconditionFailed"), (status, code))
    listed = s3.list_parts(Bucket=BUCKET, Key="nar", UploadId=upload)["Parts"]
    check("the refused completion kept its part", len(listed) == 1, listed)
    s3.delete_object(Bucket=BUCKET, Key="nar")
    s3.complete_multipart_upload(Bucket=BUCKET, Key="nar", UploadId=upload,
                                 MultipartUpload=parts, IfNoneMatch="*")
    check("once the key is gone the completion goes through",
          s3.get_object(Bucket=BUCKET, Key="nar")["Body"].read() == data(1000, "part"))


def anonymous(method, bucket, key):
    """An unsigned request: (status, S3 error code or None, body)."""
    status, _, body = curl("-X", method, *(["-I"] if method == "HEAD" else []),
                           f"{ENDPOINT}/{bucket}/{key}")
    return status, xml_field(body, "Code"), body


def eventually(name, probe, want, seconds=10):
    """Checks that `probe()` comes to equal `want` within `seconds` (a gateway reuses a
    bucket's public flag for 5 s)."""
    deadline = time.monotonic() + seconds
    while True:
        got = probe()
        if got == want or time.monotonic() > deadline:
            check(name, got == want, got)
            return
        time.sleep(0.5)


def grants_of(acl):
    """(grantee type, URI or ID, permission) of an ACL answer, sorted."""
    return sorted((g["Grantee"]["Type"], g["Grantee"].get("URI") or g["Grantee"].get("ID"),
                   g["Permission"]) for g in acl["Grants"])


ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def acls():
    """Item 2: canned ACLs on buckets and objects, their AccessControlPolicy, anonymous
    reads of public-read objects in a private bucket, and the ACLs that are refused."""
    owner = s3.list_buckets()["Owner"]["ID"]
    private = [("CanonicalUser", owner, "FULL_CONTROL")]
    public = sorted(private + [("Group", ALL_USERS, "READ")])

    # Bucket level: x-amz-acl on CreateBucket, PutBucketAcl, GetBucketAcl.
    s3.create_bucket(Bucket="acl-public", ACL="public-read")
    acl = s3.get_bucket_acl(Bucket="acl-public")
    check("GetBucketAcl names the key's owner", acl["Owner"]["ID"] == owner, acl["Owner"])
    check("a bucket created public-read grants AllUsers READ", grants_of(acl) == public,
          grants_of(acl))
    s3.put_object(Bucket="acl-public", Key="k", Body=b"open")
    check("its objects read anonymously", anonymous("GET", "acl-public", "k")[0] == 200)
    s3.put_bucket_acl(Bucket="acl-public", ACL="private")
    check("PutBucketAcl private leaves the owner alone",
          grants_of(s3.get_bucket_acl(Bucket="acl-public")) == private)
    eventually("and anonymous reads stop", lambda: anonymous("GET", "acl-public", "k")[:2],
               (403, "AccessDenied"))
    s3.put_bucket_acl(Bucket="acl-public", ACL="public-read")
    check("PutBucketAcl public-read grants AllUsers READ again",
          grants_of(s3.get_bucket_acl(Bucket="acl-public")) == public)
    eventually("and anonymous reads come back",
               lambda: anonymous("GET", "acl-public", "k")[0], 200)
    check("a private bucket's ACL is the owner's alone",
          grants_of(s3.get_bucket_acl(Bucket=BUCKET)) == private)

    # Object level, in a private bucket: x-amz-acl on PutObject, PutObjectAcl, GetObjectAcl.
    s3.put_object(Bucket=BUCKET, Key="shared", Body=b"for all", ACL="public-read")
    s3.put_object(Bucket=BUCKET, Key="kept", Body=b"for me")
    acl = s3.get_object_acl(Bucket=BUCKET, Key="shared")
    check("GetObjectAcl of a public-read object", grants_of(acl) == public, grants_of(acl))
    check("GetObjectAcl names the owner", acl["Owner"]["ID"] == owner, acl["Owner"])
    check("GetObjectAcl of a private object",
          grants_of(s3.get_object_acl(Bucket=BUCKET, Key="kept")) == private)
    status, _, body = anonymous("GET", BUCKET, "shared")
    check("a public-read object in a private bucket reads anonymously",
          (status, body) == (200, b"for all"), (status, body))
    check("and answers anonymous HEAD", anonymous("HEAD", BUCKET, "shared")[0] == 200)
    check("its private neighbour does not",
          anonymous("GET", BUCKET, "kept")[:2] == (403, "AccessDenied"))
    check("nor does a missing key there (no hint that it is missing)",
          anonymous("GET", BUCKET, "nothing")[:2] == (403, "AccessDenied"))
    status, _, _ = curl("-X", "PUT", "--data-binary", "x", f"{ENDPOINT}/{BUCKET}/shared")
    check("a public-read object is not anonymously writable", status == 403, status)
    check("nor is its ACL anonymously readable",
          curl(f"{ENDPOINT}/{BUCKET}/shared?acl")[0] == 403)
    s3.put_object_acl(Bucket=BUCKET, Key="shared", ACL="private")
    check("PutObjectAcl private stops anonymous reads at once",
          anonymous("GET", BUCKET, "shared")[:2] == (403, "AccessDenied"))
    s3.put_object_acl(Bucket=BUCKET, Key="kept", ACL="public-read")
    check("PutObjectAcl public-read allows them at once",
          anonymous("GET", BUCKET, "kept")[:2] == (200, None))
    check("an ACL change keeps the object's ETag and bytes",
          s3.get_object(Bucket=BUCKET, Key="kept")["Body"].read() == b"for me")
    status, code, _ = refusal(lambda: s3.get_object_acl(Bucket=BUCKET, Key="nothing"))
    check("GetObjectAcl of a missing key", (status, code) == (404, "NoSuchKey"), (status, code))
    status, code, _ = refusal(lambda: s3.put_object_acl(Bucket=BUCKET, Key="nothing",
                                                        ACL="public-read"))
    check("PutObjectAcl of a missing key", (status, code) == (404, "NoSuchKey"), (status, code))

    # Multipart uploads and copies take x-amz-acl too; a copy never inherits the source's.
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mp", ACL="public-read")["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload, PartNumber=1, Body=b"mp")
    s3.complete_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    check("CreateMultipartUpload's ACL is the finished object's",
          anonymous("GET", BUCKET, "mp")[:2] == (200, None))
    s3.copy_object(Bucket=BUCKET, Key="copy-private", CopySource=f"{BUCKET}/kept")
    check("a copy of a public-read object is private unless asked",
          anonymous("GET", BUCKET, "copy-private")[:2] == (403, "AccessDenied"))
    s3.copy_object(Bucket=BUCKET, Key="copy-public", CopySource=f"{BUCKET}/kept",
                   ACL="public-read")
    check("a copy made public-read reads anonymously",
          anonymous("GET", BUCKET, "copy-public")[:2] == (200, None))

    # What is not kept answers so.
    status, code, message = refusal(lambda: s3.put_object(Bucket=BUCKET, Key="bad",
                                                          Body=b"x", ACL="everyone"))
    check("an unknown canned ACL is InvalidArgument", (status, code) == (400, "InvalidArgument"),
          (status, code, message))
    for name in ["authenticated-read", "bucket-owner-full-control", "aws-exec-read"]:
        status, code, message = refusal(lambda: s3.put_object_acl(Bucket=BUCKET, Key="kept",
                                                                  ACL=name))
        check(f"{name} is NotImplemented, by name",
              (status, code) == (501, "NotImplemented") and name in message,
              (status, code, message))
    status, code, message = refusal(lambda: s3.put_bucket_acl(Bucket=BUCKET,
                                                              ACL="log-delivery-write"))
    check("log-delivery-write on a bucket is NotImplemented",
          (status, code) == (501, "NotImplemented") and "log-delivery-write" in message,
          (status, code, message))
    status, code, message = refusal(lambda: s3.put_object(
        Bucket=BUCKET, Key="bad", Body=b"x", GrantRead=f'uri="{ALL_USERS}"'))
    check("x-amz-grant-* headers are NotImplemented, by name",
          (status, code) == (501, "NotImplemented") and "x-amz-grant-read" in message,
          (status, code, message))
    for call in [lambda: s3.put_bucket_acl(Bucket=BUCKET, ACL="public-read-write"),
                 lambda: s3.create_bucket(Bucket="acl-open", ACL="public-read-write"),
                 lambda: s3.put_object(Bucket=BUCKET, Key="bad", Body=b"x",
                                       ACL="public-read-write")]:
        status, code, message = refusal(call)
        check("public-read-write is refused: anonymous writes are never allowed",
              (status, code) == (403, "AccessDenied") and "anonymous writes" in message,
              (status, code, message))
    check("nothing refused was stored",
          "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="bad"))
    check("and no bucket was made", "acl-open" not in
          [b["Name"] for b in s3.list_buckets()["Buckets"]])
    check("a refused ACL change leaves the bucket as it was",
          grants_of(s3.get_bucket_acl(Bucket=BUCKET)) == private)


EXPIRES = "Thu, 01 Dec 2044 16:00:00 GMT"
LATER = "Fri, 02 Dec 2044 17:30:00 GMT"


def expires_of(key):
    """The raw `Expires` header of HEAD and of GET of `key` (None if absent)."""
    head = s3.head_object(Bucket=BUCKET, Key=key)["ResponseMetadata"]["HTTPHeaders"]
    get = s3.get_object(Bucket=BUCKET, Key=key)
    get["Body"].read()
    return head.get("expires"), get["ResponseMetadata"]["HTTPHeaders"].get("expires")


def expires():
    """Item 5: Expires is kept with the object and answered on GET and HEAD; a copy keeps it
    (COPY) or takes the request's (REPLACE)."""
    when = email.utils.parsedate_to_datetime(EXPIRES)
    s3.put_object(Bucket=BUCKET, Key="e", Body=b"x", Expires=when)
    check("PutObject's Expires is answered on HEAD and GET", expires_of("e") == (EXPIRES,) * 2,
          expires_of("e"))
    check("boto3 reads it back as the date sent",
          s3.head_object(Bucket=BUCKET, Key="e")["Expires"] == when)
    s3.put_object(Bucket=BUCKET, Key="none", Body=b"x")
    check("an object without one answers none", expires_of("none") == (None, None))
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mp", Expires=when)["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload, PartNumber=1, Body=b"mp")
    s3.complete_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    check("CreateMultipartUpload's Expires is the finished object's",
          expires_of("mp") == (EXPIRES,) * 2, expires_of("mp"))
    s3.copy_object(Bucket=BUCKET, Key="copied", CopySource=f"{BUCKET}/e")
    check("a copy keeps it (COPY directive)", expires_of("copied") == (EXPIRES,) * 2,
          expires_of("copied"))
    s3.copy_object(Bucket=BUCKET, Key="replaced", CopySource=f"{BUCKET}/e",
                   MetadataDirective="REPLACE",
                   Expires=email.utils.parsedate_to_datetime(LATER))
    check("REPLACE takes the request's", expires_of("replaced") == (LATER,) * 2,
          expires_of("replaced"))
    s3.copy_object(Bucket=BUCKET, Key="dropped", CopySource=f"{BUCKET}/e",
                   MetadataDirective="REPLACE", ContentType="text/plain")
    check("REPLACE without one drops it", expires_of("dropped") == (None, None),
          expires_of("dropped"))
    # The aws cli too.
    out = subprocess.run(["aws", "--endpoint-url", ENDPOINT, "s3api", "head-object",
                          "--bucket", BUCKET, "--key", "e"], capture_output=True, check=True,
                         env={**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID,
                              "AWS_SECRET_ACCESS_KEY": SECRET,
                              "AWS_DEFAULT_REGION": "us-east-1"}).stdout.decode()
    check("the aws cli sees it", "2044" in out, out)


MIB = 1 << 20


def parts():
    """Item 9: GET and HEAD by partNumber, and GetObjectAttributes."""
    sizes = [5 * MIB, 5 * MIB + 17, 1234]
    bodies = [data(n, f"part{i}") for i, n in enumerate(sizes)]
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mp")["UploadId"]
    etags = []
    for i, body in enumerate(bodies):
        etags.append(s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=upload, PartNumber=i + 1,
                                    Body=body)["ETag"])
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=upload,
                                        MultipartUpload={"Parts": [
                                            {"PartNumber": i + 1, "ETag": e}
                                            for i, e in enumerate(etags)]})
    total = sum(sizes)
    for number in [1, 2, 3]:
        got = s3.get_object(Bucket=BUCKET, Key="mp", PartNumber=number)
        start = sum(sizes[:number - 1])
        end = start + sizes[number - 1] - 1
        check(f"GET partNumber={number} answers that part's bytes",
              got["Body"].read() == bodies[number - 1])
        meta = got["ResponseMetadata"]
        check(f"  as 206 with its Content-Range and the parts count",
              (meta["HTTPStatusCode"], got["ContentRange"], got["PartsCount"],
               got["ContentLength"]) == (206, f"bytes {start}-{end}/{total}", 3,
                                         sizes[number - 1]),
              (meta["HTTPStatusCode"], got.get("ContentRange"), got.get("PartsCount")))
        check("  and the whole object's ETag", got["ETag"] == done["ETag"])
    head = s3.head_object(Bucket=BUCKET, Key="mp", PartNumber=3)
    check("HEAD partNumber=3 answers that part's length and x-amz-mp-parts-count",
          (head["ResponseMetadata"]["HTTPStatusCode"], head["ContentLength"],
           head["PartsCount"]) == (206, 1234, 3), head)
    check("x-amz-mp-parts-count is the raw header too",
          head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-mp-parts-count") == "3")
    plain = s3.head_object(Bucket=BUCKET, Key="mp")
    check("HEAD without partNumber is the whole object",
          (plain["ContentLength"], plain.get("PartsCount")) == (total, None), plain)
    status, code, _ = refusal(lambda: s3.get_object(Bucket=BUCKET, Key="mp", PartNumber=4))
    check("a part past the last is 416 InvalidPartNumber",
          (status, code) == (416, "InvalidPartNumber"), (status, code))
    status, code, _ = refusal(lambda: s3.head_object(Bucket=BUCKET, Key="mp", PartNumber=4))
    check("on HEAD too", status == 416, status)
    status, code, _ = refusal(lambda: s3.get_object(Bucket=BUCKET, Key="mp", PartNumber=1,
                                                    Range="bytes=0-1"))
    check("partNumber with a Range is refused", (status, code) == (400, "InvalidRequest"),
          (status, code))
    # An object stored in one piece is its own part 1.
    s3.put_object(Bucket=BUCKET, Key="single", Body=b"one piece")
    got = s3.get_object(Bucket=BUCKET, Key="single", PartNumber=1)
    check("partNumber=1 of a single-part object is the whole object",
          (got["Body"].read(), got.get("PartsCount")) == (b"one piece", None))
    status, code, _ = refusal(lambda: s3.get_object(Bucket=BUCKET, Key="single", PartNumber=2))
    check("and it has no part 2", (status, code) == (416, "InvalidPartNumber"), (status, code))
    # The aws cli asks by part number too.
    with tempfile.NamedTemporaryFile() as out:
        subprocess.run(["aws", "--endpoint-url", ENDPOINT, "s3api", "get-object",
                        "--bucket", BUCKET, "--key", "mp", "--part-number", "2", out.name],
                       capture_output=True, check=True,
                       env={**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID,
                            "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"})
        check("aws s3api get-object --part-number 2", open(out.name, "rb").read() == bodies[1])

    everything = ["ETag", "ObjectSize", "ObjectParts", "StorageClass", "Checksum"]
    attrs = s3.get_object_attributes(Bucket=BUCKET, Key="mp", ObjectAttributes=everything)
    # AWS answers this one ETag without quotes, unlike every other answer.
    check("GetObjectAttributes: ETag (unquoted), size, storage class",
          (attrs["ETag"], attrs["ObjectSize"], attrs["StorageClass"]) ==
          (done["ETag"].strip('"'), total, "STANDARD"), attrs)
    op = attrs["ObjectParts"]
    check("  and every part's size",
          (op["TotalPartsCount"], [(p["PartNumber"], p["Size"]) for p in op["Parts"]],
           op["IsTruncated"]) == (3, [(1, sizes[0]), (2, sizes[1]), (3, sizes[2])], False), op)
    page = s3.get_object_attributes(Bucket=BUCKET, Key="mp", ObjectAttributes=["ObjectParts"],
                                    MaxParts=2)["ObjectParts"]
    check("  in pages of max-parts",
          ([p["PartNumber"] for p in page["Parts"]], page["IsTruncated"],
           page["NextPartNumberMarker"]) == ([1, 2], True, 2), page)
    rest = s3.get_object_attributes(Bucket=BUCKET, Key="mp", ObjectAttributes=["ObjectParts"],
                                    MaxParts=2, PartNumberMarker=2)["ObjectParts"]
    check("  from part-number-marker",
          ([p["PartNumber"] for p in rest["Parts"]], rest["IsTruncated"]) == ([3], False), rest)
    only = s3.get_object_attributes(Bucket=BUCKET, Key="mp", ObjectAttributes=["ObjectSize"])
    check("  only what is asked", "ETag" not in only and "ObjectParts" not in only, only)
    single = s3.get_object_attributes(Bucket=BUCKET, Key="single", ObjectAttributes=everything)
    check("a single-part object has no ObjectParts",
          (single["ObjectSize"], "ObjectParts" in single) == (9, False), single)
    status, code, _ = refusal(lambda: s3.get_object_attributes(
        Bucket=BUCKET, Key="nothing", ObjectAttributes=everything))
    check("GetObjectAttributes of a missing key", (status, code) == (404, "NoSuchKey"),
          (status, code))

    # CopyObject makes an object of one part, even of a multipart source (as AWS does):
    # its ETag is its MD5, and partNumber=1 reads all of it.
    whole = b"".join(bodies)
    copied = s3.copy_object(Bucket=BUCKET, Key="mp-copy", CopySource=f"{BUCKET}/mp")
    md5 = hashlib.md5(whole).hexdigest()
    check("a copy of a multipart object has the MD5 ETag of one part",
          copied["CopyObjectResult"]["ETag"] == f'"{md5}"', copied)
    got = s3.get_object(Bucket=BUCKET, Key="mp-copy", PartNumber=1)
    check("  and partNumber=1 answers the whole copy, without a parts count",
          (got["ResponseMetadata"]["HTTPStatusCode"], got["Body"].read() == whole,
           got.get("PartsCount"), got["ETag"]) == (206, True, None, f'"{md5}"'),
          (got["ResponseMetadata"]["HTTPStatusCode"], got.get("PartsCount")))
    head = s3.head_object(Bucket=BUCKET, Key="mp-copy", PartNumber=1)
    check("  HEAD too", (head["ContentLength"], head.get("PartsCount")) == (total, None), head)
    status, code, _ = refusal(lambda: s3.get_object(Bucket=BUCKET, Key="mp-copy", PartNumber=2))
    check("  and it has no part 2", (status, code) == (416, "InvalidPartNumber"), (status, code))
    attrs = s3.get_object_attributes(Bucket=BUCKET, Key="mp-copy", ObjectAttributes=everything)
    check("  GetObjectAttributes lists no parts for it",
          (attrs["ETag"], "ObjectParts" in attrs) == (md5, False), attrs)


def sdk_default_client():
    """A boto3 client as the SDK comes: checksums on every upload that supports them, and
    checked on every answer that carries one."""
    return boto3.client(
        "s3", endpoint_url=ENDPOINT, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      request_checksum_calculation="when_supported",
                      response_checksum_validation="when_supported",
                      retries={"max_attempts": 1}))


def checksums():
    """Item 9: the full-object checksum a client sends is kept and answered in
    x-amz-checksum-mode: ENABLED reads and in GetObjectAttributes."""
    body = data(3 * MIB + 5, "checksummed")
    sha256 = base64.b64encode(hashlib.sha256(body).digest()).decode()
    s3.put_object(Bucket=BUCKET, Key="sha", Body=body, ChecksumAlgorithm="SHA256")
    head = s3.head_object(Bucket=BUCKET, Key="sha", ChecksumMode="ENABLED")
    check("HEAD with checksum mode answers the SHA-256 sent",
          (head.get("ChecksumSHA256"), head.get("ChecksumType")) == (sha256, "FULL_OBJECT"),
          head)
    check("HEAD without it does not",
          "ChecksumSHA256" not in s3.head_object(Bucket=BUCKET, Key="sha"))
    got = s3.get_object(Bucket=BUCKET, Key="sha", ChecksumMode="ENABLED")
    check("GET with checksum mode answers it with the bytes",
          (got["Body"].read() == body, got.get("ChecksumSHA256")) == (True, sha256))
    ranged = s3.get_object(Bucket=BUCKET, Key="sha", ChecksumMode="ENABLED", Range="bytes=0-9")
    check("a ranged GET answers no full-object checksum",
          (ranged["Body"].read(), "ChecksumSHA256" in ranged) == (body[:10], False))
    attrs = s3.get_object_attributes(Bucket=BUCKET, Key="sha", ObjectAttributes=["Checksum"])
    check("GetObjectAttributes answers it",
          attrs.get("Checksum", {}).get("ChecksumSHA256") == sha256, attrs)
    # The SDK's defaults: a CRC32 in an aws-chunked trailer, validated on the way back.
    sdk = sdk_default_client()
    sdk.put_object(Bucket=BUCKET, Key="crc", Body=body)
    crc = sdk.head_object(Bucket=BUCKET, Key="crc", ChecksumMode="ENABLED")
    expected = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    check("the SDK's default CRC32 trailer is kept", crc.get("ChecksumCRC32") == expected, crc)
    got = sdk.get_object(Bucket=BUCKET, Key="crc", ChecksumMode="ENABLED")
    check("and the SDK validates the GET against it", got["Body"].read() == body)
    s3.copy_object(Bucket=BUCKET, Key="crc-copy", CopySource=f"{BUCKET}/crc")
    copy = s3.head_object(Bucket=BUCKET, Key="crc-copy", ChecksumMode="ENABLED")
    check("a copy keeps its source's checksum", copy.get("ChecksumCRC32") == expected, copy)
    s3.put_object(Bucket=BUCKET, Key="plain", Body=b"no checksum")
    check("an object sent without one answers none",
          "ChecksumCRC32" not in s3.head_object(Bucket=BUCKET, Key="plain",
                                                ChecksumMode="ENABLED"))


def crc64nvme(body):
    """CRC-64/NVME (reflected 0x9A6C9329AC4BC9B5, init and final xor all ones): botocore
    computes it only with awscrt, which this test does without."""
    table = crc64nvme.table
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in body:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _crc64nvme_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x9A6C9329AC4BC9B5 if c & 1 else c >> 1
        table.append(c)
    return table


crc64nvme.table = _crc64nvme_table()


def b64(raw):
    return base64.b64encode(raw).decode()


def crc32_of(body):
    return zlib.crc32(body).to_bytes(4, "big")


def multipart_checksums():
    """Item 9: multipart uploads keep each part's checksum and answer the object's,
    COMPOSITE (checksum of the part checksums, `-N`) or FULL_OBJECT (CRCs combined), as
    AWS computes them; a listed part or whole-object checksum that disagrees is refused."""
    from boto3.s3.transfer import TransferConfig

    check("the CRC-64/NVME of the test agrees with the catalogue's check value",
          crc64nvme(b"123456789") == 0xAE8B14860A799888)
    sdk = sdk_default_client()
    # 1. boto3's upload_file as it comes: CRC32 named at CreateMultipartUpload, on every
    #    part and listed at completion: a COMPOSITE CRC32.
    sizes = [5 * MIB, 5 * MIB, 3 * MIB + 7]
    bodies = [data(n, f"mpck{i}") for i, n in enumerate(sizes)]
    whole = b"".join(bodies)
    part_crcs = [crc32_of(b) for b in bodies]
    expected = b64(crc32_of(b"".join(part_crcs))) + "-3"
    with tempfile.NamedTemporaryFile() as f:
        f.write(whole)
        f.flush()
        sdk.upload_file(f.name, BUCKET, "crc-mp",
                        Config=TransferConfig(multipart_threshold=5 * MIB,
                                              multipart_chunksize=5 * MIB, max_concurrency=1))
    head = sdk.head_object(Bucket=BUCKET, Key="crc-mp", ChecksumMode="ENABLED")
    check("upload_file's multipart object answers its COMPOSITE CRC32",
          (head.get("ChecksumCRC32"), head.get("ChecksumType")) == (expected, "COMPOSITE"), head)
    got = sdk.get_object(Bucket=BUCKET, Key="crc-mp", ChecksumMode="ENABLED")
    check("  and GET with checksum mode answers it with the bytes",
          (got["Body"].read() == whole, got.get("ChecksumCRC32")) == (True, expected))
    attrs = s3.get_object_attributes(Bucket=BUCKET, Key="crc-mp",
                                     ObjectAttributes=["Checksum", "ObjectParts"])
    check("  GetObjectAttributes answers it",
          (attrs["Checksum"].get("ChecksumCRC32"), attrs["Checksum"].get("ChecksumType")) ==
          (expected, "COMPOSITE"), attrs)
    check("  with each part's CRC32 in ObjectParts",
          [p.get("ChecksumCRC32") for p in attrs["ObjectParts"]["Parts"]] ==
          [b64(c) for c in part_crcs], attrs["ObjectParts"])
    part = s3.head_object(Bucket=BUCKET, Key="crc-mp", PartNumber=2, ChecksumMode="ENABLED")
    check("  HEAD with partNumber answers that part's CRC32",
          part.get("ChecksumCRC32") == b64(part_crcs[1]), part)

    # 2. SHA-256 named explicitly: each part gets it (computed when the client sends none);
    #    parts must not carry another algorithm; listed checksums are checked.
    created = s3.create_multipart_upload(Bucket=BUCKET, Key="sha-mp", ChecksumAlgorithm="SHA256")
    upload = created["UploadId"]
    check("CreateMultipartUpload answers the algorithm and type",
          (created.get("ChecksumAlgorithm"), created.get("ChecksumType")) ==
          ("SHA256", "COMPOSITE"), created)
    sha_bodies = [data(5 * MIB, "sha0"), data(1000, "sha1")]
    sha_parts = [hashlib.sha256(b).digest() for b in sha_bodies]
    first = s3.upload_part(Bucket=BUCKET, Key="sha-mp", UploadId=upload, PartNumber=1,
                           Body=sha_bodies[0], ChecksumAlgorithm="SHA256")
    check("UploadPart answers the part's SHA-256",
          first.get("ChecksumSHA256") == b64(sha_parts[0]), first)
    second = s3.upload_part(Bucket=BUCKET, Key="sha-mp", UploadId=upload, PartNumber=2,
                            Body=sha_bodies[1])
    check("a part sent without a checksum gets the upload's, computed",
          second.get("ChecksumSHA256") == b64(sha_parts[1]), second)
    status, code, message = refusal(lambda: s3.upload_part(
        Bucket=BUCKET, Key="sha-mp", UploadId=upload, PartNumber=3, Body=b"x",
        ChecksumAlgorithm="CRC32"))
    check("a part with another algorithm is refused",
          (status, code) == (400, "InvalidRequest") and "sha256" in message,
          (status, code, message))
    listed = s3.list_parts(Bucket=BUCKET, Key="sha-mp", UploadId=upload)
    check("ListParts names the algorithm and each part's checksum",
          (listed.get("ChecksumAlgorithm"),
           [p.get("ChecksumSHA256") for p in listed["Parts"]]) ==
          ("SHA256", [b64(d) for d in sha_parts]), listed)
    good = [{"PartNumber": 1, "ETag": first["ETag"], "ChecksumSHA256": b64(sha_parts[0])},
            {"PartNumber": 2, "ETag": second["ETag"], "ChecksumSHA256": b64(sha_parts[1])}]
    wrong = [dict(good[0]), dict(good[1], ChecksumSHA256=b64(hashlib.sha256(b"no").digest()))]
    status, code, _ = refusal(lambda: s3.complete_multipart_upload(
        Bucket=BUCKET, Key="sha-mp", UploadId=upload, MultipartUpload={"Parts": wrong}))
    check("a listed part checksum that differs is InvalidPart", (status, code) == (400, "InvalidPart"),
          (status, code))
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key="sha-mp", UploadId=upload,
                                        MultipartUpload={"Parts": good})
    sha_expected = b64(hashlib.sha256(b"".join(sha_parts)).digest()) + "-2"
    check("CompleteMultipartUpload answers the COMPOSITE SHA-256",
          (done.get("ChecksumSHA256"), done.get("ChecksumType")) == (sha_expected, "COMPOSITE"),
          done)
    head = s3.head_object(Bucket=BUCKET, Key="sha-mp", ChecksumMode="ENABLED")
    check("  and HEAD keeps answering it", head.get("ChecksumSHA256") == sha_expected, head)

    # 3. FULL_OBJECT CRC32: the parts' CRCs combined; the whole-object CRC the client sends
    #    at completion is checked against it.
    created = s3.create_multipart_upload(Bucket=BUCKET, Key="full-mp", ChecksumAlgorithm="CRC32",
                                         ChecksumType="FULL_OBJECT")
    upload = created["UploadId"]
    check("a FULL_OBJECT CRC32 upload is created as such",
          created.get("ChecksumType") == "FULL_OBJECT", created)
    full_bodies = [data(5 * MIB + 3, "full0"), data(4321, "full1")]
    etags = [s3.upload_part(Bucket=BUCKET, Key="full-mp", UploadId=upload, PartNumber=i + 1,
                            Body=b, ChecksumAlgorithm="CRC32")["ETag"]
             for i, b in enumerate(full_bodies)]
    full = b64(crc32_of(b"".join(full_bodies)))
    listing = {"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]}
    status, code, _ = refusal(lambda: s3.complete_multipart_upload(
        Bucket=BUCKET, Key="full-mp", UploadId=upload, MultipartUpload=listing,
        ChecksumCRC32=b64(crc32_of(b"something else")), ChecksumType="FULL_OBJECT"))
    check("a whole-object CRC32 that differs is BadDigest", (status, code) == (400, "BadDigest"),
          (status, code))
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key="full-mp", UploadId=upload,
                                        MultipartUpload=listing, ChecksumCRC32=full,
                                        ChecksumType="FULL_OBJECT")
    check("CompleteMultipartUpload answers the whole object's CRC32",
          (done.get("ChecksumCRC32"), done.get("ChecksumType")) == (full, "FULL_OBJECT"), done)
    got = sdk.get_object(Bucket=BUCKET, Key="full-mp", ChecksumMode="ENABLED")
    check("  which the SDK validates the GET against",
          (got["Body"].read() == b"".join(full_bodies), got.get("ChecksumCRC32")) == (True, full))

    # 4. CRC64NVME (FULL_OBJECT only), parts sent without checksums: all computed here.
    created = s3.create_multipart_upload(Bucket=BUCKET, Key="nvme-mp", ChecksumAlgorithm="CRC64NVME")
    upload = created["UploadId"]
    check("CRC64NVME uploads are FULL_OBJECT", created.get("ChecksumType") == "FULL_OBJECT", created)
    nvme_bodies = [data(5 * MIB, "nvme0"), data(777, "nvme1")]
    etags = [s3.upload_part(Bucket=BUCKET, Key="nvme-mp", UploadId=upload, PartNumber=i + 1,
                            Body=b)["ETag"] for i, b in enumerate(nvme_bodies)]
    done = s3.complete_multipart_upload(
        Bucket=BUCKET, Key="nvme-mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    nvme = b64(crc64nvme(b"".join(nvme_bodies)).to_bytes(8, "big"))
    check("the object's CRC64NVME is the whole object's",
          (done.get("ChecksumCRC64NVME"), done.get("ChecksumType")) == (nvme, "FULL_OBJECT"), done)
    attrs = s3.get_object_attributes(Bucket=BUCKET, Key="nvme-mp",
                                     ObjectAttributes=["Checksum", "ObjectParts"])
    check("  GetObjectAttributes answers it and each part's",
          (attrs["Checksum"].get("ChecksumCRC64NVME"),
           [p.get("ChecksumCRC64NVME") for p in attrs["ObjectParts"]["Parts"]]) ==
          (nvme, [b64(crc64nvme(b).to_bytes(8, "big")) for b in nvme_bodies]), attrs)

    # 5. An upload created without an algorithm whose parts each carried a CRC32 (what an
    #    SDK sending checksums by default does when the upload named none): the object gets
    #    the whole object's CRC32, FULL_OBJECT, as AWS gives such an object a full-object
    #    checksum of its own.
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="undeclared-mp")["UploadId"]
    undeclared = [data(5 * MIB + 11, "und0"), data(999, "und1")]
    etags = [s3.upload_part(Bucket=BUCKET, Key="undeclared-mp", UploadId=upload,
                            PartNumber=i + 1, Body=b, ChecksumAlgorithm="CRC32")["ETag"]
             for i, b in enumerate(undeclared)]
    listing = {"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]}
    whole_crc = b64(crc32_of(b"".join(undeclared)))
    status, code, _ = refusal(lambda: s3.complete_multipart_upload(
        Bucket=BUCKET, Key="undeclared-mp", UploadId=upload, MultipartUpload=listing,
        ChecksumCRC32=b64(crc32_of(b"not it"))))
    check("undeclared upload, CRC32 parts: a wrong whole-object CRC32 is BadDigest",
          (status, code) == (400, "BadDigest"), (status, code))
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key="undeclared-mp", UploadId=upload,
                                        MultipartUpload=listing)
    check("  the object gets the whole object's CRC32, FULL_OBJECT",
          (done.get("ChecksumCRC32"), done.get("ChecksumType")) == (whole_crc, "FULL_OBJECT"),
          done)
    got = sdk.get_object(Bucket=BUCKET, Key="undeclared-mp", ChecksumMode="ENABLED")
    check("  which the SDK validates the GET against",
          (got["Body"].read() == b"".join(undeclared), got.get("ChecksumCRC32")) ==
          (True, whole_crc))
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="mixed-mp")["UploadId"]
    first = s3.upload_part(Bucket=BUCKET, Key="mixed-mp", UploadId=upload, PartNumber=1,
                           Body=undeclared[0], ChecksumAlgorithm="CRC32")
    second = s3.upload_part(Bucket=BUCKET, Key="mixed-mp", UploadId=upload, PartNumber=2,
                            Body=undeclared[1])
    done = s3.complete_multipart_upload(
        Bucket=BUCKET, Key="mixed-mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first["ETag"]},
                                   {"PartNumber": 2, "ETag": second["ETag"]}]})
    check("  a part without a checksum leaves the object without one",
          [k for k in done if k.startswith("Checksum")] == [], done)

    # 6. A copy is an object of one part: a COMPOSITE source checksum becomes the
    #    FULL_OBJECT one of the same algorithm, computed from the copied bytes.
    copied = s3.copy_object(Bucket=BUCKET, Key="crc-mp-copy", CopySource=f"{BUCKET}/crc-mp")
    check("a copy of a COMPOSITE CRC32 object gets the whole object's CRC32",
          (copied["CopyObjectResult"].get("ChecksumCRC32"),
           copied["CopyObjectResult"].get("ChecksumType")) ==
          (b64(crc32_of(whole)), "FULL_OBJECT"), copied)
    head = sdk.head_object(Bucket=BUCKET, Key="crc-mp-copy", ChecksumMode="ENABLED")
    check("  and answers it on HEAD",
          (head.get("ChecksumCRC32"), head.get("ChecksumType")) ==
          (b64(crc32_of(whole)), "FULL_OBJECT"), head)

    status, code, _ = refusal(lambda: s3.create_multipart_upload(
        Bucket=BUCKET, Key="bad", ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT"))
    check("SHA-256 cannot be FULL_OBJECT", (status, code) == (400, "InvalidRequest"), (status, code))
    status, code, _ = refusal(lambda: s3.create_multipart_upload(
        Bucket=BUCKET, Key="bad", ChecksumAlgorithm="CRC64NVME", ChecksumType="COMPOSITE"))
    check("CRC64NVME cannot be COMPOSITE", (status, code) == (400, "InvalidRequest"), (status, code))


def list_uploads():
    """ListMultipartUploads with a delimiter: keys roll up into CommonPrefixes as in
    ListObjectsV2, each prefix one entry of a page; uploads of one key in the order they
    began, with upload id markers between them; more uploads than one page, followed to
    the end by boto3's paginator."""
    ids = {}
    for key in ["dir/a", "dir/b", "dir/sub/c", "top"]:
        ids[key] = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    out = s3.list_multipart_uploads(Bucket=BUCKET, Delimiter="/")
    check("with a delimiter, keys below it roll up into CommonPrefixes",
          ([u["Key"] for u in out.get("Uploads", [])],
           [p["Prefix"] for p in out.get("CommonPrefixes", [])], out.get("Delimiter")) ==
          (["top"], ["dir/"], "/"), out)
    out = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="dir/", Delimiter="/")
    check("  below a prefix, the next level",
          ([u["Key"] for u in out.get("Uploads", [])],
           [p["Prefix"] for p in out.get("CommonPrefixes", [])]) ==
          (["dir/a", "dir/b"], ["dir/sub/"]), out)
    first = s3.list_multipart_uploads(Bucket=BUCKET, Delimiter="/", MaxUploads=1)
    check("  a common prefix is one entry of a page",
          ([p["Prefix"] for p in first.get("CommonPrefixes", [])], "Uploads" in first,
           first["IsTruncated"], first.get("NextKeyMarker")) == (["dir/"], False, True, "dir/"),
          first)
    rest = s3.list_multipart_uploads(Bucket=BUCKET, Delimiter="/", MaxUploads=1,
                                     KeyMarker=first["NextKeyMarker"])
    check("  and the next page goes on after it",
          ([u["Key"] for u in rest.get("Uploads", [])], "CommonPrefixes" in rest,
           rest["IsTruncated"]) == (["top"], False, False), rest)
    plain = s3.list_multipart_uploads(Bucket=BUCKET)
    check("without one, every upload is listed",
          sorted(u["Key"] for u in plain["Uploads"]) == sorted(ids), plain)
    for key, upload in ids.items():
        s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload)

    # Three uploads of one key: listed in the order they began, and a page can end
    # between them (NextUploadIdMarker), the next going on after that upload.
    same = [s3.create_multipart_upload(Bucket=BUCKET, Key="same/k")["UploadId"]
            for _ in range(3)]
    s3.create_multipart_upload(Bucket=BUCKET, Key="same/l")
    seen, marker = [], {}
    while True:
        page = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="same/", MaxUploads=2, **marker)
        seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        if not page["IsTruncated"]:
            break
        marker = {"KeyMarker": page["NextKeyMarker"],
                  "UploadIdMarker": page["NextUploadIdMarker"]}
    check("uploads of one key come in the order they began, pages split between them",
          [u for k, u in seen if k == "same/k"] == same and len(seen) == 4, seen)
    after_key = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="same/", KeyMarker="same/k")
    check("  a key marker alone skips every upload of that key",
          [u["Key"] for u in after_key.get("Uploads", [])] == ["same/l"], after_key)

    # More uploads than one page holds: every one is reached by following the markers
    # (a page is read from the coordinator's index at the marker, not cut from the first
    # thousand).
    many = {s3.create_multipart_upload(Bucket=BUCKET, Key=f"many/{i:04}")["UploadId"]
            for i in range(1005)}
    paginator = s3.get_paginator("list_multipart_uploads")
    listed = [u["UploadId"] for page in paginator.paginate(Bucket=BUCKET, Prefix="many/")
              for u in page.get("Uploads", [])]
    check("past a thousand uploads, the markers reach every one exactly once",
          len(listed) == len(many) and set(listed) == many, len(listed))
    # Deleting the bucket's uploads is what aborting them all does; here one by one.
    for page in paginator.paginate(Bucket=BUCKET):
        for u in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"])
    left = s3.list_multipart_uploads(Bucket=BUCKET)
    check("  and aborting each listed one leaves none", "Uploads" not in left, left)


def control_keys():
    """Keys holding control characters, in answers that echo keys without url encoding.
    `\r` goes out as `&#xD;`, which every XML parser reads back as `\r` (raw, it would
    come back as `\n`); tab and line feed go out as themselves. The other C0 controls go
    out as S3 writes them, `&#x1;`: XML 1.0 cannot carry them at all, so boto3's parser
    (expat) refuses them in S3's answers as in these, and boto3 lists with
    encoding-type=url by default. (The AWS SDK for Rust reads them back exactly: checked
    by the Rust test that runs this part.)"""
    readable = ["ctl/cr\rkey", "ctl/cr\r\nboth", "ctl/tab\tnl\nkey"]
    unreadable = ["ctl/one\x01", "ctl/us\x1f"]
    for key in readable + unreadable:
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="ctl/")
    check("ListObjectsV2 with boto3's default encoding-type=url returns every key exactly",
          sorted(o["Key"] for o in listed["Contents"]) == sorted(readable + unreadable),
          listed["Contents"])

    # The raw answer without encoding-type: every control character written as a
    # character reference, none left raw.
    status, _, body = curl(*signed(f"{ENDPOINT}/{BUCKET}?list-type=2&prefix=ctl%2F"))
    raw = [b for b in body if b < 0x20 and b not in (0x09, 0x0A)]
    check("ListObjectsV2 without encoding-type holds no raw control byte but tab and line feed",
          (status, raw) == (200, []), body)
    for escaped in [b"ctl/cr&#xD;key", b"ctl/cr&#xD;\nboth", b"ctl/tab\tnl\nkey",
                    b"ctl/one&#x1;", b"ctl/us&#x1F;"]:
        check(f"  it writes {escaped!r}", escaped in body, body)

    # boto3 without its default encoding-type, where expat can read the answer.
    plain = client()
    plain.meta.events.unregister("before-parameter-build.s3.ListObjectsV2",
                                 botocore.handlers.set_list_objects_encoding_type_url)
    plain.meta.events.unregister("before-parameter-build.s3.ListObjects",
                                 botocore.handlers.set_list_objects_encoding_type_url)
    sent = raw_responses(plain)
    for name, call in [("ListObjectsV2", plain.list_objects_v2), ("ListObjects", plain.list_objects)]:
        out = call(Bucket=BUCKET, Prefix="ctl/cr")
        check(f"{name} without encoding-type reads \\r back exactly",
              (sorted(o["Key"] for o in out["Contents"]), out.get("EncodingType")) ==
              (sorted(readable[:2]), None), out["Contents"])
    out = plain.list_objects_v2(Bucket=BUCKET, Prefix="ctl/tab")
    check("  and tab and line feed", [o["Key"] for o in out["Contents"]] == [readable[2]],
          out["Contents"])
    check("  (no encoding-type was asked)", all(b"<EncodingType>" not in b for _, _, b in sent))

    status, code, _ = refusal(lambda: s3.get_object(Bucket=BUCKET, Key="ctl/gone\r"))
    check("an error naming a key with \\r is still read", (status, code) == (404, "NoSuchKey"),
          (status, code))

    # A multipart upload of a key with \r: every answer naming it reads back exactly.
    key = "ctl/mp\rpart"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)
    check("CreateMultipartUpload answers the key exactly", upload["Key"] == key, upload)
    uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="ctl/")
    check("  ListMultipartUploads too", [u["Key"] for u in uploads["Uploads"]] == [key], uploads)
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                          Body=b"one part")["ETag"]
    parts = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"])
    check("  ListParts too", parts["Key"] == key, parts)
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    check("  CompleteMultipartUpload too", done["Key"] == key, done)
    check("  and the object is there under it",
          s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"one part")
    copied = s3.copy_object(Bucket=BUCKET, Key="ctl/copy\r", CopySource={"Bucket": BUCKET, "Key": key})
    check("CopyObject of and to such keys", "ETag" in copied["CopyObjectResult"], copied)

    # DeleteObjects: keys with \r (botocore sends them as &#xD;) come back exactly in
    # Deleted; the others are deleted in quiet mode, whose answer names no key.
    gone = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [
        {"Key": k} for k in readable + [key, "ctl/copy\r"]]})
    check("DeleteObjects answers each deleted key exactly",
          (sorted(d["Key"] for d in gone["Deleted"]), gone.get("Errors")) ==
          (sorted(readable + [key, "ctl/copy\r"]), None), gone)
    quiet = s3.delete_objects(Bucket=BUCKET, Delete={"Quiet": True, "Objects": [
        {"Key": k} for k in unreadable]})
    check("  quiet mode deletes the rest", "Errors" not in quiet, quiet)
    left = s3.list_objects_v2(Bucket=BUCKET, Prefix="ctl/")
    check("  and nothing is left", left["KeyCount"] == 0, left)


PARTS = {"errors": errors, "bodies": bodies, "headers": headers, "presigned": presigned,
         "listing": listing, "copy": copy, "delete-bucket": delete_bucket,
         "overwrite-during-read": overwrite_during_read,
         "conditional-writes": conditional_writes, "acls": acls, "expires": expires,
         "parts": parts, "checksums": checksums, "multipart-checksums": multipart_checksums,
         "list-uploads": list_uploads, "control-keys": control_keys}

if __name__ == "__main__":
    part = sys.argv[1]
    PARTS[part]()
    print(f"semantics {part} passed")
