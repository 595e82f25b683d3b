//! Ed25519 identities: every node, coordinator and client is named by its public key, and
//! the same key signs orders and receipts and authenticates QUIC connections.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// First word of a key file; the version lets the format change without guessing.
const KEY_FILE_TAG: &str = "cairn-ed25519-secret-v1";

/// A valid key file is one short line; anything much longer is not ours, and capping the read
/// keeps a wrong path (say, a disk image) from being slurped into memory.
const KEY_FILE_MAX: u64 = 256;

/// An ed25519 signing key: a node's or the coordinator's identity.
///
/// The secret is zeroed on drop (ed25519-dalek's `zeroize` feature) and never printed.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh random key from the operating system's generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide randomness, which leaves no safe way to make a
    /// key; use [`SecretKey::try_generate`] to handle that as an error.
    pub fn generate() -> Self {
        match Self::try_generate() {
            Ok(key) => key,
            Err(e) => panic!("cannot generate an ed25519 key: {e}"),
        }
    }

    /// A fresh random key, or the operating system's error if it has no randomness to give.
    pub fn try_generate() -> io::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
        let key = Self::from_seed(seed);
        wipe(&mut seed);
        Ok(key)
    }

    /// The key whose RFC 8032 secret seed is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte secret seed (what the key file stores).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A 32-byte key derived from this secret for one purpose, named by `context` (BLAKE3
    /// `derive_key`): how the coordinator members, who share the coordinator key, agree on
    /// other keys without storing them. The secret itself never leaves this type.
    pub fn derive_key(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, self.0.as_bytes())
    }

    /// The public half, which names this identity.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `msg` (pure Ed25519, no prehash).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }

    /// The key as an unencrypted PKCS#8 v1 document, the form rustls' signers load.
    ///
    /// The caller should wipe the returned buffer once it has been parsed.
    pub(crate) fn pkcs8_der(&self) -> Vec<u8> {
        // RFC 8410: SEQUENCE { INTEGER 0, AlgorithmIdentifier { id-Ed25519 },
        // OCTET STRING { OCTET STRING seed } }. Every length is fixed, so the encoding is a
        // constant prefix and the seed; no DER library needed.
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(self.0.as_bytes());
        der
    }

    /// Reads a key file written by [`SecretKey::load_or_create`].
    ///
    /// Refuses a file that the group or others may read: a leaked node key lets anyone
    /// impersonate the node, so a too-open file is a mistake worth stopping for.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let file = File::open(path).map_err(|source| KeyFileError::io(path, source))?;
        Self::read_from(path, file)
    }

    /// Loads the key at `path`, or makes a new one there if the file does not exist.
    ///
    /// Returns the key and whether it was created. A new file is written to a temporary
    /// file in the same directory, private (mode 0600) from its first byte, synced, then
    /// moved into place and the directory synced, so a crash leaves either no key or a
    /// whole one. The move does not overwrite: if another process created the key first,
    /// its key is loaded and returned instead.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyFileError> {
        match File::open(path) {
            Ok(file) => return Self::read_from(path, file).map(|key| (key, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(KeyFileError::io(path, source)),
        }
        let key = Self::try_generate().map_err(|source| KeyFileError::io(path, source))?;
        if create_key_file(path, &key)? {
            Ok((key, true))
        } else {
            // Lost a creation race; the winner's key is the one on disk, so use it.
            Self::load(path).map(|key| (key, false))
        }
    }

    fn read_from(path: &Path, file: File) -> Result<Self, KeyFileError> {
        // Check the handle we read from, not the path, so the file cannot be swapped between
        // the check and the read.
        let meta = file
            .metadata()
            .map_err(|source| KeyFileError::io(path, source))?;
        if !meta.is_file() {
            return Err(KeyFileError::malformed(path, "not a regular file"));
        }
        check_private(path, &meta)?;
        let mut text = String::new();
        file.take(KEY_FILE_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    KeyFileError::malformed(path, "not UTF-8 text")
                } else {
                    KeyFileError::io(path, e)
                }
            })?;
        let parsed = parse_key_file(&text).map_err(|reason| KeyFileError::malformed(path, reason));
        wipe_string(text);
        parsed
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the public half: Debug output ends up in logs and panic messages.
        write!(f, "SecretKey(public: {})", self.public())
    }
}

