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

/// Found by the `wal_recovery` fuzz target (its input is in
/// `fuzz/regressions/wal_recovery/`): a segment whose records reach
/// `u64::MAX` overflowed the sequence counter (a panic in debug builds, a
/// wrap in release), and a snapshot covering `u64::MAX` left the writer no
/// number to start at. Numbers past `MAX_SEQ` are damage now, and files
/// named past it are not the node's.
#[test]
fn sequence_numbers_past_the_last_one_are_damage_not_an_overflow() {
    let put = |seq: u64, out: &mut Vec<u8>| {
        let mut body = Vec::new();
        let rec = codec::Record::Put {
            key: b"k",
            value: b"v",
            version: 1,
            expires_at: 0,
        };
        codec::encode_body(&rec, &mut body);
        codec::encode_frame(seq, &body, out);
    };
    let mut seg = codec::encode_file_header(codec::FileKind::Wal, codec::MAX_SEQ).to_vec();
    put(codec::MAX_SEQ, &mut seg);
    let good = seg.len();
    put(codec::MAX_SEQ + 1, &mut seg);
    let mut beyond = codec::encode_file_header(codec::FileKind::Wal, u64::MAX - 1).to_vec();
    put(u64::MAX - 1, &mut beyond);
    put(u64::MAX, &mut beyond);
    let mut snap = codec::encode_file_header(codec::FileKind::Snapshot, u64::MAX).to_vec();
    let mut end = Vec::new();
    codec::encode_body(&codec::Record::End { count: 0 }, &mut end);
    codec::encode_frame(1, &end, &mut snap);
    let damaged_dir = || {
        let (dir, clock) = fresh();
        let write = |name: String, bytes: &[u8]| {
            std::fs::write(dir.path().join(name), bytes).expect("write");
        };
        write(segment::segment_name(codec::MAX_SEQ), &seg);
        write(segment::segment_name(u64::MAX - 1), &beyond);
        write(snapshot::snapshot_name(5), &snap);
        write(snapshot::snapshot_name(u64::MAX), b"not a snapshot");
        (dir, clock)
    };

    // The record past the last number is damage with nothing valid after
    // it: a torn tail, cut in either mode. The files named past the last
    // number are left alone. Then no number is left for the writer: the
    // node refuses to start rather than write records no start would read.
    for mode in [RecoveryMode::Strict, RecoveryMode::SkipCorrupt] {
        let (dir, clock) = damaged_dir();
        let store = store_on(&clock, 1 << 20);
        let e = recovery::recover(dir.path(), &store, mode).expect_err("exhausted");
        assert!(e.to_string().contains("leaves the writer none"), "{e}");
        let len = |name: String| std::fs::metadata(dir.path().join(name)).map(|m| m.len());
        assert_eq!(
            len(segment::segment_name(codec::MAX_SEQ)).ok(),
            Some(good as u64)
        );
        assert_eq!(
            len(segment::segment_name(u64::MAX - 1)).ok(),
            Some(beyond.len() as u64)
        );
        assert!(len(snapshot::snapshot_name(u64::MAX)).is_ok());
        assert!(len(snapshot::snapshot_name(5)).is_err(), "set aside");
    }
}

/// Found by the `wal_recovery` fuzz target (`fuzz/regressions/wal_recovery/`):
/// with no snapshot loaded, a segment `wal-0` followed by `wal-1` counted
/// as covered by a snapshot that covers nothing, and was skipped; once the
/// short `wal-1` was removed and the writer had started its segment, the
/// next start read `wal-0` and refused. A segment is now skipped only for
/// a snapshot that was loaded.
#[test]
fn no_segment_is_covered_without_a_snapshot() {
    let (dir, clock) = fresh();
    std::fs::write(dir.path().join(segment::segment_name(0)), b"").expect("write");
    std::fs::write(dir.path().join(segment::segment_name(1)), [0; 11]).expect("write");
    let strict = recovery::recover(dir.path(), &store_on(&clock, 1 << 20), RecoveryMode::Strict);
    assert!(
        matches!(&strict, Err(OpenError::Corrupt { path, offset: 0, .. }) if path.ends_with(segment::segment_name(0))),
        "{strict:?}"
    );
}

