//! The proxy's metrics: commands by name and result, latency histograms by
//! command, and upstream figures (node health, retries, failovers) read from
//! the SDK at scrape time, including membership (ring changes, members)
//! and failed membership polls.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use distcache::Client;
use distcache_serve::metrics::{counter, gauge, register_build_info};
use distcache_serve::reload::ReloadCounter;
use distcache_serve::security::SecurityCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CmdResult {
    frontend: &'static str,
    command: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cmd {
    frontend: &'static str,
    command: String,
}

/// One command's series, looked up once and then shared.
#[derive(Debug)]
struct Handles {
    ok: Counter,
    error: Counter,
    latency: Histogram,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// Command counts and latencies, per front end.
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Arc<Registry>,
    /// `distcache_build_info`, the node's series, outside the
    /// `distcache_proxy` prefix.
    build_info: Registry,
    commands: Family<CmdResult, Counter>,
    latency: Family<Cmd, Histogram>,
    /// (front end, command) → its series, so recording a command costs one
    /// read-locked lookup instead of label building and two family lookups.
    /// (hashbrown's default hasher: SipHash was 2% of the proxy's work.)
    handles: RwLock<hashbrown::HashMap<(&'static str, &'static str), Handles>>,
    discovery_errors: Family<SourceLabel, Counter>,
    /// Front-end token refusals, counted as on a node:
    /// `auth_failures{reason}` and `permission_denied`.
    pub security: SecurityCounters,
    /// RESP connections dropped because their TLS handshake failed or timed out.
    pub tls_handshake_failures: Counter,
    /// `distcache_proxy_reloads_total{result}`: reloads on SIGHUP.
    pub reloads: ReloadCounter,
    /// RESP connections closed because they sent no request, or did not
    /// log in, within the login timeout.
    pub resp_login_timeouts: Counter,
    /// RESP connections refused because their peer address had too many open.
    pub resp_refused_per_ip: Counter,
    /// Named nodes reconnected at a new address, their place on the ring
    /// kept.
    readdresses: Counter,
}

impl ProxyMetrics {
    /// Registers the proxy's series; upstream figures are read from `client`.
    pub fn new(client: Client) -> Self {
        let mut registry = Registry::with_prefix("distcache_proxy");
        let commands = Family::<CmdResult, Counter>::default();
        let latency = Family::<Cmd, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "commands",
            "Commands served, by front end, command and result",
            commands.clone(),
        );
        registry.register(
            "command_duration_seconds",
            "Time to serve a command",
            latency.clone(),
        );
        let discovery_errors = Family::<SourceLabel, Counter>::default();
        // Exported at 0 from the start: an alert on `increase()` misses a
        // counter's first failure if the series only appears with it.
        for source in ["file", "dns", "dns+srv", "http"] {
            let _ = discovery_errors.get_or_create(&SourceLabel { source });
        }
        registry.register(
            "discovery_errors",
            "Membership polls that gave no usable node list (the nodes were kept), by source",
            discovery_errors.clone(),
        );
        registry.register_collector(Box::new(Upstream { client }));
        let security = SecurityCounters::default();
        security.register_auth(&mut registry);
        let reloads = ReloadCounter::default();
        reloads.register(&mut registry);
        let tls_handshake_failures = Counter::default();
        registry.register(
            "resp_tls_handshake_failures",
            "RESP connections dropped because the TLS handshake failed or timed out",
            tls_handshake_failures.clone(),
        );
        let resp_login_timeouts = Counter::default();
        registry.register(
            "resp_login_timeouts",
            "RESP connections closed because they sent no request, or did not log in, in time",
            resp_login_timeouts.clone(),
        );
        let resp_refused_per_ip = Counter::default();
        registry.register(
            "resp_refused_per_ip",
            "RESP connections refused because their address already had the most allowed",
            resp_refused_per_ip.clone(),
        );
        let readdresses = Counter::default();
        registry.register(
            "node_readdresses",
            "Named nodes (ID=URL, dns+srv://, health ids) reconnected at a new address, their place on the ring kept",
            readdresses.clone(),
        );
        let mut build_info = Registry::with_prefix("distcache");
        register_build_info(&mut build_info);
        Self {
            registry: Arc::new(registry),
            build_info,
            commands,
            latency,
            handles: RwLock::default(),
            discovery_errors,
            security,
            reloads,
            tls_handshake_failures,
            resp_login_timeouts,
            resp_refused_per_ip,
            readdresses,
        }
    }

    /// Counts `n` nodes reconnected at new addresses by a membership change.
    pub fn node_readdressed(&self, n: usize) {
        self.readdresses.inc_by(n as u64);
    }

    /// Counts one failed membership poll of `source` (`file`, `dns`,
    /// `dns+srv`, `http`).
    pub fn discovery_error(&self, source: &'static str) {
        self.discovery_errors
            .get_or_create(&SourceLabel { source })
            .inc();
    }

    /// Counts one command and its latency; `command` is its lowercase name.
    pub fn record(
        &self,
        frontend: &'static str,
        command: &'static str,
        ok: bool,
        elapsed: Duration,
    ) {
        let (ok, failed) = if ok { (1, 0) } else { (0, 1) };
        self.record_many(frontend, command, ok, failed, elapsed);
    }

    /// Counts `ok + failed` commands of one name that took `elapsed` each
    /// (the commands of one pipelined run, answered together): one look-up
    /// of their series instead of one per command.
    pub fn record_many(
        &self,
        frontend: &'static str,
        command: &'static str,
        ok: u64,
        failed: u64,
        elapsed: Duration,
    ) {
        let observe = |h: &Handles| {
            if ok > 0 {
                h.ok.inc_by(ok);
            }
            if failed > 0 {
                h.error.inc_by(failed);
            }
            let secs = elapsed.as_secs_f64();
            for _ in 0..ok + failed {
                h.latency.observe(secs);
            }
        };
        if let Some(h) = self
            .handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(frontend, command))
        {
            return observe(h);
        }
        let counter = |result| {
            self.commands
                .get_or_create(&CmdResult {
                    frontend,
                    command: command.to_owned(),
                    result,
                })
                .clone()
        };
        let h = Handles {
            ok: counter("ok"),
            error: counter("error"),
            latency: self
                .latency
                .get_or_create(&Cmd {
                    frontend,
                    command: command.to_owned(),
                })
                .clone(),
        };
        observe(&h);
        self.handles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((frontend, command), h);
    }

    /// Prometheus (OpenMetrics) text.
    pub fn prometheus(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.build_info);
        let _ = encode_eof(&mut out);
        out
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// Reads the SDK's view of the cluster at scrape time.
#[derive(Debug)]
struct Upstream {
    client: Client,
}

