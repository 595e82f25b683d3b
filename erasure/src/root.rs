//! [`ShardRoot`]: the 32-byte name of a shard's contents.

use std::fmt;
use std::str::FromStr;

/// BLAKE3 hash of a shard's bytes, the only thing the catalog keeps about them.
///
/// It is also the root of the shard's verified-streaming tree, so any slice of the shard can
/// be proven against it (see [`crate::slice`]).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ShardRoot([u8; 32]);

impl ShardRoot {
    /// The root of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps raw hash bytes (for example read from the catalog or the wire).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw hash bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The root as the `blake3` crate's hash type (constant-time comparison).
    pub fn to_blake3(self) -> blake3::Hash {
        blake3::Hash::from_bytes(self.0)
    }
}

impl From<blake3::Hash> for ShardRoot {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Display for ShardRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ShardRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardRoot({self})")
    }
}

/// A shard root string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a shard root is 64 hex digits")]
pub struct ParseRootError;

impl FromStr for ShardRoot {
    type Err = ParseRootError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hash = blake3::Hash::from_hex(s).map_err(|_| ParseRootError)?;
        Ok(hash.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let root = ShardRoot::of(b"cairn");
        let text = root.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ShardRoot>(), Ok(root));
        assert_eq!("zz".parse::<ShardRoot>(), Err(ParseRootError));
    }
}
