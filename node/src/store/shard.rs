//! One shard of the store: a hash table of slab indices plus an intrusive
//! doubly linked LRU list threaded through the slab, so lookup, touch, insert
//! and eviction are all O(1) and the key is stored once.
//!
//! A shard knows nothing of locking, clocks or versions; [`super::Store`] holds
//! it behind a mutex and decides what to write.

use bytes::Bytes;
use hashbrown::HashTable;

/// Bytes charged to an entry beyond its key and value: the slab slot, the
/// table slot at its load factor, and the allocator's headers for the two
/// heap allocations. An estimate, on the high side.
pub const ENTRY_OVERHEAD: u64 = 128;

const NIL: u32 = u32::MAX;

/// Keys up to this many bytes live inside the slot, saving an allocation
/// and, on every lookup, a cache miss.
const INLINE_KEY: usize = 22;

/// A key, inline when short. Deref gives the bytes.
#[derive(Debug)]
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(k: &[u8]) -> Self {
        if k.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..k.len()].copy_from_slice(k);
            Key::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(k.into())
        }
    }

    const EMPTY: Key = Key::Inline {
        len: 0,
        bytes: [0; INLINE_KEY],
    };
}

impl std::ops::Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

/// One stored entry. A free slab slot has an empty key (stored keys never are).
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) key: Key,
    /// `None` is a tombstone: the key was deleted at `version`.
    pub(crate) value: Option<Bytes>,
    pub(crate) version: u64,
    /// Absolute expiry in Unix milliseconds; 0 means none.
    pub(crate) expires_at: u64,
    hash: u64,
    prev: u32,
    next: u32,
}

impl Slot {
    pub(crate) fn charge(&self) -> u64 {
        charge(self.key.len(), self.value.as_ref().map_or(0, Bytes::len))
    }

    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now_ms
    }
}

/// The bytes an entry with this key and value length is charged.
pub fn charge(key_len: usize, value_len: usize) -> u64 {
    key_len as u64 + value_len as u64 + ENTRY_OVERHEAD
}