impl Collector for Upstream {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let health = self.client.health();
        let g = ConstGauge::new(0i64);
        let mut family = enc.encode_descriptor(
            "node_healthy",
            "1 when the proxy considers the node healthy",
            None,
            g.metric_type(),
        )?;
        for (node, healthy) in health {
            ConstGauge::new(i64::from(healthy))
                .encode(family.encode_family(&NodeLabel { node })?)?;
        }
        let s = self.client.stats();
        counter(
            &mut enc,
            "ring_changes",
            "Membership changes applied to the ring since start",
            s.membership_changes,
        )?;
        let members = ConstGauge::new(self.client.ring().len() as i64);
        members.encode(enc.encode_descriptor(
            "ring_members",
            "Nodes on the ring now",
            None,
            members.metric_type(),
        )?)?;
        counter(
            &mut enc,
            "upstream_attempts",
            "RPC attempts sent to nodes",
            s.attempts,
        )?;
        counter(
            &mut enc,
            "upstream_failovers",
            "Requests moved to the next replica",
            s.failovers,
        )?;
        counter(
            &mut enc,
            "upstream_retries",
            "Retry rounds after backoff",
            s.retries,
        )?;
        counter(
            &mut enc,
            "upstream_retry_budget_exhausted",
            "Retries refused by the retry budget",
            s.budget_exhausted,
        )?;
        counter(
            &mut enc,
            "read_repairs",
            "Stale replicas repaired by reads",
            s.read_repairs,
        )?;
        counter(
            &mut enc,
            "catch_ups",
            "Fenced nodes caught up (restarted, stalled, lost for a while, joined)",
            s.catch_ups,
        )?;
        counter(
            &mut enc,
            "catch_up_entries",
            "Entries copied to fenced nodes by catch-ups",
            s.catch_up_entries,
        )?;
        counter(
            &mut enc,
            "catch_up_failures",
            "Catch-ups that stopped short (the node stays fenced)",
            s.catch_up_failures,
        )?;
        gauge(
            &mut enc,
            "fenced_nodes",
            "Nodes fenced in the proxy's view: no reads go to them",
            s.fenced_nodes,
        )?;
        counter(
            &mut enc,
            "moves",
            "Membership changes whose data move finished",
            s.moves,
        )?;
        counter(
            &mut enc,
            "rebalance_entries",
            "Entries copied to new owners by membership changes",
            s.rebalance_entries,
        )?;
        gauge(
            &mut enc,
            "moving",
            "1 while a membership change moves data (old and new owners both serve)",
            u64::from(self.client.moving().is_some()),
        )
    }
}
