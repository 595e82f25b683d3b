//! Segment-sized buffers: tens of MiB each, one set per segment coded.
//!
//! A 38 MiB parity buffer is a fresh anonymous mapping every time (far above the allocator's
//! mmap threshold), so the encoder's first write to each 4 KiB page takes a page fault. On
//! the virtual machine the benchmarks ran on, those ~10 000 faults per segment cost about a
//! third of encoding and hashing it (`docs/benchmarks.md`, "Erasure coding"). Two things
//! keep that cost off the steady state:
//!
//! - Huge pages: fresh buffers are advised onto transparent huge pages, turning ~10 000
//!   faults into ~20 of 2 MiB. The advice is only advice: where huge pages are off, or on
//!   other systems, the buffers are ordinary vectors and nothing else changes.
//! - Reuse: an [`crate::EncodedSegment`] hands its data and parity buffers back when it is
//!   dropped, and the next segment's buffers come from there. Even on huge pages the kernel
//!   zeroes every page it maps, and unmapping a buffer costs again; a gateway that codes
//!   segment after segment does neither once its first segments are done. What is kept is
//!   bounded by [`POOL_LIMIT`]; buffers smaller than [`POOL_MIN`] go back to the allocator,
//!   which reuses those well by itself.

use std::sync::{Mutex, MutexGuard};

/// Most bytes of idle buffers kept for reuse.
const POOL_LIMIT: usize = crate::MAX_IDLE_BUFFER_BYTES;

/// Buffers below this size are not pooled.
const POOL_MIN: usize = 1 << 20;

/// The process's idle segment buffers.
static POOL: Mutex<Pool> = Mutex::new(Pool::new(POOL_LIMIT));

/// Idle buffers, oldest first, holding at most `limit` bytes of capacity between them.
struct Pool {
    idle: Vec<Vec<u8>>,
    bytes: usize,
    limit: usize,
}

