//! Snapshots: the whole store written shard by shard to one file, and read
//! back at start-up.
//!
//! Writing is fuzzy: each shard is copied under its own lock, one after the
//! other, while writers go on elsewhere. The snapshot is stamped with the last
//! WAL sequence number handed out before it started (the writer rotates to a
//! new segment at that point); every record up to it is reflected in the
//! snapshot (or superseded), and records after it may or may not be. Replay
//! applies records by version, so replaying some that the snapshot already
//! holds changes nothing.
//!
//! A snapshot is written to `snap-SEQ.tmp`, fsynced, renamed to
//! `snap-SEQ.snap` and the directory fsynced, so a crash leaves either the
//! old set of snapshots or the new one. It ends with an end record holding the
//! entry count; a file without it is incomplete and not used.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::codec::{self, FileKind, Frame, Record};
use super::segment::{list_segments, sync_dir};
use crate::store::{Restored, Store};

/// The file name of the snapshot covering WAL records up to `seq`.
pub(crate) fn snapshot_name(seq: u64) -> String {
    format!("snap-{seq:020}.snap")
}

/// The sequence number in a snapshot's file name; past [`codec::MAX_SEQ`]
/// it is no name the node writes, and the file is not one of its snapshots.
fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snap-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
        .filter(|&seq| seq <= codec::MAX_SEQ)
}

/// Snapshots in `dir`, newest (highest sequence number) first.
pub(crate) fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_snapshot_name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    Ok(out)
}

/// Removes leftovers of snapshots that were being written when a node died.
pub(crate) fn remove_temporaries(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap-") && name.ends_with(".tmp") {
            tracing::info!(file = %entry.path().display(), "removing unfinished snapshot");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// What a snapshot written holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// Last WAL sequence number it covers.
    pub seq: u64,
    /// Entries written (values and tombstones).
    pub entries: u64,
    /// File size.
    pub bytes: u64,
}

/// Writes a snapshot of `store` covering WAL records up to `seq`.
pub(crate) fn write_snapshot(dir: &Path, store: &Store, seq: u64) -> std::io::Result<SnapshotInfo> {
    let tmp = dir.join(format!("snap-{seq:020}.tmp"));
    let path = dir.join(snapshot_name(seq));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let result = write_entries(&mut file, store, seq);
    let (entries, bytes) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(SnapshotInfo {
        path,
        seq,
        entries,
        bytes,
    })
}

fn write_entries(file: &mut File, store: &Store, seq: u64) -> std::io::Result<(u64, u64)> {
    file.write_all(&codec::encode_file_header(FileKind::Snapshot, seq))?;
    let mut bytes = codec::FILE_HEADER_LEN as u64;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut body = Vec::with_capacity(256);
    let mut n = 0u64;
    let now = store.clock().now_ms();
    for shard in 0..store.shard_count() {
        // Copy under the shard's lock, write after releasing it.
        store.for_each_in_shard(shard, |e| {
            if e.expires_at != 0 && e.expires_at <= now {
                return;
            }
            body.clear();
            let rec = match e.value {
                Some(v) => Record::Put {
                    key: e.key,
                    value: v,
                    version: e.version,
                    expires_at: e.expires_at,
                },
                None => Record::Tombstone {
                    key: e.key,
                    version: e.version,
                    expires_at: e.expires_at,
                },
            };
            codec::encode_body(&rec, &mut body);
            n += 1;
            codec::encode_frame(n, &body, &mut buf);
        });
        if buf.len() >= 1 << 20 || shard + 1 == store.shard_count() {
            file.write_all(&buf)?;
            bytes += buf.len() as u64;
            buf.clear();
        }
    }
    body.clear();
    codec::encode_body(&Record::End { count: n }, &mut body);
    codec::encode_frame(n + 1, &body, &mut buf);
    file.write_all(&buf)?;
    bytes += buf.len() as u64;
    Ok((n, bytes))
}

