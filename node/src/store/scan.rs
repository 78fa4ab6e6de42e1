//! The version-filtered scan: every entry (values and tombstones) whose
//! version is at least a bound, page by page, for a returning replica's
//! catch-up. Versions are HLC values whose upper 48 bits are Unix
//! milliseconds, so "written since T" is `version >= T << 16`.
//!
//! A page holds one shard's lock at a time, for at most a page of entries;
//! writers elsewhere go on. The cursor is (shard, slab slot): an entry
//! keeps its slot while it lives, so a scan sees every entry that existed
//! when it started and was not removed before the scan reached it.

use bytes::Bytes;
use distcache_proto::ring::{Ranges, key_hash};

use super::{Store, remaining};

/// Where a scan resumes: shard index in the upper 32 bits, slab slot in
/// the lower 32. 0 is the start.
pub type Cursor = u64;

/// One entry of a scan page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanItem {
    /// The key.
    pub key: Bytes,
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// The entry's version.
    pub version: u64,
    /// Remaining time to live in milliseconds; 0 when none (and for
    /// tombstones).
    pub ttl_ms: u64,
}

/// One page of a scan.
#[derive(Debug, Default)]
pub struct ScanPage {
    /// Entries, in the store's order.
    pub items: Vec<ScanItem>,
    /// Where the next page starts.
    pub next: Cursor,
    /// True when the scan passed every shard.
    pub done: bool,
}

