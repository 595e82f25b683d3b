//! Cairn's erasure layer: how an object becomes shards and how shards become an object again.
//!
//! An object is cut into *segments* of at most a configured size (64 MiB by default). Each
//! segment is padded to `k × shard_len` bytes and split into `k` contiguous *data shards*;
//! Reed-Solomon coding adds `m` *parity shards* of the same length. The code is systematic:
//! the data shards are the segment's own bytes, so a read with nothing lost never decodes.
//! Every shard is named by its [`ShardRoot`], the BLAKE3 hash of its bytes, which is all the
//! catalog keeps; [`slice`] proves any byte range of a shard against that root.
//!
//! Segments can be masked before coding ([`mask`]): XORed with a keystream only the cluster
//! can compute, so that shards cannot be recomputed from the (public) object by a node
//! that threw them away.
//!
//! The crate does no network or disk I/O of its own. [`SegmentEncoder`] pulls an object from
//! any async reader, holding one segment at a time, and does the CPU work off the async
//! threads.

mod buffer;
mod codec;
mod error;
pub mod layout;
pub mod mask;
mod root;
mod segment;
pub mod slice;
mod stream;

pub use codec::{Codec, Decoded, Rebuilt};
pub use error::{CodecError, DecodeError, EncodeError, MaskError};
pub use mask::{MaskKey, SegmentNonce};
pub use root::{ParseRootError, ShardRoot};
pub use segment::EncodedSegment;
pub use stream::SegmentEncoder;

/// Bytes of segment buffers this process holds idle for the next segments to be coded.
///
/// Dropped [`EncodedSegment`]s hand their buffers back so that coding segment after
/// segment maps no new memory; at most [`MAX_IDLE_BUFFER_BYTES`] is kept, the oldest
/// buffers freed first.
pub fn idle_buffer_bytes() -> usize {
    buffer::idle_bytes()
}

/// Most bytes of segment buffers a process keeps idle for reuse: two 64 MiB segments at
/// 10+6 in flight (a buffer being filled while the previous segment is coded and sent) with
/// room to spare.
pub const MAX_IDLE_BUFFER_BYTES: usize = 256 << 20;

/// Default largest segment: bounds the memory of one stream and the work of one repair.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

/// Shard lengths are rounded up to this many bytes.
///
/// The Reed-Solomon engine works on 64-byte blocks; with shard lengths and stripe boundaries
/// on multiples of it, every 64-byte column of a segment is coded independently, which is
/// what lets a degraded range read decode only the columns it needs.
pub const SHARD_ALIGN: usize = 64;
