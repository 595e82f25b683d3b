//! Segment-sized buffers: allocated fresh for every segment, tens of MiB each, written once.
//!
//! A 38 MiB parity buffer is a fresh anonymous mapping every time (far above the allocator's
//! mmap threshold), so the encoder's first write to each 4 KiB page takes a page fault. On
//! the virtual machine the benchmarks ran on, those ~10 000 faults per segment cost about a
//! third of encoding and hashing it (`docs/benchmarks.md`, "Erasure coding"). Asking
//! the kernel for transparent huge pages on such buffers turns them into ~20 faults of
//! 2 MiB. The advice is only advice: where huge pages are off, or on other systems, the
//! buffers are ordinary vectors and nothing else changes.

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

/// An empty vector with room for `capacity` bytes, backed by huge pages where granted.
pub(crate) fn with_capacity(capacity: usize) -> Vec<u8> {
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
}
