//! The storage engine: a synchronous, sharded LRU map (CLOCK eviction, see
//! `shard`) from byte keys to versioned byte values with TTLs, tombstones,
//! compare-and-swap and counters.
//!
//! It knows nothing of tokio, tonic or the disk: every call takes a shard's
//! mutex for a few hundred nanoseconds and returns, so it can be unit-tested and
//! benchmarked alone, and callers in async code never hold a lock across an
//! `.await`.
//!
//! Memory: every entry is charged `key + value + ENTRY_OVERHEAD` bytes against
//! one global bound. A write that crosses the bound evicts entries not used
//! since the clock hand last passed, from its own shard first, then from the
//! other shards in turn, so with keys spread evenly by hash the policy
//! approximates a global LRU.
//!
//! Versions: every entry carries a `u64` version that only grows. A write with
//! version 0 gets `max(current + 1, now_ms << 16)`; a write with a non-zero
//! version (a replicated write) is applied only if newer than what the shard
//! holds, tombstones included.

mod config;
mod scan;
mod shard;
mod value;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::clock::{Clock, SystemClock};
use crate::tracking::Tracker;
pub use config::{
    DEFAULT_MAX_MEMORY, DEFAULT_SHARDS, DEFAULT_TOMBSTONE_TTL_MS, StoreConfig, StoreSection,
};
pub use scan::{Cursor, ScanItem, ScanPage};
pub use shard::{ENTRY_OVERHEAD, ShardStats, charge};
use shard::{Shard, Slot};
pub use value::{MAPPED_VALUE_MIN, footprint};

/// Hash seed for placing keys in shards. Deliberately different from the
/// SDK's ring seed, so the keys one node owns still spread over all shards.
const SHARD_SEED: u64 = 0x5eed_d15c_ac4e_0001;

/// Why the store refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Keys must not be empty.
    #[error("key must not be empty")]
    EmptyKey,
    /// The entry alone is larger than the whole memory bound.
    #[error("entry of {size} bytes exceeds max-memory of {max} bytes")]
    TooLarge {
        /// Bytes the entry would be charged.
        size: u64,
        /// The configured bound.
        max: u64,
    },
    /// A counter operation found a value that is not a decimal i64.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// A counter operation would overflow an i64.
    #[error("increment or decrement would overflow")]
    Overflow,
}

/// A condition on a [`Store::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Write whatever the key holds.
    #[default]
    Always,
    /// Write only when the key holds no live value.
    IfAbsent,
    /// Write only when the key holds a live value.
    IfPresent,
}

/// Options of a [`Store::set`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Time to live in milliseconds; 0 means none.
    pub ttl_ms: u64,
    /// When to write.
    pub condition: Condition,
    /// 0 to let the store assign the next version; else a replicated version.
    pub version: u64,
    /// Keep the current expiry of a live value instead of `ttl_ms`.
    pub keep_ttl: bool,
}

/// What [`Store::lookup`] found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A live value.
    Live(Value),
    /// A tombstone with this version: the key was deleted.
    Tombstone(u64),
    /// Nothing (never written, expired, evicted or forgotten).
    Absent,
}

/// A live value read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The bytes stored.
    pub value: Bytes,
    /// The entry's version.
    pub version: u64,
    /// Remaining time to live in milliseconds; 0 when none.
    pub ttl_ms: u64,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Whether the write took effect.
    pub applied: bool,
    /// The version after the call (the new one when applied, else the current
    /// one; 0 when the key holds nothing).
    pub version: u64,
    /// Absolute expiry of the entry written, in Unix ms; 0 when none.
    pub expires_at: u64,
}

impl Written {
    fn rejected(version: u64) -> Self {
        Self {
            applied: false,
            version,
            expires_at: 0,
        }
    }
}

/// Totals over all shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live keys.
    pub keys: u64,
    /// Entries including tombstones.
    pub entries: u64,
    /// Bytes charged to entries.
    pub memory_bytes: u64,
    /// Reads that found a live value.
    pub hits: u64,
    /// Reads that found none.
    pub misses: u64,
    /// Entries evicted to respect the memory bound.
    pub evictions: u64,
    /// Entries removed because their TTL ran out.
    pub expirations: u64,
}