impl Store {
    /// The newest version of any entry (0 when the store is empty): where a
    /// node restarted from its log stopped taking writes.
    pub fn newest_version(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().iter().map(|e| e.version).max().unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    /// Up to `max_items` entries with a version of at least `since_version`
    /// (and, with `only`, a key whose ring hash lies in those ranges), or
    /// fewer once their keys and values reach `max_bytes`, from `cursor`
    /// on. Expired values are skipped (they are gone); tombstones are
    /// included, since a returning replica must learn of the delete.
    pub fn scan(
        &self,
        cursor: Cursor,
        since_version: u64,
        max_items: usize,
        max_bytes: usize,
        only: Option<&Ranges>,
    ) -> ScanPage {
        let now = self.clock.now_ms();
        let mut page = ScanPage::default();
        let mut bytes = 0usize;
        let mut shard = usize::try_from(cursor >> 32).unwrap_or(usize::MAX);
        let mut slot = usize::try_from(cursor & 0xffff_ffff).unwrap_or(usize::MAX);
        while shard < self.shards.len() {
            let lock = self.shards[shard].lock();
            for (i, s) in lock.slots_from(slot) {
                if page.items.len() >= max_items.max(1) || bytes >= max_bytes {
                    page.next = ((shard as u64) << 32) | i as u64;
                    return page;
                }
                if s.version < since_version || (s.value.is_some() && s.expired(now)) {
                    continue;
                }
                if let Some(r) = only
                    && !r.contains(key_hash(&s.key))
                {
                    continue;
                }
                bytes += s.key.len() + s.value.as_ref().map_or(0, Bytes::len);
                page.items.push(ScanItem {
                    key: Bytes::copy_from_slice(&s.key),
                    value: s.value.clone(),
                    version: s.version,
                    ttl_ms: if s.value.is_some() {
                        remaining(s.expires_at, now)
                    } else {
                        0
                    },
                });
            }
            drop(lock);
            shard += 1;
            slot = 0;
        }
        page.done = true;
        page
    }
}

/// Slots examined per shard lock hold by [`Store::forget`].
const FORGET_CHUNK: usize = 4_096;

impl Store {
    /// Removes every entry (value, tombstone or expired marker) whose key's
    /// ring hash lies in `ranges` and whose version is below
    /// `below_version`; returns how many. What a membership change moved
    /// away from this node: its new owners hold it. Holds one shard's lock
    /// for at most [`FORGET_CHUNK`] slots at a time, so writers go on.
    ///
    /// An entry at or above the bound stays: it was written after the
    /// change began, by a client that may still count on this node.
    pub fn forget(&self, ranges: &Ranges, below_version: u64) -> u64 {
        let mut removed = 0;
        for lock in &self.shards {
            let mut from = 0;
            loop {
                let mut shard = lock.lock();
                let doomed: Vec<u32> = shard
                    .slots_from(from)
                    .take_while(|(i, _)| *i < from + FORGET_CHUNK)
                    .filter(|(_, s)| s.version < below_version && ranges.contains(key_hash(&s.key)))
                    .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX))
                    .collect();
                let mut freed = 0;
                for idx in &doomed {
                    self.changed(&shard.slot(*idx).key);
                    freed += shard.remove(*idx);
                }
                let end = shard.slot_count();
                drop(shard);
                self.used
                    .fetch_sub(freed, std::sync::atomic::Ordering::Relaxed);
                removed += doomed.len() as u64;
                from += FORGET_CHUNK;
                if from >= end {
                    break;
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::store::{SetOptions, StoreConfig};

    fn store() -> (Store, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let config = StoreConfig {
            shards: 4,
            ..StoreConfig::default()
        };
        (Store::with_clock(config, clock.clone()), clock)
    }

    fn all(s: &Store, since: u64, page: usize) -> BTreeMap<Vec<u8>, ScanItem> {
        let mut out = BTreeMap::new();
        let mut cursor = 0;
        loop {
            let p = s.scan(cursor, since, page, usize::MAX, None);
            assert!(p.items.len() <= page);
            for it in p.items {
                assert!(out.insert(it.key.to_vec(), it).is_none(), "seen twice");
            }
            if p.done {
                return out;
            }
            cursor = p.next;
        }
    }

    #[test]
    fn pages_cover_every_entry_once_and_the_filter_keeps_newer_ones() {
        let (s, clock) = store();
        for i in 0..100u32 {
            s.set(format!("old{i}").as_bytes(), b"v", SetOptions::default())
                .unwrap();
        }
        clock.advance(10_000);
        let since = clock.now_ms() << 16;
        for i in 0..30u32 {
            let ttl_ms = if i % 2 == 0 { 60_000 } else { 0 };
            let opts = SetOptions {
                ttl_ms,
                ..SetOptions::default()
            };
            s.set(format!("new{i}").as_bytes(), b"w", opts).unwrap();
        }
        s.delete(b"old7", 0).unwrap();
        for page in [1, 7, 1000] {
            assert_eq!(all(&s, 0, page).len(), 130, "page {page}");
            let recent = all(&s, since, page);
            assert_eq!(recent.len(), 31, "30 writes and one delete since");
            let del = &recent[b"old7".as_slice()];
            assert_eq!((del.value.clone(), del.ttl_ms), (None, 0));
            assert_eq!(recent[b"new0".as_slice()].ttl_ms, 60_000);
            assert_eq!(recent[b"new1".as_slice()].ttl_ms, 0);
        }
        // Expired values are not copied.
        clock.advance(60_000);
        assert_eq!(all(&s, since, 5).len(), 16);
    }

    #[test]
    fn a_byte_bound_ends_a_page_early_but_never_empty() {
        let (s, _) = store();
        for i in 0..10u32 {
            s.set(
                format!("k{i}").as_bytes(),
                &[0u8; 100],
                SetOptions::default(),
            )
            .unwrap();
        }
        let p = s.scan(0, 0, 1000, 1, None);
        assert_eq!(p.items.len(), 1);
        assert!(!p.done);
    }

    #[test]
    fn forget_removes_old_entries_of_the_ranges_and_frees_their_memory() {
        use distcache_proto::v1::HashRange;
        let (s, clock) = store();
        // More than a chunk in a shard, so the walk resumes in shards.
        for i in 0..20_000u32 {
            s.set(format!("k{i}").as_bytes(), b"v", SetOptions::default())
                .unwrap();
        }
        s.delete(b"k1", 0).unwrap();
        clock.advance(1_000);
        let bound = clock.now_ms() << 16;
        s.set(b"k2", b"newer", SetOptions::default()).unwrap();
        let before = s.memory_bytes();
        let lower = [HashRange {
            start: 0,
            end: u64::MAX / 2,
        }];
        let only = Ranges::new(&lower).unwrap();
        let in_lower = |k: &[u8]| key_hash(k) <= u64::MAX / 2;
        let want = (0..20_000u32)
            .map(|i| format!("k{i}"))
            .filter(|k| in_lower(k.as_bytes()) && k != "k2")
            .count() as u64;
        assert_eq!(s.forget(&only, bound), want);
        assert!(s.memory_bytes() < before);
        let left = all(&s, 0, 1000);
        for i in 0..20_000u32 {
            let k = format!("k{i}");
            // k2 was written after the bound; k1's tombstone goes too.
            let keep = i == 2 || !in_lower(k.as_bytes());
            assert_eq!(left.contains_key(k.as_bytes()), keep, "{k}");
        }
        assert_eq!(s.forget(&only, bound), 0, "idempotent");
    }
}
