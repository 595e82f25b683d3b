//! The checksums a client declares for an upload body: `Content-MD5`, `x-amz-checksum-*`
//! headers, or the same names announced in `x-amz-trailer` and sent after an aws-chunked
//! body. They are computed while the body streams and compared before anything is
//! committed, so a body damaged on the way is refused with `BadDigest` instead of stored.
//! The MD5 is computed in any case: it is the object's (or part's) ETag.

use base64::Engine as _;
use cairn_client::records::{ChecksumAlgorithm, ChecksumType, ObjectChecksum, UploadChecksum};
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
    /// The checksum header an upload's parts must have (computed when the client sent none).
    required: Option<&'static str>,
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
            required: None,
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

    /// Makes `algorithm` the checksum this body is kept with (a part of an upload created
    /// with it): computed even if the client sent none. A checksum of another algorithm is
    /// refused as S3 refuses it.
    pub(crate) fn require(&mut self, algorithm: ChecksumAlgorithm) -> S3Result<()> {
        let wanted = header_name(algorithm);
        if let Some(other) = self
            .declared
            .iter()
            .map(|(name, _)| *name)
            .chain(self.trailed.iter().copied())
            .find(|name| *name != wanted)
        {
            let short = |name: &str| name.trim_start_matches("x-amz-checksum-").to_string();
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!(
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                    short(wanted),
                    short(other)
                ),
            ));
        }
        self.enable(wanted);
        self.required = Some(wanted);
        Ok(())
    }

    /// Feeds the next chunk of the body.
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.md5.update(chunk);
        self.hasher.update(chunk);
    }

    /// Compares what was computed with the declared values and the trailers (available
    /// once the body was read to its end); returns the body's MD5 in hex (its ETag) and the
    /// checksum to keep: of the required algorithm if there is one, else the first one the
    /// client sent, now verified.
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
            .required
            .into_iter()
            .chain(self.declared.iter().map(|(name, _)| *name))
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