/// The sharded store. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    used: AtomicU64,
    max_memory: u64,
    /// Values from this many bytes on get a mapping of their own (`value`).
    mapped_min: usize,
    tombstone_ttl_ms: u64,
    evict_cursor: AtomicUsize,
    clock: Arc<dyn Clock>,
    /// Told of every change, under the shard lock (client-side caching:
    /// an invalidation is queued before the write is acknowledged).
    tracker: OnceLock<Arc<Tracker>>,
}

/// The version a store assigns to a write over `current` at `now_ms`.
pub fn next_version(current: u64, now_ms: u64) -> u64 {
    current
        .saturating_add(1)
        .max(distcache_proto::version_floor(now_ms))
}

impl Store {
    /// A store on the system clock.
    pub fn new(config: StoreConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A store reading time from `clock`. `config.shards` is rounded up to a
    /// power of two and clamped to 1..=65536.
    pub fn with_clock(config: StoreConfig, clock: Arc<dyn Clock>) -> Self {
        let n = config.shards.clamp(1, 1 << 16).next_power_of_two();
        Self {
            shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
            mask: n - 1,
            used: AtomicU64::new(0),
            max_memory: config.max_memory,
            mapped_min: value::mapped_min(config.max_memory),
            tombstone_ttl_ms: config.tombstone_ttl_ms,
            evict_cursor: AtomicUsize::new(0),
            clock,
            tracker: OnceLock::new(),
        }
    }

    /// Tells `tracker` of every change from now on (set once, after
    /// recovery: nobody tracks what a restarted node replays).
    pub(crate) fn set_tracker(&self, tracker: Arc<Tracker>) {
        let _ = self.tracker.set(tracker);
    }

    fn changed(&self, key: &[u8]) {
        if let Some(t) = self.tracker.get() {
            t.changed(key);
        }
    }

    /// How long tombstones are kept, in milliseconds.
    pub fn tombstone_ttl_ms(&self) -> u64 {
        self.tombstone_ttl_ms
    }

    /// The clock this store reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Bytes currently charged to entries.
    pub fn memory_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The configured memory bound in bytes.
    pub fn max_memory(&self) -> u64 {
        self.max_memory
    }

    /// The index of the shard holding `key` (recovery groups records by it).
    pub fn shard_of(&self, key: &[u8]) -> usize {
        (xxh3_64_with_seed(key, SHARD_SEED) >> 40) as usize & self.mask
    }

    fn locate(&self, key: &[u8]) -> (u64, &Mutex<Shard>) {
        let hash = xxh3_64_with_seed(key, SHARD_SEED);
        // Bits 40.. pick the shard: hashbrown uses the top 7 bits and the low
        // bits itself, so those must stay varied within a shard.
        (hash, &self.shards[(hash >> 40) as usize & self.mask])
    }

    /// Finds `key`, dropping it first if its time is up.
    fn find_fresh(&self, shard: &mut Shard, hash: u64, key: &[u8], now: u64) -> Option<u32> {
        let idx = shard.find(hash, key)?;
        if shard.slot(idx).expired(now) {
            let freed = shard.remove(idx);
            shard.stats.expirations += 1;
            self.used.fetch_sub(freed, Ordering::Relaxed);
            return None;
        }
        Some(idx)
    }

    /// Reads a live value and marks it recently used.
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        match self.lookup(key) {
            Lookup::Live(v) => Some(v),
            Lookup::Tombstone(_) | Lookup::Absent => None,
        }
    }

