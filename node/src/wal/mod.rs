//! Durability: a write-ahead log with group commit, periodic snapshots, and
//! crash recovery, all in one data directory.
//!
//! ```text
//!  request ─► store (sync) ─► Records (encoded) ──► Wal::append
//!                                                             │ channel
//!              ┌──────────────── writer thread ◄──────────────┘
//!              │ drain queue → frame with seq → one write → fsync (policy)
//!              │ → wake the requests it covered (always) → rotate at size
//!              ▼
//!   DATA_DIR/wal-<first seq>.log   snap-<covered seq>.snap   LOCK
//!              ▲                          ▲
//!              │      snapshotter task: rotate → copy shards one by one →
//!              │      tmp, fsync, rename, dir fsync → keep K → delete
//!              │      segments the newest snapshot covers
//!  start-up: lock → newest valid snapshot → replay later records → writer
//! ```
//!
//! The record codec ([`codec`]) is pure; the writer ([`segment`]) is one OS
//! thread doing blocking file I/O, so no tokio worker ever waits on the disk;
//! [`snapshot`] and [`recovery`] are blocking code run off the async workers.
//! Requests never hold a shard lock while waiting: the store call returns
//! first, then the request awaits its append.
//!
//! What is logged is the new state of each entry written (key, value or
//! tombstone, version, absolute expiry), not the operation, so replay is
//! idempotent and order-insensitive per key: the highest version wins.
//! Evictions and expirations are not logged.

pub mod codec;
mod config;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod recovery;
mod segment;
mod snapshot;
mod stats;

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot, watch};

use crate::store::{Store, Written};
use codec::Record;
pub use config::{
    DEFAULT_SEGMENT_BYTES, DEFAULT_SNAPSHOT_INTERVAL, DEFAULT_SNAPSHOT_RETAIN, FsyncPolicy,
    RecoveryMode, SnapshotSection, WalOptions, WalSection,
};
use error::LOCK_FILE;
pub use error::{OpenError, WalError};
pub use snapshot::SnapshotInfo;
pub use stats::{RecoveryReport, WalCollector, WalStats};

/// Bytes of appends that may wait for the writer before requests wait too.
const QUEUE_BUDGET: usize = 64 << 20;

/// One request's writes, encoded, for one [`Wal::append`]. Records made
/// with [`Records::disabled`] (no WAL) record nothing and cost nothing.
#[derive(Debug, Default)]
pub struct Records {
    enabled: bool,
    bodies: Vec<Vec<u8>>,
    bytes: usize,
}

impl Records {
    /// Records that record.
    pub fn new() -> Self {
        Self {
            enabled: true,
            ..Self::default()
        }
    }

    /// Records that ignore everything (memory-only node).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Records a value written, if `w` says the write applied.
    pub fn put(&mut self, key: &[u8], value: &[u8], w: &Written) {
        if self.enabled && w.applied {
            self.push(&Record::Put {
                key,
                value,
                version: w.version,
                expires_at: w.expires_at,
            });
        }
    }

    /// Records a delete, if `w` says it applied.
    pub fn tombstone(&mut self, key: &[u8], w: &Written) {
        if self.enabled && w.applied {
            self.push(&Record::Tombstone {
                key,
                version: w.version,
                expires_at: w.expires_at,
            });
        }
    }

    /// Records that the entries of `ranges` below `below_version` are
    /// forgotten ([`Store::forget`]).
    pub fn forget(&mut self, ranges: &[distcache_proto::v1::HashRange], below_version: u64) {
        if self.enabled {
            let ranges = codec::encode_ranges(ranges.iter().map(|r| (r.start, r.end)));
            self.push(&Record::Forget {
                below_version,
                ranges: &ranges,
            });
        }
    }

    fn push(&mut self, rec: &Record<'_>) {
        let mut body = Vec::with_capacity(codec::body_len(rec));
        codec::encode_body(rec, &mut body);
        self.bytes += body.len() + codec::FRAME_HEADER_LEN;
        self.bodies.push(body);
    }

    /// True when these records record (the node has a WAL).
    pub fn is_recording(&self) -> bool {
        self.enabled
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }
}

