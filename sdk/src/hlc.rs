//! The hybrid logical clock that stamps this client's writes.
//!
//! A version is `unix_ms << 16 | logical << 8 | writer`: the wall clock keeps
//! versions close to real time, the logical byte orders several writes within
//! one millisecond (overflowing into the millisecond field, as an HLC does),
//! and the writer byte breaks ties between clients writing in the same
//! millisecond. [`Hlc::observe`] folds in versions seen from nodes, so a
//! write issued after reading version `v` is stamped above `v` even when this
//! machine's clock lags.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const WRITER_MASK: u64 = 0xFF;

/// How far ahead of this machine's clock an observed version may be and
/// still be adopted: the nodes' default `--max-version-skew`.
pub(crate) const MAX_ADOPTED_SKEW_MS: u64 = 30_000;
const LOGICAL_STEP: u64 = 0x100;

/// A lock-free hybrid logical clock.
#[derive(Debug)]
pub(crate) struct Hlc {
    last: AtomicU64,
    writer: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hlc {
    pub(crate) fn new(writer: u8) -> Self {
        Self {
            last: AtomicU64::new(0),
            writer: u64::from(writer),
        }
    }

    /// A fresh version, above every version issued or observed so far.
    pub(crate) fn next(&self) -> u64 {
        self.next_at(now_ms())
    }

    fn next_at(&self, now_ms: u64) -> u64 {
        let wall = distcache_proto::version_floor(now_ms);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let base = wall.max((last & !WRITER_MASK) + LOGICAL_STEP);
            let v = base | self.writer;
            match self
                .last
                .compare_exchange_weak(last, v, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return v,
                Err(actual) => last = actual,
            }
        }
    }

    /// Records a version seen elsewhere, unless it is more than
    /// [`MAX_ADOPTED_SKEW_MS`] ahead of this machine's clock: one far-future
    /// version (a clock bug, a hostile writer) must not make every later
    /// write of this client outrank everyone else's. Nodes refuse such
    /// versions too (`--max-version-skew`).
    pub(crate) fn observe(&self, version: u64) {
        self.observe_at(version, now_ms());
    }

    fn observe_at(&self, version: u64, now_ms: u64) {
        let ahead = distcache_proto::version_floor(now_ms.saturating_add(MAX_ADOPTED_SKEW_MS + 1));
        if version < ahead {
            self.last.fetch_max(version, Ordering::Relaxed);
        }
    }
}

/// A writer id that differs between processes and between clients of one
/// process with high probability.
pub(crate) fn random_writer_id() -> u8 {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = [
        nanos,
        u64::from(std::process::id()),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    ];
    let mut bytes = [0u8; 24];
    for (i, s) in seed.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&s.to_le_bytes());
    }
    (xxhash_rust::xxh3::xxh3_64(&bytes) & WRITER_MASK) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_stamped_with_writer() {
        let c = Hlc::new(7);
        let a = c.next_at(1000);
        let b = c.next_at(1000);
        let d = c.next_at(999); // clock went backwards
        assert!(a < b && b < d);
        for v in [a, b, d] {
            assert_eq!(v & WRITER_MASK, 7);
        }
        assert_eq!(a >> 16, 1000);
    }

    #[test]
    fn observed_versions_are_exceeded() {
        let c = Hlc::new(1);
        let far = distcache_proto::version_floor(5000) | 0xFF00;
        c.observe(far);
        let v = c.next_at(10);
        assert!(v > far);
    }

    #[test]
    fn versions_far_ahead_of_the_clock_are_not_adopted() {
        let c = Hlc::new(1);
        let now = 1_700_000_000_000;
        c.observe_at(distcache_proto::version_floor(now + 3_600_000), now);
        assert_eq!(c.next_at(now) >> 16, now, "an hour ahead is ignored");
        let near = distcache_proto::version_floor(now + 20_000);
        c.observe_at(near, now);
        assert!(c.next_at(now) > near, "20 s ahead is adopted");
    }

    #[test]
    fn writers_break_ties() {
        let a = Hlc::new(1).next_at(42);
        let b = Hlc::new(2).next_at(42);
        assert_ne!(a, b);
        assert_eq!(a >> 8, b >> 8);
    }
}
