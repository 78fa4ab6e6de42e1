//! Start-up recovery: the newest snapshot that verifies (falling back to older
//! ones), then every later WAL record in sequence order, each applied to the
//! store by version with [`Store::restore`].
//!
//! Damage is classified by where it is. Bytes after the last valid record of
//! the last segment that do not make a valid record (a write cut short by a
//! crash, or garbage after it) are a torn tail: cut off with a warning. Damage
//! followed by further valid records, or in a segment that is not the last, is
//! corruption: start-up stops with the file and byte offset, unless the
//! operator chose `skip-corrupt`, which keeps a copy of the damaged file
//! (`*.corrupt`), skips to the next valid record and goes on.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use distcache_proto::ring::Ranges;
use distcache_proto::v1::HashRange;

use super::codec::{self, FileKind, Frame, Record};
use super::config::RecoveryMode;
use super::error::OpenError;
use super::segment::list_segments;
use super::snapshot::{list_snapshots, load_snapshot, remove_temporaries};
use super::stats::RecoveryReport;
use crate::store::{Restored, Store};

/// A frame claiming a sequence number this far past the expected one is not
/// taken as a resynchronisation point.
const RESYNC_WINDOW: u64 = 1 << 32;
/// Records decoded before they are applied in parallel.
const APPLY_CHUNK: usize = 1 << 16;
/// Most threads replay uses.
const MAX_APPLY_THREADS: usize = 4;

/// Outcome of [`recover`].
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) report: RecoveryReport,
    /// Corruption was skipped: the caller should write a snapshot soon so the
    /// damaged segments are retired.
    pub(crate) skipped_corruption: bool,
}

/// Rebuilds `store` from the files in `dir`.
pub(crate) fn recover(
    dir: &Path,
    store: &Store,
    mode: RecoveryMode,
) -> Result<Recovered, OpenError> {
    let started = Instant::now();
    let io = |e: std::io::Error| OpenError::Io {
        path: dir.to_owned(),
        source: e,
    };
    remove_temporaries(dir).map_err(io)?;
    let mut report = RecoveryReport::default();
    let mut failed_seq = 0;
    for (seq, path) in list_snapshots(dir).map_err(io)? {
        match load_snapshot(&path, store) {
            Ok(loaded) => {
                if loaded.seq != seq {
                    tracing::warn!(file = %path.display(), header_seq = loaded.seq, "snapshot file name and header disagree; using the header");
                }
                report.snapshot_seq = loaded.seq;
                report.snapshot_file = Some(path.display().to_string());
                report.snapshot_entries = loaded.entries;
                report.expired += loaded.expired;
                tracing::info!(
                    file = %path.display(),
                    covers_seq = seq,
                    entries = loaded.entries,
                    "loaded snapshot"
                );
                break;
            }
            Err(e) => {
                report.snapshots_skipped += 1;
                // Set aside (kept for inspection), so that it is neither tried
                // again nor counted as the newest snapshot when pruning.
                let aside = PathBuf::from(format!("{}.corrupt", path.display()));
                tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    renamed_to = %aside.display(),
                    "snapshot failed verification; falling back to an older one"
                );
                std::fs::rename(&path, &aside).map_err(io)?;
                // Sequence numbers it covered were handed out: never reuse them.
                failed_seq = failed_seq.max(seq);
            }
        }
    }
    let segments = list_segments(dir).map_err(io)?;
    let mut replay = Replay {
        store,
        mode,
        report,
        last_seq: 0,
        skipped_corruption: false,
    };
    replay.last_seq = replay.report.snapshot_seq;
    let snap_seq = replay.report.snapshot_seq;
    if replay.report.snapshots_skipped > 0
        && let Some((first, _)) = segments.first()
        && *first > snap_seq.saturating_add(1)
    {
        tracing::warn!(
            from_seq = snap_seq + 1,
            to_seq = first - 1,
            "WAL records between the snapshot used and the oldest segment are gone \
             (they were covered by the snapshot that failed); those writes are lost"
        );
    }
    let have_snapshot = replay.report.snapshot_file.is_some();
    for (i, (base, path)) in segments.iter().enumerate() {
        let next_base = segments.get(i + 1).map(|(b, _)| *b);
        if have_snapshot && next_base.is_some_and(|n| n <= snap_seq.saturating_add(1)) {
            continue; // wholly covered by the snapshot
        }
        replay.segment(path, *base, next_base.is_none())?;
    }
    // Expired markers only had to block older records during the replay.
    for shard in 0..store.shard_count() {
        store.sweep_shard(shard, usize::MAX);
    }
    let mut report = replay.report;
    // A segment's name says the writer reached its first number: start past
    // every one, so the writer's new segment is the last (the one whose
    // torn tail the next start may cut).
    let named = segments
        .last()
        .map_or(0, |(base, _)| base.saturating_sub(1));
    report.last_seq = replay.last_seq.max(failed_seq).max(named);
    if report.last_seq >= codec::MAX_SEQ {
        // Unreachable by counting; only a damaged or forged file gets here.
        return Err(OpenError::Corrupt {
            path: dir.to_owned(),
            offset: 0,
            reason: format!(
                "sequence number {} leaves the writer none to use",
                report.last_seq
            ),
        });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(Recovered {
        report,
        skipped_corruption: replay.skipped_corruption,
    })
}