fn parse_key_file(text: &str) -> Result<SecretKey, &'static str> {
    if text.len() as u64 > KEY_FILE_MAX {
        return Err("file is too long for a key file");
    }
    let line = text.strip_suffix('\n').unwrap_or(text);
    let Some((tag, hex)) = line.split_once(' ') else {
        return Err("expected `cairn-ed25519-secret-v1 <64 hex digits>`");
    };
    if tag != KEY_FILE_TAG {
        return Err("unknown key file format (expected cairn-ed25519-secret-v1)");
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the seed must be exactly 64 hex digits");
    }
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| "the seed must be exactly 64 hex digits")?;
    }
    let key = SecretKey::from_seed(seed);
    wipe(&mut seed);
    Ok(key)
}

fn key_file_text(key: &SecretKey) -> String {
    let mut text = String::with_capacity(KEY_FILE_TAG.len() + 66);
    text.push_str(KEY_FILE_TAG);
    text.push(' ');
    let mut seed = key.seed();
    for byte in seed {
        text.push(hex_digit(byte >> 4));
        text.push(hex_digit(byte & 0x0f));
    }
    wipe(&mut seed);
    text.push('\n');
    text
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

/// Writes `key` to `path` unless something is already there. Returns `false` if it was.
fn create_key_file(path: &Path, key: &SecretKey) -> Result<bool, KeyFileError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = path.file_name() else {
        return Err(KeyFileError::malformed(path, "the key path names no file"));
    };
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| KeyFileError::io(path, io::Error::other(e)))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:016x}",
        name.to_string_lossy(),
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));

    let result = write_private(&tmp, key).and_then(|()| publish(&tmp, path));
    // The temporary name is gone after a successful link-and-unlink or rename; after a
    // failure it must not be left holding a secret.
    if tmp.exists() {
        let _ = fs::remove_file(&tmp);
    }
    let created = result.map_err(|source| KeyFileError::io(path, source))?;
    if created {
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| KeyFileError::io(&dir, source))?;
    }
    Ok(created)
}

fn write_private(tmp: &Path, key: &SecretKey) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Private from creation: chmod after writing would leave a window in which the
        // secret is readable under the umask's permissions.
        options.mode(0o600);
    }
    let mut file = options.open(tmp)?;
    let text = key_file_text(key);
    let written = file.write_all(text.as_bytes());
    wipe_string(text);
    written?;
    file.sync_all()
}

