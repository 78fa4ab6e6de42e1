//! The durability layer on real files: write through a `Wal`, drop it (a crash
//! as far as the files are concerned, since nothing is written at drop that
//! `always` had not already fsynced), damage the files, recover into a new store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::clock::ManualClock;
use crate::store::{SetOptions, StoreConfig};

const T0: u64 = 1_700_000_000_000;

fn opts(dir: &Path) -> WalOptions {
    WalOptions {
        dir: dir.to_owned(),
        fsync: FsyncPolicy::Always,
        segment_bytes: DEFAULT_SEGMENT_BYTES,
        recovery: RecoveryMode::Strict,
        snapshot_interval: Duration::ZERO,
        snapshot_retain: 2,
        snapshot_on_shutdown: false,
    }
}

fn store_on(clock: &Arc<ManualClock>, max_memory: u64) -> Arc<Store> {
    let cfg = StoreConfig {
        shards: 4,
        max_memory,
        tombstone_ttl_ms: 60_000,
    };
    Arc::new(Store::with_clock(cfg, clock.clone()))
}

fn fresh() -> (tempfile::TempDir, Arc<ManualClock>) {
    let dir = tempfile::tempdir().expect("tempdir");
    (dir, Arc::new(ManualClock::new(T0)))
}

async fn set(wal: &Wal, store: &Store, key: &str, value: &str, ttl_ms: u64) -> Written {
    let w = store
        .set(
            key.as_bytes(),
            value.as_bytes(),
            SetOptions {
                ttl_ms,
                ..SetOptions::default()
            },
        )
        .expect("set");
    let mut b = Records::new();
    b.put(key.as_bytes(), value.as_bytes(), &w);
    wal.append(b).await.expect("append");
    w
}

async fn delete(wal: &Wal, store: &Store, key: &str) {
    let (_, w) = store.delete(key.as_bytes(), 0).expect("delete");
    let mut b = Records::new();
    b.tombstone(key.as_bytes(), &w);
    wal.append(b).await.expect("append");
}

fn get(store: &Store, key: &str) -> Option<String> {
    store
        .get(key.as_bytes())
        .map(|v| String::from_utf8_lossy(&v.value).into_owned())
}

fn segments(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    segment::list_segments(dir).expect("list")
}

#[tokio::test]
async fn writes_survive_reopen_with_versions_and_ttl() {
    let (dir, clock) = fresh();
    let store = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), store.clone())
        .await
        .expect("open");
    let w = set(&wal, &store, "a", "1", 0).await;
    set(&wal, &store, "b", "2", 10_000).await;
    set(&wal, &store, "a", "3", 0).await;
    drop(wal);

    clock.advance(4_000);
    let again = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), again.clone())
        .await
        .expect("reopen");
    assert_eq!(get(&again, "a").as_deref(), Some("3"));
    let b = again.get(b"b").expect("b");
    assert_eq!(b.ttl_ms, 6_000, "remaining TTL is kept");
    let a = again.get(b"a").expect("a");
    assert!(a.version > w.version);
    let r = wal.stats().recovery();
    assert_eq!(
        (r.records_replayed, r.last_seq, r.truncated_bytes),
        (3, 3, 0)
    );
    // The writer continues after the last sequence number.
    set(&wal, &again, "c", "4", 0).await;
    drop(wal);
    let third = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), third.clone())
        .await
        .expect("reopen");
    assert_eq!(wal.stats().recovery().last_seq, 4);
    assert_eq!(third.len(), 3);
}

#[tokio::test]
async fn second_node_on_the_same_dir_is_refused() {
    let (dir, clock) = fresh();
    let wal = Wal::open(opts(dir.path()), store_on(&clock, 1 << 20))
        .await
        .expect("open");
    let e = Wal::open(opts(dir.path()), store_on(&clock, 1 << 20))
        .await
        .expect_err("locked");
    assert!(matches!(e, OpenError::Locked(_)), "{e}");
    drop(wal);
    Wal::open(opts(dir.path()), store_on(&clock, 1 << 20))
        .await
        .expect("free again");
}

#[tokio::test]
async fn tombstones_survive_and_block_older_writes() {
    let (dir, clock) = fresh();
    let store = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), store.clone())
        .await
        .expect("open");
    let w = set(&wal, &store, "k", "v", 0).await;
    delete(&wal, &store, "k").await;
    drop(wal);
    let again = store_on(&clock, 1 << 20);
    let _wal = Wal::open(opts(dir.path()), again.clone())
        .await
        .expect("reopen");
    assert_eq!(get(&again, "k"), None);
    let old = SetOptions {
        version: w.version,
        ..SetOptions::default()
    };
    let r = again.set(b"k", b"stale", old).expect("set");
    assert!(
        !r.applied,
        "the tombstone outranks the old replicated write"
    );
}

