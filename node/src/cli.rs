//! Command-line flags of `distcache-node`. Each flag can also come from a
//! `DISTCACHE_*` environment variable; flags and variables override the TOML
//! file given with `--config`, which overrides the built-in defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{ConfigError, LogFormat, NodeConfig};
use crate::units::{ByteSize, HumanDuration};
use crate::wal::{FsyncPolicy, RecoveryMode};

/// A distcache storage node: a sharded LRU cache with TTLs, versions and
/// compare-and-swap, served over gRPC (distcache.v1.CacheService).
#[derive(Debug, Parser)]
#[command(name = "distcache-node", version, about)]
pub struct Args {
    /// TOML config file (see node/distcache-node.sample.toml).
    #[arg(long, env = "DISTCACHE_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7001].
    #[arg(long, env = "DISTCACHE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listen address for /metrics, /metrics.json, /healthz [default: 127.0.0.1:9101].
    #[arg(long, env = "DISTCACHE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Node name in health answers and logs [default: the listen address].
    #[arg(long, env = "DISTCACHE_NODE_ID")]
    pub node_id: Option<String>,
    /// Memory bound, e.g. 64MiB or 1GiB; LRU eviction beyond it [default: 1GiB].
    #[arg(long, env = "DISTCACHE_MAX_MEMORY")]
    pub max_memory: Option<ByteSize>,
    /// Number of lock shards, a power of two [default: 256].
    #[arg(long, env = "DISTCACHE_SHARDS")]
    pub shards: Option<usize>,
    /// How long a delete's tombstone is kept, e.g. 5m [default: 5m].
    #[arg(long, env = "DISTCACHE_TOMBSTONE_TTL")]
    pub tombstone_ttl: Option<HumanDuration>,
    /// Largest key accepted [default: 1KiB].
    #[arg(long, env = "DISTCACHE_MAX_KEY_BYTES")]
    pub max_key_bytes: Option<ByteSize>,
    /// Largest value accepted [default: 1MiB].
    #[arg(long, env = "DISTCACHE_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<ByteSize>,
    /// Longest TTL accepted, e.g. 30d [default: 30d].
    #[arg(long, env = "DISTCACHE_MAX_TTL")]
    pub max_ttl: Option<HumanDuration>,
    /// Largest gRPC message accepted [default: 16MiB].
    #[arg(long, env = "DISTCACHE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<ByteSize>,
    /// Time in-flight requests get after SIGINT/SIGTERM [default: 10s].
    #[arg(long, env = "DISTCACHE_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<HumanDuration>,
    /// Log level (trace, debug, info, warn, error) or a tracing filter [default: info].
    #[arg(long, env = "DISTCACHE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Append logs to this file instead of standard error.
    #[arg(long, env = "DISTCACHE_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Log line format [default: text].
    #[arg(long, env = "DISTCACHE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Directory for the write-ahead log and snapshots; without it the node
    /// is memory-only.
    #[arg(long, env = "DISTCACHE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// When the WAL is fsynced: always (acknowledge after fsync), everysec, no [default: everysec].
    #[arg(long, env = "DISTCACHE_WAL_FSYNC", value_enum)]
    pub wal_fsync: Option<FsyncPolicy>,
    /// Size at which a WAL segment is rotated, e.g. 100MiB [default: 100MiB].
    #[arg(long, env = "DISTCACHE_WAL_SEGMENT_BYTES")]
    pub wal_segment_bytes: Option<ByteSize>,
    /// Corruption before the end of the WAL at start-up: strict refuses to
    /// start, skip-corrupt skips the damaged records [default: strict].
    #[arg(long, env = "DISTCACHE_WAL_RECOVERY", value_enum)]
    pub wal_recovery: Option<RecoveryMode>,
    /// Time between snapshots, e.g. 5m; 0 disables them [default: 5m].
    #[arg(long, env = "DISTCACHE_SNAPSHOT_INTERVAL")]
    pub snapshot_interval: Option<HumanDuration>,
    /// Number of snapshots kept [default: 3].
    #[arg(long, env = "DISTCACHE_SNAPSHOT_RETAIN")]
    pub snapshot_retain: Option<usize>,
    /// Write a snapshot on graceful shutdown [default: false].
    #[arg(long, env = "DISTCACHE_SNAPSHOT_ON_SHUTDOWN", num_args = 0..=1, default_missing_value = "true")]
    pub snapshot_on_shutdown: Option<bool>,
    /// Accepted for compatibility with the C++ prototype: limits are always on.
    #[arg(long, hide = true)]
    pub enable_validation: bool,
}