    /// [`Store::get`], telling a tombstone (and its version) from nothing,
    /// under the same lock: a replicated read compares it with the values
    /// other replicas hold.
    pub fn lookup(&self, key: &[u8]) -> Lookup {
        let now = self.clock.now_ms();
        let (hash, lock) = self.locate(key);
        let mut shard = lock.lock();
        let found = self.find_fresh(&mut shard, hash, key, now).map(|idx| {
            let slot = shard.slot(idx);
            let Some(value) = slot.value.clone() else {
                return Lookup::Tombstone(slot.version);
            };
            let out = Value {
                value,
                version: slot.version,
                ttl_ms: remaining(slot.expires_at, now),
            };
            shard.touch(idx);
            Lookup::Live(out)
        });
        let found = found.unwrap_or(Lookup::Absent);
        if matches!(found, Lookup::Live(_)) {
            shard.stats.hits += 1;
        } else {
            shard.stats.misses += 1;
        }
        found
    }

    /// Writes a value (see [`SetOptions`]).
    pub fn set(&self, key: &[u8], value: &[u8], opts: SetOptions) -> Result<Written, StoreError> {
        self.check_entry(key, value.len())?;
        let now = self.clock.now_ms();
        let (hash, lock) = self.locate(key);
        let mut shard = lock.lock();
        let idx = self.find_fresh(&mut shard, hash, key, now);
        let (current, live, old_expiry) = idx.map_or((0, false, 0), |i| {
            let s = shard.slot(i);
            (s.version, s.value.is_some(), s.expires_at)
        });
        let blocked = match opts.condition {
            Condition::Always => false,
            Condition::IfAbsent => live,
            Condition::IfPresent => !live,
        };
        let expires_at = if opts.keep_ttl && live {
            old_expiry
        } else {
            deadline(now, opts.ttl_ms)
        };
        if opts.version != 0 && opts.version == current && !blocked {
            // Equal versions: every replica keeps the same content, the
            // greater by (value, expiry), a tombstone above any value. A
            // write the node already holds is answered as applied (a resend
            // after a lost answer), so `applied` means "holds this write".
            // (None: a tombstone, which wins, or nothing held.)
            let held = idx.and_then(|i| {
                let s = shard.slot(i);
                let v = s.value.as_deref()?;
                Some((v, s.expires_at).cmp(&(value, expires_at)))
            });
            match held {
                Some(std::cmp::Ordering::Equal) => {
                    return Ok(Written {
                        applied: true,
                        version: current,
                        expires_at,
                    });
                }
                Some(std::cmp::Ordering::Less) => {}
                _ => return Ok(Written::rejected(current)),
            }
        } else if blocked || (opts.version != 0 && opts.version < current) {
            return Ok(Written::rejected(current));
        }
        let version = if opts.version == 0 {
            next_version(current, now)
        } else {
            opts.version
        };
        let value = Some(value::copy(value, self.mapped_min));
        let idx = self.write(&mut shard, idx, hash, key, value, version, expires_at);
        drop(shard);
        self.enforce_bound(lock, idx);
        Ok(Written {
            applied: true,
            version,
            expires_at,
        })
    }

    /// Deletes a key, leaving a tombstone at the delete's version. With
    /// `version == 0` a key that holds no live value is left alone.
    pub fn delete(&self, key: &[u8], version: u64) -> Result<(bool, Written), StoreError> {
        self.take(key, version).map(|(v, w)| (v.is_some(), w))
    }

