//! Command-line flags of `distcache-node`. Each flag can also come from a
//! `DISTCACHE_*` environment variable; flags and variables override the TOML
//! file given with `--config`, which overrides the built-in defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use distcache_serve::logging::LogFormat;
use distcache_serve::security::TlsArgs;
use distcache_serve::security::config::{
    DEFAULT_GLOBAL_RPS, DEFAULT_KEY_ID, DEFAULT_PER_CLIENT_RPS,
};
use distcache_serve::security::token_tool::TokenArgs;
use distcache_serve::units::{ByteSize, HumanDuration};

use crate::config::{ConfigError, NodeConfig};
use crate::wal::{FsyncPolicy, RecoveryMode};

/// A distcache storage node: a sharded LRU cache with TTLs, versions and
/// compare-and-swap, served over gRPC (distcache.v1.CacheService).
#[derive(Debug, Parser)]
#[command(
    name = "distcache-node",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// A tool instead of the node (`token` mints an auth token).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML config file (see node/distcache-node.sample.toml).
    #[arg(long, env = "DISTCACHE_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7001].
    #[arg(long, env = "DISTCACHE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listen address for /metrics, /metrics.json, /livez, /readyz [default: 127.0.0.1:9101].
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
    /// How far ahead of this node's clock a replicated write's version may
    /// be; further ones are refused (INVALID_ARGUMENT) [default: 30s].
    #[arg(long, env = "DISTCACHE_MAX_VERSION_SKEW")]
    pub max_version_skew: Option<HumanDuration>,
    /// Largest gRPC message accepted [default: 16MiB].
    #[arg(long, env = "DISTCACHE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<ByteSize>,
    /// After SIGINT/SIGTERM, keep serving this long while /readyz and gRPC
    /// health say 503/NOT_SERVING, e.g. 5s [default: 0s].
    #[arg(long, env = "DISTCACHE_DRAIN_DELAY")]
    pub drain_delay: Option<HumanDuration>,
    /// Shortest time a fence stays up once raised (start, stall, a client),
    /// so every client that lost the node sees it back and fences it before
    /// a catch-up lifts the fence; above every client's probe interval [default: 1s].
    #[arg(long, env = "DISTCACHE_FENCE_HOLD")]
    pub fence_hold: Option<HumanDuration>,
    /// Time in-flight requests get once the node stops taking new ones [default: 10s].
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
    /// Export spans over OTLP/gRPC to this collector (e.g.
    /// http://localhost:4317); needs a binary built with `--features otel`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
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
    /// Check the configuration (parse and validate it, load the TLS files
    /// and token secrets), print the effective configuration with secrets
    /// redacted, and exit: 0 if it is usable, 1 if not.
    #[arg(long)]
    pub check_config: bool,
    /// Accepted for compatibility with the C++ prototype: limits are always on.
    #[arg(long, hide = true)]
    pub enable_validation: bool,
    /// Most gRPC connections open at once [default: 10000].
    #[arg(long, env = "DISTCACHE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most requests served at once; more get RESOURCE_EXHAUSTED [default: 4096].
    #[arg(long, env = "DISTCACHE_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Most keys tracked for client-side caching (near caches, CLIENT
    /// TRACKING); the oldest are dropped and invalidated; 0 = off [default: 1000000].
    #[arg(long, env = "DISTCACHE_TRACKING_TABLE_KEYS")]
    pub tracking_table_keys: Option<usize>,
    /// Worker threads serving requests [default: one per CPU core]. Several
    /// nodes (or a node and its clients) sharing a few cores do better with 1.
    #[arg(long, env = "DISTCACHE_THREADS")]
    pub threads: Option<usize>,
    /// TLS on the gRPC listener.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// File of key-id:secret lines for HMAC tokens; the last line signs. Turns auth on.
    #[arg(long, env = "DISTCACHE_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// Require tokens; start-up fails unless a secret is configured.
    #[arg(long)]
    pub enable_auth: bool,
    /// HMAC secret (key id "default"). Visible to other users in `ps`: prefer
    /// --auth-secret-file or DISTCACHE_AUTH_SECRET.
    #[arg(long, hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// Clock-skew leeway on token expiry [default: 5s].
    #[arg(long, env = "DISTCACHE_AUTH_LEEWAY")]
    pub auth_leeway: Option<HumanDuration>,
    /// Start although a secret is shorter than 32 bytes or the secret file
    /// is readable by every user (else refused; warned about instead).
    #[arg(long)]
    pub allow_weak_secrets: bool,
    /// Requests per second per client (token subject, else peer IP); 0 = off.
    #[arg(long, env = "DISTCACHE_RATE_LIMIT_PER_CLIENT")]
    pub rate_limit_per_client: Option<f64>,
    /// Requests a client may burst [default: one second's worth].
    #[arg(long, env = "DISTCACHE_RATE_LIMIT_PER_CLIENT_BURST")]
    pub rate_limit_per_client_burst: Option<u32>,
    /// Requests per second for the whole node; 0 = off.
    #[arg(long, env = "DISTCACHE_RATE_LIMIT_GLOBAL")]
    pub rate_limit_global: Option<f64>,
    /// Requests the node may take in a burst [default: one second's worth].
    #[arg(long, env = "DISTCACHE_RATE_LIMIT_GLOBAL_BURST")]
    pub rate_limit_global_burst: Option<u32>,
    /// Turn rate limits on with defaults: 1000/s per client, 50000/s global.
    #[arg(long)]
    pub enable_rate_limiting: bool,
    /// The secret in DISTCACHE_AUTH_SECRET (read by [`Args::from_env`]).
    #[arg(skip)]
    pub auth_secret_env: Option<String>,
}

