//! The node's configuration: one TOML file with a section per component
//! (`[server]`, `[store]`, `[limits]`, `[log]`, `[wal]`, `[snapshot]`), every
//! field optional with a
//! named default. Flags and `DISTCACHE_*` environment variables override the
//! file (see `cli.rs`). Validated once, by [`NodeConfig::validate`].
//!
//! `node/distcache-node.sample.toml` is a commented sample.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distcache_serve::logging::LogConfig;
use distcache_serve::units::{ByteSize, HumanDuration};
use serde::Deserialize;

pub use crate::limits::LimitsConfig;
pub use crate::store::StoreSection;
pub use crate::wal::{SnapshotSection, WalSection};

/// Default gRPC listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";
/// Default admin HTTP listen address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9101";

/// Everything a node needs to start.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Listeners, identity and shutdown.
    pub server: ServerConfig,
    /// The storage engine.
    pub store: StoreSection,
    /// Input limits (always on).
    pub limits: LimitsConfig,
    /// Logging.
    pub log: LogConfig,
    /// TLS for the gRPC listener.
    pub tls: distcache_serve::security::config::TlsConfig,
    /// Bearer tokens and roles.
    pub auth: distcache_serve::security::config::AuthConfig,
    /// Token-bucket rate limits.
    pub rate_limit: distcache_serve::security::config::RateLimitConfig,
    /// Write-ahead log (durability); off unless `data_dir` is set.
    pub wal: WalSection,
    /// Snapshots of the store (with the WAL only).
    pub snapshot: SnapshotSection,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Admin HTTP (`/metrics`, `/metrics.json`, `/livez`, `/readyz`) listen address.
    pub admin_listen: SocketAddr,
    /// This node's name in health answers and logs; defaults to the listen address.
    pub node_id: String,
    /// After a shutdown signal, how long the node keeps serving while
    /// `/readyz` and gRPC health already say it is not ready, so that
    /// Kubernetes endpoints and proxies stop sending to it first; 0 = none.
    pub drain_delay: HumanDuration,
    /// The shortest time a fence stays up once raised (at start, after a
    /// stall, by a client): long enough for every client that lost the
    /// node to see it back and fence it from the moment it lost it (its
    /// probe interval), before another client's catch-up lifts the fence.
    pub fence_hold: HumanDuration,
    /// How long in-flight requests may run once the node stops taking new
    /// ones (after the drain delay).
    pub shutdown_grace: HumanDuration,
    /// Largest gRPC message accepted, in bytes (bounds batch requests).
    pub max_message_bytes: ByteSize,
    /// Most requests served concurrently on one connection.
    pub max_concurrent_streams: u32,
    /// Most gRPC connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Most requests served at once, node-wide; more get `RESOURCE_EXHAUSTED`.
    pub max_in_flight: usize,
    /// Most keys tracked for client-side caching (`Invalidations`); a full
    /// table drops its oldest keys and invalidates them. 0 turns it off.
    pub tracking_table_keys: usize,
    /// Worker threads of the async runtime; 0 means one per CPU core.
    pub threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: parse_addr(DEFAULT_LISTEN),
            admin_listen: parse_addr(DEFAULT_ADMIN_LISTEN),
            node_id: String::new(),
            drain_delay: HumanDuration(Duration::ZERO),
            fence_hold: HumanDuration(Duration::from_secs(1)),
            shutdown_grace: HumanDuration(Duration::from_secs(10)),
            max_message_bytes: ByteSize(16 << 20),
            max_concurrent_streams: 1024,
            max_connections: 10_000,
            max_in_flight: 4096,
            tracking_table_keys: 1_000_000,
            threads: 0,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks ranges once, before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let s = &self.store;
        if !s.shards.is_power_of_two() || s.shards > 1 << 16 {
            return bad(format!(
                "store.shards must be a power of two up to 65536, got {}",
                s.shards
            ));
        }
        if s.max_memory.0 < 1 << 20 {
            return bad(format!(
                "store.max_memory must be at least 1MiB, got {} bytes",
                s.max_memory.0
            ));
        }
        if s.sweep_interval.0.is_zero() {
            return bad("store.sweep_interval must be positive".into());
        }
        let l = &self.limits;
        if l.max_key_bytes.0 == 0 || l.max_value_bytes.0 == 0 || l.max_ttl.0.is_zero() {
            return bad("limits must be positive".into());
        }
        if l.max_key_bytes.0 + l.max_value_bytes.0 + 4096 > self.server.max_message_bytes.0 {
            return bad(format!(
                "server.max_message_bytes ({}) must exceed max_key_bytes + max_value_bytes",
                self.server.max_message_bytes.0
            ));
        }
        let ceiling = distcache_proto::codec::MAX_ENCODED_BYTES as u64;
        if self.server.max_message_bytes.0 > ceiling {
            return bad(format!(
                "server.max_message_bytes ({}) must not exceed {ceiling} bytes (256MiB)",
                self.server.max_message_bytes.0
            ));
        }
        let sv = &self.server;
        if sv.max_connections == 0 || sv.max_concurrent_streams == 0 || sv.max_in_flight == 0 {
            return bad(
                "server.max_connections, max_concurrent_streams and max_in_flight must be positive"
                    .into(),
            );
        }
        if self.wal.segment_bytes.0 < 4096 {
            return bad(format!(
                "wal.segment_bytes must be at least 4KiB, got {} bytes",
                self.wal.segment_bytes.0
            ));
        }
        if self.snapshot.retain == 0 {
            return bad("snapshot.retain must be at least 1".into());
        }
        distcache_serve::security::config::validate(&self.tls, &self.rate_limit)
            .map_err(ConfigError::Invalid)
    }

    /// The durability layer's options, or `None` for a memory-only node.
    pub fn wal_options(&self) -> Option<crate::wal::WalOptions> {
        self.wal.options(&self.snapshot)
    }

    /// The node id, defaulting to the listen address.
    pub fn node_id(&self) -> String {
        if self.server.node_id.is_empty() {
            self.server.listen.to_string()
        } else {
            self.server.node_id.clone()
        }
    }
}

