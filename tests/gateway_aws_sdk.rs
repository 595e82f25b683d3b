//! `cairn gateway` driven by the official AWS SDK for Rust (`aws-sdk-s3`), in front of a real
//! coordinator and three nodes: buckets made and removed through S3; PUT, GET and HEAD of an
//! inline and a sharded object with their headers and user metadata; ranges; conditional
//! GETs (304, 412); listings paged two entries at a time with continuation tokens, with and
//! without a delimiter; a 40 MiB multipart upload of 5 MiB parts; copy; single and batch
//! deletes; presigned GET and PUT URLs fetched with curl, and a tampered one refused; and
//! requests signed with a wrong secret or an unknown key refused.
//!
//! The SDK is set to compute request checksums and validate response checksums only where
//! S3 requires them (DeleteObjects); a second client keeps the SDK's defaults, as an
//! unconfigured Rust program has them: a CRC32 header on uploads from memory, and signed
//! aws-chunked bodies with a CRC32 trailer on uploads streamed from a file (PutObject and
//! UploadPart). Every request is recorded as sent, so the test says what was on the wire.
//!
//! The gateway checks those checksums: an upload with a wrong `x-amz-checksum-crc32` is
//! refused with `BadDigest` and stores nothing.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents,
};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use md5::Digest;
use support::cluster::{GatewayProcess, TestCluster};
use support::coordinator::admin;

/// The bucket made with `cairn admin` (k = 2, m = 1, 1 MiB segments: three nodes suffice).
const BUCKET: &str = "data";

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + i / 4093) as u8).wrapping_add(seed))
        .collect()
}

fn md5_hex(bytes: &[u8]) -> String {
    md5::Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One request as the SDK sent it (signed, just before transmission).
#[derive(Debug)]
struct Sent {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
}

impl Sent {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether it carried a flexible checksum, as a header or announced as a trailer.
    fn has_checksum(&self) -> bool {
        self.headers.iter().any(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k.starts_with("x-amz-checksum-") || k == "x-amz-trailer" || k == "content-md5"
        })
    }
}

/// Records every request a client sends, so the test can say what the SDK put on the wire.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Sent>>>);

impl Recorder {
    /// The requests sent since the last call.
    fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        self.0.lock().unwrap().push(Sent {
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        Ok(())
    }
}

/// An SDK client for the gateway at `endpoint` and the recorder of what it sends: static
/// credentials, us-east-1, path-style addressing, checksums only where S3 requires them
/// (unless `default_checksums`), and no retries, so every refusal the test asserts is the
/// gateway's first answer.
fn client(endpoint: &str, id: &str, secret: &str, default_checksums: bool) -> (Client, Recorder) {
    let recorder = Recorder::default();
    // The SDK needs an HTTP client even for plain http; this is smithy's hyper client with
    // rustls on ring (already in the tree through quinn) and no trusted roots: no TLS is used.
    let tls = TlsContext::builder()
        .with_trust_store(TrustStore::empty())
        .build()
        .unwrap();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https();
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .credentials_provider(Credentials::new(id, secret, None, None, "cairn-test"))
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(RetryConfig::disabled())
        .interceptor(recorder.clone());
    if !default_checksums {
        config = config
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    (Client::from_conf(config.build()), recorder)
}

/// A coordinator, three nodes in three organisations, the bucket [`BUCKET`], a gateway and
/// an access key (id, secret).
fn start() -> (TestCluster, GatewayProcess, (String, String)) {
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    admin(
        &cluster.coordinator,
        &[
            "bucket",
            "create",
            BUCKET,
            "--k",
            "2",
            "--m",
            "1",
            "--segment-size",
            "1MiB",
        ],
    )
    .unwrap();
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    (cluster, gateway, key)
}

/// The HTTP status and S3 error code of a call that must fail.
fn refusal<T, E>(result: Result<T, SdkError<E>>, what: &str) -> (u16, Option<String>)
where
    T: std::fmt::Debug,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let err = match result {
        Ok(out) => panic!("{what}: expected a refusal, got {out:?}"),
        Err(err) => err,
    };
    let Some(response) = err.raw_response() else {
        panic!("{what}: no HTTP answer: {}", DisplayErrorContext(&err));
    };
    let status = response.status().as_u16();
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_string);
    (status, code)
}

