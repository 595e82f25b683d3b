//! The typed errors of the erasure layer.

use std::io;

/// Parameters the codec cannot work with. Never a panic: callers get this instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// `k` must be at least 1.
    #[error("erasure code needs at least one data shard (k = 0 given)")]
    NoDataShards,
    /// The Reed-Solomon engine cannot build a code of this shape.
    #[error(
        "erasure code {k}+{m} is not supported (at most 32768 data and 32768 parity shards, 65535 in all)"
    )]
    Unsupported {
        /// Data shards asked for.
        k: usize,
        /// Parity shards asked for.
        m: usize,
    },
    /// Segments must hold at least one byte and fit in memory on this platform.
    #[error("segment size {0} is out of range (1 byte ..= 4 GiB)")]
    InvalidSegmentSize(u64),
}

/// Why a segment could not be rebuilt from the shards given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than `k` shards matched their roots.
    #[error(
        "need {needed} verified shards, have {good}; shards failing verification: {rejected:?}"
    )]
    TooFewShards {
        /// Shards needed (`k`).
        needed: usize,
        /// Shards that verified.
        good: usize,
        /// Indices of the shards that did not match their roots (wrong bytes or length).
        rejected: Vec<usize>,
    },
    /// A shard index outside `0..k+m`, or given twice.
    #[error("shard index {index} is out of range or given twice (code has {total} shards)")]
    BadShardIndex {
        /// The offending index.
        index: usize,
        /// Shards in the code (`k + m`).
        total: usize,
    },
    /// The number of roots does not match the code.
    #[error("segment has {got} shard roots, code {k}+{m} needs {}", k + m)]
    RootCount {
        /// Roots given.
        got: usize,
        /// Data shards of the code.
        k: usize,
        /// Parity shards of the code.
        m: usize,
    },
    /// The segment is longer than a segment of this code can be on this platform.
    #[error("segment length {0} does not fit in memory")]
    SegmentTooLarge(u64),
    /// A rebuilt shard does not hash to its root: the segment's roots disagree with each
    /// other, so the catalog entry (not a node) is wrong.
    #[error("rebuilt shard {index} does not match its root: the segment's roots are inconsistent")]
    RootMismatch {
        /// The shard whose root disagrees.
        index: usize,
    },
    /// Column pieces passed to a range recovery were not all the same length.
    #[error("column pieces differ in length")]
    PieceLength,
    /// A column range not aligned to 64-byte blocks or past the end of the shard.
    #[error(
        "column range {start}..{end} is not 64-byte aligned within a shard of {shard_len} bytes"
    )]
    BadColumns {
        /// Start of the range asked for.
        start: u64,
        /// End of the range asked for.
        end: u64,
        /// Length of each shard.
        shard_len: u64,
    },
}

/// Why streaming an object through the encoder stopped.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The source reader failed; no segment after the last one returned is valid.
    #[error("reading the object failed: {0}")]
    Read(#[from] io::Error),
    /// The encoding task could not run (the runtime is shutting down).
    #[error("encoding task failed: {0}")]
    Task(String),
    /// No random nonce for a masked segment: the operating system's generator failed.
    #[error("no randomness for a segment nonce: {0}")]
    Random(String),
}

/// A keystream position past the end of ChaCha20's 256 GiB stream: far beyond any segment
/// (at most 4 GiB), so it means a wrong offset, not a long object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// Bytes `offset..offset + len` of the keystream were asked for.
    #[error("mask keystream bytes {offset}..+{len} are out of range")]
    OutOfRange {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
    },
}
