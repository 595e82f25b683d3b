//! Verified slices: proving any byte range of a shard against its 32-byte [`ShardRoot`].
//!
//! A shard's root is its BLAKE3 hash, which is also the root of a binary hash tree over the
//! shard. Whoever holds the shard keeps the tree's inner hashes, the [`SliceOutboard`]
//! (64 bytes per 16 KiB chunk group, about 0.4 % of the shard). From it, a [`SliceProof`]
//! for any range carries the bytes plus the sibling hashes on their path to the root; the
//! verifier needs only the root and the shard's size. Audits ask for random slices; range
//! reads use the same proofs so that a node can never slip in a wrong byte.
//!
//! Proofs are the `bao-tree` range encoding with 16 KiB chunk groups.

use std::io::{self, Read};
use std::ops::Range;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::{DecodeResponseIter, encode_ranges_validated};
use bao_tree::io::{BaoContentItem, round_up_to_chunks};
use bao_tree::{BaoTree, BlockSize, ByteRanges};

use crate::ShardRoot;

pub use bao_tree::io::sync::ReadAt;

/// Chunk groups of 2⁴ BLAKE3 chunks (16 KiB): proofs stay small and outboards ~0.4 %.
const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// Why a slice could not be proven or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The range is empty or reaches past the end of the shard.
    #[error("slice {start}..{end} is not a non-empty range within a shard of {size} bytes")]
    InvalidRange {
        /// Start asked for.
        start: u64,
        /// End asked for.
        end: u64,
        /// Shard size.
        size: u64,
    },
    /// Stored outboard bytes of the wrong length for the shard size.
    #[error("outboard is {got} bytes, a shard of {size} bytes needs {expected}")]
    OutboardLength {
        /// Shard size.
        size: u64,
        /// Length the outboard must have.
        expected: u64,
        /// Length given.
        got: u64,
    },
    /// The shard's bytes (or its outboard) no longer match its root: it is damaged.
    #[error("stored shard does not match its root: {0}")]
    Damaged(String),
    /// A proof whose bytes do not hash up to the expected root.
    #[error("slice proof does not match the shard root")]
    Mismatch,
    /// A proof that ends before the range is covered.
    #[error("slice proof is truncated")]
    Truncated,
    /// A proof with bytes left over after the range.
    #[error("slice proof has {0} unexpected trailing bytes")]
    TrailingBytes(u64),
    /// Reading the shard failed.
    #[error("reading the shard failed: {0}")]
    Io(#[from] io::Error),
}

/// The inner hashes of a shard's tree: what a holder keeps to prove slices of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SliceOutboard {
    root: ShardRoot,
    size: u64,
    hashes: Vec<u8>,
}

/// A proof of one byte range of a shard: its bytes interleaved with the hashes that tie
/// them to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceProof(Vec<u8>);

/// Outboard length in bytes for a shard of `size` bytes.
pub fn outboard_len(size: u64) -> u64 {
    BaoTree::new(size, BLOCK_SIZE).outboard_size()
}

impl SliceOutboard {
    /// Hashes `shard` and builds its outboard; `root()` is then the shard's [`ShardRoot`].
    pub fn compute(shard: &[u8]) -> Self {
        let outboard = PreOrderMemOutboard::create(shard, BLOCK_SIZE);
        Self {
            root: outboard.root.into(),
            size: shard.len() as u64,
            hashes: outboard.data,
        }
    }

    /// An outboard read back from storage, checked for the right length.
    pub fn from_parts(root: ShardRoot, size: u64, hashes: Vec<u8>) -> Result<Self, ProofError> {
        let expected = outboard_len(size);
        if hashes.len() as u64 != expected {
            return Err(ProofError::OutboardLength {
                size,
                expected,
                got: hashes.len() as u64,
            });
        }
        Ok(Self { root, size, hashes })
    }

    /// The shard's root.
    pub fn root(&self) -> ShardRoot {
        self.root
    }

    /// The shard's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The raw outboard bytes, for storage.
    pub fn hashes(&self) -> &[u8] {
        &self.hashes
    }

    /// Proves bytes `range` of the shard read from `shard`.
    ///
    /// Everything read is checked against the root on the way, so a holder whose stored
    /// bytes rotted learns it here ([`ProofError::Damaged`]) instead of sending a bad proof.
    pub fn prove(&self, shard: impl ReadAt, range: Range<u64>) -> Result<SliceProof, ProofError> {
        check_range(&range, self.size)?;
        let outboard = PreOrderMemOutboard {
            root: self.root.to_blake3(),
            tree: BaoTree::new(self.size, BLOCK_SIZE),
            data: &self.hashes[..],
        };
        // Room for the whole proof up front: grown by doubling, a 16 MiB proof would be
        // copied (and its pages faulted in) about twice over on its way up.
        let mut proof = Vec::with_capacity(proof_capacity(&range));
        let ranges = round_up_to_chunks(&ByteRanges::from(range));
        encode_ranges_validated(shard, outboard, &ranges, &mut proof).map_err(|err| match err {
            bao_tree::io::EncodeError::Io(io) if io.kind() != io::ErrorKind::UnexpectedEof => {
                ProofError::Io(io)
            }
            other => ProofError::Damaged(other.to_string()),
        })?;
        Ok(SliceProof(proof))
    }
}

