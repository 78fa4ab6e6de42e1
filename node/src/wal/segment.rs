//! WAL segment files and the group-commit writer.
//!
//! One OS thread owns the open segment. Requests hand it encoded record bodies
//! through a channel; the thread drains everything queued, frames it with
//! sequence numbers into one buffer, issues one `write`, and (policy `always`)
//! one `fdatasync`, then wakes every request that batch covered. While it is
//! in the kernel, new appends queue up for the next batch: that is the group
//! commit. The thread also rotates segments at the size limit and on request
//! (a snapshot starting), and flushes on close.
//!
//! It does not decide what to log (the service does) nor read segments back
//! (recovery does).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot};

use super::codec::{self, FileKind};
use super::config::FsyncPolicy;
use super::error::WalError;
use super::stats::WalStats;

/// Stop gathering a batch beyond this many bytes, so one write stays bounded.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// How often `everysec` fsyncs.
const EVERYSEC: Duration = Duration::from_secs(1);

/// The file name of the segment whose first record has sequence number `seq`.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

/// The first sequence number encoded in a segment file name; a number past
/// [`codec::MAX_SEQ`] is no name the node writes, and the file is not one
/// of its segments.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
        .filter(|&seq| seq <= codec::MAX_SEQ)
}

/// Segments in `dir`, sorted by their first sequence number.
pub(crate) fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(out)
}

/// Makes the directory's entries (new or renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a segment starting at `seq`, header written and durable.
pub(crate) fn create_segment(dir: &Path, seq: u64) -> std::io::Result<File> {
    let path = dir.join(segment_name(seq));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.write_all(&codec::encode_file_header(FileKind::Wal, seq))?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// A request to the writer thread.
pub(crate) enum Cmd {
    /// Log these bodies; reply once durable (`always`) or written.
    Append {
        bodies: Vec<Vec<u8>>,
        permits: u32,
        done: Option<oneshot::Sender<Result<(), WalError>>>,
    },
    /// Write and fsync everything queued so far; reply with the last sequence
    /// number assigned.
    Flush(oneshot::Sender<Result<u64, WalError>>),
    /// Flush, then start a new segment; reply with the last sequence number
    /// of the old ones (everything a snapshot starting now will cover).
    Rotate(oneshot::Sender<Result<u64, WalError>>),
    /// Write and fsync everything queued, then exit.
    Stop,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Append { .. } => "Append",
            Cmd::Flush(_) => "Flush",
            Cmd::Rotate(_) => "Rotate",
            Cmd::Stop => "Stop",
        })
    }
}

/// How the writer is set up.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub(crate) dir: PathBuf,
    pub(crate) policy: FsyncPolicy,
    pub(crate) segment_bytes: u64,
}

/// The writer thread's state.
pub(crate) struct Writer {
    cfg: WriterConfig,
    file: File,
    segment_len: u64,
    segment_records: u64,
    next_seq: u64,
    /// Bytes written since the last fsync.
    dirty: bool,
    last_sync: Instant,
    buf: Vec<u8>,
    /// The first I/O error; after it every append fails.
    failed: Option<String>,
    budget: Arc<Semaphore>,
    stats: Arc<WalStats>,
}

impl Writer {
    /// A writer appending to a new segment whose first record will be `next_seq`.
    pub(crate) fn start(
        cfg: WriterConfig,
        next_seq: u64,
        budget: Arc<Semaphore>,
        stats: Arc<WalStats>,
    ) -> std::io::Result<Self> {
        let file = create_segment(&cfg.dir, next_seq)?;
        stats.segment_opened();
        Ok(Self {
            cfg,
            file,
            segment_len: codec::FILE_HEADER_LEN as u64,
            segment_records: 0,
            next_seq,
            dirty: false,
            last_sync: Instant::now(),
            buf: Vec::with_capacity(1 << 16),
            failed: None,
            budget,
            stats,
        })
    }