struct Replay<'a> {
    store: &'a Store,
    mode: RecoveryMode,
    report: RecoveryReport,
    last_seq: u64,
    skipped_corruption: bool,
}

impl Replay<'_> {
    /// Replays one segment and logs the progress.
    fn segment(&mut self, path: &Path, base: u64, last: bool) -> Result<(), OpenError> {
        let before = self.report.records_replayed;
        self.replay_segment(path, base, last)?;
        tracing::info!(
            file = %path.display(),
            records = self.report.records_replayed - before,
            last_seq = self.last_seq,
            "replayed WAL segment"
        );
        Ok(())
    }

    fn replay_segment(&mut self, path: &Path, base: u64, last: bool) -> Result<(), OpenError> {
        let buf = std::fs::read(path).map_err(|e| OpenError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        self.report.segments += 1;
        self.report.wal_bytes += buf.len() as u64;
        match codec::decode_file_header(&buf, FileKind::Wal) {
            Some(Ok(seq)) if seq == base => {}
            Some(Ok(seq)) => {
                let reason = format!("header says first record {seq}, file name says {base}");
                return self.corrupt(path, 0, buf.len(), &reason);
            }
            // A last segment no longer than a header: created when the node
            // died. Written again as the empty segment it was meant to be, not
            // removed: its name bounds the segment before it, which a snapshot
            // may cover (see `recover`), on every later start too.
            _ if last && buf.len() <= codec::FILE_HEADER_LEN => {
                return self.truncate(path, base, 0, buf.len());
            }
            Some(Err(e)) => return self.corrupt(path, 0, buf.len(), &e.to_string()),
            None => return self.corrupt(path, 0, buf.len(), "file shorter than its header"),
        }
        let mut at = codec::FILE_HEADER_LEN;
        let mut expected = base;
        let mut pending = Vec::with_capacity(APPLY_CHUNK);
        while at < buf.len() {
            let reason = match codec::decode_frame(&buf[at..]) {
                Frame::Valid { seq, .. } if seq > codec::MAX_SEQ => {
                    format!("record {seq} is past the last sequence number")
                }
                Frame::Valid { seq, body, len } if seq == expected => {
                    match codec::decode_body(body) {
                        Ok(rec) if !matches!(rec, Record::End { .. }) => {
                            self.last_seq = self.last_seq.max(seq);
                            if seq > self.report.snapshot_seq {
                                if let Record::Forget {
                                    below_version,
                                    ranges,
                                } = rec
                                {
                                    // In log order: what came before is
                                    // forgotten, what comes after stays.
                                    self.apply_all(&mut pending);
                                    self.forget(below_version, ranges);
                                } else {
                                    pending.push(rec);
                                    if pending.len() == APPLY_CHUNK {
                                        self.apply_all(&mut pending);
                                    }
                                }
                            }
                            at += len;
                            expected += 1;
                            continue;
                        }
                        Ok(_) => "end-of-snapshot record in a WAL segment".to_owned(),
                        Err(e) => e.to_string(),
                    }
                }
                Frame::Valid { seq, .. } => format!("record {seq} where {expected} was expected"),
                Frame::Incomplete => "record cut short".to_owned(),
                Frame::Corrupt(e) => e.to_string(),
            };
            self.apply_all(&mut pending);
            match resync(&buf, at + 1, expected) {
                Some(next) => {
                    self.corrupt(path, at, next - at, &reason)?;
                    // Records in the skipped region are lost; carry on after it.
                    expected = codec::peek_seq(&buf[next..]).unwrap_or(expected);
                    at = next;
                }
                None if last => return self.truncate(path, base, at, buf.len() - at),
                None => return self.corrupt(path, at, buf.len() - at, &reason),
            }
        }
        self.apply_all(&mut pending);
        Ok(())
    }

    /// Replays a forget record (see [`Store::forget`]).
    fn forget(&mut self, below_version: u64, ranges: &[u8]) {
        let ranges: Vec<HashRange> = codec::forget_ranges(ranges)
            .map(|(start, end)| HashRange { start, end })
            .collect();
        if let Some(r) = Ranges::new(&ranges) {
            self.report.forgotten += self.store.forget(&r, below_version);
        }
        self.report.records_replayed += 1;
    }

    /// Applies decoded records on several threads, thread `t` taking the
    /// records of the shards `s` with `s % threads == t`. A key always lives
    /// in one shard, so each key's records are applied in log order by one
    /// thread.
    fn apply_all(&mut self, pending: &mut Vec<Record<'_>>) {
        let store = self.store;
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_APPLY_THREADS);
        let expired = if threads == 1 || pending.len() < 4096 {
            apply_part(store, pending, None, 0, 1)
        } else {
            let shards: Vec<u32> = pending
                .iter()
                .map(|rec| match rec {
                    Record::Put { key, .. } | Record::Tombstone { key, .. } => {
                        store.shard_of(key) as u32
                    }
                    Record::End { .. } | Record::Forget { .. } => 0,
                })
                .collect();
            let (recs, shards) = (&pending[..], &shards[..]);
            std::thread::scope(|s| {
                let parts: Vec<_> = (0..threads)
                    .map(|t| s.spawn(move || apply_part(store, recs, Some(shards), t, threads)))
                    .collect();
                parts.into_iter().map(|h| h.join().unwrap_or(0)).sum()
            })
        };
        self.report.records_replayed += pending.len() as u64;
        self.report.expired += expired;
        pending.clear();
    }

    /// Cuts a torn tail off the last segment (whose first number is `base`);
    /// at 0, what is left is a new header.
    fn truncate(
        &mut self,
        path: &Path,
        base: u64,
        at: usize,
        bytes: usize,
    ) -> Result<(), OpenError> {
        if bytes == 0 && at > 0 {
            return Ok(());
        }
        tracing::warn!(
            file = %path.display(),
            offset = at,
            bytes,
            "WAL ends in a torn or partial record; truncating it"
        );
        let io = |e| OpenError::Io {
            path: path.to_owned(),
            source: e,
        };
        let file = OpenOptions::new().write(true).open(path).map_err(io)?;
        if at == 0 {
            file.set_len(0).map_err(io)?;
            (&file)
                .write_all(&codec::encode_file_header(FileKind::Wal, base))
                .map_err(io)?;
        } else {
            file.set_len(at as u64).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        self.report.truncated_bytes += bytes as u64;
        Ok(())
    }

    /// Refuses (strict) or records and skips (skip-corrupt) a damaged region.
    fn corrupt(
        &mut self,
        path: &Path,
        at: usize,
        bytes: usize,
        reason: &str,
    ) -> Result<(), OpenError> {
        if self.mode == RecoveryMode::Strict {
            return Err(OpenError::Corrupt {
                path: path.to_owned(),
                offset: at as u64,
                reason: reason.to_owned(),
            });
        }
        let copy = PathBuf::from(format!("{}.corrupt", path.display()));
        if !copy.exists() {
            std::fs::copy(path, &copy).map_err(|e| OpenError::Io {
                path: copy.clone(),
                source: e,
            })?;
        }
        tracing::error!(
            file = %path.display(),
            offset = at,
            bytes,
            reason,
            copy = %copy.display(),
            "skipping corrupt WAL region (--wal-recovery skip-corrupt); the records in it are lost"
        );
        self.report.corrupt_skipped += 1;
        self.report.corrupt_bytes += bytes as u64;
        self.skipped_corruption = true;
        Ok(())
    }
}