/// Reads a GET's whole body.
async fn body(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// Runs curl with `args`; returns (HTTP status, body).
fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stdout = out.stdout;
    let split = stdout.iter().rposition(|&b| b == b'\n').unwrap();
    let status = std::str::from_utf8(&stdout[split + 1..])
        .unwrap()
        .parse()
        .unwrap();
    stdout.truncate(split);
    (status, stdout)
}

#[test]
fn aws_sdk_for_rust_works_against_the_gateway() {
    let (cluster, gateway, (id, secret)) = start();
    let dir = cluster.root.path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (s3, sent) = client(&gateway.endpoint, &id, &secret, false);
        buckets(&s3).await;
        objects(&s3, &sent).await;
        listing(&s3).await;
        multipart(&s3).await;
        copy_and_delete(&s3, &sent).await;
        presigned(&s3, &dir).await;
        refused(&s3, &gateway.endpoint, &id).await;
        default_checksums(&gateway.endpoint, &id, &secret, &dir).await;
    });
}

/// CreateBucket, HeadBucket, ListBuckets, DeleteBucket through the SDK.
async fn buckets(s3: &Client) {
    let made = "sdk-made";
    s3.create_bucket()
        .bucket(made)
        .send()
        .await
        .expect("CreateBucket");
    s3.head_bucket()
        .bucket(made)
        .send()
        .await
        .expect("HeadBucket of the new bucket");
    let listed = s3.list_buckets().send().await.expect("ListBuckets");
    let mut names: Vec<&str> = listed.buckets().iter().filter_map(|b| b.name()).collect();
    names.sort();
    assert_eq!(names, [BUCKET, made], "ListBuckets");
    // An inline object in the SDK-made bucket (its default profile needs no shards for it).
    s3.put_object()
        .bucket(made)
        .key("note")
        .body(ByteStream::from_static(b"made by the sdk"))
        .send()
        .await
        .expect("PUT into the SDK-made bucket");
    let got = body(
        s3.get_object()
            .bucket(made)
            .key("note")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, b"made by the sdk", "GET from the SDK-made bucket");
    let (status, code) = refusal(
        s3.delete_bucket().bucket(made).send().await,
        "DeleteBucket of a bucket with an object",
    );
    assert_eq!(
        (status, code.as_deref()),
        (409, Some("BucketNotEmpty")),
        "DeleteBucket of a non-empty bucket"
    );
    s3.delete_object()
        .bucket(made)
        .key("note")
        .send()
        .await
        .expect("DeleteObject");
    s3.delete_bucket()
        .bucket(made)
        .send()
        .await
        .expect("DeleteBucket of the emptied bucket");
    let err = s3
        .head_bucket()
        .bucket(made)
        .send()
        .await
        .expect_err("HeadBucket of a deleted bucket");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_not_found()),
        "HeadBucket after DeleteBucket: {}",
        DisplayErrorContext(&err)
    );
}

