//! One shard of the store: a hash table of slab indices, and CLOCK
//! (second-chance) eviction over the slab, so lookup, touch and insert are
//! O(1), eviction is amortized O(1) and the key is stored once.
//!
//! CLOCK approximates LRU the way Redis's sampled LRU does, at a fraction of
//! the cost: a use sets a bit in the slot the lookup has just read, where a
//! linked LRU list rewrote two neighbours' links (two more cache misses) on
//! every hit and every write. Eviction turns a hand over the slab, clearing
//! set bits and taking the first slot whose bit is clear: an entry used since
//! the hand last passed survives, one that was not goes first.
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
    /// Used since the clock hand last passed (see the module docs).
    referenced: bool,
}

impl Slot {
    pub(crate) fn charge(&self) -> u64 {
        charge(self.key.len(), self.value.as_ref().map_or(0, Bytes::len))
    }

    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now_ms
    }
}

/// The bytes an entry with this key and value length is charged: a large
/// value in whole pages (see `value`).
pub fn charge(key_len: usize, value_len: usize) -> u64 {
    key_len as u64 + super::value::footprint(value_len) + ENTRY_OVERHEAD
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
    /// The next slab slot the eviction hand examines.
    hand: usize,
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
    pub(crate) fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| *slots[i as usize].key == *key)
            .copied()
    }

    pub(crate) fn slot(&self, idx: u32) -> &Slot {
        &self.slots[idx as usize]
    }

    /// Marks an entry used, so the next turn of the hand spares it.
    pub(crate) fn touch(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        // Written only when it changes: a hot entry's line stays clean.
        if !slot.referenced {
            slot.referenced = true;
        }
    }

    /// Inserts a key known to be absent. A new entry should not be the next
    /// to go (in an LRU list it would be the most recently used), so:
    /// - a freed slot in the half of the slab the hand reaches next (freed by
    ///   a delete or an expiry) starts marked, and the hand passes it once;
    /// - a freed slot the hand has passed (where eviction frees them), or a
    ///   new slot at the end of the slab (which grows while the hand is at
    ///   its start), starts unmarked: the hand reaches it late, and a read or
    ///   a rewrite before then marks it.
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
            referenced: false,
        };
        self.bytes += slot.charge();
        if slot.value.is_some() {
            self.live += 1;
        }
        self.expiring += u64::from(slot.expires_at != 0);
        let idx = match self.free.pop() {
            Some(i) => {
                let len = self.slots.len();
                let ahead = (i as usize + len - self.hand) % len;
                self.slots[i as usize] = Slot {
                    referenced: 2 * ahead < len,
                    ..slot
                };
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

    /// Evicts the first entry other than `keep`, value or tombstone, that
    /// the hand finds unused since its last pass; returns the bytes freed, or
    /// `None` when there is nothing else to evict.
    pub(crate) fn evict(&mut self, keep: u32) -> Option<u64> {
        self.evict_entry(keep, true)
    }

    /// [`Shard::evict`] of values only. A tombstone evicted before its TTL
    /// lets a replica that missed the delete bring the value back, so the
    /// store takes tombstones only when no shard has a value left to evict.
    pub(crate) fn evict_value(&mut self, keep: u32) -> Option<u64> {
        self.evict_entry(keep, false)
    }

    fn evict_entry(&mut self, keep: u32, tombstones: bool) -> Option<u64> {
        let len = self.slots.len();
        // Two turns at most: the first may only clear bits.
        for _ in 0..2 * len {
            let i = self.hand;
            self.hand = if i + 1 < len { i + 1 } else { 0 };
            let slot = &mut self.slots[i];
            if slot.key.is_empty() || i == keep as usize || (!tombstones && slot.value.is_none()) {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            self.stats.evictions += 1;
            return Some(self.remove(u32::try_from(i).unwrap_or(NIL)));
        }
        None
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

    /// Occupied slots from slab index `from` on, in slab order, with their
    /// index: a scan resumes where the previous page ended. An entry stays
    /// in its slot for as long as it lives, so a scan misses only entries
    /// written after it started (which their writers send on their own).
    pub(crate) fn slots_from(&self, from: usize) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, s)| !s.key.is_empty())
    }

    /// Slots in the slab, occupied or free: where a walk by index ends.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Every occupied slot, in slab order (for snapshots and tests).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| !s.key.is_empty())
    }

    /// Every occupied slot in the order eviction would take them: from the
    /// hand round the slab, unused entries first, then used ones. Restoring
    /// them in this order into an empty shard gives back the same order.
    pub(crate) fn iter_eviction_order(&self) -> impl Iterator<Item = &Slot> {
        let (behind, ahead) = self.slots.split_at(self.hand.min(self.slots.len()));
        let round = || ahead.iter().chain(behind).filter(|s| !s.key.is_empty());
        round()
            .filter(|s| !s.referenced)
            .chain(round().filter(|s| s.referenced))
    }

    /// Keys in eviction order (for tests).
    #[cfg(test)]
    pub(crate) fn eviction_order(&self) -> Vec<Vec<u8>> {
        self.iter_eviction_order().map(|s| s.key.to_vec()).collect()
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

    fn keys(list: &[&[u8]]) -> Vec<Vec<u8>> {
        list.iter().map(|k| k.to_vec()).collect()
    }

    #[test]
    fn clock_spares_what_was_used_since_the_hand_passed() {
        let mut s = Shard::default();
        let a = put(&mut s, b"a");
        let b = put(&mut s, b"b");
        put(&mut s, b"c");
        assert_eq!(s.eviction_order(), keys(&[b"a", b"b", b"c"]));
        // A use moves an entry behind the unused ones.
        s.touch(a);
        assert_eq!(s.eviction_order(), keys(&[b"b", b"c", b"a"]));
        assert_eq!(s.evict(NIL), Some(charge(1, 1)));
        assert!(s.find(h(b"b"), b"b").is_none());
        // The hand cleared a's bit as it passed; the new entry takes b's slot,
        // just behind the hand, so it comes last among the unused.
        let d = put(&mut s, b"d");
        assert_eq!(d, b, "freed slot is reused");
        assert_eq!(s.eviction_order(), keys(&[b"c", b"a", b"d"]));
        // A rewrite is a use too.
        s.replace(a, Some(Bytes::from_static(b"w")), 2, 0);
        s.touch(d);
        assert_eq!(s.evict(NIL), Some(charge(1, 1)));
        assert!(s.find(h(b"c"), b"c").is_none());
        assert_eq!(s.eviction_order(), keys(&[b"a", b"d"]));
        assert_eq!(s.live, 2);
        assert_eq!(s.stats.evictions, 2);
    }

    #[test]
    fn a_new_entry_just_ahead_of_the_hand_gets_a_second_chance() {
        let mut s = Shard::default();
        for k in [b"a", b"b", b"c", b"d"] {
            put(&mut s, k);
        }
        assert!(s.evict(NIL).is_some(), "a goes; the hand stops at b");
        // c is deleted (or expires); its slot, next but one for the hand,
        // takes a new entry.
        let c = s.find(h(b"c"), b"c").expect("c");
        s.remove(c);
        let f = put(&mut s, b"f");
        assert_eq!(f, c, "freed slot is reused");
        assert_eq!(s.eviction_order(), keys(&[b"b", b"d", b"f"]));
        // The older, unread d goes before the new f.
        assert!(s.evict(NIL).is_some());
        assert!(s.evict(NIL).is_some());
        assert!(s.find(h(b"f"), b"f").is_some());
        assert!(s.find(h(b"d"), b"d").is_none());
    }

    #[test]
    fn evict_skips_the_kept_entry_and_reuses_slots() {
        let mut s = Shard::default();
        let a = put(&mut s, b"a");
        assert_eq!(s.evict(a), None);
        let b = put(&mut s, b"b");
        s.touch(a);
        s.touch(b);
        // a comes first but is kept, so b goes.
        assert!(s.evict(a).is_some());
        assert_eq!(s.eviction_order(), keys(&[b"a"]));
        let c = put(&mut s, b"c");
        assert_eq!(c, b, "freed slot is reused");
        assert_eq!(s.bytes, 2 * charge(1, 1));
        // Free slots are passed over.
        s.remove(a);
        assert_eq!(s.evict(NIL), Some(charge(1, 1)));
        assert_eq!(s.evict(NIL), None);
        assert_eq!((s.live, s.bytes), (0, 0));
    }

    #[test]
    fn replace_tracks_bytes_and_live_count() {
        let mut s = Shard::default();
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
        let mut s = Shard::default();
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
        let mut s = Shard::default();
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
        let mut s = Shard::default();
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
