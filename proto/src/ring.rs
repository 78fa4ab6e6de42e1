//! A key's position on the consistent-hash ring: part of the contract,
//! since a `Scan` limited to hash ranges (`ScanRequest.ranges`) is filtered
//! by the node with the same hash the clients place keys with.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::v1::HashRange;

/// Seed of every hash the ring computes. Changing it moves every key.
pub const RING_SEED: u64 = 0x6469_7374_6361_6368; // "distcach"

/// Most ranges one `Scan` may name (two per point of a ring of
/// `MAX_NODES` nodes of 150 points would be far fewer).
pub const MAX_SCAN_RANGES: usize = 100_000;

/// The hash of a key on the ring (xxh3-64 with [`RING_SEED`]).
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, RING_SEED)
}

/// True when `hash` lies in `r`: `start < hash <= end`, wrapping past
/// `u64::MAX` when `start >= end` (so `start == end` is the whole ring).
#[inline]
pub fn in_range(r: &HashRange, hash: u64) -> bool {
    if r.start < r.end {
        r.start < hash && hash <= r.end
    } else {
        hash > r.start || hash <= r.end
    }
}

/// Ranges as disjoint sorted inclusive spans, for [`Ranges::contains`].
#[derive(Debug, Clone, Default)]
pub struct Ranges {
    /// `[lo, hi]`, sorted by `lo`, not overlapping.
    spans: Vec<(u64, u64)>,
}

impl Ranges {
    /// `None` for no ranges (every key).
    pub fn new(ranges: &[HashRange]) -> Option<Self> {
        if ranges.is_empty() {
            return None;
        }
        let mut spans = Vec::with_capacity(ranges.len() + 1);
        for r in ranges {
            if r.start < r.end {
                spans.push((r.start + 1, r.end));
            } else {
                if r.start < u64::MAX {
                    spans.push((r.start + 1, u64::MAX));
                }
                spans.push((0, r.end));
            }
        }
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for (lo, hi) in spans {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Some(Self { spans: merged })
    }

    /// True when `hash` lies in one of the ranges.
    pub fn contains(&self, hash: u64) -> bool {
        let i = self.spans.partition_point(|s| s.0 <= hash);
        i > 0 && hash <= self.spans[i - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> HashRange {
        HashRange { start, end }
    }

    #[test]
    fn ranges_agree_with_in_range() {
        let cases = [
            vec![r(10, 20)],
            vec![r(10, 20), r(15, 30), r(100, 5)],
            vec![r(u64::MAX - 3, 2)],
            vec![r(7, 7)],
            vec![r(0, u64::MAX)],
        ];
        let probes = [
            0,
            1,
            2,
            3,
            5,
            6,
            7,
            8,
            10,
            11,
            15,
            20,
            21,
            30,
            31,
            99,
            100,
            101,
            u64::MAX - 4,
            u64::MAX - 3,
            u64::MAX - 2,
            u64::MAX,
        ];
        for ranges in &cases {
            let set = Ranges::new(ranges).expect("some");
            for &h in &probes {
                let want = ranges.iter().any(|x| in_range(x, h));
                assert_eq!(set.contains(h), want, "{ranges:?} {h}");
            }
        }
        assert!(Ranges::new(&[]).is_none());
    }
}