impl Pool {
    const fn new(limit: usize) -> Self {
        Self {
            idle: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    /// Takes the smallest idle buffer that holds `capacity` bytes without wasting more than
    /// as much again (a 64 MiB buffer is not tied up for a 1 MiB segment).
    fn take(&mut self, capacity: usize) -> Option<Vec<u8>> {
        if capacity < POOL_MIN {
            return None;
        }
        let (index, _) = self
            .idle
            .iter()
            .enumerate()
            .filter(|(_, buf)| buf.capacity() >= capacity && buf.capacity() / 2 <= capacity)
            .min_by_key(|(_, buf)| buf.capacity())?;
        let buf = self.idle.remove(index);
        self.bytes -= buf.capacity();
        Some(buf)
    }

    /// Keeps `buf` for reuse, evicting the oldest buffers past the limit; returns what is
    /// to be freed (`buf` itself if it is too small or too large to keep).
    fn put(&mut self, buf: Vec<u8>) -> Vec<Vec<u8>> {
        if buf.capacity() < POOL_MIN || buf.capacity() > self.limit {
            return vec![buf];
        }
        self.bytes += buf.capacity();
        self.idle.push(buf);
        let mut evicted = Vec::new();
        while self.bytes > self.limit {
            let oldest = self.idle.remove(0);
            self.bytes -= oldest.capacity();
            evicted.push(oldest);
        }
        evicted
    }
}

fn pool() -> MutexGuard<'static, Pool> {
    // Nothing that can panic runs under the lock except the pool's own vector operations,
    // which leave it consistent; a poisoned lock is still a usable pool.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Gives a buffer back for reuse. Its contents stay as they are: whoever takes it
/// overwrites what it uses (see [`scratch`]).
pub(crate) fn recycle(buf: Vec<u8>) {
    let evicted = pool().put(buf);
    // Freed after the lock is released: unmapping tens of MiB is not something to do while
    // other threads wait.
    drop(evicted);
}

/// Bytes of idle buffers the process keeps for reuse.
pub(crate) fn idle_bytes() -> usize {
    pool().bytes
}

/// `buf` cut or zero-extended to `len` bytes; the bytes it keeps are left as they were.
fn resized(mut buf: Vec<u8>, len: usize) -> Vec<u8> {
    buf.truncate(len);
    buf.resize(len, 0);
    buf
}

/// A buffer of `len` bytes whose contents are unspecified: zeroes, or whatever an earlier
/// user of a recycled buffer left there. Only for callers that overwrite every byte before
/// reading any (the parity of a segment: every stripe of every parity shard is written).
pub(crate) fn scratch(len: usize) -> Vec<u8> {
    let recycled = pool().take(len);
    match recycled {
        Some(buf) => resized(buf, len),
        None => zeroed(len),
    }
}

/// Huge page size the advice is aligned to (x86-64, and arm64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// `len` zero bytes, backed by huge pages where the kernel grants them.
pub(crate) fn zeroed(len: usize) -> Vec<u8> {
    // `vec![0; n]` asks the allocator for zeroed memory, which for large `n` is a fresh
    // mapping no page of which has been touched yet: the advice still applies to all of it.
    let buf = vec![0u8; len];
    advise_huge_pages(buf.as_ptr(), buf.capacity());
    buf
}

/// An empty vector with room for `capacity` bytes: a recycled buffer, or a fresh one
/// backed by huge pages where granted.
pub(crate) fn with_capacity(capacity: usize) -> Vec<u8> {
    let recycled = pool().take(capacity);
    if let Some(mut buf) = recycled {
        buf.clear();
        return buf;
    }
    let buf = Vec::with_capacity(capacity);
    advise_huge_pages(buf.as_ptr(), buf.capacity());
    buf
}

/// Advises the kernel to back the 2 MiB-aligned part of `len` bytes at `start` with
/// transparent huge pages.
#[cfg(target_os = "linux")]
fn advise_huge_pages(start: *const u8, len: usize) {
    let first = (start as usize).next_multiple_of(HUGE_PAGE);
    let end = (start as usize).saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if end <= first {
        return;
    }
    // SAFETY: the range lies inside one live allocation of ours and starts on a page
    // boundary. MADV_HUGEPAGE changes how the kernel backs the pages, never their contents,
    // so no Rust-visible state changes; failure (huge pages disabled) is harmless and
    // deliberately ignored.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: *const u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_what_they_say() {
        for len in [0, 1, HUGE_PAGE - 1, HUGE_PAGE, 3 * HUGE_PAGE + 17] {
            let zero = zeroed(len);
            assert_eq!(zero.len(), len);
            assert!(zero.iter().all(|&b| b == 0));
            let mut empty = with_capacity(len);
            assert!(empty.is_empty());
            assert!(empty.capacity() >= len);
            empty.resize(len, 7);
            assert!(empty.iter().all(|&b| b == 7));
        }
    }

    /// A buffer of `capacity` bytes (untouched memory, so tests can pool large ones
    /// cheaply), marked by its address.
    fn buffer(capacity: usize) -> (Vec<u8>, *const u8) {
        let buf = Vec::with_capacity(capacity);
        let at = buf.as_ptr();
        (buf, at)
    }

    #[test]
    fn the_pool_hands_out_the_closest_fit_and_never_a_wasteful_one() {
        const MIB: usize = 1 << 20;
        let mut pool = Pool::new(128 * MIB);
        let (big, big_at) = buffer(64 * MIB);
        let (mid, mid_at) = buffer(40 * MIB);
        assert!(pool.put(big).is_empty());
        assert!(pool.put(mid).is_empty());
        assert_eq!(pool.bytes, 104 * MIB);
        // Too small for either, or so small that either would waste more than half.
        assert!(pool.take(65 * MIB).is_none());
        assert!(pool.take(19 * MIB).is_none());
        assert!(
            pool.take(MIB / 2).is_none(),
            "small requests go to the allocator"
        );
        // The closest fit, not the first or the biggest.
        assert_eq!(pool.take(33 * MIB).map(|b| b.as_ptr()), Some(mid_at));
        assert_eq!(pool.take(33 * MIB).map(|b| b.as_ptr()), Some(big_at));
        assert!(pool.take(33 * MIB).is_none());
        assert_eq!(pool.bytes, 0);
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit_and_evicts_the_oldest() {
        const MIB: usize = 1 << 20;
        let mut pool = Pool::new(10 * MIB);
        let (first, first_at) = buffer(4 * MIB);
        let (second, second_at) = buffer(4 * MIB);
        let (third, third_at) = buffer(4 * MIB);
        assert!(pool.put(first).is_empty());
        assert!(pool.put(second).is_empty());
        let evicted = pool.put(third);
        assert_eq!(
            evicted.iter().map(|b| b.as_ptr()).collect::<Vec<_>>(),
            [first_at]
        );
        assert_eq!(pool.bytes, 8 * MIB);
        // Too small to be worth keeping, or larger than the whole limit: handed back.
        let (tiny, tiny_at) = buffer(MIB - 1);
        assert_eq!(pool.put(tiny)[0].as_ptr(), tiny_at);
        let (huge, huge_at) = buffer(11 * MIB);
        assert_eq!(pool.put(huge)[0].as_ptr(), huge_at);
        let kept: Vec<_> = pool.idle.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(kept, [second_at, third_at]);
    }

    #[test]
    fn a_recycled_buffer_keeps_its_bytes_and_zeroes_only_what_is_new() {
        let shrunk = resized(vec![7; 100], 60);
        assert_eq!(shrunk, vec![7; 60]);
        let grown = resized(shrunk, 90);
        assert_eq!(&grown[..60], &[7; 60][..]);
        assert_eq!(&grown[60..], &[0; 30][..]);
    }
}