/// The checksum header of an algorithm.
fn header_name(algorithm: ChecksumAlgorithm) -> &'static str {
    match algorithm {
        ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
        ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
        ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
        ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
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

/// Sets the `checksum_<algorithm>` field of an s3s structure (one field per algorithm)
/// from an `Option<&ObjectChecksum>`.
macro_rules! put_checksum {
    ($out:expr, $checksum:expr) => {
        if let Some(c) = $checksum {
            let value = Some(c.value.clone());
            match c.algorithm {
                cairn_client::records::ChecksumAlgorithm::Crc32 => $out.checksum_crc32 = value,
                cairn_client::records::ChecksumAlgorithm::Crc32c => $out.checksum_crc32c = value,
                cairn_client::records::ChecksumAlgorithm::Crc64Nvme => {
                    $out.checksum_crc64nvme = value
                }
                cairn_client::records::ChecksumAlgorithm::Sha1 => $out.checksum_sha1 = value,
                cairn_client::records::ChecksumAlgorithm::Sha256 => $out.checksum_sha256 = value,
            }
        }
    };
}
pub(crate) use put_checksum;

/// The checksums in the `checksum_<algorithm>` fields of an s3s structure.
macro_rules! given_checksums {
    ($from:expr) => {
        $crate::checksums::given([
            (
                cairn_client::records::ChecksumAlgorithm::Crc32,
                $from.checksum_crc32.as_ref(),
            ),
            (
                cairn_client::records::ChecksumAlgorithm::Crc32c,
                $from.checksum_crc32c.as_ref(),
            ),
            (
                cairn_client::records::ChecksumAlgorithm::Crc64Nvme,
                $from.checksum_crc64nvme.as_ref(),
            ),
            (
                cairn_client::records::ChecksumAlgorithm::Sha1,
                $from.checksum_sha1.as_ref(),
            ),
            (
                cairn_client::records::ChecksumAlgorithm::Sha256,
                $from.checksum_sha256.as_ref(),
            ),
        ])
    };
}
pub(crate) use given_checksums;

/// A stored checksum as s3s's `Checksum`, typed `COMPOSITE` if it is a multipart object's
/// checksum of part checksums, else `FULL_OBJECT`: how GET, HEAD and GetObjectAttributes
/// answer it.
pub(crate) fn as_dto(stored: &ObjectChecksum) -> Checksum {
    let kind = if stored.is_composite() {
        s3s::dto::ChecksumType::COMPOSITE
    } else {
        s3s::dto::ChecksumType::FULL_OBJECT
    };
    let mut out = Checksum {
        checksum_type: Some(s3s::dto::ChecksumType::from_static(kind)),
        ..Default::default()
    };
    put_checksum!(out, Some(stored));
    out
}

/// The checksums an S3 structure carries one field per algorithm of (a part listed in
/// CompleteMultipartUpload, the request's own headers), as pairs.
pub(crate) fn given(fields: [(ChecksumAlgorithm, Option<&String>); 5]) -> Vec<ObjectChecksum> {
    fields
        .into_iter()
        .filter_map(|(algorithm, value)| {
            value.map(|v| ObjectChecksum {
                algorithm,
                value: v.trim().to_string(),
            })
        })
        .collect()
}

/// The checksum algorithm and type CreateMultipartUpload asks for (`x-amz-checksum-algorithm`,
/// `x-amz-checksum-type`), checked against the combinations S3 allows: COMPOSITE for
/// CRC32, CRC32C, SHA-1 and SHA-256 (the default for them), FULL_OBJECT for CRC32, CRC32C
/// and CRC64NVME (the only type, and default, for CRC64NVME).
pub(crate) fn upload_checksum(
    algorithm: Option<&str>,
    kind: Option<&str>,
) -> S3Result<Option<UploadChecksum>> {
    let invalid = |message: String| S3Error::with_message(S3ErrorCode::InvalidRequest, message);
    let Some(algorithm) = algorithm else {
        return match kind {
            Some(kind) => Err(invalid(format!(
                "x-amz-checksum-type {kind} needs x-amz-checksum-algorithm"
            ))),
            None => Ok(None),
        };
    };
    let algorithm = match algorithm.to_ascii_uppercase().as_str() {
        "CRC32" => ChecksumAlgorithm::Crc32,
        "CRC32C" => ChecksumAlgorithm::Crc32c,
        "CRC64NVME" => ChecksumAlgorithm::Crc64Nvme,
        "SHA1" => ChecksumAlgorithm::Sha1,
        "SHA256" => ChecksumAlgorithm::Sha256,
        other => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!("unsupported checksum algorithm {other}"),
            ));
        }
    };
    let kind = match (kind.map(str::to_ascii_uppercase).as_deref(), algorithm) {
        (None, ChecksumAlgorithm::Crc64Nvme) | (Some("FULL_OBJECT"), _) => ChecksumType::FullObject,
        (None | Some("COMPOSITE"), _) => ChecksumType::Composite,
        (Some(other), _) => {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                format!("unsupported checksum type {other}"),
            ));
        }
    };
    let allowed = match kind {
        ChecksumType::Composite => algorithm != ChecksumAlgorithm::Crc64Nvme,
        ChecksumType::FullObject => matches!(
            algorithm,
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c | ChecksumAlgorithm::Crc64Nvme
        ),
    };
    if !allowed {
        return Err(invalid(format!(
            "The {} checksum type cannot be used with the {} checksum algorithm.",
            type_name(kind),
            algorithm_name(algorithm).to_ascii_lowercase()
        )));
    }
    Ok(Some(UploadChecksum { algorithm, kind }))
}

/// S3's name of a checksum type.
pub(crate) fn type_name(kind: ChecksumType) -> &'static str {
    match kind {
        ChecksumType::Composite => s3s::dto::ChecksumType::COMPOSITE,
        ChecksumType::FullObject => s3s::dto::ChecksumType::FULL_OBJECT,
    }
}

/// S3's name of a checksum algorithm.
pub(crate) fn algorithm_name(algorithm: ChecksumAlgorithm) -> &'static str {
    match algorithm {
        ChecksumAlgorithm::Crc32 => "CRC32",
        ChecksumAlgorithm::Crc32c => "CRC32C",
        ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
        ChecksumAlgorithm::Sha1 => "SHA1",
        ChecksumAlgorithm::Sha256 => "SHA256",
    }
}

