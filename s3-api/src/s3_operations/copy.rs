//! CopyObject and UploadPartCopy: the source is read through the verified read path and
//! written anew, so the copy has its own shards (a later delete of either never touches
//! the other's).

use std::ops::Range;

use cairn_client::gateway_rpc::{NewBody, ObjectRead};
use cairn_client::records::ObjectRecord;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::checksums::BodyChecks;
use crate::data_path::{read_range, write_body};
use crate::errors::{from_call, from_write};
use crate::s3_operations::acl::requested_acl;
use crate::s3_operations::put::Policy;
use crate::service::{
    Gateway, ObjectMeta, etag, expires_header, object_headers, quoted, timestamp,
};

/// What `x-amz-copy-source-range` must look like, in S3's words.
const RANGE_FORM: &str = "The x-amz-copy-source-range value must be of the form \
    bytes=first-last where first and last are the zero-based offsets of the first and \
    last bytes to copy";

/// The bytes of a `size`-byte source that `x-amz-copy-source-range` names (all of it
/// without one). Unlike a GET's `Range`, S3 takes only `bytes=first-last` here, both
/// given, and refuses a range reaching past the source instead of shortening it.
fn copy_range(header: Option<&str>, size: u64) -> S3Result<Range<u64>> {
    let Some(header) = header else {
        return Ok(0..size);
    };
    let malformed = || S3Error::with_message(S3ErrorCode::InvalidArgument, RANGE_FORM);
    let offset = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    let (first, last) = header
        .trim()
        .strip_prefix("bytes=")
        .and_then(|range| range.split_once('-'))
        .and_then(|(first, last)| Some((offset(first)?, offset(last)?)))
        .ok_or_else(malformed)?;
    if first > last || last >= size {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRange,
            format!(
                "The requested range bytes={first}-{last} is not satisfiable for a {size}-byte source"
            ),
        ));
    }
    Ok(first..last + 1)
}

/// The `x-amz-copy-source-if-*` conditions against the source, as S3 evaluates them for a
/// copy: a failed one answers 412. A matching `if-match` makes `if-unmodified-since`
/// moot, and a non-matching `if-none-match` makes `if-modified-since` moot.
fn check_copy_conditions(
    source: &ObjectRecord,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let current = etag(&source.etag);
    let modified = timestamp(source.last_modified_ms);
    let matches = |condition: &ETagCondition| match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => tag.value() == current.value(),
    };
    let failed = |header: &str| {
        S3Error::with_message(
            S3ErrorCode::PreconditionFailed,
            format!("the copy source does not meet {header}"),
        )
    };
    match (if_match, if_unmodified_since) {
        (Some(condition), _) if !matches(condition) => {
            return Err(failed("x-amz-copy-source-if-match"));
        }
        (None, Some(since)) if modified > *since => {
            return Err(failed("x-amz-copy-source-if-unmodified-since"));
        }
        _ => {}
    }
    match (if_none_match, if_modified_since) {
        (Some(condition), _) if matches(condition) => {
            Err(failed("x-amz-copy-source-if-none-match"))
        }
        (None, Some(since)) if modified <= *since => {
            Err(failed("x-amz-copy-source-if-modified-since"))
        }
        _ => Ok(()),
    }
}

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
        // A copy gets the ACL its request names (private without one), never the source's.
        let acl = requested_acl(&req.headers, input.acl.as_ref().map(|a| a.as_str()))?
            .unwrap_or_default();
        let target = self.bucket(&input.bucket).await?;
        let read = self
            .path
            .coordinator
            .read(&source_bucket, &source_key, Some(0..u64::MAX))
            .await
            .map_err(from_call)?;
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
                expires_header(&req.headers),
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
        // The copy is a new object of one part, as S3 makes it even of a multipart source:
        // its ETag is its MD5, it has no part boundaries, and a source's checksum becomes
        // a full-object one of the same algorithm (a composite one described the source's
        // parts), computed from the bytes as they are copied.
        let mut checks = BodyChecks::new(&http::HeaderMap::new(), None, None)?;
        if let Some(kept) = &source.checksum {
            checks.require(kept.algorithm)?;
        }
        let written = write_body(
            &self.path,
            &target,
            Box::pin(stream),
            |chunk| {
                checks.update(chunk);
                policy.update(chunk)
            },
            false,
        )
        .await
        .map_err(from_write)?;
        policy.finish(&input.key)?;
        let (tag, checksum) = checks.finish_with_checksum()?;
        let modified = std::time::SystemTime::now();
        let mut result = CopyObjectResult {
            e_tag: Some(etag(&tag)),
            last_modified: Some(Timestamp::from(modified)),
            ..Default::default()
        };
        crate::checksums::put_checksum!(result, checksum.as_ref());
        if checksum.is_some() {
            result.checksum_type = Some(ChecksumType::from_static(ChecksumType::FULL_OBJECT));
        }
        let meta = ObjectMeta {
            headers,
            acl,
            checksum,
        };
        self.commit_object(input.bucket, input.key, written, &tag, meta, None)
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(result),
            ..Default::default()
        }))
    }
}

