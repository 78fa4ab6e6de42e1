//! Command-line flags of `distcache-proxy` (each also a `DISTCACHE_*`
//! environment variable).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use distcache_serve::logging::{LogConfig, LogFormat};
use distcache_serve::security::TlsArgs;
use distcache_serve::security::config::{AuthConfig, TlsConfig};
use distcache_serve::units::{ByteSize, HumanDuration};

const CERT_MARKER: &str = "-----BEGIN CERTIFICATE-----";

/// The PEM file at `path` (its `file` named in errors), which must hold a
/// `kind` (a line containing `marker`).
fn read_pem(path: &Path, file: &str, kind: &str, marker: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read {file} file {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains(marker) {
        return Err(format!(
            "{file} file {} holds no PEM {kind}",
            path.display()
        ));
    }
    Ok(pem)
}

/// A client certificate and its private key, PEM (`--node-tls-cert`,
/// `--node-tls-key`).
pub type NodeIdentity = (Vec<u8>, Vec<u8>);

/// A consistency level on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Level {
    /// The first healthy replica.
    One,
    /// A majority of the key's replicas.
    Quorum,
    /// Every replica of the key.
    All,
}

impl From<Level> for distcache::Consistency {
    fn from(l: Level) -> Self {
        match l {
            Level::One => distcache::Consistency::One,
            Level::Quorum => distcache::Consistency::Quorum,
            Level::All => distcache::Consistency::All,
        }
    }
}

