//! Multipart uploads: create (optionally with a checksum algorithm and type), upload parts
//! (always stored as segments, each with its verified checksum), complete (the gateway
//! checks the part and whole-object checksums the client lists and derives the object's
//! composite or full-object checksum from the parts'; the coordinator checks part order,
//! sizes and ETags and assembles the object in one commit; a NAR in a nix-cache bucket is
//! first read back and checked against its name), abort, and the two listings.

use cairn_client::records::{
    BucketMode, ObjectChecksum, ObjectVersion, PartRecord, UploadEntry, UploadQuery, UploadRecord,
};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::checksums::{BodyChecks, given_checksums, put_checksum};
use crate::data_path::write_body;
use crate::errors::{from_call, from_write};
use crate::nix::nar::{ObjectKind, classify_key};
use crate::request::upload_body;
use crate::s3_operations::acl::requested_acl;
use crate::s3_operations::list::{encode, wants_url};
use crate::s3_operations::put::{Policy, nix_refusal};
use crate::service::{Gateway, etag, expires_header, hex, object_headers, quoted, timestamp};

/// Most parts or uploads one listing page returns.
const MAX_PAGE: i32 = 1000;

impl Gateway {
    /// The upload, checked to belong to `bucket`/`key`.
    pub(crate) async fn upload(&self, bucket: &str, key: &str, id: &str) -> S3Result<UploadRecord> {
        let upload = self.path.coordinator.upload(id).await.map_err(from_call)?;
        if upload.bucket != bucket || upload.key != key {
            return Err(S3Error::with_message(
                S3ErrorCode::NoSuchUpload,
                format!("no upload {id} for {bucket}/{key}"),
            ));
        }
        Ok(upload)
    }