impl std::fmt::Debug for SliceOutboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceOutboard")
            .field("root", &self.root)
            .field("size", &self.size)
            .field("hashes", &self.hashes.len())
            .finish()
    }
}

impl SliceProof {
    /// Wraps proof bytes received from the wire.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The proof's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The proof's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Checks the proof for bytes `range` of a shard of `size` bytes with root `root`, and
    /// returns exactly those bytes.
    pub fn verify(
        &self,
        root: &ShardRoot,
        size: u64,
        range: Range<u64>,
    ) -> Result<Vec<u8>, ProofError> {
        let mut out = vec![0u8; range.end.saturating_sub(range.start) as usize];
        verify_into(&self.0[..], root, size, range, &mut out, |_| {})?;
        Ok(out)
    }
}

/// Checks a proof read from `encoded` (exactly the proof: bytes left in it after the range
/// are refused) for bytes `range` of a shard of `size` bytes with root `root`, writing
/// exactly those bytes into `out`, which must be as long as the range.
///
/// `each` sees every piece of `out` once, in order, right after its bytes were verified
/// and written: whoever transforms verified bytes (unmasking) does it while they are still
/// in cache, and never sees a byte that failed. On an error `out` holds bytes that must
/// not be used.
pub fn verify_into(
    mut encoded: impl Read,
    root: &ShardRoot,
    size: u64,
    range: Range<u64>,
    out: &mut [u8],
    mut each: impl FnMut(&mut [u8]),
) -> Result<(), ProofError> {
    check_range(&range, size)?;
    if out.len() as u64 != range.end - range.start {
        return Err(ProofError::InvalidRange {
            start: range.start,
            end: range.start + out.len() as u64,
            size,
        });
    }
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let ranges = round_up_to_chunks(&ByteRanges::from(range.clone()));
    let mut covered = 0u64;
    for item in DecodeResponseIter::new(root.to_blake3(), tree, &mut encoded, &ranges) {
        let item = item.map_err(|err| match err {
            bao_tree::io::DecodeError::ParentHashMismatch(_)
            | bao_tree::io::DecodeError::LeafHashMismatch(_) => ProofError::Mismatch,
            _ => ProofError::Truncated,
        })?;
        if let BaoContentItem::Leaf(leaf) = item {
            let leaf_end = leaf.offset + leaf.data.len() as u64;
            let start = leaf.offset.max(range.start);
            let end = leaf_end.min(range.end);
            if start < end {
                let from = (start - leaf.offset) as usize..(end - leaf.offset) as usize;
                let to = (start - range.start) as usize..(end - range.start) as usize;
                let (Some(dst), Some(src)) = (out.get_mut(to), leaf.data.get(from)) else {
                    return Err(ProofError::Truncated);
                };
                dst.copy_from_slice(src);
                each(dst);
                covered += end - start;
            }
        }
    }
    let trailing = io::copy(&mut encoded, &mut io::sink())?;
    if trailing != 0 {
        return Err(ProofError::TrailingBytes(trailing));
    }
    if covered != range.end - range.start {
        return Err(ProofError::Truncated);
    }
    Ok(())
}

/// At least the length of a proof of `range`: its bytes, rounded out to whole chunk groups
/// at both ends, plus one 64-byte pair of hashes per group and per level of the tree.
fn proof_capacity(range: &Range<u64>) -> usize {
    let group = BLOCK_SIZE.bytes() as u64;
    let len = range.end.saturating_sub(range.start) + 2 * group;
    usize::try_from(len + (len / group + 64) * 64).unwrap_or(0)
}

fn check_range(range: &Range<u64>, size: u64) -> Result<(), ProofError> {
    if range.start >= range.end || range.end > size {
        return Err(ProofError::InvalidRange {
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outboard_is_small() {
        let shard = vec![7u8; 1 << 20];
        let outboard = SliceOutboard::compute(&shard);
        assert_eq!(outboard.root(), ShardRoot::of(&shard));
        // 64 chunk groups of 16 KiB → 63 inner nodes of 64 bytes.
        assert_eq!(outboard.hashes().len() as u64, outboard_len(1 << 20));
        assert_eq!(outboard_len(1 << 20), 63 * 64);
        assert_eq!(outboard_len(16 * 1024), 0);
    }

    #[test]
    fn wrong_outboard_length_is_refused() {
        let err = SliceOutboard::from_parts(ShardRoot::of(b""), 1 << 20, vec![0; 10]);
        assert!(matches!(err, Err(ProofError::OutboardLength { .. })));
    }
}