/// A sidecar proxy in front of a distcache cluster: the Redis protocol and
/// distcache's gRPC API on localhost, spread over the nodes by the SDK.
#[derive(Debug, Parser)]
#[command(name = "distcache-proxy", version, about)]
pub struct Args {
    /// Node URLs, comma separated (http://host:port).
    #[arg(
        long,
        env = "DISTCACHE_NODES",
        value_delimiter = ',',
        required_unless_present_any = ["dev", "config", "discovery"]
    )]
    pub nodes: Vec<String>,
    /// Where the node list comes from at run time (instead of --nodes).
    #[command(flatten)]
    pub membership: MembershipArgs,
    /// Check the configuration (flags, TLS files, token and secret files,
    /// the cluster file), print the effective configuration, and exit: 0 if
    /// it is usable, 1 if not. Binds no port and contacts no node.
    #[arg(long)]
    pub check_config: bool,
    /// Start three in-process memory-only nodes and use them (for trying distcache out).
    #[arg(long, env = "DISTCACHE_DEV")]
    pub dev: bool,
    /// Replicas per key.
    #[arg(long, env = "DISTCACHE_REPLICAS", default_value_t = 2)]
    pub replicas: usize,
    /// Read consistency.
    #[arg(long, env = "DISTCACHE_READ_CONSISTENCY", value_enum, default_value_t = Level::One)]
    pub read_consistency: Level,
    /// Write consistency.
    #[arg(long, env = "DISTCACHE_WRITE_CONSISTENCY", value_enum, default_value_t = Level::One)]
    pub write_consistency: Level,
    /// Per-request deadline towards the cluster, e.g. 2s.
    #[arg(long, env = "DISTCACHE_TIMEOUT", default_value = "2s")]
    pub timeout: HumanDuration,
    /// gRPC front end (distcache.v1.CacheService, health, reflection).
    #[arg(long, env = "DISTCACHE_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// Redis-protocol front end.
    #[arg(long, env = "DISTCACHE_RESP_LISTEN", default_value = "127.0.0.1:6380")]
    pub resp_listen: SocketAddr,
    /// Admin HTTP: /metrics, /metrics.json, /livez, /readyz, /ring.
    #[arg(long, env = "DISTCACHE_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin_listen: SocketAddr,
    /// Most RESP client connections open at once.
    #[arg(long, env = "DISTCACHE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most RESP client connections open at once from one IP address; more
    /// are closed at once.
    #[arg(
        long,
        env = "DISTCACHE_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1_000
    )]
    pub max_connections_per_ip: usize,
    /// Time a RESP connection has to send its first request and, with
    /// --auth-secret-file, to AUTH; then it is closed.
    #[arg(long, env = "DISTCACHE_LOGIN_TIMEOUT", default_value = "10s")]
    pub login_timeout: HumanDuration,
    /// Most gRPC requests served at once; more get RESOURCE_EXHAUSTED
    /// (health checks exempt). --max-connections bounds gRPC connections too.
    #[arg(long, env = "DISTCACHE_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Most concurrent HTTP/2 streams on one gRPC connection.
    #[arg(long, env = "DISTCACHE_MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    pub max_concurrent_streams: u32,
    /// Worker threads [default: one per CPU core]. A sidecar sharing a few
    /// cores with its application (and twemproxy-style deployments) often
    /// does best with 1 or 2.
    #[arg(long, env = "DISTCACHE_THREADS")]
    pub threads: Option<usize>,
    /// Largest RESP argument (a key or value) accepted.
    #[arg(long, env = "DISTCACHE_MAX_ARG_BYTES", default_value = "2MiB")]
    pub max_arg_bytes: ByteSize,
    /// File holding the token the proxy presents to nodes (`authorization: Bearer`).
    #[arg(long, env = "DISTCACHE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    // --- Security and shutdown (issue 6) ---------------------------------
    /// CA certificate(s) (PEM) to trust for https:// nodes (upstream TLS).
    #[arg(long, env = "DISTCACHE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) the proxy presents to https:// nodes that
    /// require one (mTLS: the nodes' --tls-client-ca); with --node-tls-key
    /// and --tls-ca.
    #[arg(long, env = "DISTCACHE_NODE_TLS_CERT", requires = "node_tls_key")]
    pub node_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --node-tls-cert.
    #[arg(long, env = "DISTCACHE_NODE_TLS_KEY", requires = "node_tls_cert")]
    pub node_tls_key: Option<PathBuf>,
    /// TLS on the gRPC and RESP front ends (the node's flags).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// File of key-id:secret lines (the node's format). Turns tokens on for
    /// both front ends: gRPC `authorization: Bearer`, RESP `AUTH <token>`.
    #[arg(long, env = "DISTCACHE_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// Clock-skew leeway on front-end token expiry.
    #[arg(long, env = "DISTCACHE_AUTH_LEEWAY", default_value = "5s")]
    pub auth_leeway: HumanDuration,
    /// Start although a front-end secret is shorter than 32 bytes or the
    /// secret file is readable by every user (else refused; warned about).
    #[arg(long)]
    pub allow_weak_secrets: bool,
    /// After SIGINT/SIGTERM, keep accepting and serving this long while
    /// /readyz and gRPC health say 503/NOT_SERVING (0s: close at once).
    #[arg(long, env = "DISTCACHE_DRAIN_DELAY", default_value = "0s")]
    pub drain_delay: HumanDuration,
    /// Time requests already received get to finish once the front ends
    /// stop accepting.
    #[arg(long, env = "DISTCACHE_SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: HumanDuration,
    // ---------------------------------------------------------------------
    /// Log level (trace, debug, info, warn, error) or a tracing filter.
    #[arg(long, env = "DISTCACHE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Append logs to this file instead of standard error.
    #[arg(long, env = "DISTCACHE_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Log line format.
    #[arg(long, env = "DISTCACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export spans over OTLP/gRPC to this collector (e.g.
    /// http://localhost:4317); needs a binary built with `--features otel`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Args {
    /// The logging part.
    pub fn log(&self) -> LogConfig {
        LogConfig {
            level: self.log_level.clone(),
            file: self.log_file.clone(),
            format: self.log_format,
            otlp_endpoint: self.otlp_endpoint.clone(),
        }
    }

    /// The per-request deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout.0
    }

    /// Front-end TLS from `--tls-*` / `--use-tls --tls-config`, checked.
    pub fn front_tls(&self) -> Result<TlsConfig, String> {
        let mut tls = TlsConfig::default();
        self.tls.apply(&mut tls)?;
        Ok(tls)
    }

    /// Front-end token settings (secrets are read when the proxy starts).
    pub fn front_auth(&self) -> AuthConfig {
        AuthConfig {
            secret_file: self.auth_secret_file.clone(),
            leeway: self.auth_leeway,
            allow_weak_secrets: self.allow_weak_secrets,
            ..AuthConfig::default()
        }
    }
}

