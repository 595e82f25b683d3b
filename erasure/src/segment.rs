//! [`EncodedSegment`]: one segment's shards and roots, as the encoder hands them out.

use crate::{SegmentNonce, ShardRoot};

/// One segment of an object after encoding: `k` data shards, `m` parity shards and the
/// BLAKE3 root of each, in shard order.
///
/// The data shards are the segment's own buffer (padded), not a copy, so the memory of a
/// segment is `(k + m) × shard_len` bytes. A masked segment ([`EncodedSegment::mask`])
/// holds the masked bytes: shards, roots and [`EncodedSegment::data`] are all of those.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedSegment {
    /// Position of this segment in its object, from 0.
    pub index: u64,
    /// Offset of the segment's first byte in its object.
    pub offset: u64,
    len: u64,
    shard_len: usize,
    k: usize,
    data: Vec<u8>,
    parity: Vec<u8>,
    roots: Vec<ShardRoot>,
    mask: Option<SegmentNonce>,
}

impl EncodedSegment {
    #[allow(clippy::too_many_arguments)] // crate-internal constructor of a plain record
    pub(crate) fn new(
        index: u64,
        offset: u64,
        len: u64,
        shard_len: usize,
        k: usize,
        data: Vec<u8>,
        parity: Vec<u8>,
        roots: Vec<ShardRoot>,
        mask: Option<SegmentNonce>,
    ) -> Self {
        Self {
            index,
            offset,
            len,
            shard_len,
            k,
            data,
            parity,
            roots,
            mask,
        }
    }

    /// Bytes of object data in this segment (without padding).
    pub fn segment_len(&self) -> u64 {
        self.len
    }

    /// Length of every shard of this segment.
    pub fn shard_len(&self) -> usize {
        self.shard_len
    }

    /// Number of shards, `k + m`.
    pub fn shard_count(&self) -> usize {
        self.roots.len()
    }

    /// The bytes of shard `index` (data shards first, then parity), or `None` past the end.
    pub fn shard(&self, index: usize) -> Option<&[u8]> {
        let len = self.shard_len;
        if index < self.k {
            Some(&self.data[index * len..(index + 1) * len])
        } else if index < self.roots.len() {
            let j = index - self.k;
            Some(&self.parity[j * len..(j + 1) * len])
        } else {
            None
        }
    }

    /// Every shard in order, `k + m` of them.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.roots.len()).map(|i| self.shard(i).unwrap_or_default())
    }

    /// The root of every shard, in shard order.
    pub fn roots(&self) -> &[ShardRoot] {
        &self.roots
    }

    /// The segment's bytes as stored (the data shards without their padding): the object's
    /// bytes, or for a masked segment those bytes masked.
    pub fn data(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }

    /// The nonce the segment was masked with, `None` if it was stored as it came. The
    /// catalog keeps it: without it (and the cluster's mask key) the bytes cannot be read.
    pub fn mask(&self) -> Option<SegmentNonce> {
        self.mask
    }
}

impl Drop for EncodedSegment {
    /// Hands the buffers back for the next segment (see `buffer.rs`): a gateway coding
    /// segment after segment then maps and zeroes no new memory.
    fn drop(&mut self) {
        crate::buffer::recycle(std::mem::take(&mut self.data));
        crate::buffer::recycle(std::mem::take(&mut self.parity));
    }
}

impl std::fmt::Debug for EncodedSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedSegment")
            .field("index", &self.index)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("shard_len", &self.shard_len)
            .field("shards", &self.roots.len())
            .field("mask", &self.mask)
            .finish()
    }
}
