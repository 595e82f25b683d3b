//! CopyObject: the source is read through the verified read path and written anew, so the
//! copy has its own shards (a later delete of either never touches the other's).

use cairn_coordinator::rpc::{GatewayRequest, GatewayResponse};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::errors::from_write;
use crate::ops::put::Policy;
use crate::service::{Gateway, etag, hex, object_headers, unexpected};
use crate::store::{read_range, write_body};

impl Gateway {
    pub(crate) async fn op_copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket {
            bucket: source_bucket,
            key: source_key,
            version_id: None,
        } = &input.copy_source
        else {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "only plain bucket/key copy sources (no versions, no access points)",
            ));
        };
        let (source_bucket, source_key) = (source_bucket.to_string(), source_key.to_string());
        let target = self.bucket(&input.bucket).await?;
        let read = match self
            .call(GatewayRequest::Read {
                bucket: source_bucket.clone(),
                key: source_key.clone(),
            })
            .await?
        {
            GatewayResponse::Read(Some(read)) => *read,
            GatewayResponse::Read(None) => {
                return Err(S3Error::with_message(
                    S3ErrorCode::NoSuchKey,
                    format!("no object {source_key} in {source_bucket}"),
                ));
            }
            other => return Err(unexpected(other)),
        };
        let source = read.object.clone();
        let current = etag(&source.etag);
        if let Some(ETagCondition::ETag(tag)) = &input.copy_source_if_match
            && tag.value() != current.value()
        {
            return Err(s3s::s3_error!(
                PreconditionFailed,
                "x-amz-copy-source-if-match"
            ));
        }
        if let Some(condition) = &input.copy_source_if_none_match {
            let matches = match condition {
                ETagCondition::Any => true,
                ETagCondition::ETag(tag) => tag.value() == current.value(),
            };
            if matches {
                return Err(s3s::s3_error!(
                    PreconditionFailed,
                    "x-amz-copy-source-if-none-match"
                ));
            }
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && source_bucket == input.bucket && source_key == input.key {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "copying an object onto itself needs x-amz-metadata-directive: REPLACE",
            ));
        }
        let headers = if replace {
            object_headers(
                input.content_type,
                input.content_encoding,
                input.cache_control,
                input.metadata,
            )
        } else {
            source.headers.clone()
        };
        // The target bucket's rules apply to the copy as to any upload.
        let mut policy = Policy::for_key(&target, &input.key)?;
        let stream = read_range(
            self.path.clone(),
            source_bucket,
            source_key,
            read,
            0..source.size,
            self.reporter(),
        );
        let mut md5 = Md5::new();
        let written = write_body(
            &self.path,
            &target,
            Box::pin(stream),
            |chunk| {
                md5.update(chunk);
                policy.update(chunk)
            },
            false,
        )
        .await
        .map_err(from_write)?;
        policy.finish(&input.key)?;
        // Multipart sources keep their ETag; single-part ones are their MD5 either way.
        let tag = if source.etag.contains('-') {
            source.etag.trim_matches('"').to_string()
        } else {
            hex(&md5.finalize())
        };
        let modified = std::time::SystemTime::now();
        self.commit_object(input.bucket, input.key, written, &tag, headers)
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&tag)),
                last_modified: Some(Timestamp::from(modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}
