use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::clock::ManualClock;

const T0: u64 = 1_700_000_000_000;

fn store(max_memory: u64) -> (Store, Arc<ManualClock>) {
    store_with_shards(max_memory, 4)
}

fn store_with_shards(max_memory: u64, shards: usize) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = StoreConfig {
        shards,
        max_memory,
        tombstone_ttl_ms: 10_000,
    };
    (Store::with_clock(cfg, clock.clone()), clock)
}

fn set(s: &Store, k: &str, v: &str) -> Written {
    s.set(k.as_bytes(), v.as_bytes(), SetOptions::default())
        .expect("set")
}

/// The eviction tests' entries: key `k{i:03}` and a 100-byte value, each
/// charged `charge(4, 100)`.
fn fill(s: &Store, keys: impl IntoIterator<Item = usize>) {
    for i in keys {
        s.set(
            format!("k{i:03}").as_bytes(),
            &[7u8; 100],
            SetOptions::default(),
        )
        .expect("set");
    }
}

/// Whether `k{i:03}` holds a value (a read: it marks the entry used).
fn has(s: &Store, i: usize) -> bool {
    s.get(format!("k{i:03}").as_bytes()).is_some()
}

fn get(s: &Store, k: &str) -> Option<String> {
    s.get(k.as_bytes())
        .map(|v| String::from_utf8(v.value.to_vec()).expect("utf8"))
}

#[test]
fn set_get_delete_and_versions_grow() {
    let (s, _) = store(1 << 20);
    assert_eq!(get(&s, "a"), None);
    let w1 = set(&s, "a", "1");
    assert!(w1.applied);
    assert_eq!(w1.version, T0 << 16, "first version is the clock floor");
    let w2 = set(&s, "a", "2");
    assert_eq!(w2.version, w1.version + 1);
    assert_eq!(get(&s, "a").as_deref(), Some("2"));
    let (deleted, w3) = s.delete(b"a", 0).expect("delete");
    assert!(deleted && w3.version > w2.version);
    assert_eq!(get(&s, "a"), None);
    // Deleting a missing key is a no-op, not a tombstone.
    let (deleted, w4) = s.delete(b"missing", 0).expect("delete");
    assert!(!deleted && !w4.applied);
    // Re-creating after a delete continues from the tombstone's version.
    assert!(set(&s, "a", "3").version > w3.version);
    let st = s.stats();
    assert_eq!((st.keys, st.entries), (1, 1));
}

#[test]
fn conditions() {
    let (s, _) = store(1 << 20);
    let nx = SetOptions {
        condition: Condition::IfAbsent,
        ..SetOptions::default()
    };
    let xx = SetOptions {
        condition: Condition::IfPresent,
        ..SetOptions::default()
    };
    assert!(!s.set(b"k", b"x", xx).expect("xx").applied);
    assert!(s.set(b"k", b"a", nx).expect("nx").applied);
    let w = s.set(b"k", b"b", nx).expect("nx");
    assert!(
        !w.applied && w.version != 0,
        "rejected returns current version"
    );
    assert!(s.set(b"k", b"c", xx).expect("xx").applied);
    assert_eq!(get(&s, "k").as_deref(), Some("c"));
    s.delete(b"k", 0).expect("delete");
    assert!(s.set(b"k", b"d", nx).expect("nx over tombstone").applied);
}

#[test]
fn replicated_writes_apply_only_when_newer_including_tombstones() {
    let (s, _) = store(1 << 20);
    let at = |v| SetOptions {
        version: v,
        ..SetOptions::default()
    };
    assert!(s.set(b"k", b"v10", at(10)).expect("set").applied);
    assert!(!s.set(b"k", b"v5", at(5)).expect("set").applied);
    // An equal version with lesser content loses the tie (see below).
    assert!(!s.set(b"k", b"v1", at(10)).expect("set").applied);
    assert_eq!(get(&s, "k").as_deref(), Some("v10"));
    // A replicated delete at 20 blocks a late write at 15.
    let (deleted, w) = s.delete(b"k", 20).expect("delete");
    assert!(deleted && w.version == 20);
    let late = s.set(b"k", b"v15", at(15)).expect("set");
    assert!(!late.applied);
    assert_eq!(late.version, 20);
    assert_eq!(get(&s, "k"), None);
    // A replicated delete of a key never seen still leaves a tombstone.
    assert!(s.delete(b"other", 7).expect("delete").1.applied);
    assert!(!s.set(b"other", b"old", at(6)).expect("set").applied);
    assert!(s.set(b"k", b"v30", at(30)).expect("set").applied);
}

