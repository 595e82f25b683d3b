//! The checksums a client declares for an upload body: `x-amz-checksum-*` headers, or the
//! same names announced in `x-amz-trailer` and sent after an aws-chunked body. They are
//! computed while the body streams and compared before anything is committed, so a body
//! damaged on the way is refused with `BadDigest` instead of stored.

use http::HeaderMap;
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
pub(crate) struct BodyChecksums {
    hasher: ChecksumHasher,
    /// Values given in headers, by name.
    declared: Vec<(&'static str, String)>,
    /// Names announced as trailers.
    trailed: Vec<&'static str>,
}

impl BodyChecksums {
    /// The checksums `headers` declare (none is fine: then nothing is computed).
    pub(crate) fn from_headers(headers: &HeaderMap) -> S3Result<Self> {
        let mut checks = BodyChecksums {
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
        self.hasher.update(chunk);
    }

    /// Compares what was computed with the declared values and the trailers (available
    /// once the body was read to its end).
    pub(crate) fn finish(self, trailers: Option<&s3s::TrailingHeaders>) -> S3Result<()> {
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
        Ok(())
    }
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

fn mismatch(name: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::BadDigest,
        format!("the body does not match {name}"),
    )
}
