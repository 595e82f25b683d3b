//! Nix authenticity checks for buckets in *nix-cache* mode (DESIGN.md, "Trust model", point 1).
//!
//! The gateway calls these on every upload to such a bucket:
//! [`nar::classify_key`] says what the object name claims to be; a narinfo must pass
//! [`keys::verify_narinfo`] (signed by a trusted cache key, stored under its own hash part);
//! a NAR body is streamed through a [`nar::NarVerifier`] and must hash to the hash in its
//! name, either as stored (Nix and the old Hydra name NARs by FileHash) or after decompression
//! (the new Hydra names them by NarHash). Everything else in the bucket is stored as is.
//!
//! All of it is pure and synchronous: no I/O, no async, memory bounded whatever the input.

pub mod base32;
pub mod keys;
pub mod nar;
pub mod narinfo;

use base32::format_sha256;

/// Why an object was refused by the Nix checks. The message says which check failed, so the
/// gateway can hand it to the uploader as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NixCheckError {
    /// The narinfo could not be parsed.
    #[error("narinfo malformed: {0}")]
    MalformedNarInfo(#[from] narinfo::NarInfoError),
    /// The narinfo is stored under another name than `<hash part of its StorePath>.narinfo`,
    /// so a client asking for one path would get another's.
    #[error(
        "narinfo stored as {object_name:?} but its StorePath is {store_path}: \
         it must be stored as {expected_name:?}"
    )]
    NarInfoNameMismatch {
        /// The object name given.
        object_name: String,
        /// The narinfo's StorePath.
        store_path: String,
        /// The name it must have.
        expected_name: String,
    },
    /// The narinfo has no `Sig` line at all.
    #[error("narinfo has no Sig line")]
    NoSignature,
    /// No `Sig` line names a trusted key.
    #[error(
        "narinfo has no signature by a trusted key: signed by [{}], trusted keys are [{}]",
        .signed_by.join(", "),
        .trusted.join(", ")
    )]
    NoTrustedSignature {
        /// Key names of the `Sig` lines found.
        signed_by: Vec<String>,
        /// Names of the trusted keys.
        trusted: Vec<String>,
    },
    /// A `Sig` line names a trusted key but is not a valid signature by it (and no other
    /// trusted signature verified).
    #[error("signature by trusted key {key_name} does not verify: {reason}")]
    BadSignature {
        /// The trusted key's name.
        key_name: String,
        /// What failed (decoding or the ed25519 check).
        reason: String,
    },
    /// A trusted key given in the configuration is not `name:base64(32-byte ed25519 key)`.
    /// The key material is never echoed, in case a secret key was pasted by mistake.
    #[error("invalid trusted public key {name:?}: {reason}")]
    InvalidTrustedKey {
        /// The name part, if one was found.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An object name that claims to be a NAR or narinfo but is not a well-formed one.
    #[error("object key {key:?} is not valid in a nix-cache bucket: {reason}")]
    BadObjectKey {
        /// The object key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A NAR body whose hash is not the one in its name, neither as stored nor decompressed.
    #[error(
        "NAR body does not match the hash in its name {}: the body hashes to {} and {}",
        format_sha256(.expected),
        format_sha256(.file_hash),
        .decompressed
    )]
    NarMismatch {
        /// The hash from the object name.
        expected: [u8; 32],
        /// sha256 of the body as uploaded.
        file_hash: [u8; 32],
        /// What came of hashing the decompressed stream.
        decompressed: nar::Decompressed,
    },
}
