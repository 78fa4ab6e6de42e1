//! Why the durability layer failed: to start ([`OpenError`]) or to log a
//! request's writes ([`WalError`]). A leaf, shared by the WAL's files.

use std::path::PathBuf;

/// The lock file that keeps a second node off the data directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Why a WAL append failed. The store already holds the write, but it may not
/// survive a crash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    /// A write or fsync failed earlier; the log accepts nothing more.
    #[error("write-ahead log failed: {0}")]
    Failed(String),
    /// The log was closed (the node is shutting down).
    #[error("write-ahead log is closed")]
    Closed,
    /// A snapshot could not be written.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
}

/// Why the durability layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another distcache-node (lock file {LOCK_FILE})")]
    Locked(PathBuf),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The WAL is damaged before its end (strict recovery).
    #[error(
        "corrupt write-ahead log {} at byte offset {offset}: {reason}; \
         restart with --wal-recovery skip-corrupt to skip the damaged records (they are lost)",
        path.display()
    )]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the WAL writer: {0}")]
    Writer(String),
}