    /// Serves commands until every sender is gone, then flushes and returns.
    pub(crate) fn run(mut self, rx: Receiver<Cmd>) {
        let mut waiters = Vec::new();
        let mut permits = 0u32;
        let mut stopping = false;
        while !stopping {
            let first = if self.dirty && self.cfg.policy == FsyncPolicy::EverySec {
                let wait = EVERYSEC.saturating_sub(self.last_sync.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(cmd) => cmd,
                    Err(RecvTimeoutError::Timeout) => {
                        self.sync();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(cmd) => cmd,
                    Err(_) => break,
                }
            };
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append {
                        bodies,
                        permits: p,
                        done,
                    } => {
                        self.frame(&bodies);
                        permits = permits.saturating_add(p);
                        waiters.extend(done);
                    }
                    Cmd::Flush(reply) => {
                        self.commit(&mut waiters, &mut permits, true);
                        let _ = reply.send(self.result().map(|()| self.next_seq - 1));
                    }
                    Cmd::Rotate(reply) => {
                        self.commit(&mut waiters, &mut permits, true);
                        let r = self.result().and_then(|()| {
                            if self.segment_records > 0 {
                                self.rotate();
                            }
                            self.result()
                        });
                        let _ = reply.send(r.map(|()| self.next_seq - 1));
                    }
                    Cmd::Stop => stopping = true,
                }
                if self.buf.len() < MAX_BATCH_BYTES && !stopping {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut waiters, &mut permits, false);
        }
        self.commit(&mut waiters, &mut permits, true);
        if let Some(e) = &self.failed {
            tracing::error!(error = %e, "write-ahead log closed after an I/O error");
        } else {
            tracing::info!(
                last_seq = self.next_seq - 1,
                "write-ahead log flushed and closed"
            );
        }
    }

    /// Frames `bodies` into the batch buffer, rotating first if the segment
    /// would outgrow its limit.
    fn frame(&mut self, bodies: &[Vec<u8>]) {
        for body in bodies {
            let frame_len = (codec::FRAME_HEADER_LEN + body.len()) as u64;
            let pending = self.buf.len() as u64;
            if self.segment_records > 0
                && self.segment_len + pending + frame_len > self.cfg.segment_bytes
            {
                self.write_buf();
                self.rotate();
            }
            codec::encode_frame(self.next_seq, body, &mut self.buf);
            self.next_seq += 1;
            self.segment_records += 1;
        }
        self.stats.appended(bodies.len() as u64);
    }

    /// Writes the batch, fsyncs as the policy (or `force`) says, and answers
    /// the requests it covered.
    fn commit(
        &mut self,
        waiters: &mut Vec<oneshot::Sender<Result<(), WalError>>>,
        permits: &mut u32,
        force: bool,
    ) {
        self.write_buf();
        let due = match self.cfg.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::EverySec => self.last_sync.elapsed() >= EVERYSEC,
            FsyncPolicy::No => false,
        };
        if self.dirty && (due || force) {
            self.sync();
        }
        let result = self.result();
        for w in waiters.drain(..) {
            let _ = w.send(result.clone());
        }
        if *permits > 0 {
            self.budget.add_permits(*permits as usize);
            *permits = 0;
        }
    }

    fn write_buf(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.failed.is_none() {
            match self.file.write_all(&self.buf) {
                Ok(()) => {
                    self.segment_len += self.buf.len() as u64;
                    self.stats.written(self.buf.len() as u64);
                    self.dirty = true;
                }
                Err(e) => self.fail("write", &e),
            }
        }
        self.buf.clear();
    }

    fn sync(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let start = Instant::now();
        match self.file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                self.last_sync = Instant::now();
                self.stats.synced(start.elapsed());
            }
            Err(e) => self.fail("fsync", &e),
        }
    }

    /// Closes the current segment (fsynced) and opens the next one.
    fn rotate(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if self.dirty {
            self.sync();
        }
        match create_segment(&self.cfg.dir, self.next_seq) {
            Ok(file) => {
                self.file = file;
                self.segment_len = codec::FILE_HEADER_LEN as u64;
                self.segment_records = 0;
                self.stats.segment_opened();
                tracing::debug!(first_seq = self.next_seq, "opened WAL segment");
            }
            Err(e) => self.fail("create segment", &e),
        }
    }

    fn fail(&mut self, what: &str, e: &std::io::Error) {
        let msg = format!("{what} failed in {}: {e}", self.cfg.dir.display());
        tracing::error!(error = %msg, "write-ahead log I/O error; refusing further writes");
        self.stats.failed();
        self.failed = Some(msg);
    }

    fn result(&self) -> Result<(), WalError> {
        match &self.failed {
            None => Ok(()),
            Some(e) => Err(WalError::Failed(e.clone())),
        }
    }
}