    /// [`Store::delete`] that also returns the live value it removed, in the
    /// same critical section (Redis's GETDEL: two concurrent ones never both
    /// get the value).
    pub fn take(&self, key: &[u8], version: u64) -> Result<(Option<Bytes>, Written), StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let now = self.clock.now_ms();
        let (hash, lock) = self.locate(key);
        let mut shard = lock.lock();
        let idx = self.find_fresh(&mut shard, hash, key, now);
        let (current, old) = idx.map_or((0, None), |i| {
            let s = shard.slot(i);
            (s.version, s.value.clone())
        });
        let live = old.is_some();
        if (version == 0 && !live) || (version != 0 && version < current) {
            return Ok((None, Written::rejected(current)));
        }
        if version != 0 && version == current && !live {
            // The node already holds this tombstone (a resend).
            return Ok((
                None,
                Written {
                    applied: true,
                    version,
                    expires_at: idx.map_or(0, |i| shard.slot(i).expires_at),
                },
            ));
        }
        // (At an equal version a tombstone replaces a value: every replica
        // ends with the tombstone, whatever the order.)
        let version = if version == 0 {
            next_version(current, now)
        } else {
            version
        };
        let written = Written {
            applied: true,
            version,
            expires_at: deadline(now, self.tombstone_ttl_ms),
        };
        if self.tombstone_ttl_ms == 0 {
            if let Some(i) = idx {
                let freed = shard.remove(i);
                self.used.fetch_sub(freed, Ordering::Relaxed);
                self.changed(key);
            }
            return Ok((old, written));
        }
        let idx = self.write(
            &mut shard,
            idx,
            hash,
            key,
            None,
            version,
            written.expires_at,
        );
        drop(shard);
        self.enforce_bound(lock, idx);
        Ok((old, written))
    }

    /// Replaces the value only if the key's live version equals `expected`
    /// (0: only if the key holds no live value). On a mismatch nothing changes
    /// and the current live version (0 if none) is returned.
    pub fn compare_and_swap(
        &self,
        key: &[u8],
        expected: u64,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<Written, StoreError> {
        self.check_entry(key, value.len())?;
        let now = self.clock.now_ms();
        let (hash, lock) = self.locate(key);
        let mut shard = lock.lock();
        let idx = self.find_fresh(&mut shard, hash, key, now);
        let (stored, live) = idx.map_or((0, false), |i| {
            let s = shard.slot(i);
            (s.version, s.value.is_some())
        });
        let live_version = if live { stored } else { 0 };
        if live_version != expected {
            return Ok(Written::rejected(live_version));
        }
        let version = next_version(stored, now);
        let expires_at = deadline(now, ttl_ms);
        let value = Some(value::copy(value, self.mapped_min));
        let idx = self.write(&mut shard, idx, hash, key, value, version, expires_at);
        drop(shard);
        self.enforce_bound(lock, idx);
        Ok(Written {
            applied: true,
            version,
            expires_at,
        })
    }

    /// Adds `delta` to the decimal integer stored at `key` (absent counts as
    /// 0), keeping its TTL, and returns the new value.
    pub fn incr_by(&self, key: &[u8], delta: i64) -> Result<(i64, Written), StoreError> {
        self.check_entry(key, 20)?;
        let now = self.clock.now_ms();
        let (hash, lock) = self.locate(key);
        let mut shard = lock.lock();
        let idx = self.find_fresh(&mut shard, hash, key, now);
        let (current, old, expires_at) = match idx {
            Some(i) => {
                let s = shard.slot(i);
                let old = match &s.value {
                    Some(v) => parse_i64(v).ok_or(StoreError::NotAnInteger)?,
                    None => 0,
                };
                let expiry = if s.value.is_some() { s.expires_at } else { 0 };
                (s.version, old, expiry)
            }
            None => (0, 0, 0),
        };
        let new = old.checked_add(delta).ok_or(StoreError::Overflow)?;
        let version = next_version(current, now);
        let value = Some(Bytes::from(new.to_string()));
        let idx = self.write(&mut shard, idx, hash, key, value, version, expires_at);
        drop(shard);
        self.enforce_bound(lock, idx);
        Ok((
            new,
            Written {
                applied: true,
                version,
                expires_at,
            },
        ))
    }

    /// Sets (or with `ttl_ms == 0` removes) the expiry of a live value. Not
    /// applied when the key holds no live value, when removing an expiry the
    /// value does not have, or when a replicated `version` is not newer.
    pub fn expire(&self, key: &[u8], ttl_ms: u64, version: u64) -> Result<Written, StoreError> {
        self.expire_with_value(key, ttl_ms, version).map(|(w, _)| w)
    }

    /// [`Store::expire`], also returning the value when applied, so the
    /// write-ahead log can record the entry's whole new state.
    pub fn expire_with_value(
        &self,
        key: &[u8],
        ttl_ms: u64,
        version: u64,
    ) -> Result<(Written, Option<Bytes>), StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let now = self.clock.now_ms();
        let (hash, lock) = self.locate(key);
        let mut shard = lock.lock();
        let Some(idx) = self.find_fresh(&mut shard, hash, key, now) else {
            return Ok((Written::rejected(0), None));
        };
        let slot = shard.slot(idx);
        let current = slot.version;
        let Some(value) = slot.value.clone() else {
            return Ok((Written::rejected(current), None));
        };
        if (ttl_ms == 0 && slot.expires_at == 0) || (version != 0 && version <= current) {
            return Ok((Written::rejected(current), None));
        }
        let version = if version == 0 {
            next_version(current, now)
        } else {
            version
        };
        let expires_at = deadline(now, ttl_ms);
        shard.replace(idx, Some(value.clone()), version, expires_at);
        self.changed(key);
        Ok((
            Written {
                applied: true,
                version,
                expires_at,
            },
            Some(value),
        ))
    }

    /// Puts back an entry read from a snapshot or the write-ahead log: a value
    /// (`Some`) or a tombstone (`None`) at `version`, expiring at `expires_at`
    /// (Unix ms, 0 = never; for a tombstone 0 means "no tombstone kept").
    ///
    /// Applied only if `version` is newer than what the key holds, so replaying
    /// records twice or out of order converges on the newest. An entry whose
    /// time is already up is not resurrected: it becomes an expired marker that
    /// still blocks older records of the key for the rest of the replay, and
    /// that the sweeper (or [`Store::sweep_shard`]) reclaims. The memory bound
    /// is enforced by eviction, as for any write.
    pub fn restore(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        version: u64,
        expires_at: u64,
    ) -> Restored {
        if key.is_empty() || self.check_entry(key, value.map_or(0, <[u8]>::len)).is_err() {
            return Restored::Invalid;
        }
        let now = self.clock.now_ms();
        let (hash, lock) = self.locate(key);
        let mut shard = lock.lock();
        // Not find_fresh: an expired marker must keep blocking older records.
        let idx = shard.find(hash, key);
        if let Some(i) = idx
            && shard.slot(i).version >= version
        {
            return Restored::Stale;
        }
        let expired = if value.is_none() && expires_at == 0 {
            true
        } else {
            expires_at != 0 && expires_at <= now
        };
        let (value, expires_at, outcome) = if expired {
            (None, expires_at.clamp(1, now.max(1)), Restored::Expired)
        } else {
            let value = value.map(|v| value::copy(v, self.mapped_min));
            (value, expires_at, Restored::Applied)
        };
        let idx = self.write(&mut shard, idx, hash, key, value, version, expires_at);
        drop(shard);
        self.enforce_bound(lock, idx);
        outcome
    }

    /// Removes expired entries from up to `budget` slots of shard `shard`;
    /// returns how many were removed. Called by the node's sweeper task.
    pub fn sweep_shard(&self, shard: usize, budget: usize) -> u64 {
        let now = self.clock.now_ms();
        let Some(lock) = self.shards.get(shard) else {
            return 0;
        };
        let (removed, freed) = lock.lock().sweep(now, budget);
        self.used.fetch_sub(freed, Ordering::Relaxed);
        removed
    }

    /// Totals over all shards (locks each shard briefly in turn).
    pub fn stats(&self) -> StoreStats {
        let mut out = StoreStats {
            memory_bytes: self.memory_bytes(),
            ..StoreStats::default()
        };
        for lock in &self.shards {
            let shard = lock.lock();
            out.keys += shard.live;
            out.entries += shard.iter().count() as u64;
            out.hits += shard.stats.hits;
            out.misses += shard.stats.misses;
            out.evictions += shard.stats.evictions;
            out.expirations += shard.stats.expirations;
        }
        out
    }

    /// Live keys over all shards.
    pub fn len(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().live).sum()
    }

    /// True when no shard holds a live key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_entry(&self, key: &[u8], value_len: usize) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let size = charge(key.len(), value_len);
        if size > self.max_memory {
            return Err(StoreError::TooLarge {
                size,
                max: self.max_memory,
            });
        }
        Ok(())
    }

    /// Inserts or replaces under the shard lock and accounts the bytes.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        shard: &mut Shard,
        idx: Option<u32>,
        hash: u64,
        key: &[u8],
        value: Option<Bytes>,
        version: u64,
        expires_at: u64,
    ) -> u32 {
        let before = shard.bytes;
        let idx = match idx {
            Some(i) => {
                shard.replace(i, value, version, expires_at);
                i
            }
            None => shard.insert(hash, key, value, version, expires_at),
        };
        let after = shard.bytes;
        if after >= before {
            self.used.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(before - after, Ordering::Relaxed);
        }
        self.changed(key);
        idx
    }

    /// Evicts until the bound holds: the writer's own shard first (sparing the
    /// entry just written), then the other shards in turn. Never
    /// holds two shard locks at once.
    fn enforce_bound(&self, own: &Mutex<Shard>, keep: u32) {
        // Values first, in every shard; tombstones only when no value is
        // left to evict (see `Shard::evict_value`).
        for tombstones in [false, true] {
            if self.used.load(Ordering::Relaxed) <= self.max_memory {
                return;
            }
            let evict = |shard: &mut Shard, keep: u32| match tombstones {
                false => shard.evict_value(keep),
                true => shard.evict(keep),
            };
            {
                let mut shard = own.lock();
                while self.used.load(Ordering::Relaxed) > self.max_memory {
                    match evict(&mut shard, keep) {
                        Some(freed) => {
                            self.used.fetch_sub(freed, Ordering::Relaxed);
                        }
                        None => break,
                    }
                }
            }
            let mut idle = 0;
            while self.used.load(Ordering::Relaxed) > self.max_memory && idle < self.shards.len() {
                let i = self.evict_cursor.fetch_add(1, Ordering::Relaxed) & self.mask;
                let lock = &self.shards[i];
                if std::ptr::eq(lock, own) {
                    idle += 1;
                    continue;
                }
                match evict(&mut lock.lock(), u32::MAX) {
                    Some(freed) => {
                        self.used.fetch_sub(freed, Ordering::Relaxed);
                        idle = 0;
                    }
                    None => idle += 1,
                }
            }
        }
    }

    /// Calls `f` with every entry of shard `shard` (tombstones included), under
    /// that shard's lock, in the order eviction would take them, so that
    /// restoring them in that order rebuilds it. For snapshots: one shard at a
    /// time, writers elsewhere go on.
    pub fn for_each_in_shard(&self, shard: usize, mut f: impl FnMut(EntryRef<'_>)) {
        if let Some(lock) = self.shards.get(shard) {
            for slot in lock.lock().iter_eviction_order() {
                f(EntryRef::from(slot));
            }
        }
    }
}