/// PUT, GET, HEAD (inline and sharded), ranges and conditional GETs.
async fn objects(s3: &Client, sent: &Recorder) {
    let small = pattern(1000, 1);
    let sharded = pattern((3 << 20) + 7, 2);
    let meta = |which: &str| {
        HashMap::from([
            ("origin".to_string(), "aws-sdk-rust".to_string()),
            ("which".to_string(), which.to_string()),
        ])
    };
    for (key, data, content_type, cache_control) in [
        (
            "small.txt",
            &small,
            "text/plain; charset=utf-8",
            "max-age=60",
        ),
        ("sharded.bin", &sharded, "application/x-nix-nar", "no-cache"),
    ] {
        sent.take();
        let put = s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .content_type(content_type)
            .cache_control(cache_control)
            .set_metadata(Some(meta(key)))
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {}", DisplayErrorContext(&e)));
        let etag = format!("\"{}\"", md5_hex(data));
        assert_eq!(put.e_tag(), Some(etag.as_str()), "PUT {key}: ETag");
        let request = sent.take().pop().unwrap();
        assert!(
            request.method == "PUT" && !request.has_checksum(),
            "with WhenRequired the SDK sends PutObject without a checksum: {request:?}"
        );

        let got = s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {key}: {}", DisplayErrorContext(&e)));
        assert_eq!(got.e_tag(), Some(etag.as_str()), "GET {key}: ETag");
        assert_eq!(
            got.content_length(),
            Some(data.len() as i64),
            "GET {key}: length"
        );
        assert_eq!(
            got.content_type(),
            Some(content_type),
            "GET {key}: Content-Type"
        );
        assert_eq!(
            got.cache_control(),
            Some(cache_control),
            "GET {key}: Cache-Control"
        );
        assert_eq!(got.metadata(), Some(&meta(key)), "GET {key}: metadata");
        assert!(body(got).await == *data, "GET {key}: bytes differ");

        let head = s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD {key}: {}", DisplayErrorContext(&e)));
        assert_eq!(head.e_tag(), Some(etag.as_str()), "HEAD {key}: ETag");
        assert_eq!(
            head.content_length(),
            Some(data.len() as i64),
            "HEAD {key}: length"
        );
        assert_eq!(
            head.content_type(),
            Some(content_type),
            "HEAD {key}: Content-Type"
        );
        assert_eq!(
            head.cache_control(),
            Some(cache_control),
            "HEAD {key}: Cache-Control"
        );
        assert_eq!(head.metadata(), Some(&meta(key)), "HEAD {key}: metadata");
        assert!(head.last_modified().is_some(), "HEAD {key}: Last-Modified");

        // Ranges: a closed one, a suffix, and (sharded) one across a 1 MiB segment boundary.
        let size = data.len();
        let mut ranges = vec![
            ("bytes=100-199".to_string(), 100..200),
            ("bytes=-50".to_string(), size - 50..size),
        ];
        if size > 1 << 20 {
            ranges.push((
                format!("bytes={}-{}", (1 << 20) - 1000, (1 << 20) + 999),
                (1 << 20) - 1000..(1 << 20) + 1000,
            ));
        }
        for (range, wanted) in ranges {
            let got = s3
                .get_object()
                .bucket(BUCKET)
                .key(key)
                .range(&range)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {key} {range}: {}", DisplayErrorContext(&e)));
            let content_range = format!("bytes {}-{}/{size}", wanted.start, wanted.end - 1);
            assert_eq!(
                got.content_range(),
                Some(content_range.as_str()),
                "GET {key} {range}: Content-Range"
            );
            assert_eq!(
                got.content_length(),
                Some(wanted.len() as i64),
                "GET {key} {range}: length"
            );
            assert!(
                body(got).await == data[wanted],
                "GET {key} {range}: bytes differ"
            );
        }
        let (status, code) = refusal(
            s3.get_object()
                .bucket(BUCKET)
                .key(key)
                .range(format!("bytes={size}-"))
                .send()
                .await,
            "GET past the end",
        );
        assert_eq!(
            (status, code.as_deref()),
            (416, Some("InvalidRange")),
            "GET {key} bytes={size}-"
        );

        // Conditional GETs: If-None-Match with the ETag → 304; If-Match with another → 412;
        // the opposite cases send the object.
        let (status, _) = refusal(
            s3.get_object()
                .bucket(BUCKET)
                .key(key)
                .if_none_match(&etag)
                .send()
                .await,
            "GET If-None-Match: ETag",
        );
        assert_eq!(status, 304, "GET {key} If-None-Match with its own ETag");
        let (status, _) = refusal(
            s3.head_object()
                .bucket(BUCKET)
                .key(key)
                .if_none_match(&etag)
                .send()
                .await,
            "HEAD If-None-Match: ETag",
        );
        assert_eq!(status, 304, "HEAD {key} If-None-Match with its own ETag");
        let (status, code) = refusal(
            s3.get_object()
                .bucket(BUCKET)
                .key(key)
                .if_match("\"0123456789abcdef0123456789abcdef\"")
                .send()
                .await,
            "GET If-Match: another ETag",
        );
        assert_eq!(
            (status, code.as_deref()),
            (412, Some("PreconditionFailed")),
            "GET {key} If-Match with another ETag"
        );
        let got = s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .if_match(&etag)
            .if_none_match("\"0123456789abcdef0123456789abcdef\"")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {key} If-Match: ETag: {}", DisplayErrorContext(&e)));
        assert!(
            body(got).await == *data,
            "GET {key} If-Match with its ETag: bytes differ"
        );
    }
}