fn parse_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = NodeConfig::default();
        c.validate().expect("valid");
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(c.limits.max_key_bytes.0, 1024);
    }

    #[test]
    fn sample_file_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("distcache-node.sample.toml");
        let c = NodeConfig::from_file(&path).expect("sample parses");
        c.validate().expect("sample is valid");
        assert_eq!(c.store.max_memory.0, 1 << 30);
    }

    #[test]
    fn units_and_unknown_fields() {
        let c: NodeConfig = toml::from_str(
            "[store]\nmax_memory = \"64MiB\"\nshards = 16\n[limits]\nmax_ttl = \"1d\"\n",
        )
        .expect("parses");
        assert_eq!(c.store.max_memory.0, 64 << 20);
        assert_eq!(c.limits.max_ttl.0.as_secs(), 86_400);
        assert!(toml::from_str::<NodeConfig>("[store]\nmax_memroy = 1\n").is_err());
        let bad: NodeConfig = toml::from_str("[store]\nshards = 3\n").expect("parses");
        assert!(bad.validate().is_err());
    }

    #[test]
    fn wal_sections() {
        let c = NodeConfig::default();
        assert!(c.wal_options().is_none(), "memory-only by default");
        let c: NodeConfig = toml::from_str(
            "[wal]\ndata_dir = \"/tmp/x\"\nfsync = \"always\"\nsegment_bytes = \"1MiB\"\n\
             recovery = \"skip-corrupt\"\n[snapshot]\ninterval = \"30s\"\nretain = 2\non_shutdown = true\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        let o = c.wal_options().expect("enabled");
        assert_eq!(o.fsync, crate::wal::FsyncPolicy::Always);
        assert_eq!(o.recovery, crate::wal::RecoveryMode::SkipCorrupt);
        assert_eq!((o.segment_bytes, o.snapshot_retain), (1 << 20, 2));
        assert_eq!(o.snapshot_interval.as_secs(), 30);
        assert!(o.snapshot_on_shutdown);
        assert!(toml::from_str::<NodeConfig>("[wal]\nfsync = \"sometimes\"\n").is_err());
    }
}
