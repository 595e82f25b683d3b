//! The checksums a client declares for an upload body: `Content-MD5`, `x-amz-checksum-*`
//! headers, or the same names announced in `x-amz-trailer` and sent after an aws-chunked
//! body. They are computed while the body streams and compared before anything is
//! committed, so a body damaged on the way is refused with `BadDigest` instead of stored.
//! The MD5 is computed in any case: it is the object's (or part's) ETag.

use base64::Engine as _;
use cairn_client::records::{ChecksumAlgorithm, ObjectChecksum};
use http::HeaderMap;
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::Checksum;
use s3s::{S3Error, S3ErrorCode, S3Result};

/// Checksum header names the gateway checks.
const NAMES: [&str; 5] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "x-amz-checksum-crc64nvme",
];

/// Running checksums of one upload body and what they must come to.
pub(crate) struct BodyChecks {
    md5: Md5,
    /// The `Content-MD5` the client sent, if any.
    expected_md5: Option<[u8; 16]>,
    /// Where the trailers arrive once the body is read to its end.
    trailers: Option<s3s::TrailingHeaders>,
    hasher: ChecksumHasher,
    /// Values given in headers, by name.
    declared: Vec<(&'static str, String)>,
    /// Names announced as trailers.
    trailed: Vec<&'static str>,
}

impl BodyChecks {
    /// The checks a request declares: `content_md5` (the header's value), the checksum
    /// headers and announced trailers in `headers` (none is fine: then only the MD5 is
    /// computed).
    pub(crate) fn new(
        headers: &HeaderMap,
        trailers: Option<s3s::TrailingHeaders>,
        content_md5: Option<&str>,
    ) -> S3Result<Self> {
        // s3s reads an empty `Content-MD5` as absent; S3 refuses it as a malformed digest,
        // so the header itself decides whether one was sent.
        let content_md5 = match headers.get("content-md5") {
            Some(value) => Some(value.to_str().map_err(|_| invalid_digest())?),
            None => content_md5,
        };
        let mut checks = BodyChecks {
            md5: Md5::new(),
            expected_md5: parse_content_md5(content_md5)?,
            trailers,
            hasher: ChecksumHasher::default(),
            declared: Vec::new(),
            trailed: Vec::new(),
        };
        for name in NAMES {
            if let Some(value) = headers.get(name) {
                let value = value.to_str().map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidArgument,
                        format!("{name} is not text"),
                    )
                })?;
                checks.enable(name);
                checks.declared.push((name, value.trim().to_string()));
            }
        }
        let announced = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_ascii_lowercase());
        for trailer in announced {
            match NAMES.iter().find(|name| **name == trailer) {
                Some(name) => {
                    checks.enable(name);
                    checks.trailed.push(name);
                }
                None if trailer.starts_with("x-amz-checksum-") => {
                    return Err(S3Error::with_message(
                        S3ErrorCode::InvalidArgument,
                        format!("unsupported checksum trailer {trailer}"),
                    ));
                }
                None => {}
            }
        }
        Ok(checks)
    }

    fn enable(&mut self, name: &str) {
        let h = &mut self.hasher;
        match name {
            "x-amz-checksum-crc32" => h.crc32 = Some(Crc32::default()),
            "x-amz-checksum-crc32c" => h.crc32c = Some(Crc32c::default()),
            "x-amz-checksum-sha1" => h.sha1 = Some(Sha1::default()),
            "x-amz-checksum-sha256" => h.sha256 = Some(Sha256::default()),
            "x-amz-checksum-crc64nvme" => h.crc64nvme = Some(Crc64Nvme::default()),
            _ => {}
        }
    }

    /// Feeds the next chunk of the body.
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.md5.update(chunk);
        self.hasher.update(chunk);
    }

    /// Compares what was computed with the declared values and the trailers (available
    /// once the body was read to its end); returns the body's MD5 in hex (its ETag).
    pub(crate) fn finish(self) -> S3Result<String> {
        self.finish_with_checksum().map(|(md5, _)| md5)
    }

    /// [`BodyChecks::finish`], and the full-object checksum the client sent, now verified
    /// (the first one, if it sent several), for the object to keep.
    pub(crate) fn finish_with_checksum(self) -> S3Result<(String, Option<ObjectChecksum>)> {
        let digest = self.md5.finalize();
        if let Some(expected) = self.expected_md5
            && expected.as_slice() != digest.as_slice()
        {
            return Err(S3Error::with_message(
                S3ErrorCode::BadDigest,
                "the body does not match Content-MD5",
            ));
        }
        let trailers = self.trailers.as_ref();
        let computed = self.hasher.finalize();
        let value = |name: &str| computed_value(&computed, name);
        for (name, declared) in &self.declared {
            if value(name).as_deref() != Some(declared.as_str()) {
                return Err(mismatch(name));
            }
        }
        for name in &self.trailed {
            let sent = trailers
                .and_then(|t| {
                    t.read(|h| {
                        h.get(*name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    })
                })
                .flatten()
                .ok_or_else(|| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidRequest,
                        format!("the announced trailer {name} did not arrive"),
                    )
                })?;
            if value(name).as_deref() != Some(sent.trim()) {
                return Err(mismatch(name));
            }
        }
        let kept = self
            .declared
            .iter()
            .map(|(name, _)| *name)
            .chain(self.trailed.iter().copied())
            .find_map(|name| {
                Some(ObjectChecksum {
                    algorithm: algorithm(name)?,
                    value: value(name)?,
                })
            });
        Ok((crate::service::hex(&digest), kept))
    }
}

