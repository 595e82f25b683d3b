//! [`Gateway`]: the `s3s::S3` implementation. Each operation family lives in its own file
//! under `ops/`; this file holds the dispatch and what they share.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cairn_client::gateway_rpc::NewObject;
use cairn_client::records::WriteCondition;
use cairn_client::records::{Bucket, CannedAcl, ObjectChecksum, ObjectHeaders, ObjectRecord};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

use crate::data_path::{DataPath, ShardProblem, Written};
use crate::errors::from_call;
use crate::metrics::GatewayMetrics;

/// The S3 operations on top of the coordinator and the data path.
pub struct Gateway {
    pub(crate) path: Arc<DataPath>,
    pub(crate) metrics: Arc<GatewayMetrics>,
}

impl Gateway {
    /// A gateway over `path`, counting into `metrics`.
    pub fn new(path: Arc<DataPath>, metrics: Arc<GatewayMetrics>) -> Self {
        Self { path, metrics }
    }

    /// The bucket, or `NoSuchBucket`.
    pub(crate) async fn bucket(&self, name: &str) -> S3Result<Bucket> {
        self.path.coordinator.bucket(name).await.map_err(from_call)
    }

    /// Makes a written body visible as `bucket`/`key` with the given ETag (hex) and
    /// headers, if the key holds what `condition` demands: the one commit every upload path
    /// ends in.
    pub(crate) async fn commit_object(
        &self,
        bucket: String,
        key: String,
        written: Written,
        tag: &str,
        meta: ObjectMeta,
        condition: Option<WriteCondition>,
    ) -> S3Result<()> {
        let object = NewObject {
            size: written.size,
            etag: quoted(tag),
            headers: meta.headers,
            body: written.body,
            acl: meta.acl,
            checksum: meta.checksum,
        };
        self.path
            .coordinator
            .put(&bucket, &key, object, condition)
            .await
            .map_err(from_call)
    }

    /// The record of `bucket`/`key`, or `NoSuchKey`.
    pub(crate) async fn object_record(&self, bucket: &str, key: &str) -> S3Result<ObjectRecord> {
        self.path
            .coordinator
            .object(bucket, key)
            .await
            .map_err(from_call)
    }

    /// What the data path calls when a node sends bad bytes or refuses a read: counted
    /// here and reported to the coordinator in the background (the read itself goes on
    /// from other shards).
    pub fn reporter(&self) -> Arc<dyn Fn(ShardProblem) + Send + Sync> {
        let path = self.path.clone();
        let metrics = self.metrics.clone();
        // The coordinator counts one report per gateway and shard; asking it again is
        // only traffic.
        let reported = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        Arc::new(move |problem: ShardProblem| {
            if problem.refused {
                metrics.refused_reads.inc();
            } else {
                metrics.verification_failures.inc();
            }
            {
                let mut reported = reported
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if reported.len() >= MAX_REMEMBERED_REPORTS {
                    reported.clear();
                }
                if !reported.insert((problem.node, problem.shard, problem.refused)) {
                    return;
                }
            }
            let (path, reported) = (path.clone(), reported.clone());
            let remembered = (problem.node, problem.shard, problem.refused);
            tokio::spawn(async move {
                let coordinator = &path.coordinator;
                let (bucket, key, text) = (problem.bucket, problem.key, problem.problem);
                let sent = if problem.refused {
                    coordinator
                        .report_refusal(bucket, key, problem.node, problem.shard, text)
                        .await
                } else {
                    coordinator
                        .report_shard(bucket, key, problem.node, problem.shard, text)
                        .await
                };
                if let Err(err) = sent {
                    tracing::warn!(%err, "could not report a bad shard to the coordinator");
                    // Reported again the next time it happens.
                    if let Ok(mut reported) = reported.lock() {
                        reported.remove(&remembered);
                    }
                }
            });
        })
    }
}

/// Shards whose reports a gateway remembers sending, at most (then it forgets them all).
const MAX_REMEMBERED_REPORTS: usize = 16_384;

/// The one region a Cairn cluster is: clients sign for it, and S3 names it by an empty
/// location constraint.
pub(crate) const REGION: &str = "us-east-1";

/// The owner S3 answers name (ListBuckets, listings with `fetch-owner`): one operator
/// owns every bucket of a cluster.
pub(crate) fn owner() -> Owner {
    Owner {
        display_name: Some("cairn".into()),
        id: Some("cairn".into()),
    }
}

/// A catalog time (ms since the epoch) as an S3 timestamp, truncated to the second as HTTP
/// dates are, so conditional requests compare what clients saw.
pub(crate) fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_secs(ms / 1000))
}

/// A stored ETag (quoted) as s3s's type (which adds the quotes back).
pub(crate) fn etag(stored: &str) -> ETag {
    ETag::Strong(stored.trim_matches('"').to_string())
}

/// The stored form of an ETag: quoted.
pub(crate) fn quoted(hex: &str) -> String {
    format!("\"{hex}\"")
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an upload stores besides its bytes.
pub(crate) struct ObjectMeta {
    /// HTTP metadata.
    pub(crate) headers: ObjectHeaders,
    /// The object's canned ACL.
    pub(crate) acl: CannedAcl,
    /// The verified full-object checksum the client sent, if any.
    pub(crate) checksum: Option<ObjectChecksum>,
}

/// The `Expires` header of a request, as sent (S3 keeps it and answers it back verbatim).
pub(crate) fn expires_header(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::EXPIRES)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The headers a stored object answers with besides those s3s writes from its output:
/// `Expires`, as it was sent.
pub(crate) fn stored_headers(object: &ObjectRecord) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Some(value) = object
        .headers
        .expires
        .as_deref()
        .and_then(|v| http::HeaderValue::from_str(v).ok())
    {
        headers.insert(http::header::EXPIRES, value);
    }
    headers
}

/// Object headers from an upload's fields. `aws-chunked` describes the request's framing,
/// not the object, so it is not kept.
pub(crate) fn object_headers(
    content_type: Option<String>,
    content_encoding: Option<String>,
    cache_control: Option<String>,
    metadata: Option<Metadata>,
    expires: Option<String>,
) -> ObjectHeaders {
    let content_encoding = content_encoding.and_then(|value| {
        let kept: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("aws-chunked"))
            .collect();
        (!kept.is_empty()).then(|| kept.join(", "))
    });
    let mut user_metadata: Vec<(String, String)> =
        metadata.unwrap_or_default().into_iter().collect();
    // Keys arrive in a hash map; sorted, every member stores them alike.
    user_metadata.sort();
    ObjectHeaders {
        content_type,
        content_encoding,
        cache_control,
        user_metadata,
        expires,
    }
}

/// `x-amz-meta-*` of a stored object.
pub(crate) fn metadata(object: &ObjectRecord) -> Option<Metadata> {
    let meta = &object.headers.user_metadata;
    (!meta.is_empty()).then(|| meta.iter().cloned().collect())
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.op_list_buckets(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.op_create_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.op_head_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.op_delete_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.op_get_bucket_location(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.op_put_object(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.op_get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.op_head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.op_delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.op_delete_objects(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.op_copy_object(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.op_list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.op_list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.op_create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.op_upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.op_complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.op_abort_multipart_upload(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.op_list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.op_list_multipart_uploads(req).await
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        self.op_put_bucket_acl(req).await
    }

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        self.op_get_bucket_acl(req).await
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        self.op_put_object_acl(req).await
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        self.op_get_object_acl(req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        self.op_get_object_attributes(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.op_upload_part_copy(req).await
    }
}
