//! Figures of the durability layer: what recovery did at start-up, and running
//! counters of the WAL writer and the snapshotter. Exported in `/metrics`
//! (through [`WalCollector`]) and `/metrics.json` (through [`WalStats::json`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use distcache_serve::metrics::{counter, gauge};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What recovery did when the node started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryReport {
    /// Sequence number covered by the snapshot loaded (0: none).
    pub snapshot_seq: u64,
    /// The snapshot file loaded, if any.
    pub snapshot_file: Option<String>,
    /// Entries read from the snapshot.
    pub snapshot_entries: u64,
    /// Snapshots that failed verification and were passed over.
    pub snapshots_skipped: u64,
    /// WAL records replayed (after the snapshot).
    pub records_replayed: u64,
    /// Bytes of WAL read.
    pub wal_bytes: u64,
    /// WAL segments read.
    pub segments: u64,
    /// Entries (from the snapshot or the WAL) that were expired on arrival.
    pub expired: u64,
    /// Entries removed again by forget records (ranges moved to other
    /// nodes).
    pub forgotten: u64,
    /// Bytes cut off a torn tail.
    pub truncated_bytes: u64,
    /// Corrupt regions skipped (`--wal-recovery skip-corrupt` only).
    pub corrupt_skipped: u64,
    /// Bytes inside those regions.
    pub corrupt_bytes: u64,
    /// Last sequence number found; the writer continues after it.
    pub last_seq: u64,
    /// Wall time of the whole recovery, in seconds.
    pub seconds: f64,
}

/// Counters shared by the writer thread, the snapshotter and the exporters.
#[derive(Debug, Default)]
pub struct WalStats {
    recovery: Mutex<RecoveryReport>,
    appends: AtomicU64,
    bytes: AtomicU64,
    fsyncs: AtomicU64,
    fsync_micros: AtomicU64,
    segments_opened: AtomicU64,
    errors: AtomicU64,
    snapshots: AtomicU64,
    snapshot_failures: AtomicU64,
    last_snapshot_entries: AtomicU64,
    last_snapshot_millis: AtomicU64,
    last_snapshot_seq: AtomicU64,
}

impl WalStats {
    pub(crate) fn set_recovery(&self, r: RecoveryReport) {
        *self.recovery.lock() = r;
    }

    /// What recovery did.
    pub fn recovery(&self) -> RecoveryReport {
        self.recovery.lock().clone()
    }

    pub(crate) fn appended(&self, records: u64) {
        self.appends.fetch_add(records, Ordering::Relaxed);
    }

    pub(crate) fn written(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn synced(&self, took: Duration) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fsync_micros.fetch_add(us, Ordering::Relaxed);
    }