/// Restores the records whose shard is `part` modulo `parts` (all of them
/// without `shards`); returns how many were expired on arrival.
fn apply_part(
    store: &Store,
    recs: &[Record<'_>],
    shards: Option<&[u32]>,
    part: usize,
    parts: usize,
) -> u64 {
    let mut expired = 0;
    for (i, rec) in recs.iter().enumerate() {
        if let Some(shards) = shards
            && shards.get(i).map_or(0, |&s| s as usize) % parts != part
        {
            continue;
        }
        let restored = match *rec {
            Record::Put {
                key,
                value,
                version,
                expires_at,
            } => store.restore(key, Some(value), version, expires_at),
            Record::Tombstone {
                key,
                version,
                expires_at,
            } => store.restore(key, None, version, expires_at),
            Record::End { .. } | Record::Forget { .. } => continue,
        };
        if restored == Restored::Expired {
            expired += 1;
        }
    }
    expired
}

/// The offset of the next frame at or after `from` that replay would take:
/// valid, numbered from `expected` on (within the window, not past
/// `MAX_SEQ`), holding a record. A frame replay would refuse in turn is no
/// place to resume, or a skipped region would later read as a torn tail.
fn resync(buf: &[u8], from: usize, expected: u64) -> Option<usize> {
    let numbered = |s: u64| s >= expected && s - expected < RESYNC_WINDOW && s <= codec::MAX_SEQ;
    (from..buf.len().saturating_sub(codec::FRAME_HEADER_LEN - 1)).find(|&p| {
        let rest = &buf[p..];
        codec::peek_seq(rest).is_some_and(numbered)
            && match codec::decode_frame(rest) {
                Frame::Valid { body, .. } => {
                    matches!(codec::decode_body(body), Ok(rec) if !matches!(rec, Record::End { .. }))
                }
                _ => false,
            }
    })
}