/// ListObjectsV2 two entries a page, following continuation tokens; flat and with "/".
async fn listing(s3: &Client) {
    let keys = [
        "list/dir/x",
        "list/dir/y",
        "list/k0",
        "list/k1",
        "list/k2",
        "list/k3",
        "list/k4",
        "list/other/z",
    ];
    for key in keys {
        s3.put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(key.as_bytes().to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {}", DisplayErrorContext(&e)));
    }
    // Each page as (keys, common prefixes, truncated).
    type Page = (Vec<String>, Vec<String>, bool);
    let pages = |delimiter: Option<&'static str>| async move {
        let mut pages: Vec<Page> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = s3
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix("list/")
                .set_delimiter(delimiter.map(str::to_string))
                .max_keys(2)
                .set_continuation_token(token.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("ListObjectsV2: {}", DisplayErrorContext(&e)));
            let keys: Vec<String> = out
                .contents()
                .iter()
                .map(|o| o.key().unwrap().to_string())
                .collect();
            let prefixes: Vec<String> = out
                .common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string())
                .collect();
            assert_eq!(
                out.key_count(),
                Some((keys.len() + prefixes.len()) as i32),
                "KeyCount of page {} ({delimiter:?})",
                pages.len()
            );
            assert_eq!(out.max_keys(), Some(2), "MaxKeys echoed");
            assert_eq!(
                out.continuation_token(),
                token.as_deref(),
                "ContinuationToken echoed"
            );
            let truncated = out.is_truncated() == Some(true);
            pages.push((keys, prefixes, truncated));
            if !truncated {
                break;
            }
            token = Some(
                out.next_continuation_token()
                    .expect("a truncated page has a NextContinuationToken")
                    .to_string(),
            );
            assert!(pages.len() < 10, "listing does not end: {pages:?}");
        }
        pages
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let flat = pages(None).await;
    let expected: Vec<Page> = vec![
        (s(&["list/dir/x", "list/dir/y"]), vec![], true),
        (s(&["list/k0", "list/k1"]), vec![], true),
        (s(&["list/k2", "list/k3"]), vec![], true),
        (s(&["list/k4", "list/other/z"]), vec![], false),
    ];
    assert_eq!(flat, expected, "flat listing, two keys a page");
    let rolled = pages(Some("/")).await;
    let expected: Vec<Page> = vec![
        (s(&["list/k0"]), s(&["list/dir/"]), true),
        (s(&["list/k1", "list/k2"]), vec![], true),
        (s(&["list/k3", "list/k4"]), vec![], true),
        (vec![], s(&["list/other/"]), false),
    ];
    assert_eq!(
        rolled, expected,
        "listing with delimiter \"/\", two entries a page"
    );
}