/// A `Content-MD5` header's digest.
fn parse_content_md5(header: Option<&str>) -> S3Result<Option<[u8; 16]>> {
    let Some(header) = header else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or_else(invalid_digest)?;
    Ok(Some(bytes))
}

fn invalid_digest() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::InvalidDigest,
        "The Content-MD5 you specified was invalid: it is not the base64 of 16 bytes.",
    )
}

fn computed_value(computed: &Checksum, name: &str) -> Option<String> {
    match name {
        "x-amz-checksum-crc32" => computed.checksum_crc32.clone(),
        "x-amz-checksum-crc32c" => computed.checksum_crc32c.clone(),
        "x-amz-checksum-sha1" => computed.checksum_sha1.clone(),
        "x-amz-checksum-sha256" => computed.checksum_sha256.clone(),
        "x-amz-checksum-crc64nvme" => computed.checksum_crc64nvme.clone(),
        _ => None,
    }
}

/// The algorithm a checksum header names.
fn algorithm(name: &str) -> Option<ChecksumAlgorithm> {
    Some(match name {
        "x-amz-checksum-crc32" => ChecksumAlgorithm::Crc32,
        "x-amz-checksum-crc32c" => ChecksumAlgorithm::Crc32c,
        "x-amz-checksum-sha1" => ChecksumAlgorithm::Sha1,
        "x-amz-checksum-sha256" => ChecksumAlgorithm::Sha256,
        "x-amz-checksum-crc64nvme" => ChecksumAlgorithm::Crc64Nvme,
        _ => return None,
    })
}

/// A stored checksum as s3s's `Checksum` (S3's `FULL_OBJECT` type): how GET, HEAD and
/// GetObjectAttributes answer it.
pub(crate) fn as_dto(stored: &ObjectChecksum) -> Checksum {
    let value = Some(stored.value.clone());
    let mut out = Checksum {
        checksum_type: Some(s3s::dto::ChecksumType::from_static(
            s3s::dto::ChecksumType::FULL_OBJECT,
        )),
        ..Default::default()
    };
    match stored.algorithm {
        ChecksumAlgorithm::Crc32 => out.checksum_crc32 = value,
        ChecksumAlgorithm::Crc32c => out.checksum_crc32c = value,
        ChecksumAlgorithm::Crc64Nvme => out.checksum_crc64nvme = value,
        ChecksumAlgorithm::Sha1 => out.checksum_sha1 = value,
        ChecksumAlgorithm::Sha256 => out.checksum_sha256 = value,
    }
    out
}

fn mismatch(name: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::BadDigest,
        format!("the body does not match {name}"),
    )
}