/// Moves the finished temporary file to `path` without overwriting. Returns `false` if
/// `path` already exists.
fn publish(tmp: &Path, path: &Path) -> io::Result<bool> {
    // A hard link fails if the target exists, which rename would silently replace; that
    // matters if two processes start on one data directory at once.
    match fs::hard_link(tmp, path) {
        Ok(()) => {
            // The key is in place; a leftover temporary name is removed by the caller's
            // cleanup and must not turn success into an error.
            let _ = fs::remove_file(tmp);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // Some filesystems have no hard links; rename is still atomic there.
        Err(_) => fs::rename(tmp, path).map(|()| true),
    }
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeyFileError> {
    Ok(())
}

/// Best-effort erasure of secret bytes that are about to be dropped; `black_box` keeps the
/// stores from being optimised away as dead.
pub(crate) fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

fn wipe_string(text: String) {
    let mut bytes = text.into_bytes();
    wipe(&mut bytes);
}

/// Why a key file could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file or its directory could not be read, written or synced.
    #[error("key file {}: {source}", path.display())]
    Io {
        /// The file (or directory) involved.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file exists but is not a Cairn key file.
    #[error("key file {}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The group or others may access the file, so the secret may already have leaked.
    #[error(
        "key file {} has mode {mode:04o}: it must be private to its owner (chmod 600)",
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl KeyFileError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn malformed(path: &Path, reason: &'static str) -> Self {
        Self::Malformed {
            path: path.to_path_buf(),
            reason,
        }
    }
}

/// An ed25519 public key: the name of a node, the coordinator or a client.
///
/// The bytes are not checked to be a valid curve point when constructed; a key that is not
/// one simply verifies nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey([u8; 32]);

/// A node is named by its public key.
pub type NodeId = PublicKey;

impl PublicKey {
    /// Length of the text form: 256 bits in 5-bit base32 digits, rounded up.
    pub const TEXT_LEN: usize = 52;

    /// Wraps raw key bytes (from the wire, the catalog or a TLS handshake).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `sig` is this key's signature of `msg`.
    ///
    /// Uses ed25519-dalek's strict verification, which rejects small-order keys and
    /// non-canonical signatures, so one message has one valid signature per key and a
    /// weak key cannot "sign" for everyone.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(msg, &sig).is_ok()
    }
}

/// RFC 4648 base32 alphabet, lower-cased so keys read well in paths and logs.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut acc: u32 = 0;
        let mut bits = 0;
        let mut out = String::with_capacity(Self::TEXT_LEN);
        for byte in self.0 {
            acc = (acc << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
            }
        }
        if bits > 0 {
            out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
        }
        f.write_str(&out)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A public key string that is not 52 lowercase base32 digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a public key is 52 lowercase base32 characters (a-z, 2-7)")]
pub struct ParsePublicKeyError;

impl FromStr for PublicKey {
    type Err = ParsePublicKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != Self::TEXT_LEN {
            return Err(ParsePublicKeyError);
        }
        let mut out = [0u8; 32];
        let mut acc: u32 = 0;
        let mut bits = 0;
        let mut n = 0;
        for c in s.bytes() {
            let digit = BASE32
                .iter()
                .position(|&d| d == c)
                .ok_or(ParsePublicKeyError)?;
            acc = (acc << 5) | digit as u32;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                // 52 digits carry 260 bits: exactly 32 whole bytes come out before the end.
                *out.get_mut(n).ok_or(ParsePublicKeyError)? = (acc >> bits) as u8;
                n += 1;
            }
            acc &= (1 << bits) - 1;
        }
        // The last digit's 4 spare bits must be zero, so every key has exactly one spelling
        // and text forms can be compared as strings.
        if n != 32 || acc != 0 {
            return Err(ParsePublicKeyError);
        }
        Ok(Self(out))
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Wraps raw signature bytes.
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The raw signature bytes.
    pub const fn to_bytes(&self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

// serde derives stop at 32-element arrays. A fixed-size tuple keeps postcard's encoding at
// exactly 64 bytes with no length prefix, the same shape serde gives `[u8; 32]`.
impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignatureVisitor;

        impl<'de> Visitor<'de> for SignatureVisitor {
            type Value = Signature;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }

        deserializer.deserialize_tuple(64, SignatureVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = SecretKey::from_seed([7; 32]);
        let sig = key.sign(b"hello");
        assert!(key.public().verify(b"hello", &sig));
        assert!(!key.public().verify(b"hellp", &sig));
        let other = SecretKey::from_seed([8; 32]);
        assert!(!other.public().verify(b"hello", &sig));
        assert_eq!(SecretKey::from_seed(key.seed()).public(), key.public());
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(SecretKey::generate().seed(), SecretKey::generate().seed());
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = SecretKey::from_seed([0xab; 32]);
        let text = format!("{key:?}");
        assert!(!text.contains("abab"), "{text}");
        assert!(!text.contains("171, 171"), "{text}");
        assert!(text.contains(&key.public().to_string()));
    }

    #[test]
    fn signature_postcard_is_64_bytes() {
        let sig = SecretKey::from_seed([1; 32]).sign(b"x");
        let bytes = postcard::to_allocvec(&sig).unwrap();
        assert_eq!(bytes.len(), 64);
        assert_eq!(bytes, sig.to_bytes());
        let back: Signature = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, sig);
        assert!(postcard::from_bytes::<Signature>(&bytes[..63]).is_err());
    }

    #[test]
    fn public_key_postcard_is_32_bytes() {
        let key = SecretKey::from_seed([2; 32]).public();
        let bytes = postcard::to_allocvec(&key).unwrap();
        assert_eq!(bytes.as_slice(), key.as_bytes());
    }

    #[test]
    fn pkcs8_matches_rfc8410_layout() {
        let key = SecretKey::from_seed([3; 32]);
        let der = key.pkcs8_der();
        assert_eq!(der.len(), 48);
        assert_eq!(&der[16..], &[3; 32]);
    }

    #[test]
    fn key_file_text_round_trips() {
        let key = SecretKey::from_seed([0x5a; 32]);
        let text = key_file_text(&key);
        assert_eq!(
            text,
            format!("cairn-ed25519-secret-v1 {}\n", "5a".repeat(32))
        );
        assert_eq!(parse_key_file(&text).unwrap().seed(), key.seed());
        assert!(parse_key_file(&text.replace("v1", "v2")).is_err());
        assert!(parse_key_file(&text[..text.len() - 3]).is_err());
        assert!(parse_key_file(&text.replace("5a5a", "5g5a")).is_err());
        assert!(parse_key_file(&format!("{text}extra")).is_err());
    }
}
