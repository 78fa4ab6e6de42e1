//! Start-up recovery of a fuzzed data directory (see [`super::dir`] for
//! how the input describes it).

use std::path::Path;
use std::sync::Arc;

use super::dir::{self, Files, Input};
use crate::clock::ManualClock;
use crate::store::{Store, StoreConfig};
use crate::wal::codec::MAX_SEQ;
use crate::wal::config::RecoveryMode;
use crate::wal::error::OpenError;
use crate::wal::recovery::recover;
use crate::wal::segment::create_segment;
use crate::wal::stats::RecoveryReport;

/// The clock recovery runs at (expiry times are compared with it).
const NOW_MS: u64 = 1_700_000_000_000;

type Entry = (Vec<u8>, Option<Vec<u8>>, u64, u64);

/// The `wal_recovery` target: writes the files `data` describes into
/// `scratch` (emptied first) and recovers a store from them, twice.
/// Oracles:
///
/// - recovery either starts, or (strict mode only) refuses with the file
///   and an offset inside it, or refuses for the directory when the
///   sequence numbers are exhausted; no other error, no panic;
/// - when it starts, the only changes to the files are the ones it is
///   allowed: the last segment cut to a prefix of itself (or to a new
///   header when it is no longer than one), unfinished snapshots removed, bad
///   snapshots and skipped segments copied or renamed to `*.corrupt`;
/// - the last sequence number is below `MAX_SEQ`, so the writer has one;
/// - once the writer has started its new segment, as `Wal::open` does,
///   recovering the directory again changes no file, cuts nothing, skips
///   no snapshot, and (when the first skipped none either) gives the same
///   store.
pub fn wal_recovery(scratch: &Path, data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    dir::write(scratch, &input.files);
    let first_store = store();
    let first = match recover(scratch, &first_store, input.mode) {
        Ok(r) => r.report,
        Err(OpenError::Corrupt { path, .. }) if path == scratch => {
            // Sequence numbers exhausted: refused in either mode.
            return;
        }
        Err(OpenError::Corrupt { path, offset, .. }) => {
            assert_eq!(input.mode, RecoveryMode::Strict, "skip-corrupt refused");
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let len = name.and_then(|n| input.files.get(&n)).map(Vec::len);
            assert!(
                len.is_some_and(|len| offset <= len as u64),
                "corruption at {offset} of {}, a file of {len:?} bytes",
                path.display()
            );
            return;
        }
        Err(e) => panic!("recovery failed other than on corruption: {e}"),
    };
    check_changes(&input.files, &dir::read(scratch), &first, input.mode);
    assert!(
        first.last_seq < MAX_SEQ,
        "no sequence number left for the writer"
    );
    // What `Wal::open` does next: the writer starts a new last segment.
    if let Err(e) = create_segment(scratch, first.last_seq + 1) {
        panic!("cannot start the writer's segment: {e}");
    }
    let after = dir::read(scratch);
    let second_store = store();
    let second = match recover(scratch, &second_store, input.mode) {
        Ok(r) => r.report,
        Err(e) => panic!("a recovered directory does not recover again: {e}"),
    };
    assert_eq!(dir::read(scratch), after, "a second recovery changed files");
    assert_eq!(second.truncated_bytes, 0, "a second recovery cut bytes");
    assert_eq!(
        second.snapshots_skipped, 0,
        "a second recovery skipped snapshots"
    );
    if first.snapshots_skipped == 0 {
        assert_eq!(entries(&first_store), entries(&second_store));
    }
}

fn store() -> Store {
    let cfg = StoreConfig {
        shards: 4,
        max_memory: 64 << 20,
        tombstone_ttl_ms: 60_000,
    };
    Store::with_clock(cfg, Arc::new(ManualClock::new(NOW_MS)))
}

fn entries(store: &Store) -> Vec<Entry> {
    let mut out = Vec::new();
    for shard in 0..store.shard_count() {
        store.for_each_in_shard(shard, |e| {
            let value = e.value.map(|v| v.to_vec());
            out.push((e.key.to_vec(), value, e.version, e.expires_at));
        });
    }
    out.sort();
    out
}

/// Every difference between `before` and `after` is one recovery may make.
fn check_changes(before: &Files, after: &Files, report: &RecoveryReport, mode: RecoveryMode) {
    let last_segment = before.keys().filter(|n| is_segment(n)).max();
    let mut cut = 0;
    for (name, content) in before {
        let now = after.get(name);
        if Some(name) == last_segment {
            match now {
                Some(now) if content.starts_with(now) => cut += content.len() - now.len(),
                // No longer than a header: written again as an empty segment.
                Some(now) if content.len() <= 32 && *now == empty_segment(name) => {
                    cut += content.len();
                }
                other => panic!("{name} was changed to {other:?}, not cut"),
            }
        } else if name.ends_with(".tmp") {
            assert!(now.is_none(), "{name} was kept");
        } else if is_snapshot(name) && now.is_none() {
            let aside = after.get(&format!("{name}.corrupt"));
            assert_eq!(aside, Some(content), "{name} was not set aside whole");
        } else {
            assert_eq!(now, Some(content), "{name} was changed");
        }
    }
    for (name, content) in after.iter().filter(|(n, _)| !before.contains_key(*n)) {
        let original = name.strip_suffix(".corrupt").and_then(|n| before.get(n));
        assert_eq!(original, Some(content), "{name} is not a copy of a file");
        let segment_copy = name.starts_with("wal-");
        assert!(
            !segment_copy || mode == RecoveryMode::SkipCorrupt,
            "strict recovery copied {name}"
        );
    }
    assert_eq!(report.truncated_bytes, cut as u64, "bytes cut");
}

/// Whether recovery takes `name` for a segment (a number up to `MAX_SEQ`).
fn is_segment(name: &str) -> bool {
    let seq = name
        .strip_prefix("wal-")
        .and_then(|n| n.strip_suffix(".log"));
    seq.and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|s| s <= MAX_SEQ)
}

/// Whether recovery takes `name` for a snapshot.
fn is_snapshot(name: &str) -> bool {
    let seq = name
        .strip_prefix("snap-")
        .and_then(|n| n.strip_suffix(".snap"));
    seq.and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|s| s <= MAX_SEQ)
}

/// The header-only segment a segment file name stands for.
fn empty_segment(name: &str) -> Vec<u8> {
    let seq = name
        .strip_prefix("wal-")
        .and_then(|n| n.strip_suffix(".log"));
    let seq = seq.and_then(|s| s.parse().ok()).unwrap_or_default();
    crate::wal::codec::encode_file_header(crate::wal::codec::FileKind::Wal, seq).to_vec()
}