/// A 40 MiB object in eight 5 MiB parts, back byte-exact with S3's multipart ETag.
async fn multipart(s3: &Client) {
    const PART: usize = 5 << 20;
    let key = "multi/big.bin";
    let data = pattern(40 << 20, 3);
    let upload = s3
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .content_type("application/octet-stream")
        .metadata("origin", "aws-sdk-rust")
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateMultipartUpload: {}", DisplayErrorContext(&e)));
    let upload_id = upload.upload_id().expect("an UploadId").to_string();
    let mut parts = Vec::new();
    let mut digests = Vec::new();
    for (i, chunk) in data.chunks(PART).enumerate() {
        let number = i as i32 + 1;
        let out = s3
            .upload_part()
            .bucket(BUCKET)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("UploadPart {number}: {}", DisplayErrorContext(&e)));
        let etag = format!("\"{}\"", md5_hex(chunk));
        assert_eq!(
            out.e_tag(),
            Some(etag.as_str()),
            "UploadPart {number}: ETag"
        );
        digests.extend_from_slice(&md5::Md5::digest(chunk));
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(etag)
                .build(),
        );
    }
    assert_eq!(parts.len(), 8, "40 MiB in 5 MiB parts");
    let listed = s3
        .list_parts()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("ListParts: {}", DisplayErrorContext(&e)));
    let numbers: Vec<i32> = listed
        .parts()
        .iter()
        .map(|p| p.part_number().unwrap())
        .collect();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>(), "ListParts");
    let done = s3
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("CompleteMultipartUpload: {}", DisplayErrorContext(&e)));
    let etag = format!("\"{}-8\"", md5_hex(&digests));
    assert_eq!(
        done.e_tag(),
        Some(etag.as_str()),
        "CompleteMultipartUpload: S3's multipart ETag"
    );
    let got = s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {}", DisplayErrorContext(&e)));
    assert_eq!(got.e_tag(), Some(etag.as_str()), "GET {key}: ETag");
    assert_eq!(
        got.content_length(),
        Some(40 << 20),
        "GET {key}: Content-Length"
    );
    assert_eq!(
        got.content_type(),
        Some("application/octet-stream"),
        "GET {key}: Content-Type from CreateMultipartUpload"
    );
    assert_eq!(
        got.metadata(),
        Some(&HashMap::from([(
            "origin".to_string(),
            "aws-sdk-rust".to_string()
        )])),
        "GET {key}: metadata from CreateMultipartUpload"
    );
    assert!(body(got).await == data, "GET {key}: 40 MiB differ");
    // A range across the boundary of parts 3 and 4.
    let from = 3 * PART - 10;
    let got = s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .range(format!("bytes={from}-{}", from + 19))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key} across parts: {}", DisplayErrorContext(&e)));
    assert!(
        body(got).await == data[from..from + 20],
        "GET {key}: range across parts 3 and 4 differs"
    );
}