impl Args {
    /// `--node-tls-cert` and `--node-tls-key`, read: the client identity
    /// presented to nodes (`None` without them). Needs `--tls-ca`: the
    /// identity is only ever sent over TLS.
    pub fn node_identity(&self) -> Result<Option<NodeIdentity>, String> {
        let (Some(cert), Some(key)) = (&self.node_tls_cert, &self.node_tls_key) else {
            return Ok(None);
        };
        if self.tls_ca.is_none() {
            return Err("--node-tls-cert and --node-tls-key need --tls-ca (the nodes' CA)".into());
        }
        Ok(Some((
            read_pem(cert, "certificate", "certificate", CERT_MARKER)?,
            read_pem(key, "key", "key", "PRIVATE KEY-----")?,
        )))
    }

    /// What `--check-config` checks: everything start-up reads before it
    /// binds a port (TLS certificates and keys, the secret, token and CA
    /// files, the cluster file). Returns the effective configuration (the
    /// flags after defaults and environment; secrets are only ever named by
    /// their file).
    pub async fn check_config(&self) -> Result<String, Box<dyn std::error::Error>> {
        crate::FrontSecurity::load(&self.front_tls()?, &self.front_auth())?;
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
            if token.trim().is_empty() {
                return Err(format!("token file {} is empty", path.display()).into());
            }
        }
        if let Some(path) = &self.tls_ca {
            read_pem(path, "CA", "certificate", CERT_MARKER)?;
        }
        self.node_identity()?;
        let discovery = self.membership.discovery();
        if let Some(d) = &discovery {
            d.check()?;
        }
        let nodes = match discovery {
            Some(d) if d.source.kind() == "file" => d.fetch_once().await?,
            // DNS and HTTP sources are read at run time (they may come up
            // after the proxy); their syntax was checked when parsing flags.
            Some(_) => Vec::new(),
            None => self.nodes.clone(),
        };
        Ok(format!(
            "# distcache-proxy effective configuration\n{self:#?}\n# nodes now: {nodes:?}"
        ))
    }
}

// ---- membership sources (issue 6) ------------------------------------------

/// Membership that changes at run time; each excludes `--nodes`, `--dev`
/// and the other.
#[derive(Debug, Clone, clap::Args)]
pub struct MembershipArgs {
    /// TOML cluster file (`[cluster] nodes = [...]`), reloaded when its
    /// content changes and on SIGHUP.
    #[arg(long, env = "DISTCACHE_CONFIG", conflicts_with_all = ["nodes", "dev", "discovery"])]
    pub config: Option<PathBuf>,
    /// Discovery source: dns+srv://NAME (an SRV query; each target a node
    /// named by its host name, e.g. a StatefulSet pod's, reached at its
    /// address and the record's port), dns://NAME:PORT (every address of
    /// NAME), or an http:// URL answering a Consul health list or a JSON
    /// array of node URLs.
    #[arg(
        long,
        env = "DISTCACHE_DISCOVERY",
        conflicts_with_all = ["nodes", "dev"],
        value_parser = crate::membership::Source::parse_discovery
    )]
    pub discovery: Option<crate::membership::Source>,
    /// Time between two polls of the membership source [default: 1s for
    /// --config, 5s for --discovery].
    #[arg(long, env = "DISTCACHE_DISCOVERY_INTERVAL")]
    pub discovery_interval: Option<HumanDuration>,
    /// With a Consul --discovery source: name each node by its Service.ID,
    /// so that a node registered again at another address keeps its place
    /// on the ring (switching it on moves keys once: the names change).
    #[arg(long, env = "DISTCACHE_DISCOVERY_CONSUL_IDS")]
    pub discovery_consul_ids: bool,
    /// With a dns:// or dns+srv:// --discovery source: ask this DNS server
    /// (IP:PORT, or IP for port 53; UDP, TCP for truncated answers) instead
    /// of /etc/resolv.conf's, e.g. Consul's DNS interface, 127.0.0.1:8600.
    #[arg(
        long,
        env = "DISTCACHE_DISCOVERY_DNS_SERVER",
        value_name = "IP:PORT",
        value_parser = parse_dns_server
    )]
    pub discovery_dns_server: Option<SocketAddr>,
    /// With a dns:// --discovery source: ask each address's HealthCheck for
    /// its node id and name the node by it, so that a node at a new address
    /// keeps its place on the ring. Every node needs its own --node-id (the
    /// default, its listen address, is refused); an address that has never
    /// answered is left out until it does.
    #[arg(long, env = "DISTCACHE_DISCOVERY_HEALTH_IDS")]
    pub discovery_health_ids: bool,
    /// After a membership change, how long old and new owners both serve
    /// before the moved keys are copied: long enough for every other proxy
    /// to see the change [default: 10s, or 2 × the discovery interval + 2s
    /// when that is longer].
    #[arg(long, env = "DISTCACHE_REBALANCE_GRACE")]
    pub rebalance_grace: Option<HumanDuration>,
    /// Most entries per second a membership change copies to new owners.
    #[arg(long, env = "DISTCACHE_REBALANCE_KEYS_PER_SEC", default_value_t = distcache::DEFAULT_REBALANCE_KEYS_PER_SEC)]
    pub rebalance_keys_per_sec: u64,
    /// Most key and value bytes per second a membership change copies.
    #[arg(
        long,
        env = "DISTCACHE_REBALANCE_BYTES_PER_SEC",
        default_value = "32MiB"
    )]
    pub rebalance_bytes_per_sec: ByteSize,
    /// When a membership change is done, tell the old owners to drop (through
    /// their WAL) what moved away. Off by default: another proxy still
    /// copying out of them then misses those keys (see docs/consistency.md).
    #[arg(long, env = "DISTCACHE_REBALANCE_FORGET")]
    pub rebalance_forget: bool,
}

