//! Identifiers shared across the cluster.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The coordinator's name for one stored shard, unique across the cluster.
///
/// Distinct from the shard's [`cairn_erasure::ShardRoot`]: two segments can produce shards
/// with identical bytes (zero padding, duplicate objects), and each must be placed, audited
/// and deleted on its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub [u8; 16]);

impl ShardId {
    /// The id as 32 lowercase hex digits (also its file name on a node).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardId({self})")
    }
}

/// A shard id string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a shard id is 32 hex digits")]
pub struct ParseShardIdError;

impl FromStr for ShardId {
    type Err = ParseShardIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.is_ascii() {
            return Err(ParseShardIdError);
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| ParseShardIdError)?;
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ShardId([0xab; 16]);
        assert_eq!(id.to_hex(), "ab".repeat(16));
        assert_eq!(id.to_hex().parse::<ShardId>(), Ok(id));
        assert!("xyz".parse::<ShardId>().is_err());
        assert!("é".repeat(16).parse::<ShardId>().is_err());
    }
}
