//! The real S3 clients the tests drive, set up for a plain-HTTP Cairn endpoint and nothing
//! from the user's own configuration: the aws cli, boto3 (a short inline script), s3cmd
//! (its own config file: it reads no environment) and rclone (a remote `cairn:` from the
//! environment).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `command` and returns its stdout; fails the test with stdout and stderr otherwise.
pub fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `aws --endpoint-url ENDPOINT ARGS…` with `key` = (id, secret) and no config files.
pub fn aws(endpoint: &str, key: &(String, String), args: &[&str]) -> Command {
    let mut command = Command::new("aws");
    command
        .args(["--endpoint-url", endpoint, "--region", "us-east-1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    command
}

/// Writes an s3cmd config for `endpoint` (`http://host:port`, path-style) into `dir` and
/// returns its path, for [`s3cmd`].
pub fn s3cmd_config(dir: &Path, endpoint: &str, key: &(String, String)) -> PathBuf {
    let host = endpoint.trim_start_matches("http://");
    let config = dir.join("s3cfg");
    std::fs::write(
        &config,
        format!(
            "[default]\naccess_key = {id}\nsecret_key = {secret}\nhost_base = {host}\nhost_bucket = {host}\nuse_https = False\nbucket_location = us-east-1\n",
            id = key.0,
            secret = key.1,
        ),
    )
    .unwrap();
    config
}

/// `s3cmd -c CONFIG ARGS…` (see [`s3cmd_config`]).
pub fn s3cmd(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("s3cmd");
    command.arg("-c").arg(config).args(args);
    command
}

/// `rclone ARGS…` with a remote `cairn:` at `endpoint`, configured through the environment.
pub fn rclone(endpoint: &str, key: &(String, String), args: &[&str]) -> Command {
    let mut command = Command::new("rclone");
    command
        .args(args)
        .env("RCLONE_CONFIG_CAIRN_TYPE", "s3")
        .env("RCLONE_CONFIG_CAIRN_PROVIDER", "Other")
        .env("RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID", &key.0)
        .env("RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY", &key.1)
        .env("RCLONE_CONFIG_CAIRN_ENDPOINT", endpoint)
        .env("RCLONE_CONFIG_CAIRN_REGION", "us-east-1")
        .env("RCLONE_CONFIG", "/dev/null")
        // rclone refuses a CA bundle setting on a plain-HTTP endpoint.
        .env_remove("AWS_CA_BUNDLE");
    command
}

/// boto3: `put` uploads FILE as BUCKET/KEY with one `put_object`, `multipart` with an
/// explicit multipart upload in 5 MiB parts (one part if smaller; aborted if completing
/// fails, whose error it then prints), `get` writes BUCKET/KEY to FILE, `list` prints
/// `key size` lines of BUCKET (all pages, under KEY as a prefix).
const BOTO3: &str = r#"
import sys, boto3
from botocore.config import Config
endpoint, key_id, secret, op, bucket, key, path = sys.argv[1:8]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id,
    aws_secret_access_key=secret, region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
        retries={"max_attempts": 1}))
if op == "put":
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f.read())
elif op == "multipart":
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    with open(path, "rb") as f:
        data = f.read()
    for n, start in enumerate(range(0, max(len(data), 1), 5 << 20), 1):
        tag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
            Body=data[start:start + (5 << 20)])["ETag"]
        parts.append({"PartNumber": n, "ETag": tag})
    try:
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
            MultipartUpload={"Parts": parts})
    except Exception:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
        raise
elif op == "get":
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with open(path, "wb") as f:
        f.write(body)
elif op == "list":
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for obj in page.get("Contents", []):
            print(obj["Key"], obj["Size"])
else:
    sys.exit(f"unknown operation {op}")
"#;

/// One boto3 operation (`put`, `get` or `list`; see the script above).
pub fn boto3(
    endpoint: &str,
    key: &(String, String),
    op: &str,
    bucket: &str,
    object: &str,
    file: &Path,
) -> Command {
    let mut command = Command::new("python3");
    command
        .args(["-c", BOTO3, endpoint, &key.0, &key.1, op, bucket, object])
        .arg(file);
    command
}