/// The object checksum of a multipart upload created with `upload`, from its parts' sizes
/// and checksums in order. COMPOSITE: the algorithm over the concatenated binary part
/// checksums, suffixed `-N`. FULL_OBJECT: the parts' CRCs combined (CRC combination needs
/// only each part's CRC and length, not its bytes). `None` if a part has no checksum of
/// that algorithm (parts stored before checksums were kept).
pub(crate) fn multipart_checksum(
    upload: UploadChecksum,
    parts: &[(u64, Option<&ObjectChecksum>)],
) -> S3Result<Option<ObjectChecksum>> {
    use s3s::crypto::Checksum as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut digests = Vec::with_capacity(parts.len());
    for (size, checksum) in parts {
        match checksum {
            Some(c) if c.algorithm == upload.algorithm => {
                let digest = b64.decode(&c.value).map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InternalError,
                        "a stored part checksum is not base64",
                    )
                })?;
                digests.push((*size, digest));
            }
            _ => return Ok(None),
        }
    }
    let value = match upload.kind {
        ChecksumType::Composite => {
            let joined: Vec<u8> = digests
                .iter()
                .flat_map(|(_, d)| d.iter().copied())
                .collect();
            let digest = match upload.algorithm {
                ChecksumAlgorithm::Crc32 => s3s::crypto::Crc32::checksum(&joined).to_vec(),
                ChecksumAlgorithm::Crc32c => s3s::crypto::Crc32c::checksum(&joined).to_vec(),
                ChecksumAlgorithm::Crc64Nvme => s3s::crypto::Crc64Nvme::checksum(&joined).to_vec(),
                ChecksumAlgorithm::Sha1 => s3s::crypto::Sha1::checksum(&joined).to_vec(),
                ChecksumAlgorithm::Sha256 => s3s::crypto::Sha256::checksum(&joined).to_vec(),
            };
            format!("{}-{}", b64.encode(digest), parts.len())
        }
        ChecksumType::FullObject => {
            let (crc, width) = match upload.algorithm {
                ChecksumAlgorithm::Crc32 => (crc_fast::CrcAlgorithm::Crc32IsoHdlc, 4),
                ChecksumAlgorithm::Crc32c => (crc_fast::CrcAlgorithm::Crc32Iscsi, 4),
                ChecksumAlgorithm::Crc64Nvme => (crc_fast::CrcAlgorithm::Crc64Nvme, 8),
                ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256 => return Ok(None),
            };
            let mut combined: Option<u64> = None;
            for (size, digest) in &digests {
                if digest.len() != width {
                    return Ok(None);
                }
                let mut bytes = [0u8; 8];
                bytes[8 - width..].copy_from_slice(digest);
                let part = u64::from_be_bytes(bytes);
                combined = Some(match combined {
                    None => part,
                    Some(before) => crc_fast::checksum_combine(crc, before, part, *size),
                });
            }
            let whole = combined.unwrap_or_else(|| crc_fast::checksum(crc, b""));
            b64.encode(&whole.to_be_bytes()[8 - width..])
        }
    };
    Ok(Some(ObjectChecksum {
        algorithm: upload.algorithm,
        value,
    }))
}

/// The checksum of an object completed from an upload created without an algorithm:
/// FULL_OBJECT when every part carries a CRC of one algorithm (current SDKs send CRC32 with
/// each part by default even when the upload declared none), since combining the parts'
/// CRCs gives exactly the CRC of the whole object; `None` otherwise (no parts, a part
/// without a checksum, mixed algorithms, or SHA digests, which do not combine).
pub(crate) fn derived_checksum(
    parts: &[(u64, Option<&ObjectChecksum>)],
) -> S3Result<Option<ObjectChecksum>> {
    let Some((_, Some(first))) = parts.first() else {
        return Ok(None);
    };
    let algorithm = first.algorithm;
    let crc = matches!(
        algorithm,
        ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c | ChecksumAlgorithm::Crc64Nvme
    );
    if !crc
        || !parts
            .iter()
            .all(|(_, c)| c.is_some_and(|c| c.algorithm == algorithm))
    {
        return Ok(None);
    }
    let upload = UploadChecksum {
        algorithm,
        kind: ChecksumType::FullObject,
    };
    multipart_checksum(upload, parts)
}

