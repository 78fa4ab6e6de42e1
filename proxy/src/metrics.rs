//! The proxy's metrics: commands by name and result, latency histograms by
//! command, and upstream figures (node health, retries, failovers) read from
//! the SDK at scrape time.

use std::sync::Arc;
use std::time::Duration;

use distcache::Client;
use distcache_node::metrics::{SecurityCounters, counter};
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

/// Command counts and latencies, per front end.
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Arc<Registry>,
    commands: Family<CmdResult, Counter>,
    latency: Family<Cmd, Histogram>,
    /// Front-end token refusals, counted as on a node:
    /// `auth_failures{reason}` and `permission_denied`.
    pub security: SecurityCounters,
    /// RESP connections dropped because their TLS handshake failed or timed out.
    pub tls_handshake_failures: Counter,
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
        registry.register_collector(Box::new(Upstream { client }));
        let security = SecurityCounters::default();
        security.register_auth(&mut registry);
        let tls_handshake_failures = Counter::default();
        registry.register(
            "resp_tls_handshake_failures",
            "RESP connections dropped because the TLS handshake failed or timed out",
            tls_handshake_failures.clone(),
        );
        Self {
            registry: Arc::new(registry),
            commands,
            latency,
            security,
            tls_handshake_failures,
        }
    }

    /// Counts one command and its latency.
    pub fn record(&self, frontend: &'static str, command: &str, ok: bool, elapsed: Duration) {
        let command = command.to_ascii_lowercase();
        self.commands
            .get_or_create(&CmdResult {
                frontend,
                command: command.clone(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.latency
            .get_or_create(&Cmd { frontend, command })
            .observe(elapsed.as_secs_f64());
    }

    /// Prometheus (OpenMetrics) text.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
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
        )
    }
}
