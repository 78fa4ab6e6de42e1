//! The hybrid logical clock that stamps this client's writes.
//!
//! A version is `unix_ms << 16 | logical`: the wall clock keeps versions
//! close to real time, and the 16-bit logical counter orders up to 65,536
//! writes within one millisecond (overflowing into the millisecond field, as
//! an HLC does), so even a bulk `mset` of 60,000 keys moves the clock less
//! than a millisecond ahead. [`Hlc::observe`] folds in versions seen from
//! nodes, so a write issued after reading version `v` is stamped above `v`
//! even when this machine's clock lags.
//!
//! Two clients may stamp the same version. That is safe: nodes break ties
//! between equal versions by content (the same choice on every replica), and
//! a write a replica did not take because it held an equal or newer version
//! is stamped again and resent (`View::write`), so equal versions imply equal
//! content on every replica and no acknowledgement stands for a lost write.
//! (The 8-bit random writer id this replaced left 256 versions per
//! millisecond, and two of many sidecars could share one.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How far ahead of this machine's clock an observed version may be and
/// still be adopted: the nodes' default `--max-version-skew`.
pub(crate) const MAX_ADOPTED_SKEW_MS: u64 = 30_000;

/// A lock-free hybrid logical clock.
#[derive(Debug, Default)]
pub(crate) struct Hlc {
    last: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hlc {
    /// A fresh version, above every version issued or observed so far.
    pub(crate) fn next(&self) -> u64 {
        self.next_at(now_ms())
    }

    fn next_at(&self, now_ms: u64) -> u64 {
        let wall = distcache_proto::version_floor(now_ms);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let v = wall.max(last.saturating_add(1));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_even_when_the_wall_clock_goes_back() {
        let c = Hlc::default();
        let a = c.next_at(1000);
        let b = c.next_at(1000);
        let d = c.next_at(999); // clock went backwards
        assert!(a < b && b < d);
        assert_eq!(a >> 16, 1000);
    }

    #[test]
    fn a_bulk_of_60000_writes_stays_within_the_millisecond() {
        let c = Hlc::default();
        let last = (0..60_000).map(|_| c.next_at(1000)).last().unwrap_or(0);
        assert_eq!(last >> 16, 1000);
    }

    #[test]
    fn observed_versions_are_exceeded() {
        let c = Hlc::default();
        let far = distcache_proto::version_floor(5000) | 0xFF00;
        c.observe(far);
        let v = c.next_at(10);
        assert!(v > far);
    }

    #[test]
    fn versions_far_ahead_of_the_clock_are_not_adopted() {
        let c = Hlc::default();
        let now = 1_700_000_000_000;
        c.observe_at(distcache_proto::version_floor(now + 3_600_000), now);
        assert_eq!(c.next_at(now) >> 16, now, "an hour ahead is ignored");
        let near = distcache_proto::version_floor(now + 20_000);
        c.observe_at(near, now);
        assert!(c.next_at(now) > near, "20 s ahead is adopted");
    }
}
