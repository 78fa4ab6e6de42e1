//! Where a stored value's bytes live: a large value gets an anonymous memory
//! mapping of its own, a small one an ordinary heap allocation. It does not
//! pool, reuse or compact anything, and it knows nothing of the bound: the
//! store charges [`footprint`] and evicts.
//!
//! Why (issue 21): a node bounded at 256 MiB, with 8 worker threads and 8
//! writers of 64 KiB–1 MiB values, reached 3.3–3.5× the bound in RSS. Every
//! byte was accounted; the excess was freed memory the allocator kept. glibc
//! serves a large request with mmap only until the first such block is freed,
//! then raises its threshold to that size and serves the next ones from
//! per-thread arenas (up to 8 per core), where long-lived values and each
//! request's short-lived decode buffers interleave and the holes they leave
//! are not returned to the system (one arena, `MALLOC_ARENA_MAX=1`: 1.22×; a
//! fixed threshold, `MALLOC_MMAP_THRESHOLD_=65536`: 1.1×). jemalloc and
//! mimalloc as the global allocator kept 2.2–2.5× (jemalloc reached 1.1×
//! only with its decay turned off, a madvise per free). A mapping per value
//! is what glibc does before its threshold moves, and needs no allocator
//! state tuned from outside: eviction gives the pages back at once, the
//! arenas hold only the requests in flight, and the node stays within 1.15×.
//! The price is an mmap and a munmap per large write: in release builds the
//! node's write throughput with this load was the same within the noise of a
//! shared machine (10,600–13,400 MiB written in 30 s, with and without).

use bytes::Bytes;
use memmap2::MmapOptions;

/// Smallest value given a mapping of its own: 16 pages, so rounding up to a
/// page costs at most 6% of it. Below this, heap allocations are small enough
/// for the allocator's bins to reuse.
pub const MAPPED_VALUE_MIN: usize = 64 << 10;

/// Most mappings a full store should need: half of Linux's default
/// `vm.max_map_count` (65,530), the rest left to the runtime, the allocator
/// and the WAL. A bound above 2 GiB raises the threshold instead (see
/// [`mapped_min`]); a failed mmap falls back to the heap.
const MAX_MAPPED_VALUES: u64 = 32 << 10;

/// The page size assumed when charging a mapped value (x86-64, and arm64
/// kernels built with 4 KiB pages).
const PAGE: usize = 4 << 10;

/// The smallest value mapped by a store bounded at `max_memory` bytes: at
/// least [`MAPPED_VALUE_MIN`], and large enough that a store full of mapped
/// values holds at most [`MAX_MAPPED_VALUES`] of them.
pub(crate) fn mapped_min(max_memory: u64) -> usize {
    let by_count = usize::try_from(max_memory.div_ceil(MAX_MAPPED_VALUES)).unwrap_or(usize::MAX);
    by_count.max(MAPPED_VALUE_MIN).next_multiple_of(PAGE)
}

/// A stored copy of `value`: in a mapping of its own from `mapped_min`
/// bytes on, else on the heap. Never a slice of the caller's buffer, which
/// may be a whole gRPC message.
pub(crate) fn copy(value: &[u8], mapped_min: usize) -> Bytes {
    // Populated: the copy touches every page anyway, and one call faults
    // them in where the copy took a fault per page. A failed mmap (out of
    // mappings, vm.max_map_count, or of address space) falls back to the
    // heap, at the cost this module avoids.
    if value.len() >= mapped_min
        && let Ok(mut map) = MmapOptions::new().len(value.len()).populate().map_anon()
    {
        map.copy_from_slice(value);
        return Bytes::from_owner(map);
    }
    Bytes::copy_from_slice(value)
}

/// Bytes a value of `len` bytes is taken to occupy: whole pages from
/// [`MAPPED_VALUE_MIN`] on (mapped or not, so the charge does not depend on
/// the bound or on an mmap that failed), else `len`.
pub fn footprint(len: usize) -> u64 {
    let len = if len >= MAPPED_VALUE_MIN {
        len.next_multiple_of(PAGE)
    } else {
        len
    };
    len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_keeps_a_full_store_under_the_mapping_budget() {
        assert_eq!(mapped_min(32 << 20), MAPPED_VALUE_MIN);
        assert_eq!(mapped_min(2 << 30), MAPPED_VALUE_MIN);
        assert_eq!(mapped_min(16 << 30), 512 << 10);
        assert_eq!(mapped_min((2 << 30) + 1) % PAGE, 0);
        for max in [1u64 << 20, 1 << 30, 64 << 30, u64::MAX] {
            let min = mapped_min(max) as u64;
            assert!(max / min <= MAX_MAPPED_VALUES, "{max}");
        }
    }

    #[test]
    fn large_values_are_mapped_copies_and_small_ones_heap_copies() {
        let big = vec![7u8; MAPPED_VALUE_MIN + 1];
        let stored = copy(&big, MAPPED_VALUE_MIN);
        assert_eq!(stored, big);
        assert_ne!(stored.as_ptr(), big.as_ptr());
        assert_eq!(stored.as_ptr() as usize % PAGE, 0, "a mapping of its own");
        let small = copy(b"v", MAPPED_VALUE_MIN);
        assert_eq!(small, &b"v"[..]);
        assert_eq!(copy(b"", MAPPED_VALUE_MIN), Bytes::new());
    }

    #[test]
    fn footprint_rounds_large_values_to_pages() {
        assert_eq!(footprint(10), 10);
        assert_eq!(footprint(MAPPED_VALUE_MIN - 1), MAPPED_VALUE_MIN as u64 - 1);
        assert_eq!(footprint(MAPPED_VALUE_MIN), MAPPED_VALUE_MIN as u64);
        assert_eq!(
            footprint(MAPPED_VALUE_MIN + 1),
            (MAPPED_VALUE_MIN + PAGE) as u64
        );
    }
}