/// Two writers may stamp the same version: every replica then keeps the
/// same content whatever the order the writes arrive in (the greater value,
/// a tombstone above any value), and a write the node already holds is
/// answered as applied, so `applied` means "this node holds the write".
#[test]
fn equal_versions_converge_by_content_in_any_order() {
    let at = |v| SetOptions {
        version: v,
        ..SetOptions::default()
    };
    for order in [["a", "b"], ["b", "a"]] {
        let (s, _) = store(1 << 20);
        let first = s.set(b"k", order[0].as_bytes(), at(10)).expect("set");
        let second = s.set(b"k", order[1].as_bytes(), at(10)).expect("set");
        assert!(first.applied);
        assert_eq!(second.applied, order[1] == "b", "{order:?}");
        assert_eq!(get(&s, "k").as_deref(), Some("b"), "{order:?}");
        // A resend of what the node holds: applied, nothing changes.
        let again = s.set(b"k", b"b", at(10)).expect("set");
        assert!(again.applied && again.version == 10);
        // The loser's resend still loses.
        assert!(!s.set(b"k", b"a", at(10)).expect("set").applied);
        // At an equal version a tombstone beats the value, and holds.
        let (deleted, w) = s.delete(b"k", 10).expect("delete");
        assert!(deleted && w.applied);
        assert_eq!(get(&s, "k"), None);
        assert!(s.delete(b"k", 10).expect("delete").1.applied, "held");
        assert!(!s.set(b"k", b"zzz", at(10)).expect("set").applied);
        assert_eq!(get(&s, "k"), None);
    }
}

/// A miss tells a tombstone (with its version) from nothing: a replicated
/// read compares that version with the values other replicas hold, and
/// must not learn it from a later probe, which could see a write made since
/// (it once took a live value's version for a delete's, and the repair then
/// deleted that value everywhere: at an equal version a tombstone wins).
#[test]
fn a_miss_reports_the_tombstone_it_holds() {
    let (s, clock) = store(1 << 20);
    assert_eq!(s.lookup(b"k"), Lookup::Absent);
    s.delete(b"k", 50).expect("delete");
    assert_eq!(s.lookup(b"k"), Lookup::Tombstone(50));
    let at = |v| SetOptions {
        version: v,
        ..SetOptions::default()
    };
    assert!(s.set(b"k", b"v", at(60)).expect("set").applied);
    assert!(matches!(s.lookup(b"k"), Lookup::Live(v) if v.version == 60));
    s.delete(b"k", 70).expect("delete");
    clock.advance(10_000);
    assert_eq!(s.lookup(b"k"), Lookup::Absent, "an expired tombstone");
}

#[test]
fn tombstones_expire_after_their_ttl() {
    let (s, clock) = store(1 << 20);
    s.delete(b"k", 50).expect("delete");
    assert_eq!(s.stats().entries, 1);
    clock.advance(10_000);
    let at40 = SetOptions {
        version: 40,
        ..SetOptions::default()
    };
    assert!(s.set(b"k", b"x", at40).expect("set").applied);
}

#[test]
fn ttl_expiry_is_lazy_and_swept() {
    let (s, clock) = store(1 << 20);
    let ttl = |ms| SetOptions {
        ttl_ms: ms,
        ..SetOptions::default()
    };
    s.set(b"a", b"1", ttl(1000)).expect("set");
    s.set(b"b", b"2", ttl(1000)).expect("set");
    s.set(b"c", b"3", SetOptions::default()).expect("set");
    assert_eq!(s.get(b"a").expect("live").ttl_ms, 1000);
    clock.advance(400);
    assert_eq!(s.get(b"a").expect("live").ttl_ms, 600);
    clock.advance(600);
    assert_eq!(s.get(b"a"), None, "expired exactly at the deadline");
    let swept: u64 = (0..s.shard_count()).map(|i| s.sweep_shard(i, 100)).sum();
    assert_eq!(swept, 1, "b is reclaimed by the sweeper");
    let st = s.stats();
    assert_eq!((st.keys, st.expirations), (1, 2));
    assert_eq!(st.memory_bytes, charge(1, 1));
}