impl MembershipArgs {
    /// How membership changes move the data (see `--rebalance-grace`).
    pub fn rebalance(&self) -> distcache::RebalanceConfig {
        let grace = match self.rebalance_grace {
            Some(g) => g.0,
            None => {
                let every = self.discovery().map_or(Duration::ZERO, |d| d.interval);
                distcache::DEFAULT_REBALANCE_GRACE.max(every * 2 + Duration::from_secs(2))
            }
        };
        distcache::RebalanceConfig {
            grace,
            keys_per_sec: self.rebalance_keys_per_sec,
            bytes_per_sec: self.rebalance_bytes_per_sec.0,
            forget_moved: self.rebalance_forget,
        }
    }

    /// The run-time membership source, if one was given.
    pub fn discovery(&self) -> Option<crate::membership::Discovery> {
        use crate::membership::{Discovery, Source};
        let source = match &self.config {
            Some(path) => Source::File(path.clone()),
            None => self.discovery.clone()?,
        };
        let mut d = Discovery::new(source);
        d.consul_ids = self.discovery_consul_ids;
        d.dns_server = self.discovery_dns_server;
        d.health_ids = self.discovery_health_ids;
        if let Some(every) = self.discovery_interval {
            d.interval = every.0.max(Duration::from_millis(100));
        }
        Some(d)
    }
}

