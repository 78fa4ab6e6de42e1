//! Regression tests of what the `wal_recovery` fuzz target found; each
//! input is in `fuzz/regressions/wal_recovery/` (see `docs/fuzzing.md`).

use super::*;

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