/// Keeps the newest `retain` snapshots and deletes WAL segments whose records
/// the newest snapshot covers entirely. Returns how many files were removed.
pub(crate) fn prune(dir: &Path, retain: usize) -> std::io::Result<usize> {
    let snaps = list_snapshots(dir)?;
    let mut removed = 0;
    for (_, path) in snaps.iter().skip(retain.max(1)) {
        std::fs::remove_file(path)?;
        removed += 1;
    }
    let Some(&(covered, _)) = snaps.first() else {
        return Ok(removed);
    };
    let segments = list_segments(dir)?;
    for pair in segments.windows(2) {
        // Every record of a segment precedes the next segment's first one.
        if pair[1].0 <= covered.saturating_add(1) {
            std::fs::remove_file(&pair[0].1)?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Why a snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("at byte {offset}: {reason}")]
    Bad { offset: u64, reason: String },
}

/// Figures of a snapshot loaded.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Loaded {
    pub(crate) seq: u64,
    pub(crate) entries: u64,
    pub(crate) expired: u64,
}

/// Loads a snapshot into `store`, verifying every record as it goes. On an
/// error the entries read so far stay in the store: each was verified, and
/// anything older loaded later cannot override them (restore is by version).
pub(crate) fn load_snapshot(path: &Path, store: &Store) -> Result<Loaded, SnapshotError> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let bad = |offset: u64, reason: String| SnapshotError::Bad { offset, reason };
    let mut head = [0u8; codec::FILE_HEADER_LEN];
    read_full(&mut r, &mut head).map_err(|e| bad(0, e))?;
    let seq = match codec::decode_file_header(&head, FileKind::Snapshot) {
        Some(Ok(seq)) if seq > codec::MAX_SEQ => {
            return Err(bad(
                0,
                format!("covers {seq}, past the last sequence number"),
            ));
        }
        Some(Ok(seq)) => seq,
        Some(Err(e)) => return Err(bad(0, e.to_string())),
        None => return Err(bad(0, "file shorter than its header".into())),
    };
    let mut loaded = Loaded {
        seq,
        ..Loaded::default()
    };
    let mut offset = codec::FILE_HEADER_LEN as u64;
    let mut frame = Vec::with_capacity(4096);
    let mut index = 0u64;
    loop {
        frame.resize(codec::FRAME_HEADER_LEN, 0);
        read_full(&mut r, &mut frame).map_err(|e| bad(offset, e))?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&frame[0..4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > codec::MAX_BODY_LEN {
            return Err(bad(offset, format!("record length {len} is implausible")));
        }
        frame.resize(codec::FRAME_HEADER_LEN + len, 0);
        read_full(&mut r, &mut frame[codec::FRAME_HEADER_LEN..]).map_err(|e| bad(offset, e))?;
        let (frame_seq, body) = match codec::decode_frame(&frame) {
            Frame::Valid { seq, body, .. } => (seq, body),
            Frame::Incomplete => return Err(bad(offset, "truncated record".into())),
            Frame::Corrupt(e) => return Err(bad(offset, e.to_string())),
        };
        index += 1;
        if frame_seq != index {
            return Err(bad(
                offset,
                format!("record {frame_seq} where {index} was expected"),
            ));
        }
        let (key, value, version, expires_at) = match codec::decode_body(body) {
            Ok(Record::End { count }) if count == index - 1 => {
                let mut rest = [0u8; 1];
                if r.read(&mut rest)? != 0 {
                    return Err(bad(offset, "bytes after the end record".into()));
                }
                loaded.entries = count;
                return Ok(loaded);
            }
            Ok(Record::End { count }) => {
                return Err(bad(
                    offset,
                    format!("end record counts {count} entries, file has {}", index - 1),
                ));
            }
            Ok(Record::Put {
                key,
                value,
                version,
                expires_at,
            }) => (key, Some(value), version, expires_at),
            Ok(Record::Tombstone {
                key,
                version,
                expires_at,
            }) => (key, None, version, expires_at),
            Ok(Record::Forget { .. }) => {
                return Err(bad(offset, "forget record in a snapshot".into()));
            }
            Err(e) => return Err(bad(offset, e.to_string())),
        };
        if store.restore(key, value, version, expires_at) == Restored::Expired {
            loaded.expired += 1;
        }
        offset += frame.len() as u64;
    }
}

/// `read_exact` that names a premature end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<(), String> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "file ends before its end record".to_owned(),
        _ => e.to_string(),
    })
}