impl Gateway {
    /// The copy source named by `x-amz-copy-source` (already percent-decoded by s3s):
    /// its bucket, key and read orders.
    async fn copy_source(&self, source: &CopySource) -> S3Result<(String, String, ObjectRead)> {
        let CopySource::Bucket {
            bucket,
            key,
            version_id: None,
        } = source
        else {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "only plain bucket/key copy sources (no versions, no access points)",
            ));
        };
        let read = self
            .path
            .coordinator
            .read(bucket, key, Some(0..u64::MAX))
            .await
            .map_err(from_call)?;
        Ok((bucket.to_string(), key.to_string(), read))
    }

    pub(crate) async fn op_upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let number = u32::try_from(input.part_number)
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                S3Error::with_message(S3ErrorCode::InvalidArgument, "part numbers are 1 to 10000")
            })?;
        let upload = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let (source_bucket, source_key, read) = self.copy_source(&input.copy_source).await?;
        let source = read.object.clone();
        check_copy_conditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )?;
        let range = copy_range(input.copy_source_range.as_deref(), source.size)?;
        let mut bucket = self.bucket(&input.bucket).await?;
        // Parts use the code the upload started with, even if the bucket changed since.
        bucket.erasure = upload.erasure;
        let stream = read_range(
            self.path.clone(),
            source_bucket,
            source_key,
            read,
            range,
            self.reporter(),
        );
        // A part of an upload created with a checksum algorithm gets its checksum, as an
        // uploaded part does; the MD5 (the part's ETag) is computed in any case.
        let mut checks = BodyChecks::new(&http::HeaderMap::new(), None, None)?;
        if let Some(wanted) = upload.checksum {
            checks.require(wanted.algorithm)?;
        }
        let written = write_body(
            &self.path,
            &bucket,
            Box::pin(stream),
            |chunk| {
                checks.update(chunk);
                Ok(())
            },
            true,
        )
        .await
        .map_err(from_write)?;
        let (tag, checksum) = checks.finish_with_checksum()?;
        self.metrics.bytes_in.inc_by(written.size);
        let segments = match written.body {
            NewBody::Segments(segments) => segments,
            NewBody::Inline(_) => Vec::new(),
        };
        let modified = std::time::SystemTime::now();
        self.path
            .coordinator
            .put_part(
                &input.upload_id,
                number,
                written.size,
                quoted(&tag),
                segments,
                checksum.clone(),
            )
            .await
            .map_err(from_call)?;
        let mut result = CopyPartResult {
            e_tag: Some(etag(&tag)),
            last_modified: Some(Timestamp::from(modified)),
            ..Default::default()
        };
        crate::checksums::put_checksum!(result, checksum.as_ref());
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(result),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges_are_read_as_s3_reads_them() {
        assert_eq!(copy_range(None, 10).unwrap(), 0..10);
        assert_eq!(copy_range(Some("bytes=0-9"), 10).unwrap(), 0..10);
        assert_eq!(copy_range(Some("bytes=3-3"), 10).unwrap(), 3..4);
        for malformed in [
            "x",
            "bytes=0",
            "bytes=hello-world",
            "bytes=0-bar",
            "bytes=hello-",
            "bytes=0-2,3-5",
            "bytes=-5",
            "bytes=+1-2",
            "0-2",
        ] {
            let err = copy_range(Some(malformed), 10).unwrap_err();
            assert_eq!(*err.code(), S3ErrorCode::InvalidArgument, "{malformed}");
        }
        for unsatisfiable in ["bytes=0-10", "bytes=5-4", "bytes=10-12"] {
            let err = copy_range(Some(unsatisfiable), 10).unwrap_err();
            assert_eq!(*err.code(), S3ErrorCode::InvalidRange, "{unsatisfiable}");
        }
        assert_eq!(
            *copy_range(Some("bytes=0-0"), 0).unwrap_err().code(),
            S3ErrorCode::InvalidRange
        );
    }
}
