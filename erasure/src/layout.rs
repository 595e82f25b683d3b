//! Where an object's bytes live: object byte ranges mapped to segments, shards and offsets.

use std::ops::Range;

use crate::codec::MAX_SEGMENT_SIZE;
use crate::{Codec, CodecError, SHARD_ALIGN};

/// The shape of a stored object: its size, the segment size it was cut with and its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLayout {
    size: u64,
    segment_size: u64,
    codec: Codec,
}

/// One segment's place in its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSpan {
    /// Position of the segment, from 0.
    pub index: u64,
    /// Offset of its first byte in the object.
    pub offset: u64,
    /// Bytes of object data in it.
    pub len: u64,
    /// Length of each of its shards.
    pub shard_len: u64,
}

/// What to read from one segment to serve part of an object range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRead {
    /// The segment.
    pub span: SegmentSpan,
    /// The bytes wanted, as offsets within the segment.
    pub range: Range<u64>,
    /// The data shards holding them, in order; reading these and concatenating gives the
    /// bytes of `range` when no shard is lost.
    pub shards: Vec<ShardRead>,
}

/// A byte range of one data shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRead {
    /// Data shard index (`< k`).
    pub shard: usize,
    /// Offsets within the shard.
    pub range: Range<u64>,
}

/// An object range that is not inside the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("range {start}..{end} is outside an object of {size} bytes")]
pub struct RangeError {
    /// Start asked for.
    pub start: u64,
    /// End asked for.
    pub end: u64,
    /// Size of the object.
    pub size: u64,
}

impl ObjectLayout {
    /// The layout of an object of `size` bytes cut into segments of `segment_size`.
    pub fn new(size: u64, segment_size: u64, codec: Codec) -> Result<Self, CodecError> {
        if segment_size == 0 || segment_size > MAX_SEGMENT_SIZE {
            return Err(CodecError::InvalidSegmentSize(segment_size));
        }
        Ok(Self {
            size,
            segment_size,
            codec,
        })
    }

    /// Object size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of segments (0 for an empty object).
    pub fn segment_count(&self) -> u64 {
        self.size.div_ceil(self.segment_size)
    }

    /// The span of segment `index`, or `None` past the last one.
    pub fn segment(&self, index: u64) -> Option<SegmentSpan> {
        if index >= self.segment_count() {
            return None;
        }
        let offset = index * self.segment_size;
        let len = self.segment_size.min(self.size - offset);
        Some(SegmentSpan {
            index,
            offset,
            len,
            shard_len: self.codec.shard_len(len),
        })
    }

    /// Every segment in order.
    pub fn segments(&self) -> impl Iterator<Item = SegmentSpan> + '_ {
        (0..self.segment_count()).filter_map(|i| self.segment(i))
    }

    /// The segments and data-shard ranges that hold object bytes `range`.
    ///
    /// An empty range needs no reads. Ranges are exact byte offsets; resolving HTTP range
    /// syntax (suffixes, open ends) is the caller's job.
    pub fn plan_read(&self, range: Range<u64>) -> Result<Vec<SegmentRead>, RangeError> {
        if range.start > range.end || range.end > self.size {
            return Err(RangeError {
                start: range.start,
                end: range.end,
                size: self.size,
            });
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let first = range.start / self.segment_size;
        let last = (range.end - 1) / self.segment_size;
        let mut reads = Vec::with_capacity((last - first + 1) as usize);
        for span in (first..=last).filter_map(|i| self.segment(i)) {
            let start = range.start.max(span.offset) - span.offset;
            let end = range.end.min(span.offset + span.len) - span.offset;
            let shard_len = span.shard_len;
            let mut shards = Vec::new();
            let mut at = start;
            while at < end {
                let shard = at / shard_len;
                let shard_end = ((shard + 1) * shard_len).min(end);
                shards.push(ShardRead {
                    shard: shard as usize,
                    range: at - shard * shard_len..shard_end - shard * shard_len,
                });
                at = shard_end;
            }
            reads.push(SegmentRead {
                span,
                range: start..end,
                shards,
            });
        }
        Ok(reads)
    }
}

impl SegmentRead {
    /// The 64-byte aligned shard columns covering every [`ShardRead`] of this read: the
    /// range to fetch from any `k` shards and pass to [`Codec::recover_columns`] when a data
    /// shard it needs is unavailable.
    pub fn columns(&self) -> Range<u64> {
        let align = SHARD_ALIGN as u64;
        let start = self.shards.iter().map(|s| s.range.start).min().unwrap_or(0);
        let end = self.shards.iter().map(|s| s.range.end).max().unwrap_or(0);
        let start = start / align * align;
        let end = end.next_multiple_of(align).min(self.span.shard_len);
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: u64) -> ObjectLayout {
        ObjectLayout::new(size, 1000, Codec::new(4, 2).unwrap()).unwrap()
    }

    #[test]
    fn segments_cover_the_object() {
        let l = layout(2500);
        let spans: Vec<_> = l.segments().collect();
        assert_eq!(spans.len(), 3);
        assert_eq!((spans[2].offset, spans[2].len), (2000, 500));
        // ⌈1000 / 4⌉ = 250 → 256; ⌈500 / 4⌉ = 125 → 128.
        assert_eq!((spans[0].shard_len, spans[2].shard_len), (256, 128));
        assert_eq!(layout(0).segment_count(), 0);
        assert_eq!(layout(1000).segment_count(), 1);
    }

    #[test]
    fn small_range_touches_one_shard() {
        let plan = layout(2500).plan_read(1300..1310).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].span.index, 1);
        assert_eq!(plan[0].range, 300..310);
        assert_eq!(
            plan[0].shards,
            vec![ShardRead {
                shard: 1,
                range: 44..54
            }]
        );
        assert_eq!(plan[0].columns(), 0..64);
    }

    #[test]
    fn range_across_segments_and_shards() {
        let plan = layout(2500).plan_read(990..2010).unwrap();
        let segments: Vec<_> = plan
            .iter()
            .map(|r| (r.span.index, r.range.clone()))
            .collect();
        assert_eq!(segments, vec![(0, 990..1000), (1, 0..1000), (2, 0..10)]);
        assert_eq!(plan[1].shards.len(), 4);
        assert_eq!(plan[1].shards[3].range, 0..232);
        let total: u64 = plan
            .iter()
            .flat_map(|r| &r.shards)
            .map(|s| s.range.end - s.range.start)
            .sum();
        assert_eq!(total, 1020);
    }

    #[test]
    fn ranges_outside_are_refused() {
        assert!(layout(10).plan_read(5..11).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 6..5;
        assert!(layout(10).plan_read(backwards).is_err());
        assert_eq!(layout(10).plan_read(10..10).unwrap(), vec![]);
    }
}