#[test]
fn keep_ttl_and_expire_and_persist() {
    let (s, clock) = store(1 << 20);
    s.set(
        b"k",
        b"1",
        SetOptions {
            ttl_ms: 500,
            ..SetOptions::default()
        },
    )
    .expect("set");
    let keep = SetOptions {
        keep_ttl: true,
        ..SetOptions::default()
    };
    s.set(b"k", b"2", keep).expect("set");
    assert_eq!(s.get(b"k").expect("live").ttl_ms, 500);
    assert!(s.expire(b"k", 2000, 0).expect("expire").applied);
    clock.advance(1000);
    assert_eq!(s.get(b"k").expect("live").ttl_ms, 1000);
    assert!(s.expire(b"k", 0, 0).expect("persist").applied);
    assert!(!s.expire(b"k", 0, 0).expect("persist again").applied);
    assert_eq!(s.get(b"k").expect("live").ttl_ms, 0);
    assert!(!s.expire(b"missing", 100, 0).expect("expire").applied);
}

#[test]
fn compare_and_swap_rules() {
    let (s, _) = store(1 << 20);
    let w = s.compare_and_swap(b"k", 0, b"first", 0).expect("cas");
    assert!(w.applied);
    let miss = s.compare_and_swap(b"k", 0, b"again", 0).expect("cas");
    assert!(!miss.applied);
    assert_eq!(miss.version, w.version);
    let w2 = s
        .compare_and_swap(b"k", w.version, b"second", 0)
        .expect("cas");
    assert!(w2.applied && w2.version > w.version);
    assert!(
        !s.compare_and_swap(b"k", w.version, b"stale", 0)
            .expect("cas")
            .applied
    );
    assert_eq!(get(&s, "k").as_deref(), Some("second"));
}

#[test]
fn cas_races_have_exactly_one_winner_per_version() {
    let (s, _) = store(1 << 24);
    let s = Arc::new(s);
    let wins = Arc::new(AtomicU64::new(0));
    let rounds = 200;
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (s, wins) = (s.clone(), wins.clone());
            scope.spawn(move || {
                for _ in 0..rounds {
                    let current = s.get(b"counter").map_or(0, |v| v.version);
                    let w = s
                        .compare_and_swap(b"counter", current, format!("{t}").as_bytes(), 0)
                        .expect("cas");
                    if w.applied {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    // Every success moved the version by exactly one step from the version
    // its caller read, so the number of distinct versions equals the wins.
    let final_version = s.get(b"counter").expect("live").version;
    let first = T0 << 16;
    assert_eq!(final_version - first + 1, wins.load(Ordering::SeqCst));
}

#[test]
fn counters() {
    let (s, _) = store(1 << 20);
    assert_eq!(s.incr_by(b"n", 5).expect("incr").0, 5);
    assert_eq!(s.incr_by(b"n", -7).expect("incr").0, -2);
    assert_eq!(get(&s, "n").as_deref(), Some("-2"));
    set(&s, "text", "abc");
    assert_eq!(s.incr_by(b"text", 1), Err(StoreError::NotAnInteger));
    set(&s, "big", &i64::MAX.to_string());
    assert_eq!(s.incr_by(b"big", 1), Err(StoreError::Overflow));
    for bad in ["", " 1", "+1", "01", "-0", "1.5", "99999999999999999999"] {
        set(&s, "bad", bad);
        assert_eq!(
            s.incr_by(b"bad", 1),
            Err(StoreError::NotAnInteger),
            "{bad:?}"
        );
    }
}

#[test]
fn counters_keep_ttl_and_are_atomic_across_threads() {
    let (s, _) = store(1 << 20);
    s.set(
        b"n",
        b"0",
        SetOptions {
            ttl_ms: 5000,
            ..SetOptions::default()
        },
    )
    .expect("set");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..1000 {
                    s.incr_by(b"n", 1).expect("incr");
                }
            });
        }
    });
    let v = s.get(b"n").expect("live");
    assert_eq!(&v.value[..], b"4000");
    assert_eq!(v.ttl_ms, 5000);
}