/// CopyObject of the sharded object; DeleteObject, then GET → NoSuchKey; DeleteObjects.
async fn copy_and_delete(s3: &Client, sent: &Recorder) {
    let sharded = pattern((3 << 20) + 7, 2);
    let etag = format!("\"{}\"", md5_hex(&sharded));
    let copied = s3
        .copy_object()
        .bucket(BUCKET)
        .key("copied.bin")
        .copy_source(format!("{BUCKET}/sharded.bin"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CopyObject: {}", DisplayErrorContext(&e)));
    assert_eq!(
        copied.copy_object_result().and_then(|r| r.e_tag()),
        Some(etag.as_str()),
        "CopyObject: ETag of the copy"
    );
    let got = s3
        .get_object()
        .bucket(BUCKET)
        .key("copied.bin")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET copied.bin: {}", DisplayErrorContext(&e)));
    assert_eq!(
        got.content_type(),
        Some("application/x-nix-nar"),
        "copy keeps Content-Type"
    );
    assert_eq!(
        got.metadata()
            .and_then(|m| m.get("which"))
            .map(String::as_str),
        Some("sharded.bin"),
        "copy keeps user metadata (MetadataDirective COPY)"
    );
    assert!(body(got).await == sharded, "GET copied.bin: bytes differ");

    s3.delete_object()
        .bucket(BUCKET)
        .key("small.txt")
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteObject: {}", DisplayErrorContext(&e)));
    let err = s3
        .get_object()
        .bucket(BUCKET)
        .key("small.txt")
        .send()
        .await
        .expect_err("GET after DeleteObject");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_no_such_key()),
        "GET after DeleteObject: NoSuchKey expected: {}",
        DisplayErrorContext(&err)
    );
    assert_eq!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(404),
        "GET after DeleteObject: status"
    );
    let err = s3
        .head_object()
        .bucket(BUCKET)
        .key("small.txt")
        .send()
        .await
        .expect_err("HEAD after DeleteObject");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_not_found()),
        "HEAD after DeleteObject: NotFound expected: {}",
        DisplayErrorContext(&err)
    );

    // DeleteObjects (the one operation here whose body S3 requires a checksum for: the SDK
    // sends one even with WhenRequired) of the listing's keys and one that never existed.
    let mut keys: Vec<String> = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("list/")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 8, "keys to delete: {keys:?}");
    keys.push("list/never-was".to_string());
    let objects = keys
        .iter()
        .map(|k| ObjectIdentifier::builder().key(k).build().unwrap())
        .collect();
    sent.take();
    let out = s3
        .delete_objects()
        .bucket(BUCKET)
        .delete(
            Delete::builder()
                .set_objects(Some(objects))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteObjects: {}", DisplayErrorContext(&e)));
    let mut deleted: Vec<String> = out
        .deleted()
        .iter()
        .map(|d| d.key().unwrap().to_string())
        .collect();
    let request = sent.take().pop().unwrap();
    assert!(
        request.method == "POST" && request.uri.contains("delete") && request.has_checksum(),
        "DeleteObjects carries a checksum even with WhenRequired: {request:?}"
    );
    deleted.sort();
    keys.sort();
    assert_eq!(deleted, keys, "DeleteObjects: every key reported deleted");
    assert!(out.errors().is_empty(), "DeleteObjects: {:?}", out.errors());
    let left = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("list/")
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count(), Some(0), "list/ after DeleteObjects");
    assert!(left.contents().is_empty(), "{:?}", left.contents());
}

/// Presigned GET and PUT URLs made by the SDK, used with curl; a tampered URL is refused.
async fn presigned(s3: &Client, dir: &std::path::Path) {
    let sharded = pattern((3 << 20) + 7, 2);
    let five_minutes = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let get = s3
        .get_object()
        .bucket(BUCKET)
        .key("sharded.bin")
        .presigned(five_minutes.clone())
        .await
        .unwrap();
    assert_eq!(get.method(), "GET");
    let (status, fetched) = curl(&[get.uri()]);
    assert_eq!(status, 200, "presigned GET with curl");
    assert!(fetched == sharded, "presigned GET with curl: bytes differ");
    // Another signature over the same request: the gateway refuses it.
    let uri = get.uri().to_string();
    let at = uri.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut tampered = uri.clone().into_bytes();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (status, answer) = curl(&[&tampered]);
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, 403, "tampered presigned GET: {answer}");
    assert!(
        answer.contains("<Code>SignatureDoesNotMatch</Code>"),
        "tampered presigned GET: {answer}"
    );

    // Presigned PUT; the Content-Type is part of what was signed, so curl must send it.
    let text = b"uploaded by curl with a URL the SDK presigned\n".repeat(200);
    let file = dir.join("presigned-put.txt");
    std::fs::write(&file, &text).unwrap();
    let put = s3
        .put_object()
        .bucket(BUCKET)
        .key("presigned.txt")
        .content_type("text/plain")
        .presigned(five_minutes)
        .await
        .unwrap();
    assert_eq!(put.method(), "PUT");
    let headers: Vec<String> = put.headers().map(|(k, v)| format!("{k}: {v}")).collect();
    assert!(
        headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case("content-type: text/plain")),
        "the SDK signs Content-Type into a presigned PUT: {headers:?}"
    );
    let mut args = vec!["-T", file.to_str().unwrap()];
    for header in &headers {
        args.extend(["-H", header]);
    }
    args.push(put.uri());
    let (status, answer) = curl(&args);
    assert_eq!(
        status,
        200,
        "presigned PUT with curl: {}",
        String::from_utf8_lossy(&answer)
    );
    let got = s3
        .get_object()
        .bucket(BUCKET)
        .key("presigned.txt")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET presigned.txt: {}", DisplayErrorContext(&e)));
    assert_eq!(
        got.e_tag(),
        Some(format!("\"{}\"", md5_hex(&text)).as_str()),
        "presigned PUT: ETag"
    );
    assert_eq!(
        got.content_type(),
        Some("text/plain"),
        "presigned PUT: Content-Type"
    );
    assert!(body(got).await == text, "presigned PUT: bytes differ");
}