/// Tools that run instead of the node.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Mint an HMAC token; prints it as the last line of standard output.
    Token(TokenArgs),
}

impl Args {
    /// Parses argv, and reads `DISTCACHE_AUTH_SECRET` (kept out of argv, where
    /// other users could read it).
    pub fn from_env() -> Self {
        let mut a: Args = distcache_serve::cli::parse_or_exit();
        a.auth_secret_env = std::env::var("DISTCACHE_AUTH_SECRET")
            .ok()
            .filter(|s| !s.is_empty());
        if let Some(Command::Token(t)) = &mut a.command {
            t.env_secret.clone_from(&a.auth_secret_env);
        }
        a
    }

    fn apply_security(&self, c: &mut NodeConfig) -> Result<(), ConfigError> {
        let invalid = ConfigError::Invalid;
        self.tls.apply(&mut c.tls).map_err(invalid)?;
        set_some(&mut c.auth.secret_file, &self.auth_secret_file);
        for s in [&self.auth_secret_env, &self.auth_secret]
            .into_iter()
            .flatten()
        {
            c.auth
                .keys
                .insert(DEFAULT_KEY_ID, s.as_bytes())
                .map_err(invalid)?;
        }
        c.auth.secret_on_argv = self.auth_secret.is_some();
        c.auth.enabled |= self.enable_auth;
        c.auth.allow_weak_secrets |= self.allow_weak_secrets;
        if let Some(l) = self.auth_leeway {
            c.auth.leeway = l;
        }
        let r = &mut c.rate_limit;
        if self.enable_rate_limiting {
            if r.per_client_rps == 0.0 {
                r.per_client_rps = DEFAULT_PER_CLIENT_RPS;
            }
            if r.global_rps == 0.0 {
                r.global_rps = DEFAULT_GLOBAL_RPS;
            }
        }
        if let Some(v) = self.rate_limit_per_client {
            r.per_client_rps = v;
        }
        if let Some(v) = self.rate_limit_per_client_burst {
            r.per_client_burst = v;
        }
        if let Some(v) = self.rate_limit_global {
            r.global_rps = v;
        }
        if let Some(v) = self.rate_limit_global_burst {
            r.global_burst = v;
        }
        if let Some(v) = self.threads {
            c.server.threads = v;
        }
        if let Some(v) = self.max_connections {
            c.server.max_connections = v;
        }
        if let Some(v) = self.tracking_table_keys {
            c.server.tracking_table_keys = v;
        }
        if let Some(v) = self.max_in_flight {
            c.server.max_in_flight = v;
        }
        Ok(())
    }
}

fn set_some<T: Clone>(slot: &mut Option<T>, v: &Option<T>) {
    if v.is_some() {
        slot.clone_from(v);
    }
}