fn mismatch(name: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::BadDigest,
        format!("the body does not match {name}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::crypto::Checksum as _;

    fn checksum_of(algorithm: ChecksumAlgorithm, data: &[u8]) -> ObjectChecksum {
        let digest = match algorithm {
            ChecksumAlgorithm::Crc32 => s3s::crypto::Crc32::checksum(data).to_vec(),
            ChecksumAlgorithm::Crc32c => s3s::crypto::Crc32c::checksum(data).to_vec(),
            ChecksumAlgorithm::Crc64Nvme => s3s::crypto::Crc64Nvme::checksum(data).to_vec(),
            ChecksumAlgorithm::Sha1 => s3s::crypto::Sha1::checksum(data).to_vec(),
            ChecksumAlgorithm::Sha256 => s3s::crypto::Sha256::checksum(data).to_vec(),
        };
        ObjectChecksum {
            algorithm,
            value: base64::engine::general_purpose::STANDARD.encode(digest),
        }
    }

    /// Combining the parts' CRCs gives the CRC of the whole object, for each CRC S3 allows
    /// as FULL_OBJECT, with parts of uneven lengths (an empty one included).
    #[test]
    fn full_object_crcs_combine_from_the_parts() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let cuts = [0, 33_333, 33_333, 90_001, 100_000];
        for algorithm in [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64Nvme,
        ] {
            let parts: Vec<(u64, ObjectChecksum)> = cuts
                .windows(2)
                .map(|w| {
                    (
                        (w[1] - w[0]) as u64,
                        checksum_of(algorithm, &data[w[0]..w[1]]),
                    )
                })
                .collect();
            let refs: Vec<_> = parts.iter().map(|(n, c)| (*n, Some(c))).collect();
            let upload = UploadChecksum {
                algorithm,
                kind: ChecksumType::FullObject,
            };
            let combined = multipart_checksum(upload, &refs).unwrap();
            assert_eq!(
                combined,
                Some(checksum_of(algorithm, &data)),
                "{algorithm:?}"
            );
        }
    }

    /// A composite checksum is the checksum of the binary part checksums, suffixed `-N`
    /// (the SHA-256 of two parts, worked out by hand).
    #[test]
    fn composite_checksums_hash_the_part_checksums() {
        let a = checksum_of(ChecksumAlgorithm::Sha256, b"first part");
        let b = checksum_of(ChecksumAlgorithm::Sha256, b"second part");
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut joined = b64.decode(&a.value).unwrap();
        joined.extend(b64.decode(&b.value).unwrap());
        let expected = format!("{}-2", b64.encode(s3s::crypto::Sha256::checksum(&joined)));
        let upload = UploadChecksum {
            algorithm: ChecksumAlgorithm::Sha256,
            kind: ChecksumType::Composite,
        };
        let got = multipart_checksum(upload, &[(10, Some(&a)), (11, Some(&b))]).unwrap();
        assert_eq!(got.map(|c| c.value), Some(expected));
        // A part without a checksum of the algorithm leaves the object without one.
        let crc = checksum_of(ChecksumAlgorithm::Crc32, b"second part");
        assert_eq!(
            multipart_checksum(upload, &[(10, Some(&a)), (11, Some(&crc))]).unwrap(),
            None
        );
    }

    /// The combinations S3 allows at CreateMultipartUpload, and its defaults.
    #[test]
    fn upload_checksum_types_follow_s3() {
        let kind = |a, t| upload_checksum(a, t).map(|c| c.map(|c| c.kind));
        assert_eq!(
            kind(Some("CRC32"), None).unwrap(),
            Some(ChecksumType::Composite)
        );
        assert_eq!(
            kind(Some("crc64nvme"), None).unwrap(),
            Some(ChecksumType::FullObject)
        );
        assert_eq!(
            kind(Some("CRC32C"), Some("FULL_OBJECT")).unwrap(),
            Some(ChecksumType::FullObject)
        );
        assert!(kind(Some("SHA256"), Some("FULL_OBJECT")).is_err());
        assert!(kind(Some("CRC64NVME"), Some("COMPOSITE")).is_err());
        assert!(kind(None, Some("COMPOSITE")).is_err());
        assert_eq!(kind(None, None).unwrap(), None);
    }

    /// An upload created without an algorithm whose parts all carry one CRC gets that CRC
    /// of the whole object; SHA parts, mixed algorithms or a part without one give none.
    #[test]
    fn parts_of_one_crc_give_a_full_object_checksum_without_a_declared_algorithm() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 13 + i / 77) as u8).collect();
        let (a, b) = data.split_at(20_000);
        let crc = |d: &[u8]| checksum_of(ChecksumAlgorithm::Crc32, d);
        let (ca, cb) = (crc(a), crc(b));
        let derived = derived_checksum(&[(a.len() as u64, Some(&ca)), (b.len() as u64, Some(&cb))])
            .unwrap()
            .expect("a checksum");
        assert_eq!(derived, crc(&data));
        let sha = checksum_of(ChecksumAlgorithm::Sha256, b);
        let crc32c = checksum_of(ChecksumAlgorithm::Crc32c, b);
        for second in [Some(&sha), Some(&crc32c), None] {
            let parts = [(a.len() as u64, Some(&ca)), (b.len() as u64, second)];
            assert_eq!(derived_checksum(&parts).unwrap(), None, "{second:?}");
        }
        let sha_a = checksum_of(ChecksumAlgorithm::Sha256, a);
        assert_eq!(
            derived_checksum(&[(a.len() as u64, Some(&sha_a)), (b.len() as u64, Some(&sha))])
                .unwrap(),
            None
        );
        assert_eq!(derived_checksum(&[]).unwrap(), None);
    }
}