/// A `--discovery-dns-server` value: `IP:PORT`, or `IP` for port 53.
fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{s:?} is not IP:PORT (e.g. 127.0.0.1:8600) or an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prints_the_crate_version() {
        let e = Args::try_parse_from(["distcache-proxy", "--version"]).expect_err("exits");
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(
            e.render().to_string().trim_end(),
            concat!("distcache-proxy ", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn defaults_and_dev() {
        let a = Args::try_parse_from(["distcache-proxy", "--dev"]).expect("parses");
        assert!(a.dev && a.nodes.is_empty());
        assert_eq!(a.resp_listen.port(), 6380);
        assert_eq!(a.grpc_listen.port(), 50051);
        assert_eq!(a.admin_listen.port(), 9100);
        assert_eq!(a.replicas, 2);
        let a = Args::try_parse_from([
            "distcache-proxy",
            "--nodes",
            "http://n1:7001,http://n2:7001",
            "--read-consistency",
            "quorum",
        ])
        .expect("parses");
        assert_eq!(a.nodes.len(), 2);
        assert_eq!(a.read_consistency, Level::Quorum);
        assert!(
            Args::try_parse_from(["distcache-proxy"]).is_err(),
            "nodes or --dev required"
        );
    }

    #[test]
    fn membership_sources_exclude_each_other() {
        let parse = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("distcache-proxy").chain(args.iter().copied()))
        };
        let a = parse(&["--config", "cluster.toml"]).expect("config alone");
        let d = a.membership.discovery().expect("a source");
        assert_eq!(d.source.kind(), "file");
        assert_eq!(d.interval, Duration::from_secs(1));
        let a = parse(&[
            "--discovery",
            "dns://distcache:7001",
            "--discovery-interval",
            "2s",
        ])
        .expect("dns");
        let d = a.membership.discovery().expect("a source");
        assert_eq!(d.source.kind(), "dns");
        assert_eq!(d.interval, Duration::from_secs(2));
        let a = parse(&[
            "--discovery",
            "http://127.0.0.1:8500/v1/health/service/distcache?passing",
        ])
        .expect("http");
        assert_eq!(
            a.membership.discovery().expect("a source").source.kind(),
            "http"
        );
        assert!(
            parse(&["--nodes", "http://a:1"])
                .expect("nodes")
                .membership
                .discovery()
                .is_none()
        );
        let a = parse(&[
            "--discovery",
            "dns+srv://_grpc._tcp.distcache.default.svc.cluster.local",
            "--discovery-dns-server",
            "127.0.0.1:8600",
        ])
        .expect("dns+srv");
        let d = a.membership.discovery().expect("a source");
        assert_eq!(d.source.kind(), "dns+srv");
        assert_eq!(d.dns_server, Some("127.0.0.1:8600".parse().expect("addr")));
        assert!(!d.health_ids);
        d.check().expect("a DNS server applies to dns+srv://");
        let a = parse(&[
            "--discovery",
            "dns://distcache:7001",
            "--discovery-health-ids",
            "--discovery-dns-server",
            "10.0.0.10",
        ])
        .expect("health ids");
        let d = a.membership.discovery().expect("a source");
        assert!(d.health_ids);
        assert_eq!(d.dns_server, Some("10.0.0.10:53".parse().expect("addr")));
        d.check().expect("health ids apply to dns://");
        for misplaced in [
            &[
                "--config",
                "c.toml",
                "--discovery-dns-server",
                "127.0.0.1:53",
            ][..],
            &["--discovery", "dns+srv://x.test", "--discovery-health-ids"],
            &[
                "--discovery",
                "http://127.0.0.1:8500/x",
                "--discovery-health-ids",
            ],
            &["--discovery", "dns://x:1", "--discovery-consul-ids"],
        ] {
            let d = parse(misplaced)
                .expect("parses")
                .membership
                .discovery()
                .expect("a source");
            assert!(d.check().is_err(), "{misplaced:?}");
        }
        for bad in [
            &["--config", "c.toml", "--nodes", "http://a:1"][..],
            &[
                "--discovery",
                "dns://a:1",
                "--discovery-dns-server",
                "resolver:53",
            ],
            &["--discovery", "dns+srv://a.test:7001"],
            &["--config", "c.toml", "--discovery", "dns://a:1"],
            &["--discovery", "dns://a:1", "--nodes", "http://a:1"],
            &["--discovery", "dns://a:1", "--dev"],
            &["--discovery", "https://consul:8501/v1/health/service/x"],
            &["--discovery", "dns://no-port"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn security_flags_and_the_prototypes_tls_form() {
        let a = Args::try_parse_from(["distcache-proxy", "--dev"]).expect("parses");
        assert!(!a.front_tls().expect("off").enabled());
        assert!(a.front_auth().secret_file.is_none());
        assert_eq!(a.shutdown_grace.0, Duration::from_secs(10));
        let dir = std::env::temp_dir().join(format!("distcache-proxy-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("tls.toml");
        std::fs::write(&file, "cert = \"front.pem\"\nkey = \"front.key\"\n").expect("write");
        let a = Args::try_parse_from([
            "distcache-proxy",
            "--dev",
            "--use-tls",
            "--tls-config",
            file.to_str().expect("utf-8"),
            "--tls-ca",
            "nodes-ca.pem",
            "--auth-secret-file",
            "auth.keys",
            "--auth-leeway",
            "1s",
            "--log-level",
            "debug",
            "--log-file",
            "proxy.log",
        ])
        .expect("parses");
        let tls = a.front_tls().expect("valid");
        assert_eq!(
            tls.cert,
            Some(dir.join("front.pem")),
            "relative to the file"
        );
        assert_eq!(tls.key, Some(dir.join("front.key")));
        assert_eq!(a.tls_ca, Some(PathBuf::from("nodes-ca.pem")));
        let auth = a.front_auth();
        assert_eq!(auth.secret_file, Some(PathBuf::from("auth.keys")));
        assert_eq!(auth.leeway.0, Duration::from_secs(1));
        assert_eq!(a.log().file, Some(PathBuf::from("proxy.log")));
        let a = Args::try_parse_from(["distcache-proxy", "--dev", "--use-tls"]).expect("parses");
        assert!(a.front_tls().expect_err("no cert").contains("--tls-cert"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