/// The durability layer of a running node: the WAL writer's handle, the data
/// directory's lock, and what snapshots need.
#[derive(Debug)]
pub struct Wal {
    tx: mpsc::Sender<segment::Cmd>,
    budget: Arc<Semaphore>,
    opts: WalOptions,
    store: Arc<Store>,
    stats: Arc<WalStats>,
    /// One snapshot at a time; holds the sequence number of the last one.
    snapshot_seq: tokio::sync::Mutex<Option<u64>>,
    /// Held (shared) by a forget from logging its record to the end of its
    /// walk, and (exclusive) by a snapshot choosing the sequence number it
    /// covers: a snapshot that covers a forget's record sees all of its
    /// removals.
    forgetting: tokio::sync::RwLock<()>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    _lock: File,
}

impl Wal {
    /// Locks the data directory, recovers `store` from it, and starts the
    /// writer on a fresh segment. Blocking work runs off the async workers.
    pub async fn open(opts: WalOptions, store: Arc<Store>) -> Result<Self, OpenError> {
        let (lock, recovered) = {
            let (opts, store) = (opts.clone(), store.clone());
            tokio::task::spawn_blocking(move || {
                let lock = lock_dir(&opts.dir)?;
                let r = recovery::recover(&opts.dir, &store, opts.recovery)?;
                Ok::<_, OpenError>((lock, r))
            })
            .await
            .map_err(|e| OpenError::Writer(e.to_string()))??
        };
        let r = &recovered.report;
        tracing::info!(
            dir = %opts.dir.display(),
            snapshot = r.snapshot_file.as_deref().unwrap_or("none"),
            snapshot_entries = r.snapshot_entries,
            records_replayed = r.records_replayed,
            wal_bytes = r.wal_bytes,
            segments = r.segments,
            expired = r.expired,
            forgotten = r.forgotten,
            truncated_bytes = r.truncated_bytes,
            corrupt_skipped = r.corrupt_skipped,
            keys = store.len(),
            seconds = r.seconds,
            "recovery complete"
        );
        let stats = Arc::new(WalStats::default());
        stats.set_recovery(recovered.report.clone());
        let budget = Arc::new(Semaphore::new(QUEUE_BUDGET));
        let cfg = segment::WriterConfig {
            dir: opts.dir.clone(),
            policy: opts.fsync,
            segment_bytes: opts.segment_bytes,
        };
        let writer = segment::Writer::start(
            cfg,
            recovered.report.last_seq + 1,
            budget.clone(),
            stats.clone(),
        )
        .map_err(|e| OpenError::Io {
            path: opts.dir.clone(),
            source: e,
        })?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("distcache-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| OpenError::Writer(e.to_string()))?;
        let wal = Self {
            tx,
            budget,
            opts,
            store,
            stats,
            snapshot_seq: tokio::sync::Mutex::new(None),
            forgetting: tokio::sync::RwLock::new(()),
            thread: parking_lot::Mutex::new(Some(thread)),
            _lock: lock,
        };
        let last_snapshot = recovered.report.snapshot_seq;
        *wal.snapshot_seq.lock().await = (last_snapshot > 0).then_some(last_snapshot);
        if recovered.skipped_corruption {
            // Retire the damaged segments now, so the next start is clean.
            wal.snapshot()
                .await
                .map_err(|e| OpenError::Writer(e.to_string()))?;
        }
        Ok(wal)
    }

    /// The counters of this WAL (for metrics).
    pub fn stats(&self) -> &Arc<WalStats> {
        &self.stats
    }

    /// The options it runs with.
    pub fn options(&self) -> &WalOptions {
        &self.opts
    }

    /// Logs a request's writes. With `always` it returns once they are on
    /// disk; otherwise once queued (waiting only if the queue is full).
    pub async fn append(&self, records: Records) -> Result<(), WalError> {
        if records.bodies.is_empty() {
            return Ok(());
        }
        if self.stats.has_failed() {
            return Err(WalError::Failed("an earlier write or fsync failed".into()));
        }
        let permits = u32::try_from(records.bytes.min(QUEUE_BUDGET)).unwrap_or(u32::MAX);
        self.budget
            .acquire_many(permits)
            .await
            .map_err(|_| WalError::Closed)?
            .forget();
        let (done, wait) = if self.opts.fsync == FsyncPolicy::Always {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.tx
            .send(segment::Cmd::Append {
                bodies: records.bodies,
                permits,
                done,
            })
            .map_err(|_| WalError::Closed)?;
        match wait {
            Some(rx) => rx.await.map_err(|_| WalError::Closed)?,
            None => Ok(()),
        }
    }

    /// Held while a forget logs its record and walks the store (see the
    /// field `forgetting`).
    pub async fn forgetting(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.forgetting.read().await
    }

    /// Writes and fsyncs everything appended so far; returns the last
    /// sequence number.
    pub async fn flush(&self) -> Result<u64, WalError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(segment::Cmd::Flush(tx))
            .map_err(|_| WalError::Closed)?;
        rx.await.map_err(|_| WalError::Closed)?
    }

    /// Writes a snapshot now (unless nothing was logged since the last one),
    /// then keeps the newest `snapshot_retain` snapshots and deletes the WAL
    /// segments the new one covers.
    pub async fn snapshot(&self) -> Result<Option<SnapshotInfo>, WalError> {
        let mut last = self.snapshot_seq.lock().await;
        let no_forget = self.forgetting.write().await;
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(segment::Cmd::Rotate(tx))
            .map_err(|_| WalError::Closed)?;
        let seq = rx.await.map_err(|_| WalError::Closed)??;
        drop(no_forget);
        if *last == Some(seq) {
            return Ok(None);
        }
        let started = Instant::now();
        let (dir, store, retain) = (
            self.opts.dir.clone(),
            self.store.clone(),
            self.opts.snapshot_retain,
        );
        let result = tokio::task::spawn_blocking(move || {
            let info = snapshot::write_snapshot(&dir, &store, seq)?;
            let removed = snapshot::prune(&dir, retain)?;
            Ok::<_, std::io::Error>((info, removed))
        })
        .await
        .map_err(|e| WalError::Snapshot(e.to_string()))?;
        match result {
            Ok((info, removed)) => {
                *last = Some(seq);
                self.stats
                    .snapshot_done(seq, info.entries, started.elapsed());
                tracing::info!(
                    file = %info.path.display(),
                    covers_seq = seq,
                    entries = info.entries,
                    bytes = info.bytes,
                    files_removed = removed,
                    ms = started.elapsed().as_millis() as u64,
                    "snapshot written"
                );
                Ok(Some(info))
            }
            Err(e) => {
                self.stats.snapshot_failed();
                tracing::error!(error = %e, "snapshot failed");
                Err(WalError::Snapshot(e.to_string()))
            }
        }
    }

    /// The one place the WAL is flushed at shutdown: an optional final
    /// snapshot, then write and fsync everything queued, then stop the writer.
    pub async fn close(&self) -> Result<(), WalError> {
        if self.opts.snapshot_on_shutdown
            && let Err(e) = self.snapshot().await
        {
            tracing::error!(error = %e, "final snapshot failed");
        }
        let seq = self.flush().await?;
        tracing::info!(last_seq = seq, "write-ahead log flushed");
        Ok(())
    }

    /// Takes snapshots every `snapshot_interval`, and sooner once the WAL has
    /// grown by two segments since the last one, until `stop` turns true.
    pub async fn run_snapshotter(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = self.opts.snapshot_interval;
        if every.is_zero() {
            return;
        }
        let growth = self.opts.segment_bytes.saturating_mul(2);
        let check = every.min(Duration::from_secs(1));
        let mut since = Instant::now();
        let mut bytes_at = self.stats.bytes_written();
        loop {
            tokio::select! {
                () = tokio::time::sleep(check) => {}
                () = distcache_serve::stopped(&mut stop) => return,
            }
            let grown = self.stats.bytes_written().saturating_sub(bytes_at);
            if since.elapsed() < every && grown < growth {
                continue;
            }
            since = Instant::now();
            bytes_at = self.stats.bytes_written();
            let _ = self.snapshot().await;
        }
    }
}

impl Drop for Wal {
    /// Stops the writer after it has written and fsynced what was queued, so
    /// the directory is quiet once the lock is released.
    fn drop(&mut self) {
        let _ = self.tx.send(segment::Cmd::Stop);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

/// Creates `dir` if needed and takes its lock file, refusing if another
/// process holds it. The lock lasts as long as the returned file is open.
fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let io = |e| OpenError::Io {
        path: dir.to_owned(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| OpenError::Io {
            path: path.clone(),
            source: e,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(OpenError::Io { path, source: e }),
    }
}

#[cfg(test)]
mod tests;
