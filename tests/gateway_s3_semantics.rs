//! S3's semantics behind the operations, checked with real clients against `cairn gateway`
//! in front of a real coordinator and three nodes, one cluster per behaviour:
//!
//! - anonymous requests to missing buckets and keys, request ids in headers and error
//!   bodies, CreateBucket of an owned bucket, ListBuckets in pages;
//! - bodies framed by `Transfer-Encoding: chunked` alone, `Content-MD5` refusals,
//!   `MissingContentLength`;
//! - SigV4 requests dated by `Date`, and non-ASCII user metadata;
//! - presigned URL lifetimes, including an expired URL;
//! - listing details: `delimiter=`, `fetch-owner`, `encoding-type=url`;
//! - UploadPartCopy, whole and ranged, from percent-encoded sources, and bad ranges;
//! - DeleteBucket of a bucket whose only contents are abandoned multipart uploads;
//! - a long GET across an overwrite (with the same bytes) or a delete of its key;
//! - conditional writes (`If-None-Match: *`, `If-Match`) on PutObject and
//!   CompleteMultipartUpload;
//! - canned ACLs on buckets and objects (`x-amz-acl`, Put/Get Bucket/Object Acl), and
//!   anonymous reads of public-read objects in private buckets;
//! - `Expires` kept and answered;
//! - GET and HEAD by `partNumber` (a copy is an object of one part), and
//!   GetObjectAttributes (its ETag unquoted);
//! - full-object checksums kept and answered with `x-amz-checksum-mode: ENABLED`;
//! - multipart checksums: each part's kept, the object's COMPOSITE or FULL_OBJECT one
//!   derived from them, listed and whole-object checksums checked at completion; an upload
//!   declared without an algorithm whose parts all carried one CRC gets that CRC of the
//!   whole object; a copy's checksum is a full-object one;
//! - ListMultipartUploads with a delimiter (CommonPrefixes);
//! - keys holding control characters in every answer that echoes a key.
//!
//! Each runs one part of tests/s3/semantics.py (boto3, curl and the aws cli); the expired
//! presigned URL is made by the AWS SDK for Rust, which can date a URL in the past, and the
//! control characters XML 1.0 cannot carry are read back by it too.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use support::cluster::{GatewayProcess, TestCluster};
use support::coordinator::admin;
use support::s3clients::run;

/// A private bucket and a public-read one (k = 2, m = 1, 1 MiB segments: three nodes
/// suffice, and a few MiB span several segments).
const BUCKET: &str = "data";
const PUBLIC: &str = "public";

/// A coordinator, three nodes in three organisations, [`BUCKET`] and [`PUBLIC`], a
/// gateway and an access key (id, secret).
fn start() -> (TestCluster, GatewayProcess, (String, String)) {
    let cluster = TestCluster::start(&["org-a", "org-b", "org-c"]);
    for (name, extra) in [(BUCKET, &[][..]), (PUBLIC, &["--public-read"][..])] {
        let mut args = vec![
            "bucket",
            "create",
            name,
            "--k",
            "2",
            "--m",
            "1",
            "--segment-size",
            "1MiB",
        ];
        args.extend_from_slice(extra);
        admin(&cluster.coordinator, &args).unwrap();
    }
    let gateway = cluster.start_gateway();
    let key = cluster.access_key();
    (cluster, gateway, key)
}

/// Runs `part` of tests/s3/semantics.py against a fresh cluster, which it returns for
/// further checks.
fn semantics(part: &str) -> (TestCluster, GatewayProcess, (String, String)) {
    let (cluster, gateway, key) = start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/semantics.py");
    let out = run(Command::new("python3")
        .arg(&script)
        .arg(part)
        .env("CAIRN_S3_ENDPOINT", &gateway.endpoint)
        .env("CAIRN_S3_KEY", &key.0)
        .env("CAIRN_S3_SECRET", &key.1)
        .env("CAIRN_S3_BUCKET", BUCKET)
        .env("CAIRN_S3_PUBLIC_BUCKET", PUBLIC));
    assert!(out.contains(&format!("semantics {part} passed")), "{out}");
    (cluster, gateway, key)
}

#[test]
fn anonymous_requests_errors_and_bucket_listings_answer_as_s3_does() {
    semantics("errors");
}

#[test]
fn chunked_bodies_digests_and_missing_lengths_answer_as_s3_does() {
    semantics("bodies");
}

#[test]
fn sigv4_dates_and_non_ascii_metadata_work_as_s3_defines() {
    semantics("headers");
}

#[test]
fn listings_leave_out_empty_delimiters_name_owners_and_encode_keys() {
    semantics("listing");
}

#[test]
fn upload_part_copy_copies_whole_and_ranged_sources() {
    semantics("copy");
}

#[test]
fn a_bucket_holding_only_abandoned_uploads_is_deleted_with_them() {
    semantics("delete-bucket");
}

#[test]
fn a_read_begun_before_an_overwrite_or_delete_returns_the_version_it_began() {
    semantics("overwrite-during-read");
}

#[test]
fn conditional_writes_create_only_if_absent_and_replace_only_a_known_etag() {
    semantics("conditional-writes");
}

#[test]
fn canned_acls_make_buckets_and_single_objects_public_read_and_refuse_the_rest() {
    semantics("acls");
}

#[test]
fn expires_is_kept_and_answered_on_get_and_head() {
    semantics("expires");
}

#[test]
fn part_numbers_read_parts_and_object_attributes_list_them() {
    semantics("parts");
}

#[test]
fn full_object_checksums_are_kept_and_answered_when_asked() {
    semantics("checksums");
}

#[test]
fn list_multipart_uploads_rolls_keys_up_by_delimiter() {
    semantics("list-uploads");
}