/// A client with a wrong secret, and one with an unknown key id, are refused; nothing they
/// tried to write exists.
async fn refused(s3: &Client, endpoint: &str, id: &str) {
    let (wrong, _) = client(
        endpoint,
        id,
        "not-the-secret-at-all-0123456789abcdef",
        false,
    );
    let (status, code) = refusal(
        wrong
            .get_object()
            .bucket(BUCKET)
            .key("sharded.bin")
            .send()
            .await,
        "GET with a wrong secret",
    );
    assert_eq!(
        (status, code.as_deref()),
        (403, Some("SignatureDoesNotMatch")),
        "GET signed with a wrong secret"
    );
    let (status, code) = refusal(
        wrong
            .put_object()
            .bucket(BUCKET)
            .key("intruder")
            .body(ByteStream::from_static(b"should not land"))
            .send()
            .await,
        "PUT with a wrong secret",
    );
    assert_eq!(
        (status, code.as_deref()),
        (403, Some("SignatureDoesNotMatch")),
        "PUT signed with a wrong secret"
    );
    let (status, code) = refusal(
        wrong.list_objects_v2().bucket(BUCKET).send().await,
        "ListObjectsV2 with a wrong secret",
    );
    assert_eq!(
        (status, code.as_deref()),
        (403, Some("SignatureDoesNotMatch")),
        "ListObjectsV2 signed with a wrong secret"
    );
    let (unknown, _) = client(endpoint, "AKNOTAKEYOFTHISCLUSTER", "whatever", false);
    let (status, code) = refusal(
        unknown
            .get_object()
            .bucket(BUCKET)
            .key("sharded.bin")
            .send()
            .await,
        "GET with an unknown key id",
    );
    assert_eq!(
        (status, code.as_deref()),
        (403, Some("InvalidAccessKeyId")),
        "GET signed with an unknown access key id"
    );
    let err = s3
        .head_object()
        .bucket(BUCKET)
        .key("intruder")
        .send()
        .await
        .expect_err("HEAD of the refused PUT's key");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_not_found()),
        "the refused PUT stored nothing: {}",
        DisplayErrorContext(&err)
    );
}