#[tokio::test]
async fn expired_while_down_stays_gone_even_out_of_order() {
    let (dir, clock) = fresh();
    let store = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), store.clone())
        .await
        .expect("open");
    set(&wal, &store, "short", "x", 1_000).await;
    set(&wal, &store, "long", "y", 100_000).await;
    // A delete logged before the older value it supersedes (two racing
    // requests); its tombstone expires while the node is down.
    let mut b = Records::new();
    let tomb = Written {
        applied: true,
        version: 20,
        expires_at: T0 + 500,
    };
    b.tombstone(b"raced", &tomb);
    let older = Written {
        applied: true,
        version: 10,
        expires_at: 0,
    };
    b.put(b"raced", b"old", &older);
    wal.append(b).await.expect("append");
    drop(wal);
    clock.advance(2_000);
    let again = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), again.clone())
        .await
        .expect("reopen");
    assert_eq!(get(&again, "short"), None);
    assert_eq!(get(&again, "long").as_deref(), Some("y"));
    assert_eq!(get(&again, "raced"), None, "no resurrection");
    assert_eq!(again.stats().entries, 1, "expired markers are swept");
    assert_eq!(wal.stats().recovery().expired, 2);
}

#[tokio::test]
async fn replay_respects_max_memory() {
    let (dir, clock) = fresh();
    let store = store_on(&clock, 64 << 20);
    let wal = Wal::open(opts(dir.path()), store.clone())
        .await
        .expect("open");
    let mut b = Records::new();
    let value = "v".repeat(1000);
    for i in 0..2_000 {
        let key = format!("key-{i}");
        let w = store
            .set(key.as_bytes(), value.as_bytes(), SetOptions::default())
            .expect("set");
        b.put(key.as_bytes(), value.as_bytes(), &w);
    }
    wal.append(b).await.expect("append");
    drop(wal);
    let small = store_on(&clock, 1 << 20);
    let _wal = Wal::open(opts(dir.path()), small.clone())
        .await
        .expect("reopen");
    assert!(small.memory_bytes() <= 1 << 20);
    assert!(small.len() > 500, "kept as much as fits: {}", small.len());
    assert!(small.stats().evictions > 0);
    // The most recent writes are the ones kept.
    assert_eq!(get(&small, "key-1999").as_deref(), Some(value.as_str()));
}

#[tokio::test]
async fn torn_tails_are_truncated() {
    let (dir, clock) = fresh();
    let store = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), store.clone())
        .await
        .expect("open");
    for i in 0..10 {
        set(&wal, &store, &format!("k{i}"), "value", 0).await;
    }
    drop(wal);
    let (_, path) = segments(dir.path()).pop().expect("segment");
    // Random bytes after the last record.
    let mut bytes = std::fs::read(&path).expect("read");
    let good_len = bytes.len();
    bytes.extend_from_slice(&[0x5a, 0x13, 0x00, 0x00, 0xff, 0xee, 0x01, 0x02, 0x03]);
    std::fs::write(&path, &bytes).expect("write");
    let again = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), again.clone())
        .await
        .expect("torn tail recovers");
    assert_eq!(again.len(), 10);
    assert_eq!(wal.stats().recovery().truncated_bytes, 9);
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        good_len as u64
    );
    drop(wal);

    // A record cut in half (the newest segment is the empty one the last
    // open created, so cut the one holding the records).
    let with_records = segments(dir.path())
        .into_iter()
        .find(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) > 32)
        .expect("segment with records")
        .1;
    std::fs::write(&with_records, &bytes[..good_len - 7]).expect("cut");
    for (_, p) in segments(dir.path()) {
        if p != with_records {
            std::fs::remove_file(p).expect("rm");
        }
    }
    let third = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), third.clone())
        .await
        .expect("cut record recovers");
    assert_eq!(third.len(), 9);
    assert_eq!(get(&third, "k9"), None);
    assert!(wal.stats().recovery().truncated_bytes > 0);
}