    pub(crate) async fn op_create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let acl = requested_acl(&req.headers, input.acl.as_ref().map(|a| a.as_str()))?
            .unwrap_or_default();
        let bucket = self.bucket(&input.bucket).await?;
        if matches!(bucket.mode, BucketMode::NixCache { .. }) {
            // A narinfo's signature is checked before anything is stored, which a multipart
            // upload cannot offer; NARs are checked when the upload completes.
            let kind = classify_key(&input.key).map_err(|err| {
                S3Error::with_message(S3ErrorCode::AccessDenied, format!("nix-cache: {err}"))
            })?;
            if matches!(kind, ObjectKind::NarInfo { .. }) {
                return Err(S3Error::with_message(
                    S3ErrorCode::AccessDenied,
                    "nix-cache: narinfos must be uploaded in one PUT so their signatures can be checked",
                ));
            }
        }
        let checksum = crate::checksums::upload_checksum(
            input.checksum_algorithm.as_ref().map(|a| a.as_str()),
            input.checksum_type.as_ref().map(|t| t.as_str()),
        )?;
        let headers = object_headers(
            input.content_type,
            input.content_encoding,
            input.cache_control,
            input.metadata,
            expires_header(&req.headers),
        );
        let id = self
            .path
            .coordinator
            .create_upload(&input.bucket, &input.key, headers, acl, checksum)
            .await
            .map_err(from_call)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            checksum_algorithm: checksum.map(|c| {
                ChecksumAlgorithm::from_static(crate::checksums::algorithm_name(c.algorithm))
            }),
            checksum_type: checksum
                .map(|c| ChecksumType::from_static(crate::checksums::type_name(c.kind))),
            ..Default::default()
        }))
    }

    pub(crate) async fn op_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let mut checks = BodyChecks::new(
            &req.headers,
            req.trailing_headers,
            input.content_md5.as_deref(),
        )?;
        let number = u32::try_from(input.part_number)
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                S3Error::with_message(S3ErrorCode::InvalidArgument, "part numbers are 1 to 10000")
            })?;
        let upload = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        if let Some(wanted) = upload.checksum {
            checks.require(wanted.algorithm)?;
        }
        let mut bucket = self.bucket(&input.bucket).await?;
        // Parts use the code the upload started with, even if the bucket changed since.
        bucket.erasure = upload.erasure;
        let written = write_body(
            &self.path,
            &bucket,
            upload_body(&req.extensions, input.body),
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
            cairn_client::gateway_rpc::NewBody::Segments(segments) => segments,
            cairn_client::gateway_rpc::NewBody::Inline(_) => Vec::new(),
        };
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
        let mut out = UploadPartOutput {
            e_tag: Some(etag(&tag)),
            ..Default::default()
        };
        put_checksum!(out, checksum.as_ref());
        Ok(S3Response::new(out))
    }

    pub(crate) async fn op_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let upload = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let listed = input
            .multipart_upload
            .as_ref()
            .and_then(|m| m.parts.clone())
            .unwrap_or_default();
        let mut parts = Vec::with_capacity(listed.len());
        let mut sent = Vec::with_capacity(listed.len());
        for part in listed {
            sent.push(given_checksums!(part));
            let number = part
                .part_number
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| s3s::s3_error!(InvalidPart, "a part without a valid number"))?;
            let tag = part
                .e_tag
                .map(|t| quoted(t.value()))
                .ok_or_else(|| s3s::s3_error!(InvalidPart, "part {number} has no ETag"))?;
            parts.push((number, tag));
        }
        let checksum = self
            .completion_checksum(&input, &upload, &parts, &sent)
            .await?;
        let condition = crate::s3_operations::put::write_condition(&req.headers)?;
        let bucket = self.bucket(&input.bucket).await?;
        let verified = match Policy::for_key(&bucket, &input.key)? {
            Policy::Nar(verifier) => {
                self.verify_parts(
                    &input.bucket,
                    &input.key,
                    &input.upload_id,
                    &parts,
                    *verifier,
                )
                .await?
            }
            _ => Vec::new(),
        };
        let tag = self
            .path
            .coordinator
            .complete_upload(
                &input.upload_id,
                parts,
                verified,
                checksum.clone(),
                condition,
            )
            .await
            .map_err(from_call)?;
        let mut out = CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&tag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            checksum_type: checksum
                .as_ref()
                .and_then(|c| crate::checksums::as_dto(c).checksum_type),
            ..Default::default()
        };
        put_checksum!(out, checksum.as_ref());
        Ok(S3Response::new(out))
    }

    /// Checks the checksums a CompleteMultipartUpload carries against the stored parts'
    /// (each listed part's, and the whole object's in the request's headers) and returns the
    /// object's checksum, derived from the listed parts' as the upload's checksum type says
    /// (for an upload created without an algorithm: a FULL_OBJECT CRC when every part
    /// carries one of the same algorithm). A part checksum that differs from the stored one
    /// answers InvalidPart, a whole-object one BadDigest, as S3 does; a part that is missing
    /// or has another ETag is left for the coordinator to refuse.
    async fn completion_checksum(
        &self,
        input: &CompleteMultipartUploadInput,
        upload: &UploadRecord,
        parts: &[(u32, String)],
        sent: &[Vec<ObjectChecksum>],
    ) -> S3Result<Option<ObjectChecksum>> {
        let whole = given_checksums!(input);
        if let (Some(asked), Some(created)) = (&input.checksum_type, upload.checksum)
            && !asked
                .as_str()
                .eq_ignore_ascii_case(crate::checksums::type_name(created.kind))
        {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!(
                    "The upload was created using the {} checksum mode. The complete request \
                     must use the same checksum mode.",
                    crate::checksums::type_name(created.kind)
                ),
            ));
        }
        let stored = self.stored_parts(&input.upload_id).await?;
        let mut listed = Vec::with_capacity(parts.len());
        for ((number, _), given) in parts.iter().zip(sent) {
            let Some(part) = stored.get(number) else {
                return Ok(None);
            };
            for checksum in given {
                if part.checksum.as_ref() != Some(checksum) {
                    return Err(S3Error::with_message(
                        S3ErrorCode::InvalidPart,
                        format!(
                            "One or more of the specified parts could not be found: part \
                             {number} does not have {} {}",
                            crate::checksums::algorithm_name(checksum.algorithm),
                            checksum.value
                        ),
                    ));
                }
            }
            listed.push((part.size, part.checksum.as_ref()));
        }
        if let Some(size) = input.mpu_object_size {
            let total: u64 = listed.iter().map(|(size, _)| size).sum();
            if u64::try_from(size).ok() != Some(total) {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidRequest,
                    format!(
                        "The provided 'x-amz-mp-object-size' header value {size} does not match \
                         what was computed: {total}"
                    ),
                ));
            }
        }
        let checksum = match upload.checksum {
            Some(created) => crate::checksums::multipart_checksum(created, &listed)?,
            None => crate::checksums::derived_checksum(&listed)?,
        };
        // Parts stored before Cairn kept part checksums leave an upload created with an
        // algorithm without an object checksum. A whole-object checksum of that algorithm
        // cannot be checked then; storing the object as if it had been would tell the
        // client its bytes were verified. The part is what lacks, so the part is named.
        if let Some(created) = upload.checksum
            && checksum.is_none()
            && whole.iter().any(|c| c.algorithm == created.algorithm)
            && let Some(((number, _), _)) = parts
                .iter()
                .zip(&listed)
                .find(|(_, (_, c))| !c.is_some_and(|c| c.algorithm == created.algorithm))
        {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidPart,
                format!(
                    "part {number} was stored without a {algorithm} checksum (before Cairn \
                     kept part checksums), so the object's {algorithm} cannot be checked; \
                     upload part {number} again, or complete without x-amz-checksum-{lower}",
                    algorithm = crate::checksums::algorithm_name(created.algorithm),
                    lower =
                        crate::checksums::algorithm_name(created.algorithm).to_ascii_lowercase(),
                ),
            ));
        }
        for expected in &whole {
            let matches = checksum.as_ref().is_some_and(|c| {
                c.algorithm == expected.algorithm
                    && (c.value == expected.value
                        || c.value
                            .strip_prefix(expected.value.as_str())
                            .is_some_and(|rest| rest.starts_with('-')))
            });
            if matches {
                continue;
            }
            if checksum
                .as_ref()
                .is_some_and(|c| c.algorithm == expected.algorithm)
            {
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    format!(
                        "The {} you specified did not match the calculated checksum.",
                        crate::checksums::algorithm_name(expected.algorithm)
                    ),
                ));
            }
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!(
                    "The upload was not created with the {} checksum algorithm",
                    crate::checksums::algorithm_name(expected.algorithm)
                ),
            ));
        }
        Ok(checksum)
    }

    /// Every stored part of an upload, by number, read page by page.
    async fn stored_parts(
        &self,
        upload: &str,
    ) -> S3Result<std::collections::BTreeMap<u32, PartRecord>> {
        let mut all = std::collections::BTreeMap::new();
        let mut after = 0;
        loop {
            let page = self
                .path
                .coordinator
                .list_parts(upload, after, MAX_PAGE as u32)
                .await
                .map_err(from_call)?;
            let full = page.len() >= MAX_PAGE as usize;
            for (number, part) in page {
                after = after.max(number);
                all.insert(number, part);
            }
            if !full {
                return Ok(all);
            }
        }
    }

    /// Reads the listed parts back, in order, through the verifying data path and checks
    /// that together they hash to the NAR's name: nothing becomes visible in a nix-cache
    /// bucket unchecked, however it was uploaded. Each part must still be the one listed
    /// (its ETag, and the MD5 of the bytes read, match), so completing what was checked is
    /// what the coordinator assembles; the versions read are returned, and the coordinator
    /// completes only from those very parts.
    async fn verify_parts(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        parts: &[(u32, String)],
        mut verifier: crate::nix::nar::NarVerifier,
    ) -> S3Result<Vec<(u32, ObjectVersion)>> {
        use futures_util::StreamExt;
        let mut checked = Vec::with_capacity(parts.len());
        for (number, tag) in parts {
            let read = self
                .path
                .coordinator
                .read_part(upload, *number)
                .await
                .map_err(from_call)?;
            if read.object.etag != *tag {
                return Err(s3s::s3_error!(
                    InvalidPart,
                    "part {number} has ETag {}, not {tag}",
                    read.object.etag
                ));
            }
            checked.push((*number, read.object.version()));
            let size = read.object.size;
            let mut md5 = Md5::new();
            if size > 0 {
                let mut stream = Box::pin(crate::data_path::read_range(
                    self.path.clone(),
                    bucket.to_string(),
                    key.to_string(),
                    read,
                    0..size,
                    self.reporter(),
                ));
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|err| {
                        S3Error::with_message(
                            S3ErrorCode::InternalError,
                            format!("reading part {number} back to check it: {err}"),
                        )
                    })?;
                    md5.update(&chunk);
                    verifier.update(&chunk).map_err(nix_refusal)?;
                }
            }
            if quoted(&hex(&md5.finalize())) != *tag {
                return Err(s3s::s3_error!(
                    InvalidPart,
                    "part {number} changed while the upload was being completed"
                ));
            }
        }
        verifier.finish().map_err(nix_refusal)?;
        Ok(checked)
    }

    pub(crate) async fn op_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        self.path
            .coordinator
            .abort_upload(&input.upload_id)
            .await
            .map_err(from_call)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(crate) async fn op_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let upload = self
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        let max = input.max_parts.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE);
        let after = input
            .part_number_marker
            .map_or(0, |m| u32::try_from(m).unwrap_or(0));
        // One more than asked tells whether the page is the last.
        let parts = self
            .path
            .coordinator
            .list_parts(&input.upload_id, after, max as u32 + 1)
            .await
            .map_err(from_call)?;
        let truncated = parts.len() > max as usize;
        let page: Vec<_> = parts.into_iter().take(max as usize).collect();
        let next = page.last().map(|(n, _)| *n as i32);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max),
            is_truncated: Some(truncated),
            next_part_number_marker: next,
            parts: Some(
                page.into_iter()
                    .map(|(number, part)| {
                        let mut listed = Part {
                            part_number: Some(number as i32),
                            e_tag: Some(etag(&part.etag)),
                            size: Some(part.size as i64),
                            last_modified: Some(timestamp(part.last_modified_ms)),
                            ..Default::default()
                        };
                        put_checksum!(listed, part.checksum.as_ref());
                        listed
                    })
                    .collect(),
            ),
            checksum_algorithm: upload.checksum.map(|c| {
                ChecksumAlgorithm::from_static(crate::checksums::algorithm_name(c.algorithm))
            }),
            checksum_type: upload
                .checksum
                .map(|c| ChecksumType::from_static(crate::checksums::type_name(c.kind))),
            ..Default::default()
        }))
    }

    pub(crate) async fn op_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let url = wants_url(input.encoding_type.as_ref());
        let max = input.max_uploads.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE);
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        // The coordinator reads the page from its index, from the markers on, and rolls
        // keys up at the delimiter (a common prefix counts as one entry of the page).
        let page = self
            .path
            .coordinator
            .list_uploads(
                &input.bucket,
                UploadQuery {
                    prefix: prefix.clone(),
                    delimiter: delimiter.clone(),
                    key_marker: input.key_marker.clone().filter(|k| !k.is_empty()),
                    upload_id_marker: input.upload_id_marker.clone().filter(|u| !u.is_empty()),
                    max: u32::try_from(max).unwrap_or(0),
                },
            )
            .await
            .map_err(from_call)?;
        let truncated = page.truncated;
        let entries = page.entries;
        let (next_key, next_id) = match entries.last() {
            Some(UploadEntry::Upload(id, u)) if truncated => {
                (Some(u.key.clone()), Some(id.clone()))
            }
            Some(UploadEntry::Prefix(common)) if truncated => (Some(common.clone()), None),
            _ => (None, None),
        };
        let mut listed = Vec::new();
        let mut common_prefixes = Vec::new();
        for entry in entries {
            match entry {
                UploadEntry::Upload(id, u) => listed.push(MultipartUpload {
                    key: Some(encode(&u.key, url)),
                    upload_id: Some(id),
                    initiated: Some(timestamp(u.initiated_ms)),
                    ..Default::default()
                }),
                UploadEntry::Prefix(common) => common_prefixes.push(CommonPrefix {
                    prefix: Some(encode(&common, url)),
                }),
            }
        }
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix.map(|p| encode(&p, url)),
            delimiter: delimiter.map(|d| encode(&d, url)),
            key_marker: input.key_marker.map(|k| encode(&k, url)),
            upload_id_marker: input.upload_id_marker,
            next_key_marker: next_key.map(|k| encode(&k, url)),
            next_upload_id_marker: next_id,
            max_uploads: Some(max),
            is_truncated: Some(truncated),
            encoding_type: input.encoding_type,
            uploads: Some(listed),
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            ..Default::default()
        }))
    }
}
