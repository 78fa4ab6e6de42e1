//! Membership at run time: where the proxy learns the node list, and the
//! poller that hands every new list to the SDK ([`distcache::Client::set_nodes`]).
//!
//! Sources (one at a time; `--nodes` is the static alternative):
//! - [`Source::File`]: a TOML cluster file (`[cluster] nodes = [...]`, see
//!   [`file`]), re-read every second and compared by content, and at once
//!   on SIGHUP.
//! - [`Source::Dns`]: `dns://NAME:PORT`, every address `NAME` resolves to
//!   becomes `http://IP:PORT` (see [`dns`]); with `--discovery-health-ids`,
//!   `ID=IP:PORT`, named by the node id each address reports in
//!   `HealthCheck` (see [`health_ids`]).
//! - [`Source::DnsSrv`]: `dns+srv://NAME`, each SRV target becomes
//!   `TARGET=IP:PORT`, named by its host name (a StatefulSet's stable pod
//!   names behind a headless Service; see [`srv`]).
//! - [`Source::Http`]: `http://…`, polled; a Consul health answer or a JSON
//!   array of node URLs (see [`http`]).
//!
//! `--discovery-dns-server IP:PORT` makes `dns://` and `dns+srv://` ask that
//! server (UDP, TCP for truncated answers) instead of the system's, e.g.
//! Consul's DNS interface on `127.0.0.1:8600`.
//!
//! Named entries (`ID=URL`: `dns+srv://`, health ids, Consul ids, the
//! cluster file's) place a node on the ring by its name: the same name at a
//! new address is a reconnect (logged as `nodes reconnected at new
//! addresses`, counted in `distcache_proxy_node_readdresses_total`), not a
//! ring change.
//!
//! A failed or empty answer is logged and counted
//! (`distcache_proxy_discovery_errors_total`) and the current membership is
//! kept; the proxy never stops because of it. A different set of nodes is
//! logged with what joined and left, counted
//! (`distcache_proxy_ring_changes_total`) and shows in `/ring`. Requests
//! already running finish on the membership they started with.
//!
//! Not here: HTTPS discovery endpoints (use a local Consul agent on
//! `http://127.0.0.1:8500`), `https://` node URLs from DNS (the scheme
//! follows `--tls-ca`), DNS over TLS or HTTPS, DNSSEC.

pub mod dns;
mod entry;
mod error;
pub mod file;
pub mod health_ids;
pub mod http;
pub mod srv;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use distcache_serve::reload::Reloads;
use distcache_serve::stopped;

use crate::backend::Backend;
pub use error::SourceError;
pub use health_ids::NodeAccess;

/// How often `dns://`, `dns+srv://` and `http://` sources are polled unless
/// configured.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// Most nodes a source may name; an answer with more is refused (the old
/// list is kept) instead of building a ring of that size.
pub const MAX_NODES: usize = distcache::MAX_NODES;
/// How often a cluster file is checked for changes.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on one DNS lookup, one HTTP request (connect, answer, body) or one
/// `HealthCheck` probe.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the node list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A TOML cluster file.
    File(PathBuf),
    /// Every address of a DNS name, on one port.
    Dns {
        /// The name to resolve, e.g. `distcache.default.svc.cluster.local`.
        name: String,
        /// The nodes' gRPC port.
        port: u16,
    },
    /// The SRV records of a DNS name: each target a node, named by its host
    /// name, on the record's port.
    DnsSrv {
        /// The name to query, e.g.
        /// `_grpc._tcp.distcache.default.svc.cluster.local`.
        name: String,
    },
    /// An HTTP endpoint answering a Consul health list or a JSON URL list.
    Http(hyper::Uri),
}