/// What [`Store::restore`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// The entry now holds the restored value or tombstone.
    Applied,
    /// The entry's time was up: it is an expired marker, not a live value.
    Expired,
    /// The key already holds this version or a newer one.
    Stale,
    /// Empty key, or larger than the whole memory bound.
    Invalid,
}

/// A borrowed view of one stored entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value; `None` for a tombstone.
    pub value: Option<&'a Bytes>,
    /// The entry's version.
    pub version: u64,
    /// Absolute expiry in Unix ms; 0 when none.
    pub expires_at: u64,
}

impl<'a> From<&'a Slot> for EntryRef<'a> {
    fn from(s: &'a Slot) -> Self {
        Self {
            key: &s.key,
            value: s.value.as_ref(),
            version: s.version,
            expires_at: s.expires_at,
        }
    }
}

fn deadline(now: u64, ttl_ms: u64) -> u64 {
    if ttl_ms == 0 {
        0
    } else {
        now.saturating_add(ttl_ms)
    }
}

fn remaining(expires_at: u64, now: u64) -> u64 {
    if expires_at == 0 {
        0
    } else {
        expires_at.saturating_sub(now).max(1)
    }
}

/// Parses a decimal i64 the way Redis does: optional '-', digits, no spaces,
/// no leading '+', no leading zeros.
fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    if canonical { s.parse().ok() } else { None }
}

#[cfg(test)]
mod tests;