/// Counters kept under the shard's lock (so the hot path has no shared atomics).
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardStats {
    /// Reads that found a live value.
    pub hits: u64,
    /// Reads that found nothing, a tombstone or an expired entry.
    pub misses: u64,
    /// Entries removed to stay under the memory bound.
    pub evictions: u64,
    /// Entries (values or tombstones) removed because their time was up.
    pub expirations: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Shard {
    table: HashTable<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    /// Live values (tombstones excluded).
    pub(crate) live: u64,
    /// Bytes charged to every entry of this shard, tombstones included.
    pub(crate) bytes: u64,
    /// Entries with an expiry: while there are none, sweeping has nothing
    /// to find (and would only pull every slot through the cache).
    expiring: u64,
    pub(crate) stats: ShardStats,
    sweep_cursor: usize,
}

impl Shard {
    pub(crate) fn new() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            ..Self::default()
        }
    }

    pub(crate) fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| *slots[i as usize].key == *key)
            .copied()
    }

    pub(crate) fn slot(&self, idx: u32) -> &Slot {
        &self.slots[idx as usize]
    }

    /// Marks an entry most recently used.
    pub(crate) fn touch(&mut self, idx: u32) {
        if self.head != idx {
            self.unlink(idx);
            self.push_front(idx);
        }
    }

    /// Inserts a key known to be absent, as the most recently used entry.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: &[u8],
        value: Option<Bytes>,
        version: u64,
        expires_at: u64,
    ) -> u32 {
        let slot = Slot {
            key: Key::new(key),
            value,
            version,
            expires_at,
            hash,
            prev: NIL,
            next: NIL,
        };
        self.bytes += slot.charge();
        if slot.value.is_some() {
            self.live += 1;
        }
        self.expiring += u64::from(slot.expires_at != 0);
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                // Capacity is bounded by the memory limit long before u32 runs out.
                let i = u32::try_from(self.slots.len()).unwrap_or(NIL - 1);
                self.slots.push(slot);
                i
            }
        };
        let slots = &self.slots;
        self.table
            .insert_unique(hash, idx, |&i| slots[i as usize].hash);
        self.push_front(idx);
        idx
    }

    /// Replaces the value of an existing entry, keeping byte and key counts right.
    pub(crate) fn replace(
        &mut self,
        idx: u32,
        value: Option<Bytes>,
        version: u64,
        expires_at: u64,
    ) {
        let slot = &mut self.slots[idx as usize];
        let before = slot.charge();
        let was_live = slot.value.is_some();
        let was_expiring = slot.expires_at != 0;
        slot.value = value;
        slot.version = version;
        slot.expires_at = expires_at;
        let after = slot.charge();
        let now_live = slot.value.is_some();
        self.bytes = self.bytes + after - before;
        self.expiring = self.expiring + u64::from(expires_at != 0) - u64::from(was_expiring);
        match (was_live, now_live) {
            (false, true) => self.live += 1,
            (true, false) => self.live -= 1,
            _ => {}
        }
        self.touch(idx);
    }

    /// Removes an entry; returns the bytes freed.
    pub(crate) fn remove(&mut self, idx: u32) -> u64 {
        let hash = self.slots[idx as usize].hash;
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        self.unlink(idx);
        let slot = &mut self.slots[idx as usize];
        let freed = slot.charge();
        if slot.value.is_some() {
            self.live -= 1;
        }
        self.expiring -= u64::from(slot.expires_at != 0);
        slot.key = Key::EMPTY;
        slot.value = None;
        self.free.push(idx);
        self.bytes -= freed;
        freed
    }

    /// Evicts the least recently used entry other than `keep`; returns the
    /// bytes freed, or `None` when there is nothing else to evict.
    pub(crate) fn evict_lru(&mut self, keep: u32) -> Option<u64> {
        let mut idx = self.tail;
        if idx == keep && idx != NIL {
            idx = self.slots[idx as usize].prev;
        }
        if idx == NIL {
            return None;
        }
        self.stats.evictions += 1;
        Some(self.remove(idx))
    }

    /// Examines up to `budget` slab slots from where the last sweep stopped and
    /// removes expired entries. Returns `(removed, bytes freed)`.
    pub(crate) fn sweep(&mut self, now_ms: u64, budget: usize) -> (u64, u64) {
        let (mut removed, mut freed) = (0, 0);
        let len = self.slots.len();
        if len == 0 || self.expiring == 0 {
            return (0, 0);
        }
        for _ in 0..budget.min(len) {
            let i = self.sweep_cursor % len;
            self.sweep_cursor = i + 1;
            let slot = &self.slots[i];
            if !slot.key.is_empty() && slot.expired(now_ms) {
                let idx = u32::try_from(i).unwrap_or(NIL);
                freed += self.remove(idx);
                removed += 1;
            }
        }
        self.stats.expirations += removed;
        (removed, freed)
    }

    /// Every occupied slot, in slab order (for snapshots and tests).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| !s.key.is_empty())
    }

    /// Every occupied slot from the least to the most recently used.
    pub(crate) fn iter_lru(&self) -> impl Iterator<Item = &Slot> {
        let mut i = self.tail;
        std::iter::from_fn(move || {
            let slot = self.slots.get(i as usize)?;
            i = slot.prev;
            Some(slot)
        })
    }

    /// Keys from least to most recently used (for tests).
    #[cfg(test)]
    pub(crate) fn lru_order(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = self.tail;
        while i != NIL {
            out.push(self.slots[i as usize].key.to_vec());
            i = self.slots[i as usize].prev;
        }
        out
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let s = &self.slots[idx as usize];
            (s.prev, s.next)
        };
        if prev == NIL {
            if self.head == idx {
                self.head = next;
            }
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            if self.tail == idx {
                self.tail = prev;
            }
        } else {
            self.slots[next as usize].prev = prev;
        }
        let s = &mut self.slots[idx as usize];
        s.prev = NIL;
        s.next = NIL;
    }

    fn push_front(&mut self, idx: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[idx as usize];
            s.prev = NIL;
            s.next = old;
        }
        if old != NIL {
            self.slots[old as usize].prev = idx;
        }
        self.head = idx;
        if self.tail == NIL {
            self.tail = idx;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(k)
    }

    fn put(s: &mut Shard, k: &[u8]) -> u32 {
        s.insert(h(k), k, Some(Bytes::from_static(b"v")), 1, 0)
    }

    #[test]
    fn lru_order_follows_use() {
        let mut s = Shard::new();
        let a = put(&mut s, b"a");
        put(&mut s, b"b");
        put(&mut s, b"c");
        assert_eq!(
            s.lru_order(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        s.touch(a);
        assert_eq!(
            s.lru_order(),
            vec![b"b".to_vec(), b"c".to_vec(), b"a".to_vec()]
        );
        assert_eq!(s.evict_lru(NIL), Some(charge(1, 1)));
        assert_eq!(s.lru_order(), vec![b"c".to_vec(), b"a".to_vec()]);
        assert!(s.find(h(b"b"), b"b").is_none());
        assert_eq!(s.live, 2);
    }

    #[test]
    fn evict_skips_the_kept_entry_and_reuses_slots() {
        let mut s = Shard::new();
        let a = put(&mut s, b"a");
        assert_eq!(s.evict_lru(a), None);
        let b = put(&mut s, b"b");
        s.touch(a);
        s.touch(b);
        // a is the least recently used but kept, so b goes.
        assert!(s.evict_lru(a).is_some());
        assert_eq!(s.lru_order(), vec![b"a".to_vec()]);
        let c = put(&mut s, b"c");
        assert_eq!(c, b, "freed slot is reused");
        assert_eq!(s.bytes, 2 * charge(1, 1));
    }

    #[test]
    fn replace_tracks_bytes_and_live_count() {
        let mut s = Shard::new();
        let a = put(&mut s, b"a");
        s.replace(a, Some(Bytes::from_static(b"longer")), 2, 0);
        assert_eq!(s.bytes, charge(1, 6));
        s.replace(a, None, 3, 0);
        assert_eq!((s.live, s.bytes), (0, charge(1, 0)));
        s.remove(a);
        assert_eq!((s.live, s.bytes), (0, 0));
    }

    #[test]
    fn short_and_long_keys() {
        let mut s = Shard::new();
        let long = vec![b'x'; 100];
        let edge = vec![b'y'; INLINE_KEY];
        let over = vec![b'z'; INLINE_KEY + 1];
        for k in [&long, &edge, &over] {
            put(&mut s, k);
        }
        for k in [&long, &edge, &over] {
            let i = s.find(h(k), k).expect("found");
            assert_eq!(&*s.slot(i).key, &k[..]);
        }
        assert!(matches!(s.slot(0).key, Key::Heap(_)));
        assert!(matches!(s.slot(1).key, Key::Inline { .. }));
        assert!(s.find(h(b"x"), b"x").is_none());
        let i = s.find(h(&long), &long).expect("found");
        s.remove(i);
        assert!(s.find(h(&long), &long).is_none());
        assert_eq!(s.bytes, charge(INLINE_KEY, 1) + charge(INLINE_KEY + 1, 1));
    }

    #[test]
    fn sweep_removes_only_expired() {
        let mut s = Shard::new();
        s.insert(h(b"x"), b"x", Some(Bytes::new()), 1, 100);
        s.insert(h(b"y"), b"y", Some(Bytes::new()), 1, 0);
        s.insert(h(b"z"), b"z", None, 1, 50);
        assert_eq!(s.sweep(99, 10).0, 1);
        assert_eq!(s.sweep(100, 10).0, 1);
        assert_eq!(s.iter().count(), 1);
        assert_eq!(s.stats.expirations, 2);
        assert_eq!(s.expiring, 0);
    }

    #[test]
    fn sweep_skips_a_shard_without_expiries_and_tracks_ttl_changes() {
        let mut s = Shard::new();
        let x = s.insert(h(b"x"), b"x", Some(Bytes::new()), 1, 100);
        let y = s.insert(h(b"y"), b"y", Some(Bytes::new()), 1, 0);
        assert_eq!(s.expiring, 1);
        // x loses its expiry, y gains one: still one to sweep, and it is y.
        s.replace(x, Some(Bytes::new()), 2, 0);
        assert_eq!(s.expiring, 0);
        assert_eq!(
            s.sweep(1_000, 10),
            (0, 0),
            "nothing expiring: nothing examined"
        );
        s.replace(y, Some(Bytes::new()), 2, 150);
        assert_eq!(s.expiring, 1);
        assert_eq!(s.sweep(1_000, 10).0, 1);
        assert!(s.find(h(b"y"), b"y").is_none());
        assert!(s.find(h(b"x"), b"x").is_some());
        assert_eq!(s.expiring, 0);
        // Removing an expiring entry by other means keeps the count right.
        let z = s.insert(h(b"z"), b"z", None, 3, 500);
        s.remove(z);
        assert_eq!(s.expiring, 0);
    }
}
