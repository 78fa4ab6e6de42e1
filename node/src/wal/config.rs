//! The durability layer's configuration: the `[wal]` and `[snapshot]`
//! sections of the node's TOML file, the policies they name, and the
//! [`WalOptions`] the layer runs with. A leaf: the WAL's files import it,
//! it imports none of them.

use std::path::PathBuf;
use std::time::Duration;

use distcache_serve::units::{ByteSize, HumanDuration};
use serde::Deserialize;

/// Default segment size at which the WAL rotates: 100 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 100 << 20;
/// Default time between snapshots: 5 minutes.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(300);
/// Default number of snapshots kept.
pub const DEFAULT_SNAPSHOT_RETAIN: usize = 3;
/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// A write is acknowledged only after the fsync covering it.
    Always,
    /// fsync about once a second; a power cut loses at most about a second.
    #[default]
    #[value(name = "everysec")]
    EverySec,
    /// Never fsync; the OS writes back when it likes.
    No,
}

/// What recovery does about corruption before the end of the WAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryMode {
    /// Refuse to start, naming the file and byte offset.
    #[default]
    Strict,
    /// Skip the damaged region (its records are lost), keep a copy of the
    /// damaged file, and start.
    SkipCorrupt,
}

/// Everything the durability layer needs; built from `[wal]` and `[snapshot]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WalOptions {
    /// The data directory (created if missing).
    pub dir: PathBuf,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// Segment size at which the WAL rotates, in bytes.
    pub segment_bytes: u64,
    /// Corruption handling at start-up.
    pub recovery: RecoveryMode,
    /// Time between snapshots; zero disables periodic and growth snapshots.
    pub snapshot_interval: Duration,
    /// Snapshots kept.
    pub snapshot_retain: usize,
    /// Write a snapshot on graceful shutdown.
    pub snapshot_on_shutdown: bool,
}

/// `[wal]`: durability. Without `data_dir` the node keeps everything in
/// memory only.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WalSection {
    /// Directory for WAL segments, snapshots and the lock file; unset means
    /// memory-only.
    pub data_dir: Option<PathBuf>,
    /// When to fsync: `always` (acknowledge after fsync), `everysec`, `no`.
    pub fsync: FsyncPolicy,
    /// Size at which a WAL segment is closed and a new one started.
    pub segment_bytes: ByteSize,
    /// Corruption before the end of the WAL at start-up: `strict` refuses to
    /// start, `skip-corrupt` skips the damaged records and keeps a copy.
    pub recovery: RecoveryMode,
}

impl Default for WalSection {
    fn default() -> Self {
        Self {
            data_dir: None,
            fsync: FsyncPolicy::default(),
            segment_bytes: ByteSize(DEFAULT_SEGMENT_BYTES),
            recovery: RecoveryMode::default(),
        }
    }
}

/// `[snapshot]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSection {
    /// Time between snapshots (a snapshot is also taken once the WAL grew by
    /// two segments); 0 disables automatic snapshots.
    pub interval: HumanDuration,
    /// Number of snapshots kept (at least 1).
    pub retain: usize,
    /// Write a snapshot on graceful shutdown, so the next start replays less.
    pub on_shutdown: bool,
}

impl Default for SnapshotSection {
    fn default() -> Self {
        Self {
            interval: HumanDuration(DEFAULT_SNAPSHOT_INTERVAL),
            retain: DEFAULT_SNAPSHOT_RETAIN,
            on_shutdown: false,
        }
    }
}

impl WalSection {
    /// The options for this section and `snapshot`, or `None` for a
    /// memory-only node (no `data_dir`).
    pub fn options(&self, snapshot: &SnapshotSection) -> Option<WalOptions> {
        let dir = self.data_dir.clone()?;
        Some(WalOptions {
            dir,
            fsync: self.fsync,
            segment_bytes: self.segment_bytes.0,
            recovery: self.recovery,
            snapshot_interval: snapshot.interval.0,
            snapshot_retain: snapshot.retain,
            snapshot_on_shutdown: snapshot.on_shutdown,
        })
    }
}
