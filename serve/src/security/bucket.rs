//! Token buckets, alone and keyed by client. Pure and synchronous: callers
//! pass the current `Instant`, so tests move time by hand.
//!
//! A bucket holds up to `burst` tokens and gains `rate` tokens per second;
//! each request takes one. The keyed limiter keeps one bucket per client in
//! a few mutex-guarded shards and bounds its memory two ways: buckets idle
//! long enough to have refilled completely are dropped (forgetting a full
//! bucket changes nothing), and a shard still at capacity evicts the
//! longest-idle of a few sampled buckets before admitting a new client. The
//! idle sweep runs at most once a second per shard, so a flood of new
//! clients costs O(1) each, not a scan of the shard.

use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use hashbrown::DefaultHashBuilder;
use hashbrown::HashMap;
use parking_lot::Mutex;

const SHARDS: usize = 16;
/// Buckets looked at when one must be evicted.
const EVICTION_SAMPLE: usize = 8;
/// Least time between two idle sweeps of one shard.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One token bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Rate and burst of a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Most tokens held (and the first burst allowed).
    pub burst: f64,
}

impl Rate {
    /// Time for an empty bucket to refill completely.
    pub fn refill_time(&self) -> Duration {
        Duration::from_secs_f64((self.burst / self.per_sec).min(86_400.0))
    }
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.take_n(rate, now, 1)
    }

    /// Takes `n` tokens when at least one is available, going into debt for
    /// the rest (later requests then wait until it is paid back), or says
    /// how long until one is available. A batch of many operations is
    /// charged what it costs, so batching does not multiply the rate, and a
    /// batch larger than the burst still passes once instead of never.
    pub fn take_n(&mut self, rate: Rate, now: Instant, n: u32) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= f64::from(n);
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - self.tokens) / rate.per_sec).min(86_400.0),
            ))
        }
    }
}

/// A bucket per client key, with bounded memory.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    idle: Duration,
    per_shard: usize,
    hasher: DefaultHashBuilder,
    shards: Vec<Mutex<Shard<K>>>,
}

#[derive(Debug)]
struct Shard<K> {
    buckets: HashMap<K, Bucket>,
    swept: Option<Instant>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// Buckets of `rate`, at most `max_clients` of them, dropped after
    /// `idle` without requests (never before they would have refilled).
    pub fn new(rate: Rate, max_clients: usize, idle: Duration) -> Self {
        Self {
            rate,
            idle: idle.max(rate.refill_time()),
            per_shard: max_clients.div_ceil(SHARDS).max(1),
            hasher: DefaultHashBuilder::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        swept: None,
                    })
                })
                .collect(),
        }
    }

    /// Takes a token from `key`'s bucket.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.take_n(key, now, 1)
    }

    /// Takes `n` tokens from `key`'s bucket (see [`Bucket::take_n`]).
    pub fn take_n(&self, key: &K, now: Instant, n: u32) -> Result<(), Duration> {
        let shard = self.hasher.hash_one(key) as usize % SHARDS;
        let mut shard = self.shards[shard].lock();
        if let Some(b) = shard.buckets.get_mut(key) {
            return b.take_n(self.rate, now, n);
        }
        if shard.buckets.len() >= self.per_shard {
            let due = shard
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
            if due {
                let idle = self.idle;
                shard
                    .buckets
                    .retain(|_, b| now.saturating_duration_since(b.last) < idle);
                shard.swept = Some(now);
            }
            if shard.buckets.len() >= self.per_shard {
                let victim = shard
                    .buckets
                    .iter()
                    .take(EVICTION_SAMPLE)
                    .min_by_key(|(_, b)| b.last)
                    .map(|(k, _)| k.clone());
                if let Some(k) = victim {
                    shard.buckets.remove(&k);
                }
            }
        }
        let mut b = Bucket::full(self.rate, now);
        let r = b.take_n(self.rate, now, n);
        shard.buckets.insert(key.clone(), b);
        r
    }

    /// Drops buckets idle long enough to be full again.
    pub fn evict_idle(&self, now: Instant) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard
                .buckets
                .retain(|_, b| now.saturating_duration_since(b.last) < self.idle);
            shard.swept = Some(now);
        }
    }

    /// Clients currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().buckets.len()).sum()
    }

    /// True when no client is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_sec: 10.0,
        burst: 3.0,
    };

    #[test]
    fn a_batch_is_charged_per_operation_and_its_debt_is_paid_back() {
        let t0 = Instant::now();
        let mut b = Bucket::full(RATE, t0);
        // 20 operations at once: admitted (a token was there), 17 in debt.
        assert!(b.take_n(RATE, t0, 20).is_ok());
        let wait = b.take(RATE, t0).expect_err("in debt");
        // 17 owed plus the one asked for, at 10 per second.
        assert!(wait >= Duration::from_millis(1700), "{wait:?}");
        assert!(b.take(RATE, t0 + Duration::from_millis(1000)).is_err());
        assert!(b.take(RATE, t0 + Duration::from_millis(1800)).is_ok());
    }

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = Bucket::full(RATE, t0);
        for _ in 0..3 {
            assert!(b.take(RATE, t0).is_ok());
        }
        let wait = b.take(RATE, t0).expect_err("empty");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert!(b.take(RATE, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(RATE, t0 + Duration::from_millis(100)).is_err());
        // Refill is capped at the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(RATE, later).is_ok());
        }
        assert!(b.take(RATE, later).is_err());
    }

    #[test]
    fn clients_are_isolated() {
        let t0 = Instant::now();
        let l = KeyedLimiter::new(RATE, 100, Duration::from_secs(1));
        for _ in 0..3 {
            assert!(l.take(&"a", t0).is_ok());
        }
        assert!(l.take(&"a", t0).is_err());
        assert!(l.take(&"b", t0).is_ok());
    }

    #[test]
    fn memory_stays_bounded_with_many_clients() {
        let t0 = Instant::now();
        let l = KeyedLimiter::new(RATE, 64, Duration::from_secs(1));
        for i in 0..100_000u32 {
            let _ = l.take(&i, t0);
        }
        assert!(l.len() <= 64 + SHARDS, "{}", l.len());
        l.evict_idle(t0 + Duration::from_secs(2));
        assert!(l.is_empty());
        // An idle bucket is only dropped once it would be full anyway.
        let slow = Rate {
            per_sec: 1.0,
            burst: 10.0,
        };
        let l = KeyedLimiter::new(slow, 64, Duration::from_secs(1));
        let _ = l.take(&1u32, t0);
        l.evict_idle(t0 + Duration::from_secs(5));
        assert_eq!(l.len(), 1);
        l.evict_idle(t0 + Duration::from_secs(10));
        assert!(l.is_empty());
    }
}