/// The SDK as an unconfigured program has it: a CRC32 of every upload, in a header for a
/// body in memory and in the trailer of an aws-chunked body (signed chunk by chunk) for a
/// body streamed from a file, as in a multipart upload of a file.
async fn default_checksums(endpoint: &str, id: &str, secret: &str, dir: &std::path::Path) {
    let (s3, sent) = client(endpoint, id, secret, true);
    let put = |key: &'static str, body: ByteStream| {
        let s3 = s3.clone();
        async move {
            s3.put_object()
                .bucket(BUCKET)
                .key(key)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "PUT {key} with default checksums: {}",
                        DisplayErrorContext(&e)
                    )
                })
        }
    };
    let get = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            s3.get_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "GET {key} with default checksums: {}",
                        DisplayErrorContext(&e)
                    )
                })
        }
    };

    let data = pattern((1 << 20) + 3, 4);
    let out = put("in-memory.bin", ByteStream::from(data.clone())).await;
    let request = sent.take().pop().unwrap();
    assert!(
        request
            .header("x-amz-checksum-crc32")
            .is_some_and(|v| v.len() == 8)
            && request.header("x-amz-trailer").is_none(),
        "the SDK's default PUT of bytes in memory: a CRC32 header: {request:?}"
    );
    let etag = format!("\"{}\"", md5_hex(&data));
    assert_eq!(out.e_tag(), Some(etag.as_str()), "PUT with a CRC32 header");
    assert!(
        body(get("in-memory.bin").await).await == data,
        "PUT with a CRC32 header: bytes differ"
    );

    let file = dir.join("streamed.bin");
    std::fs::write(&file, &data).unwrap();
    let out = put("streamed.bin", ByteStream::from_path(&file).await.unwrap()).await;
    let request = sent.take().pop().unwrap();
    assert_eq!(
        (
            request.header("content-encoding"),
            request.header("x-amz-trailer"),
            request.header("x-amz-decoded-content-length"),
            request.header("x-amz-content-sha256"),
        ),
        (
            Some("aws-chunked"),
            Some("x-amz-checksum-crc32"),
            Some(data.len().to_string().as_str()),
            Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
        ),
        "the SDK's default PUT of a file: signed aws-chunked with a CRC32 trailer: {request:?}"
    );
    assert_eq!(out.e_tag(), Some(etag.as_str()), "PUT with a CRC32 trailer");
    let got = get("streamed.bin").await;
    assert_eq!(
        got.content_encoding(),
        None,
        "aws-chunked framing is not kept as the object's Content-Encoding"
    );
    assert!(
        body(got).await == data,
        "PUT with a CRC32 trailer: bytes differ"
    );

    // A multipart upload of a file, each part streamed from it with its CRC32 trailer.
    const PART: usize = 5 << 20;
    let key = "streamed-multi.bin";
    let data = pattern(PART + 1000, 5);
    std::fs::write(&file, &data).unwrap();
    let upload = s3
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateMultipartUpload: {}", DisplayErrorContext(&e)));
    let upload_id = upload.upload_id().unwrap();
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(PART).enumerate() {
        let number = i as i32 + 1;
        let part = ByteStream::read_from()
            .path(&file)
            .offset((i * PART) as u64)
            .length(Length::Exact(chunk.len() as u64))
            .build()
            .await
            .unwrap();
        let out = s3
            .upload_part()
            .bucket(BUCKET)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(part)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "UploadPart {number} with a CRC32 trailer: {}",
                    DisplayErrorContext(&e)
                )
            });
        let request = sent.take().pop().unwrap();
        assert_eq!(
            request.header("x-amz-trailer"),
            Some("x-amz-checksum-crc32"),
            "the SDK's default UploadPart of a file: {request:?}"
        );
        assert_eq!(
            out.e_tag(),
            Some(format!("\"{}\"", md5_hex(chunk)).as_str()),
            "UploadPart {number} with a CRC32 trailer: ETag"
        );
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CompleteMultipartUpload after CRC32 parts: {}",
                DisplayErrorContext(&e)
            )
        });
    assert!(
        body(get(key).await).await == data,
        "GET {key}: bytes differ"
    );
}

/// S3 refuses an upload whose body does not match the checksum sent with it (400
/// BadDigest); so must the gateway, or a client's end-to-end check means nothing.
#[test]
fn an_upload_with_a_wrong_checksum_is_refused() {
    let (_cluster, gateway, (id, secret)) = start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (s3, _) = client(&gateway.endpoint, &id, &secret, false);
        // CRC32 of "hello" is 0x3610a686 ("NhCmhg=="); this says it is 0.
        let (status, code) = refusal(
            s3.put_object()
                .bucket(BUCKET)
                .key("wrong-crc32")
                .checksum_crc32("AAAAAA==")
                .body(ByteStream::from_static(b"hello"))
                .send()
                .await,
            "PUT with a wrong x-amz-checksum-crc32",
        );
        assert_eq!(
            (status, code.as_deref()),
            (400, Some("BadDigest")),
            "PUT with a wrong x-amz-checksum-crc32"
        );
        let err = s3
            .head_object()
            .bucket(BUCKET)
            .key("wrong-crc32")
            .send()
            .await
            .expect_err("HEAD of the refused upload");
        assert!(
            err.as_service_error().is_some_and(|e| e.is_not_found()),
            "the refused upload stored nothing: {}",
            DisplayErrorContext(&err)
        );
    });
}
