//! Encoding a 1 GiB stream holds a bounded number of segments, not the object.
//!
//! Alone in its test binary so that the process's peak RSS belongs to this test only.

use cairn_erasure::{Codec, DEFAULT_SEGMENT_SIZE, SegmentEncoder};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// An endless-looking source of `remaining` pseudo-random bytes that holds only 1 MiB.
struct Generated {
    block: Vec<u8>,
    at: usize,
    remaining: u64,
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let want = (buf.remaining() as u64).min(self.remaining) as usize;
        let n = want.min(self.block.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.block[at..at + n]);
        self.at = (at + n) % self.block.len();
        self.remaining -= n as u64;
        // Vary the block so segments differ.
        if self.at == 0 {
            let first = self.block[0];
            self.block[0] = first.wrapping_add(1);
        }
        Poll::Ready(Ok(()))
    }
}

/// Peak resident set of this process in bytes (`VmHWM`), Linux only.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_stream_stays_within_a_few_segments() {
    let before = peak_rss();
    let codec = Codec::new(10, 6).unwrap();
    let total = 1u64 << 30;
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let source = Generated {
        block,
        at: 0,
        remaining: total,
    };
    let mut encoder = SegmentEncoder::new(codec, DEFAULT_SEGMENT_SIZE, source).unwrap();
    let mut segments = 0;
    while let Some(segment) = encoder.next_segment().await.unwrap() {
        assert_eq!(segment.offset, segments * DEFAULT_SEGMENT_SIZE);
        assert_eq!(segment.shard_count(), 16);
        segments += 1;
    }
    assert_eq!(segments, 16);
    assert_eq!(encoder.bytes_encoded(), total);
    let grown = peak_rss().saturating_sub(before);
    let segment = DEFAULT_SEGMENT_SIZE;
    println!(
        "peak RSS grew by {} MiB while encoding 1024 MiB in 64 MiB segments",
        grown >> 20
    );
    // One segment with its parity is 1.6 × 64 MiB; allow for allocator slack but nowhere
    // near the 1 GiB a whole-object buffer would take.
    assert!(
        grown < 3 * segment,
        "peak RSS grew by {} MiB, more than three segments",
        grown >> 20
    );
}
