//! PutObject: the upload path, with the checks a bucket's mode asks for.

use cairn_client::coordinator::CallError;
use cairn_client::gateway_rpc::RpcCode;
use cairn_client::records::WriteCondition;
use cairn_client::records::{Bucket, BucketMode};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::checksums::BodyChecks;
use crate::data_path::write_body;
use crate::errors::{from_call, from_write};
use crate::nix::keys::{TrustedKey, verify_narinfo};
use crate::nix::nar::{NarVerifier, ObjectKind, classify_key};
use crate::request::upload_body;
use crate::s3_operations::acl::requested_acl;
use crate::service::{Gateway, ObjectMeta, etag, expires_header, object_headers, quoted};

/// Largest narinfo accepted: real ones are 1–2 KiB; the bound keeps the buffer small.
const MAX_NARINFO: usize = 64 << 10;

/// What an upload's bytes must prove, by bucket mode and key.
pub(crate) enum Policy {
    /// Nothing beyond the MD5.
    Plain,
    /// A narinfo: buffered, then its signature checked.
    NarInfo {
        trusted: Vec<TrustedKey>,
        text: Vec<u8>,
    },
    /// A NAR: hashed as it streams.
    Nar(Box<NarVerifier>),
}

impl Policy {
    /// The policy for `key` in `bucket`; refuses keys a nix-cache bucket cannot check.
    pub(crate) fn for_key(bucket: &Bucket, key: &str) -> S3Result<Policy> {
        let BucketMode::NixCache { trusted_keys } = &bucket.mode else {
            return Ok(Policy::Plain);
        };
        match classify_key(key).map_err(nix_refusal)? {
            ObjectKind::Plain => Ok(Policy::Plain),
            ObjectKind::Nar { hash, compression } => {
                Ok(Policy::Nar(Box::new(NarVerifier::new(hash, compression))))
            }
            ObjectKind::NarInfo { .. } => {
                let trusted = trusted_keys
                    .iter()
                    .map(|k| TrustedKey::parse(k))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(nix_refusal)?;
                Ok(Policy::NarInfo {
                    trusted,
                    text: Vec::new(),
                })
            }
        }
    }

    /// Sees one chunk of the body.
    pub(crate) fn update(&mut self, chunk: &[u8]) -> Result<(), String> {
        match self {
            Policy::Plain => Ok(()),
            Policy::NarInfo { text, .. } => {
                if text.len() + chunk.len() > MAX_NARINFO {
                    return Err(format!(
                        "nix-cache: a narinfo is at most {MAX_NARINFO} bytes"
                    ));
                }
                text.extend_from_slice(chunk);
                Ok(())
            }
            Policy::Nar(verifier) => verifier
                .update(chunk)
                .map_err(|e| format!("nix-cache: {e}")),
        }
    }

    /// The verdict once the whole body has been seen.
    pub(crate) fn finish(self, key: &str) -> S3Result<()> {
        match self {
            Policy::Plain => Ok(()),
            Policy::NarInfo { trusted, text } => verify_narinfo(key, &text, &trusted)
                .map(|_| ())
                .map_err(nix_refusal),
            Policy::Nar(verifier) => verifier.finish().map(|_| ()).map_err(nix_refusal),
        }
    }
}

/// The condition of a conditional write, from `If-None-Match` (only `*`, as S3 allows on
/// writes) and `If-Match` (an ETag); both at once is refused.
pub(crate) fn write_condition(headers: &http::HeaderMap) -> S3Result<Option<WriteCondition>> {
    let text = |name: &str| -> S3Result<Option<String>> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map(|s| s.trim().to_string()).map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidArgument,
                        format!("{name} is not valid text"),
                    )
                })
            })
            .transpose()
    };
    match (text("if-none-match")?, text("if-match")?) {
        (None, None) => Ok(None),
        (Some(star), None) if star == "*" => Ok(Some(WriteCondition::Absent)),
        (Some(other), None) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!("If-None-Match on a write takes only *, not {other}"),
        )),
        (None, Some(etag)) => Ok(Some(WriteCondition::ETag(quoted(etag.trim_matches('"'))))),
        (Some(_), Some(_)) => Err(S3Error::with_message(
            S3ErrorCode::NotImplemented,
            "If-None-Match and If-Match together on one write",
        )),
    }
}

/// A failed Nix check: 403, with the check that failed in the message.
pub(crate) fn nix_refusal(err: crate::nix::NixCheckError) -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, format!("nix-cache: {err}"))
}

impl Gateway {
    pub(crate) async fn op_put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let condition = write_condition(&req.headers)?;
        let acl = requested_acl(&req.headers, input.acl.as_ref().map(|a| a.as_str()))?
            .unwrap_or_default();
        let mut checks = BodyChecks::new(
            &req.headers,
            req.trailing_headers,
            input.content_md5.as_deref(),
        )?;
        let bucket = self.bucket(&input.bucket).await?;
        if condition == Some(WriteCondition::Absent) {
            // Refused before the body is stored: a cache uploader sends If-None-Match: *
            // precisely to skip what exists. The commit checks again, atomically.
            let exists = match self
                .path
                .coordinator
                .object(&input.bucket, &input.key)
                .await
            {
                Ok(_) => true,
                Err(CallError::Refused {
                    code: RpcCode::NoSuchKey,
                    ..
                }) => false,
                Err(err) => return Err(from_call(err)),
            };
            if exists {
                return Err(S3Error::with_message(
                    S3ErrorCode::PreconditionFailed,
                    format!("{}/{} exists (If-None-Match: *)", input.bucket, input.key),
                ));
            }
        }
        let mut policy = Policy::for_key(&bucket, &input.key)?;
        let written = write_body(
            &self.path,
            &bucket,
            upload_body(&req.extensions, input.body),
            |chunk| {
                checks.update(chunk);
                policy.update(chunk)
            },
            false,
        )
        .await
        .map_err(from_write)?;
        let (tag, checksum) = checks.finish_with_checksum()?;
        policy.finish(&input.key)?;
        self.metrics.bytes_in.inc_by(written.size);
        let headers = object_headers(
            input.content_type,
            input.content_encoding,
            input.cache_control,
            input.metadata,
            expires_header(&req.headers),
        );
        let meta = ObjectMeta {
            headers,
            acl,
            checksum,
        };
        self.commit_object(input.bucket, input.key, written, &tag, meta, condition)
            .await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&tag)),
            ..Default::default()
        }))
    }
}
