//! Command-line flags of `distcache-node`. Each flag can also come from a
//! `DISTCACHE_*` environment variable; flags and variables override the TOML
//! file given with `--config`, which overrides the built-in defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{ConfigError, LogFormat, NodeConfig};
use crate::units::{ByteSize, HumanDuration};

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
    fn bad_values_are_refused_with_the_reason() {
        let e =
            Args::try_parse_from(["distcache-node", "--max-memory", "lots"]).expect_err("bad size");
        assert!(e.to_string().contains("64MiB"), "{e}");
        let args = Args::try_parse_from(["distcache-node", "--shards", "100"]).expect("parses");
        let e = args.into_config().expect_err("not a power of two");
        assert!(e.to_string().contains("power of two"), "{e}");
    }
}