#[test]
fn multipart_uploads_keep_part_checksums_and_answer_composite_and_full_object_ones() {
    semantics("multipart-checksums");
}

#[test]
fn presigned_urls_are_limited_as_s3_limits_them() {
    let (_cluster, gateway, (id, secret)) = semantics("presigned");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let s3 = sdk_client(&gateway.endpoint, &id, &secret);
        s3.put_object()
            .bucket(BUCKET)
            .key("expiring")
            .body(ByteStream::from_static(b"for a while"))
            .send()
            .await
            .expect("PUT");
        // Signed an hour ago, valid for a minute: expired for 59 minutes.
        let expired = PresigningConfig::builder()
            .start_time(SystemTime::now() - Duration::from_secs(3600))
            .expires_in(Duration::from_secs(60))
            .build()
            .unwrap();
        let url = s3
            .get_object()
            .bucket(BUCKET)
            .key("expiring")
            .presigned(expired)
            .await
            .unwrap();
        let (status, body) = curl(url.uri());
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "expired presigned URL: {body}");
        assert!(
            body.contains("<Code>AccessDenied</Code>")
                && body.contains("<Message>Request has expired</Message>"),
            "expired presigned URL: {body}"
        );
        let live = PresigningConfig::expires_in(Duration::from_secs(60)).unwrap();
        let url = s3
            .get_object()
            .bucket(BUCKET)
            .key("expiring")
            .presigned(live)
            .await
            .unwrap();
        assert_eq!(curl(url.uri()), (200, b"for a while".to_vec()));
    });
}

#[test]
fn keys_with_control_characters_come_back_exactly_in_every_answer() {
    let (_cluster, gateway, (id, secret)) = semantics("control-keys");
    // boto3's XML parser refuses the character references XML 1.0 has no room for (as it
    // refuses S3's own); the AWS SDK for Rust reads them back, so these keys are checked
    // with it in the answers that echo keys without url encoding.
    let keys = [
        "ctl/one\x01",
        "ctl/us\x1f",
        "ctl/cr\r",
        "ctl/all\x01\r\n\t\x1b",
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let s3 = sdk_client(&gateway.endpoint, &id, &secret);
        for key in &keys[..3] {
            s3.put_object()
                .bucket(BUCKET)
                .key(*key)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
                .expect("PUT");
        }
        let multipart = keys[3];
        let upload = s3
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(multipart)
            .send()
            .await
            .expect("CreateMultipartUpload");
        assert_eq!(upload.key(), Some(multipart));
        let upload_id = upload.upload_id().expect("an upload id");
        let listed = s3
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .expect("ListMultipartUploads");
        let uploading: Vec<&str> = listed.uploads().iter().filter_map(|u| u.key()).collect();
        assert_eq!(uploading, [multipart]);
        let part = s3
            .upload_part()
            .bucket(BUCKET)
            .key(multipart)
            .upload_id(upload_id)
            .part_number(1)
            .body(ByteStream::from_static(b"one part"))
            .send()
            .await
            .expect("UploadPart");
        let completed = CompletedMultipartUpload::builder()
            .parts(
                CompletedPart::builder()
                    .part_number(1)
                    .e_tag(part.e_tag().unwrap_or_default())
                    .build(),
            )
            .build();
        let done = s3
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key(multipart)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .expect("CompleteMultipartUpload");
        assert_eq!(done.key(), Some(multipart));
        // Listed without encoding-type (the Rust SDK sends none).
        let listed = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix("ctl/")
            .send()
            .await
            .expect("ListObjectsV2");
        assert_eq!(listed.encoding_type(), None);
        let mut found: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
        found.sort();
        let mut expected = keys.to_vec();
        expected.sort();
        assert_eq!(found, expected);
        let copied = s3
            .copy_object()
            .bucket(BUCKET)
            .key("ctl/copy\x02")
            .copy_source(format!("{BUCKET}/ctl/one%01"))
            .send()
            .await
            .expect("CopyObject");
        assert!(copied.copy_object_result().is_some());
        let objects: Vec<ObjectIdentifier> = keys
            .iter()
            .chain(&["ctl/copy\x02"])
            .map(|k| ObjectIdentifier::builder().key(*k).build().unwrap())
            .collect();
        let deleted = s3
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
            .expect("DeleteObjects");
        let mut gone: Vec<&str> = deleted.deleted().iter().filter_map(|d| d.key()).collect();
        gone.sort();
        let mut expected: Vec<&str> = keys.iter().chain(&["ctl/copy\x02"]).copied().collect();
        expected.sort();
        assert_eq!((gone, deleted.errors().len()), (expected, 0));
        let left = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix("ctl/")
            .send()
            .await
            .expect("ListObjectsV2");
        assert_eq!(left.key_count(), Some(0));
    });
}

/// An SDK client for the gateway: static credentials, us-east-1, path-style addressing,
/// checksums only where S3 requires them, no retries.
fn sdk_client(endpoint: &str, id: &str, secret: &str) -> Client {
    // The SDK needs an HTTP client even for plain http: smithy's hyper client with rustls
    // on ring (already in the tree through quinn) and no trusted roots, as no TLS is used.
    let tls = TlsContext::builder()
        .with_trust_store(TrustStore::empty())
        .build()
        .unwrap();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .credentials_provider(Credentials::new(id, secret, None, None, "cairn-test"))
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(RetryConfig::disabled())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    Client::from_conf(config.build())
}

/// GETs `url` with curl; returns (HTTP status, body).
fn curl(url: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stdout = out.stdout;
    let split = stdout
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("curl printed the status");
    let status = std::str::from_utf8(&stdout[split + 1..])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status");
    stdout.truncate(split);
    (status, stdout)
}