impl Source {
    /// Parses a `--discovery` value: `dns://NAME:PORT`, `dns+srv://NAME` or
    /// `http://…`.
    pub fn parse_discovery(s: &str) -> Result<Self, SourceError> {
        let bad = |why: &str| SourceError::BadSource(format!("{s:?}: {why}"));
        if let Some(rest) = s.strip_prefix("dns+srv://") {
            let name = rest.trim_end_matches('/');
            if name.is_empty() {
                return Err(bad("no name to query; expected dns+srv://NAME"));
            }
            if name.contains(':') {
                return Err(bad(
                    "dns+srv:// takes no port: each SRV record gives its target's",
                ));
            }
            if name.contains('/')
                || name.chars().any(|c| c.is_whitespace() || c.is_control())
                || hickory_resolver::proto::rr::Name::from_utf8(name).is_err()
            {
                return Err(bad("not a DNS name"));
            }
            return Ok(Source::DnsSrv {
                name: name.to_owned(),
            });
        }
        if let Some(rest) = s.strip_prefix("dns://") {
            let (name, port) = rest
                .trim_end_matches('/')
                .rsplit_once(':')
                .ok_or_else(|| bad("expected dns://NAME:PORT"))?;
            let port = port.parse().map_err(|_| bad("the port is not a number"))?;
            if name.is_empty() {
                return Err(bad("no name to resolve"));
            }
            return Ok(Source::Dns {
                name: name.to_owned(),
                port,
            });
        }
        if s.starts_with("https://") {
            return Err(bad(
                "https discovery is not supported; poll a local agent over http://",
            ));
        }
        if s.starts_with("http://") {
            let uri: hyper::Uri = s.parse().map_err(|_| bad("not a valid URL"))?;
            if uri.host().is_none() {
                return Err(bad("no host"));
            }
            return Ok(Source::Http(uri));
        }
        Err(bad(
            "expected dns://NAME:PORT, dns+srv://NAME or http://HOST[:PORT]/PATH",
        ))
    }

    /// A short name for logs and metrics: `file`, `dns`, `dns+srv` or
    /// `http`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::File(_) => "file",
            Source::Dns { .. } => "dns",
            Source::DnsSrv { .. } => "dns+srv",
            Source::Http(_) => "http",
        }
    }
}

impl Source {
    /// What logs and errors show: [`Display`](std::fmt::Display) without a
    /// URL's credentials (its userinfo, its query's values: Consul's
    /// `?token=`). Display itself is the whole source, which parses back.
    pub fn shown(&self) -> String {
        match self {
            Source::Http(uri) => http::redacted(uri),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Dns { name, port } => write!(f, "dns://{name}:{port}"),
            Source::DnsSrv { name } => write!(f, "dns+srv://{name}"),
            Source::Http(uri) => write!(f, "{uri}"),
        }
    }
}

/// A membership source and how to poll it.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Where the node list comes from.
    pub source: Source,
    /// Time between polls.
    pub interval: Duration,
    /// Bound on one lookup or request.
    pub timeout: Duration,
    /// Name the nodes of a Consul answer by their `Service.ID` (`ID=URL`
    /// entries: placed on the ring by id, whatever their address).
    pub consul_ids: bool,
    /// The DNS server `dns://` and `dns+srv://` sources ask instead of the
    /// system's (UDP, TCP for truncated answers); `None`: the system's.
    pub dns_server: Option<SocketAddr>,
    /// Name the nodes of a `dns://` source by the node id each address
    /// reports in `HealthCheck` (`ID=IP:PORT` entries).
    pub health_ids: bool,
    /// The CA and token the `HealthCheck` probes of [`Discovery::health_ids`]
    /// use: the proxy's own.
    pub access: NodeAccess,
}

impl Discovery {
    /// `source` with the default interval for its kind.
    pub fn new(source: Source) -> Self {
        let interval = match source {
            Source::File(_) => FILE_POLL_INTERVAL,
            _ => DEFAULT_DISCOVERY_INTERVAL,
        };
        Self {
            source,
            interval,
            timeout: DEFAULT_FETCH_TIMEOUT,
            consul_ids: false,
            dns_server: None,
            health_ids: false,
            access: NodeAccess::default(),
        }
    }

    /// Refuses settings that do not apply to the source: a DNS server for a
    /// file or HTTP source, health ids for anything but `dns://`, Consul ids
    /// for anything but `http://`.
    pub fn check(&self) -> Result<(), SourceError> {
        let dns = matches!(self.source, Source::Dns { .. } | Source::DnsSrv { .. });
        let misplaced = if self.dns_server.is_some() && !dns {
            Some("--discovery-dns-server applies to dns:// and dns+srv:// sources")
        } else if self.health_ids && !matches!(self.source, Source::Dns { .. }) {
            Some(
                "--discovery-health-ids applies to dns:// sources (dns+srv:// names nodes by their SRV targets)",
            )
        } else if self.consul_ids && !matches!(self.source, Source::Http(_)) {
            Some("--discovery-consul-ids applies to http:// (Consul) sources")
        } else {
            None
        };
        match misplaced {
            Some(why) => Err(SourceError::BadSource(format!(
                "{}: {why}",
                self.source.shown()
            ))),
            None => Ok(()),
        }
    }

    /// Reads the source once: the node list to start with.
    pub async fn fetch_once(&self) -> Result<Vec<String>, SourceError> {
        let mut f = Fetcher::new(self);
        f.fetch(true).await?.ok_or(SourceError::Empty)
    }
}