/// Found by the `wal_recovery` fuzz target (`fuzz/regressions/wal_recovery/`):
/// skip-corrupt started the writer below segments that held no valid
/// record, so its new segment was not the last one, and the next start
/// took an old damaged segment for the torn tail of the log. The writer
/// now starts past every segment's first number.
#[test]
fn the_writer_starts_past_every_segment_even_when_none_of_its_records_survive() {
    let (dir, clock) = fresh();
    let mut seg = codec::encode_file_header(codec::FileKind::Wal, 1).to_vec();
    let mut body = Vec::new();
    let rec = codec::Record::Put {
        key: b"k",
        value: b"v",
        version: 1,
        expires_at: 0,
    };
    codec::encode_body(&rec, &mut body);
    codec::encode_frame(1, &body, &mut seg);
    let write = |seq: u64, bytes: &[u8]| {
        std::fs::write(dir.path().join(segment::segment_name(seq)), bytes).expect("write");
    };
    write(1, &seg);
    write(50, &[7; 22]);
    write(99, &[0]);
    let r = recovery::recover(
        dir.path(),
        &store_on(&clock, 1 << 20),
        RecoveryMode::SkipCorrupt,
    )
    .expect("starts")
    .report;
    assert_eq!((r.records_replayed, r.corrupt_skipped), (1, 1));
    assert_eq!(
        r.last_seq, 98,
        "wal-99 was reached, though nothing in it survives"
    );
}

/// Found by the `wal_recovery` fuzz target (`fuzz/regressions/wal_recovery/`):
/// skip-corrupt resumed after damage at a frame it then refused itself (a
/// body that does not decode), skipping the damage as a region the first
/// time and cutting it as a torn tail the next. Recovery now resumes only
/// at a frame it would replay, so both starts cut the same tail.
#[test]
fn damage_followed_only_by_unusable_frames_is_a_torn_tail() {
    let (dir, clock) = fresh();
    let mut seg = codec::encode_file_header(codec::FileKind::Wal, 1).to_vec();
    let mut body = Vec::new();
    let rec = codec::Record::Put {
        key: b"k",
        value: b"v",
        version: 1,
        expires_at: 0,
    };
    codec::encode_body(&rec, &mut body);
    codec::encode_frame(1, &body, &mut seg);
    let good = seg.len();
    seg.extend_from_slice(&[0xAB; 40]);
    codec::encode_frame(3, b"\x09not a record", &mut seg);
    let path = dir.path().join(segment::segment_name(1));
    std::fs::write(&path, &seg).expect("write");
    for mode in [RecoveryMode::Strict, RecoveryMode::SkipCorrupt] {
        let r = recovery::recover(dir.path(), &store_on(&clock, 1 << 20), mode)
            .expect("a torn tail is cut in either mode")
            .report;
        assert_eq!(r.corrupt_skipped, 0, "{mode:?}");
        assert_eq!(std::fs::metadata(&path).expect("kept").len(), good as u64);
    }
}

/// Found by the `wal_recovery` fuzz target (`fuzz/regressions/wal_recovery/`):
/// removing a short last segment took away the name that bounded the
/// segment before it, so a segment the snapshot covered (and recovery
/// skipped) was read on the next start, once the writer's segment began
/// past a failed newer snapshot, and its damage refused the start. The
/// short segment is now written again as an empty one.
#[test]
fn a_short_last_segment_keeps_its_name_so_coverage_holds_on_the_next_start() {
    let (dir, clock) = fresh();
    let mut snap = codec::encode_file_header(codec::FileKind::Snapshot, 10).to_vec();
    let mut end = Vec::new();
    codec::encode_body(&codec::Record::End { count: 0 }, &mut end);
    codec::encode_frame(1, &end, &mut snap);
    let write = |name: String, bytes: &[u8]| {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    };
    write(snapshot::snapshot_name(10), &snap);
    write(snapshot::snapshot_name(20), b"damaged");
    let mut covered = codec::encode_file_header(codec::FileKind::Wal, 5).to_vec();
    covered.extend_from_slice(&[0xAB; 40]);
    write(segment::segment_name(5), &covered);
    write(segment::segment_name(11), &[0; 13]);
    for start in 0..2 {
        let r = recovery::recover(dir.path(), &store_on(&clock, 1 << 20), RecoveryMode::Strict)
            .unwrap_or_else(|e| panic!("start {start}: {e}"))
            .report;
        assert_eq!((r.snapshot_seq, r.last_seq), (10, 20), "start {start}");
        let short = std::fs::read(dir.path().join(segment::segment_name(11))).expect("kept");
        assert_eq!(short, codec::encode_file_header(codec::FileKind::Wal, 11));
        // What Wal::open does next.
        segment::create_segment(dir.path(), r.last_seq + 1).expect("writer's segment");
    }
}