#[tokio::test]
async fn flipped_bit_refuses_then_skip_corrupt_starts() {
    let (dir, clock) = fresh();
    let store = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), store.clone())
        .await
        .expect("open");
    for i in 0..10 {
        set(&wal, &store, &format!("k{i}"), "value", 0).await;
    }
    drop(wal);
    let (_, path) = segments(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&path).expect("read");
    let frame = (bytes.len() - codec::FILE_HEADER_LEN) / 10;
    let at = codec::FILE_HEADER_LEN + 4 * frame + 20;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).expect("write");

    let e = Wal::open(opts(dir.path()), store_on(&clock, 1 << 20))
        .await
        .expect_err("strict refuses");
    match &e {
        OpenError::Corrupt {
            path: p, offset, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(*offset, (codec::FILE_HEADER_LEN + 4 * frame) as u64);
        }
        other => panic!("unexpected {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("wal-") && msg.contains("offset"), "{msg}");

    let mut o = opts(dir.path());
    o.recovery = RecoveryMode::SkipCorrupt;
    let again = store_on(&clock, 1 << 20);
    let wal = Wal::open(o, again.clone())
        .await
        .expect("skip-corrupt starts");
    assert_eq!(again.len(), 9);
    assert_eq!(get(&again, "k4"), None, "the damaged record is lost");
    let r = wal.stats().recovery();
    assert_eq!(r.corrupt_skipped, 1);
    assert!(Path::new(&format!("{}.corrupt", path.display())).exists());
    drop(wal);
    // The damaged segment was retired by a snapshot: strict starts again.
    let third = store_on(&clock, 1 << 20);
    let _wal = Wal::open(opts(dir.path()), third.clone())
        .await
        .expect("clean now");
    assert_eq!(third.len(), 9);
}

#[tokio::test]
async fn snapshots_cover_and_retire_segments_and_fall_back() {
    let (dir, clock) = fresh();
    let store = store_on(&clock, 1 << 20);
    let mut o = opts(dir.path());
    o.segment_bytes = 4096;
    let wal = Wal::open(o.clone(), store.clone()).await.expect("open");
    for i in 0..100 {
        set(&wal, &store, &format!("k{i}"), &"x".repeat(100), 0).await;
    }
    assert!(segments(dir.path()).len() > 2, "rotated by size");
    let first = wal.snapshot().await.expect("snapshot").expect("written");
    assert_eq!(first.entries, 100);
    assert_eq!(segments(dir.path()).len(), 1, "covered segments deleted");
    assert!(wal.snapshot().await.expect("noop").is_none(), "nothing new");
    delete(&wal, &store, "k0").await;
    for i in 100..150 {
        set(&wal, &store, &format!("k{i}"), "y", 0).await;
    }
    let second = wal.snapshot().await.expect("snapshot").expect("written");
    set(&wal, &store, "after", "z", 0).await;
    for i in 0..3 {
        set(&wal, &store, &format!("more{i}"), "z", 0).await;
        wal.snapshot().await.expect("snapshot");
    }
    assert_eq!(
        snapshot::list_snapshots(dir.path()).expect("list").len(),
        2,
        "retain"
    );
    drop(wal);

    let again = store_on(&clock, 1 << 20);
    let wal = Wal::open(o.clone(), again.clone()).await.expect("reopen");
    assert_eq!(again.len(), 153);
    assert_eq!(get(&again, "k0"), None);
    let r = wal.stats().recovery();
    assert!(r.snapshot_seq > second.seq);
    assert_eq!(r.records_replayed, 0);
    drop(wal);

    // Damage the newest snapshot: recovery falls back to the older one.
    let snaps = snapshot::list_snapshots(dir.path()).expect("list");
    let newest = &snaps[0].1;
    let mut bytes = std::fs::read(newest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(newest, &bytes).expect("write");
    let third = store_on(&clock, 1 << 20);
    let wal = Wal::open(o, third.clone()).await.expect("falls back");
    let r = wal.stats().recovery();
    assert_eq!(r.snapshots_skipped, 1);
    assert_eq!(r.snapshot_seq, snaps[1].0);
    assert!(r.last_seq >= snaps[0].0, "sequence numbers are not reused");
    assert!(Path::new(&format!("{}.corrupt", newest.display())).exists());
    assert_eq!(snapshot::list_snapshots(dir.path()).expect("list").len(), 1);
    assert_eq!(get(&third, "k1").as_deref(), Some("x".repeat(100).as_str()));
    assert_eq!(get(&third, "k0"), None);
}

#[tokio::test]
async fn memory_only_batch_records_nothing_and_everysec_does_not_wait() {
    let mut b = Records::disabled();
    let w = Written {
        applied: true,
        version: 1,
        expires_at: 0,
    };
    b.put(b"k", b"v", &w);
    assert!(b.is_empty());
    let mut b = Records::new();
    b.put(
        b"k",
        b"v",
        &Written {
            applied: false,
            ..w
        },
    );
    assert!(b.is_empty(), "writes that did not apply are not logged");

    let (dir, clock) = fresh();
    let store = store_on(&clock, 1 << 20);
    let mut o = opts(dir.path());
    o.fsync = FsyncPolicy::EverySec;
    let wal = Wal::open(o.clone(), store.clone()).await.expect("open");
    set(&wal, &store, "a", "1", 0).await;
    assert_eq!(wal.flush().await.expect("flush"), 1);
    wal.close().await.expect("close");
    drop(wal);
    let again = store_on(&clock, 1 << 20);
    let _wal = Wal::open(o, again.clone()).await.expect("reopen");
    assert_eq!(get(&again, "a").as_deref(), Some("1"));
}

#[tokio::test]
async fn recovery_figures_are_exported() {
    let (dir, clock) = fresh();
    let store = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), store.clone())
        .await
        .expect("open");
    set(&wal, &store, "a", "1", 0).await;
    drop(wal);
    let again = store_on(&clock, 1 << 20);
    let wal = Wal::open(opts(dir.path()), again.clone())
        .await
        .expect("reopen");
    let mut m = crate::metrics::Metrics::new(again, "n".into());
    m.add_wal(wal.stats().clone());
    let text = m.prometheus();
    for name in [
        "distcache_recovery_records_replayed 1",
        "distcache_recovery_seconds",
        "distcache_wal_fsyncs_total",
        "distcache_wal_fsync_seconds_total",
        "distcache_snapshots_total 0",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&m.json()).expect("json");
    assert_eq!(json["wal"]["recovery"]["records_replayed"], 1);
}