#[test]
fn memory_bound_evicts_least_recently_used() {
    // One shard, so the order is the shard's CLOCK order: the hand spares
    // what was read since it last passed. With many shards each shard keeps
    // its own order, which approximates a global one when keys spread evenly
    // (as memcached's and quick_cache's sharded caches do).
    let per = charge(4, 100);
    let (s, _) = store_with_shards(per * 40, 1);
    fill(&s, 0..40);
    assert_eq!(s.stats().keys, 40);
    // Touch the first ten so they are recent, then overflow by twenty.
    for i in 0..10 {
        assert!(has(&s, i));
    }
    fill(&s, 40..60);
    let st = s.stats();
    assert!(st.memory_bytes <= per * 40, "{} > bound", st.memory_bytes);
    assert_eq!(st.keys, 40);
    assert_eq!(st.evictions, 20);
    for i in 0..10 {
        assert!(has(&s, i), "recent k{i:03} kept");
    }
    for i in 50..60 {
        assert!(has(&s, i), "new k{i:03} kept");
    }
}

/// Under memory pressure values go before tombstones, in every shard: a
/// tombstone evicted before its TTL would let a replica that missed the
/// delete bring the value back.
#[test]
fn tombstones_outlive_values_under_memory_pressure() {
    let per = charge(4, 100);
    let (s, _) = store_with_shards(per * 40, 4);
    fill(&s, 0..40);
    // Ten deletes at replicated versions: ten tombstones.
    for i in 0..10 {
        let (deleted, _) = s
            .delete(format!("k{i:03}").as_bytes(), next_version(0, T0 + 1000))
            .expect("delete");
        assert!(deleted);
    }
    fill(&s, 100..160);
    let st = s.stats();
    assert!(st.memory_bytes <= per * 40, "{} > bound", st.memory_bytes);
    for i in 0..10 {
        // A late replicated write older than the delete is still refused.
        let late = s
            .set(
                format!("k{i:03}").as_bytes(),
                b"old",
                SetOptions {
                    version: next_version(0, T0 + 500),
                    ..SetOptions::default()
                },
            )
            .expect("set");
        assert!(!late.applied, "k{i:03}'s tombstone survived");
    }
}

#[test]
fn restoring_entries_in_snapshot_order_keeps_the_eviction_order() {
    let per = charge(4, 100);
    let (s, _) = store_with_shards(per * 10, 1);
    fill(&s, 0..10);
    for i in [2, 5, 7] {
        assert!(has(&s, i));
    }
    // Two more writes evict k000 and k001; k101 takes slot 0, behind the
    // hand, so it comes after the entries ahead of the hand.
    fill(&s, [100, 101]);
    let order = |s: &Store| {
        let mut keys = Vec::new();
        s.for_each_in_shard(0, |e| keys.push(e.key.to_vec()));
        keys
    };
    let before = order(&s);
    let want = [
        "k003", "k004", "k006", "k008", "k009", "k100", "k101", "k002", "k005", "k007",
    ];
    assert_eq!(before, want.map(|k| k.as_bytes().to_vec()));
    let (restored, _) = store_with_shards(per * 10, 1);
    s.for_each_in_shard(0, |e| {
        let r = restored.restore(e.key, e.value.map(|v| &v[..]), e.version, e.expires_at);
        assert_eq!(r, Restored::Applied);
    });
    assert_eq!(order(&restored), before);
    // And both evict the same next entry.
    for st in [&s, &restored] {
        fill(st, [200]);
        assert!(!has(st, 3));
        assert!(has(st, 2));
    }
}

#[test]
fn writing_far_more_than_the_bound_stays_bounded() {
    let (s, _) = store(256 * 1024);
    let v = vec![1u8; 1000];
    for i in 0..10_000u32 {
        s.set(&i.to_le_bytes(), &v, SetOptions::default())
            .expect("set");
        assert!(s.memory_bytes() <= 256 * 1024);
    }
    let st = s.stats();
    assert!(st.keys > 150 && st.keys < 260, "{st:?}");
    assert!(s.get(&9999u32.to_le_bytes()).is_some());
}

#[test]
fn oversize_and_empty_keys_are_refused() {
    let (s, _) = store(1000);
    assert_eq!(
        s.set(b"k", &[0u8; 1000], SetOptions::default()),
        Err(StoreError::TooLarge {
            size: charge(1, 1000),
            max: 1000
        })
    );
    assert_eq!(
        s.set(b"", b"v", SetOptions::default()),
        Err(StoreError::EmptyKey)
    );
    assert_eq!(s.get(b""), None);
}

#[test]
fn hits_and_misses_are_counted() {
    let (s, _) = store(1 << 20);
    set(&s, "a", "1");
    s.get(b"a");
    s.get(b"a");
    s.get(b"b");
    let st = s.stats();
    assert_eq!((st.hits, st.misses), (2, 1));
}