impl Args {
    /// The configuration: defaults, then the file, then flags and variables.
    pub fn into_config(self) -> Result<NodeConfig, ConfigError> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        self.apply_security(&mut c)?;
        fn set<T>(slot: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        set(&mut c.server.listen, self.listen);
        set(&mut c.server.admin_listen, self.admin_listen);
        set(&mut c.server.node_id, self.node_id);
        set(&mut c.server.max_message_bytes, self.max_message_bytes);
        set(&mut c.server.drain_delay, self.drain_delay);
        set(&mut c.server.fence_hold, self.fence_hold);
        set(&mut c.server.shutdown_grace, self.shutdown_grace);
        set(&mut c.store.max_memory, self.max_memory);
        set(&mut c.store.shards, self.shards);
        set(&mut c.store.tombstone_ttl, self.tombstone_ttl);
        set(&mut c.limits.max_key_bytes, self.max_key_bytes);
        set(&mut c.limits.max_value_bytes, self.max_value_bytes);
        set(&mut c.limits.max_ttl, self.max_ttl);
        set(&mut c.limits.max_version_skew, self.max_version_skew);
        set(&mut c.log.level, self.log_level);
        if self.log_file.is_some() {
            c.log.file = self.log_file;
        }
        set(&mut c.log.format, self.log_format);
        if self.otlp_endpoint.is_some() {
            c.log.otlp_endpoint = self.otlp_endpoint;
        }
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
    use distcache_serve::security::Role;

    #[test]
    fn version_prints_the_crate_version() {
        let e = Args::try_parse_from(["distcache-node", "--version"]).expect_err("exits");
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(
            e.render().to_string().trim_end(),
            concat!("distcache-node ", env!("CARGO_PKG_VERSION"))
        );
    }

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

    fn parse(argv: &[&str]) -> Result<NodeConfig, String> {
        let mut full = vec!["distcache-node"];
        full.extend_from_slice(argv);
        let args = Args::try_parse_from(full).map_err(|e| e.to_string())?;
        args.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn prototype_security_flags_still_work() {
        let dir = std::env::temp_dir().join(format!("distcache-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let tls = dir.join("tls.toml");
        std::fs::write(
            &tls,
            "cert_file = \"server.pem\"\nkey = \"/abs/server.key\"\n",
        )
        .expect("write");
        let tls_arg = tls.to_str().expect("utf-8");
        let c = parse(&[
            "--use-tls",
            "--tls-config",
            tls_arg,
            "--enable-auth",
            "--auth-secret",
            "your-secret-key",
            "--enable-validation",
            "--enable-rate-limiting",
        ])
        .expect("valid");
        assert_eq!(
            c.tls.cert,
            Some(dir.join("server.pem")),
            "relative to the file"
        );
        assert_eq!(c.tls.key, Some(PathBuf::from("/abs/server.key")));
        assert!(c.auth.enabled && c.auth.secret_on_argv);
        assert_eq!(c.auth.keys.signing_key_id(), Some(DEFAULT_KEY_ID));
        assert_eq!(c.rate_limit.per_client_rps, DEFAULT_PER_CLIENT_RPS);
        assert_eq!(c.rate_limit.global_rps, DEFAULT_GLOBAL_RPS);
        // Explicit flags win over --enable-rate-limiting's defaults.
        let c = parse(&["--enable-rate-limiting", "--rate-limit-per-client", "5"]).expect("ok");
        assert_eq!(c.rate_limit.per_client_rps, 5.0);
        let e = parse(&["--use-tls"]).expect_err("no certificate");
        assert!(e.contains("--tls-cert"), "{e}");
        let e = parse(&["--tls-cert", "c.pem"]).expect_err("no key");
        assert!(e.contains("cert and key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn token_subcommand_does_not_disturb_node_flags() {
        let a = Args::try_parse_from([
            "distcache-node",
            "token",
            "--secret-file",
            "keys",
            "--user-id",
            "alice",
            "--role",
            "user",
            "--validity",
            "60",
        ])
        .expect("parses");
        let Some(Command::Token(t)) = a.command else {
            panic!("not the token command");
        };
        assert_eq!(
            (t.user_id.as_str(), t.role, t.validity),
            ("alice", Role::User, 60)
        );
        let a = Args::try_parse_from(["distcache-node", "--listen", "127.0.0.1:0"]).expect("ok");
        assert!(a.command.is_none());
        assert!(Args::try_parse_from(["distcache-node", "token", "--role", "root"]).is_err());
    }
}