#[tokio::test]
async fn parallel_replay_keeps_each_keys_newest_state() {
    let (dir, clock) = fresh();
    let store = store_on(&clock, 64 << 20);
    let mut o = opts(dir.path());
    o.fsync = FsyncPolicy::No;
    let wal = Wal::open(o.clone(), store.clone()).await.expect("open");
    let mut b = Records::new();
    for i in 0..20_000u64 {
        let key = format!("key-{}", i % 500);
        let w = Written {
            applied: true,
            version: i + 1,
            expires_at: 0,
        };
        // Every 7th write of a key deletes it.
        if (i / 500) % 7 == 6 {
            b.tombstone(key.as_bytes(), &w);
        } else {
            b.put(key.as_bytes(), format!("v{i}").as_bytes(), &w);
        }
    }
    wal.append(b).await.expect("append");
    drop(wal);
    let again = store_on(&clock, 64 << 20);
    let wal = Wal::open(o, again.clone()).await.expect("reopen");
    assert_eq!(wal.stats().recovery().records_replayed, 20_000);
    for k in 0..500u64 {
        let last = 19_500 + k; // the last round (39) is not a delete round
        let v = again.get(format!("key-{k}").as_bytes()).expect("present");
        assert_eq!(
            (v.value, v.version),
            (Bytes::from(format!("v{last}")), last + 1)
        );
    }
}

mod regressions;

/// A forget survives a restart, from the log alone and from a snapshot
/// taken after it; what was written after it (or at a newer version) stays.
#[tokio::test]
async fn forgotten_ranges_stay_forgotten_after_restart() {
    use distcache_proto::ring::{Ranges, key_hash};
    use distcache_proto::v1::HashRange;
    for snapshot_after in [false, true] {
        let (dir, clock) = fresh();
        let store = store_on(&clock, 64 << 20);
        let wal = Wal::open(opts(dir.path()), store.clone())
            .await
            .expect("open");
        let half = [HashRange {
            start: 0,
            end: u64::MAX / 2,
        }];
        let moved = |k: &str| key_hash(k.as_bytes()) <= u64::MAX / 2;
        let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        let mut newest = 0;
        for k in &keys {
            newest = set(&wal, &store, k, "before", 0).await.version;
        }
        delete(&wal, &store, &keys[0]).await;
        delete(&wal, &store, &keys[1]).await;
        let below = newest + (1 << 20);
        clock.advance(10_000);
        let removed = store.forget(&Ranges::new(&half).expect("ranges"), below);
        let expected = keys.iter().filter(|k| moved(k)).count() as u64;
        assert_eq!(removed, expected, "tombstones too");
        let mut b = Records::new();
        b.forget(&half, below);
        wal.append(b).await.expect("append");
        // Written after the forget, in a forgotten range: it stays.
        let late = keys.iter().find(|k| moved(k)).expect("a moved key");
        set(&wal, &store, late, "after", 0).await;
        if snapshot_after {
            wal.snapshot().await.expect("snapshot").expect("written");
        }
        drop(wal);
        let again = store_on(&clock, 64 << 20);
        let wal = Wal::open(opts(dir.path()), again.clone())
            .await
            .expect("reopen");
        for k in &keys[2..] {
            let want = if k == late {
                Some("after")
            } else if moved(k) {
                None
            } else {
                Some("before")
            };
            assert_eq!(
                get(&again, k).as_deref(),
                want,
                "{k} (snapshot {snapshot_after})"
            );
        }
        if !snapshot_after {
            assert_eq!(wal.stats().recovery().forgotten, expected);
        }
    }
}