/// The node list to start with. A cluster file must be valid at start-up
/// (an operator's mistake is best reported at once); DNS and HTTP sources
/// are asked again every interval until they name a node, since the
/// cluster or its registry may come up after the proxy.
pub async fn initial(discovery: &Discovery) -> Result<Vec<String>, SourceError> {
    loop {
        match discovery.fetch_once().await {
            Ok(nodes) => return Ok(nodes),
            Err(e) if matches!(discovery.source, Source::File(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(source = %discovery.source.shown(), error = %e, retry_in = ?discovery.interval, "waiting for the membership source");
                tokio::time::sleep(discovery.interval).await;
            }
        }
    }
}

/// Reads one source, keeping what it needs between polls (the HTTP
/// connection pool, the cluster file's last content, the DNS resolver, the
/// node ids learnt from `HealthCheck`).
#[derive(Debug)]
struct Fetcher {
    source: Source,
    timeout: Duration,
    consul_ids: bool,
    http: Option<http::HttpClient>,
    last_file: Option<Vec<u8>>,
    dns: dns::Resolver,
    ids: Option<health_ids::Prober>,
}

impl Fetcher {
    fn new(d: &Discovery) -> Self {
        Self {
            source: d.source.clone(),
            timeout: d.timeout,
            consul_ids: d.consul_ids,
            http: matches!(d.source, Source::Http(_)).then(http::client),
            last_file: None,
            dns: dns::Resolver::new(d.dns_server, d.timeout),
            ids: (d.health_ids && matches!(d.source, Source::Dns { .. }))
                .then(|| health_ids::Prober::new(&d.access)),
        }
    }

    /// The node list, or `None` when a cluster file is unchanged since the
    /// last read (unless `force`).
    async fn fetch(&mut self, force: bool) -> Result<Option<Vec<String>>, SourceError> {
        let nodes = match &self.source {
            Source::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| SourceError::Read {
                        path: path.clone(),
                        source,
                    })?;
                if !force && self.last_file.as_ref() == Some(&bytes) {
                    return Ok(None);
                }
                // Remembered even when invalid: a bad file is reported once,
                // not every second, until it changes.
                let parsed = file::parse(path, &bytes);
                self.last_file = Some(bytes);
                parsed?
            }
            Source::Dns { name, port } => {
                let addrs = self.dns.addresses(name, *port).await?;
                match &mut self.ids {
                    Some(ids) if !addrs.is_empty() && addrs.len() <= MAX_NODES => {
                        ids.name(&addrs, self.timeout).await?
                    }
                    _ => dns::urls(&addrs),
                }
            }
            Source::DnsSrv { name } => srv::resolve(&mut self.dns, name).await?,
            Source::Http(uri) => match &self.http {
                Some(c) => http::fetch(c, uri, self.timeout, self.consul_ids).await?,
                None => http::fetch(&http::client(), uri, self.timeout, self.consul_ids).await?,
            },
        };
        if nodes.is_empty() {
            return Err(SourceError::Empty);
        }
        if nodes.len() > MAX_NODES {
            return Err(SourceError::TooMany(nodes.len()));
        }
        Ok(Some(nodes))
    }
}