    pub(crate) fn segment_opened(&self) {
        self.segments_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot_done(&self, seq: u64, entries: u64, took: Duration) {
        self.snapshots.fetch_add(1, Ordering::Relaxed);
        self.last_snapshot_seq.store(seq, Ordering::Relaxed);
        self.last_snapshot_entries.store(entries, Ordering::Relaxed);
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.last_snapshot_millis.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn snapshot_failed(&self) {
        self.snapshot_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// True once a write or fsync failed.
    pub fn has_failed(&self) -> bool {
        self.errors.load(Ordering::Relaxed) > 0
    }

    /// Bytes appended to the WAL since start.
    pub fn bytes_written(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Records appended since start.
    pub fn records_appended(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// fsyncs of WAL segments since start.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Snapshots written since start.
    pub fn snapshots(&self) -> u64 {
        self.snapshots.load(Ordering::Relaxed)
    }

    /// The same figures as a JSON object.
    pub fn json(&self) -> serde_json::Value {
        let r = self.recovery();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "records_appended": l(&self.appends),
            "bytes_written": l(&self.bytes),
            "fsyncs": l(&self.fsyncs),
            "segments_opened": l(&self.segments_opened),
            "errors": l(&self.errors),
            "snapshots": l(&self.snapshots),
            "snapshot_failures": l(&self.snapshot_failures),
            "last_snapshot_seq": l(&self.last_snapshot_seq),
            "last_snapshot_entries": l(&self.last_snapshot_entries),
            "last_snapshot_millis": l(&self.last_snapshot_millis),
            "recovery": {
                "snapshot_seq": r.snapshot_seq,
                "snapshot_file": r.snapshot_file,
                "snapshot_entries": r.snapshot_entries,
                "snapshots_skipped": r.snapshots_skipped,
                "records_replayed": r.records_replayed,
                "wal_bytes": r.wal_bytes,
                "segments": r.segments,
                "expired": r.expired,
                "forgotten": r.forgotten,
                "truncated_bytes": r.truncated_bytes,
                "corrupt_skipped": r.corrupt_skipped,
                "corrupt_bytes": r.corrupt_bytes,
                "last_seq": r.last_seq,
                "seconds": r.seconds,
            },
        })
    }
}

/// Exports [`WalStats`] at scrape time under `distcache_wal_*`,
/// `distcache_snapshot_*` and `distcache_recovery_*`.
#[derive(Debug)]
pub struct WalCollector(pub Arc<WalStats>);

impl Collector for WalCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s = &self.0;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut enc;
        counter(
            e,
            "wal_records",
            "Records appended to the WAL",
            l(&s.appends),
        )?;
        counter(
            e,
            "wal_written_bytes",
            "Bytes written to the WAL",
            l(&s.bytes),
        )?;
        counter(e, "wal_fsyncs", "fsyncs of WAL segments", l(&s.fsyncs))?;
        let c = ConstCounter::new(l(&s.fsync_micros) as f64 / 1e6);
        c.encode(e.encode_descriptor(
            "wal_fsync_seconds",
            "Time spent in WAL fsyncs",
            None,
            c.metric_type(),
        )?)?;
        counter(
            e,
            "wal_segments_opened",
            "WAL segments opened",
            l(&s.segments_opened),
        )?;
        counter(
            e,
            "wal_io_errors",
            "WAL write or fsync failures",
            l(&s.errors),
        )?;
        counter(e, "snapshots", "Snapshots written", l(&s.snapshots))?;
        counter(
            e,
            "snapshot_failures",
            "Snapshots that failed",
            l(&s.snapshot_failures),
        )?;
        gauge(
            e,
            "snapshot_last_entries",
            "Entries in the last snapshot",
            l(&s.last_snapshot_entries),
        )?;
        gauge(
            e,
            "snapshot_last_milliseconds",
            "Time the last snapshot took",
            l(&s.last_snapshot_millis),
        )?;
        let r = s.recovery();
        gauge(
            e,
            "recovery_snapshot_seq",
            "WAL sequence number covered by the snapshot recovery loaded (0: none)",
            r.snapshot_seq,
        )?;
        gauge(
            e,
            "recovery_snapshot_entries",
            "Entries loaded from the snapshot at start",
            r.snapshot_entries,
        )?;
        gauge(
            e,
            "recovery_snapshots_skipped",
            "Snapshots passed over at start because they failed verification",
            r.snapshots_skipped,
        )?;
        gauge(
            e,
            "recovery_records_replayed",
            "WAL records replayed at start",
            r.records_replayed,
        )?;
        gauge(
            e,
            "recovery_wal_bytes",
            "Bytes of WAL read at start",
            r.wal_bytes,
        )?;
        gauge(
            e,
            "recovery_expired",
            "Entries found expired during recovery",
            r.expired,
        )?;
        gauge(
            e,
            "recovery_truncated_bytes",
            "Bytes of torn WAL tail truncated at start",
            r.truncated_bytes,
        )?;
        gauge(
            e,
            "recovery_corrupt_skipped",
            "Corrupt WAL regions skipped at start (skip-corrupt)",
            r.corrupt_skipped,
        )?;
        let g = ConstGauge::new(r.seconds);
        g.encode(e.encode_descriptor(
            "recovery_seconds",
            "Time recovery took at start",
            None,
            g.metric_type(),
        )?)
    }
}