impl Args {
    /// The configuration: defaults, then the file, then flags and variables.
    pub fn into_config(self) -> Result<NodeConfig, ConfigError> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        fn set<T>(slot: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        set(&mut c.server.listen, self.listen);
        set(&mut c.server.admin_listen, self.admin_listen);
        set(&mut c.server.node_id, self.node_id);
        set(&mut c.server.max_message_bytes, self.max_message_bytes);
        set(&mut c.server.shutdown_grace, self.shutdown_grace);
        set(&mut c.store.max_memory, self.max_memory);
        set(&mut c.store.shards, self.shards);
        set(&mut c.store.tombstone_ttl, self.tombstone_ttl);
        set(&mut c.limits.max_key_bytes, self.max_key_bytes);
        set(&mut c.limits.max_value_bytes, self.max_value_bytes);
        set(&mut c.limits.max_ttl, self.max_ttl);
        set(&mut c.log.level, self.log_level);
        if self.log_file.is_some() {
            c.log.file = self.log_file;
        }
        set(&mut c.log.format, self.log_format);
        if self.data_dir.is_some() {
            c.wal.data_dir = self.data_dir;
        }
        set(&mut c.wal.fsync, self.wal_fsync);
        set(&mut c.wal.segment_bytes, self.wal_segment_bytes);
        set(&mut c.wal.recovery, self.wal_recovery);
        set(&mut c.snapshot.interval, self.snapshot_interval);
        set(&mut c.snapshot.retain, self.snapshot_retain);
        set(&mut c.snapshot.on_shutdown, self.snapshot_on_shutdown);
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults() {
        let args = Args::try_parse_from([
            "distcache-node",
            "--listen",
            "127.0.0.1:0",
            "--max-memory",
            "64MiB",
            "--max-ttl",
            "1d",
            "--enable-validation",
        ])
        .expect("parses");
        let c = args.into_config().expect("valid");
        assert_eq!(c.server.listen.port(), 0);
        assert_eq!(c.store.max_memory.0, 64 << 20);
        assert_eq!(c.limits.max_ttl.0.as_secs(), 86_400);
    }

    #[test]
    fn durability_flags() {
        let c = Args::try_parse_from(["distcache-node"])
            .expect("parses")
            .into_config()
            .expect("valid");
        assert!(c.wal_options().is_none());
        let args = Args::try_parse_from([
            "distcache-node",
            "--data-dir",
            "/tmp/d",
            "--wal-fsync",
            "everysec",
            "--wal-segment-bytes",
            "1MiB",
            "--wal-recovery",
            "skip-corrupt",
            "--snapshot-interval",
            "10s",
            "--snapshot-retain",
            "5",
            "--snapshot-on-shutdown",
        ])
        .expect("parses");
        let o = args
            .into_config()
            .expect("valid")
            .wal_options()
            .expect("on");
        assert_eq!(o.dir, PathBuf::from("/tmp/d"));
        assert_eq!(o.fsync, FsyncPolicy::EverySec);
        assert_eq!(o.recovery, RecoveryMode::SkipCorrupt);
        assert_eq!((o.segment_bytes, o.snapshot_retain), (1 << 20, 5));
        assert_eq!(o.snapshot_interval.as_secs(), 10);
        assert!(o.snapshot_on_shutdown);
        for p in ["always", "no"] {
            assert!(Args::try_parse_from(["distcache-node", "--wal-fsync", p]).is_ok());
        }
        assert!(Args::try_parse_from(["distcache-node", "--wal-fsync", "every-sec"]).is_err());
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let e =
            Args::try_parse_from(["distcache-node", "--max-memory", "lots"]).expect_err("bad size");
        assert!(e.to_string().contains("64MiB"), "{e}");
        let args = Args::try_parse_from(["distcache-node", "--shards", "100"]).expect("parses");
        let e = args.into_config().expect_err("not a power of two");
        assert!(e.to_string().contains("power of two"), "{e}");
    }
}