/// The running poller; stops when [`Poller::stop`] is called or it is
/// dropped.
#[derive(Debug)]
pub struct Poller {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Poller {
    /// Stops polling and waits for the poller to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts polling `discovery` and applying its answers to `backend`'s
/// client, every `discovery.interval` (the first poll one interval from
/// now: the caller has just read the source, see [`initial`]) and at once
/// on SIGHUP (listened for from here on).
pub fn spawn(discovery: Discovery, backend: Arc<Backend>) -> Poller {
    spawn_with(discovery, backend, distcache_serve::reload::hangups())
}

/// [`spawn`], polling at once at every tick of `reloads` (the process's
/// SIGHUP signal, shared with the other parts that reload).
pub fn spawn_with(discovery: Discovery, backend: Arc<Backend>, reloads: Reloads) -> Poller {
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(poll(discovery, backend, rx, reloads));
    Poller {
        stop,
        task: Some(task),
    }
}

async fn poll(
    discovery: Discovery,
    backend: Arc<Backend>,
    mut stop: watch::Receiver<bool>,
    mut hangup: Reloads,
) {
    let kind = discovery.source.kind();
    let mut fetcher = Fetcher::new(&discovery);
    let mut tick = tokio::time::interval(discovery.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the caller has just read the source.
    tick.tick().await;
    tracing::info!(source = %discovery.source.shown(), every = ?discovery.interval, "watching membership");
    loop {
        let force = tokio::select! {
            () = stopped(&mut stop) => return,
            _ = tick.tick() => false,
            () = distcache_serve::reload::next(&mut hangup) => {
                tracing::info!(source = %discovery.source.shown(), "SIGHUP: reloading membership");
                true
            }
        };
        let answer = tokio::select! {
            () = stopped(&mut stop) => return,
            a = fetcher.fetch(force) => a,
        };
        match answer {
            Ok(Some(nodes)) => apply(&backend, &nodes, kind),
            Ok(None) => {}
            Err(e) => {
                backend.metrics.discovery_error(kind);
                tracing::warn!(source = %discovery.source.shown(), error = %e, "membership source failed; keeping the current nodes");
            }
        }
    }
}

/// Hands `nodes` to the client; logs what changed, and counts the nodes
/// reconnected at new addresses.
pub fn apply(backend: &Backend, nodes: &[String], source: &'static str) {
    let change = backend.client.set_nodes(nodes);
    if let Ok(c) = &change {
        backend.metrics.node_readdressed(c.readdressed.len());
    }
    match change {
        Ok(c) if c.is_empty() => tracing::debug!(source, "membership unchanged"),
        Ok(c) if !c.moves_data() => tracing::info!(
            source,
            readdressed = ?c.readdressed,
            "nodes reconnected at new addresses; the ring is unchanged"
        ),
        Ok(c) => tracing::info!(
            source,
            added = ?c.added,
            removed = ?c.removed,
            readdressed = ?c.readdressed,
            nodes = nodes.len(),
            moving = true,
            "ring changed"
        ),
        Err(e) => {
            backend.metrics.discovery_error(source);
            tracing::warn!(source, error = %e, "node list refused; keeping the current nodes");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn discovery_values_parse() {
        assert_eq!(
            Source::parse_discovery("dns://distcache.default.svc.cluster.local:7001").expect("dns"),
            Source::Dns {
                name: "distcache.default.svc.cluster.local".into(),
                port: 7001
            }
        );
        let s =
            Source::parse_discovery("http://127.0.0.1:8500/v1/health/service/distcache?passing")
                .expect("http");
        assert_eq!(s.kind(), "http");
        assert_eq!(
            s.to_string(),
            "http://127.0.0.1:8500/v1/health/service/distcache?passing"
        );
        let s =
            Source::parse_discovery("dns+srv://_grpc._tcp.distcache.default.svc.cluster.local/")
                .expect("dns+srv");
        assert_eq!(
            s,
            Source::DnsSrv {
                name: "_grpc._tcp.distcache.default.svc.cluster.local".into()
            }
        );
        assert_eq!(s.kind(), "dns+srv");
        assert_eq!(
            s.to_string(),
            "dns+srv://_grpc._tcp.distcache.default.svc.cluster.local"
        );
        assert_eq!(Source::parse_discovery(&s.to_string()).expect("again"), s);
        // A trailing dot (no search domains) is kept.
        assert_eq!(
            Source::parse_discovery("dns+srv://distcache.service.consul.").expect("fqdn"),
            Source::DnsSrv {
                name: "distcache.service.consul.".into()
            }
        );
        for (bad, why) in [
            ("dns+srv://", "no name"),
            ("dns+srv:///", "no name"),
            ("dns+srv://nodes.test:7001", "takes no port"),
            ("dns+srv://a b.test", "not a DNS name"),
            ("dns+srv://a/b", "not a DNS name"),
            ("dns+srv://a..b", "not a DNS name"),
        ] {
            let e = Source::parse_discovery(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        for bad in [
            "dns://name",
            "dns://name:port",
            "dns://:7001",
            "https://consul:8501/v1/health/service/x",
            "consul://x",
            "http://",
            "",
        ] {
            assert!(Source::parse_discovery(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_file_source_reports_changes_only() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, "[cluster]\nnodes = [\"http://a:1\"]\n").expect("write");
        let d = Discovery::new(Source::File(path.clone()));
        let mut f = Fetcher::new(&d);
        assert_eq!(
            f.fetch(false).await.expect("read"),
            Some(vec!["http://a:1".into()])
        );
        assert_eq!(f.fetch(false).await.expect("read"), None, "unchanged");
        assert!(f.fetch(true).await.expect("read").is_some(), "forced");
        std::fs::write(&path, "[cluster]\nnodes = []\n").expect("write");
        assert!(matches!(
            f.fetch(false).await,
            Err(SourceError::File { .. })
        ));
        assert_eq!(f.fetch(false).await.expect("read"), None, "reported once");
        std::fs::remove_file(&path).expect("rm");
        assert!(matches!(
            f.fetch(false).await,
            Err(SourceError::Read { .. })
        ));
    }
}
