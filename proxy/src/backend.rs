//! What the front ends share: the SDK client over the cluster, the node list,
//! metrics, and a few cluster-wide answers (DBSIZE, INFO, health).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use distcache::Client;

use crate::metrics::ProxyMetrics;

/// The Redis version INFO and HELLO report: the release whose semantics the
/// commands the proxy serves follow. Clients gate features on it: redis-py
/// turns on client-side caching (CLIENT TRACKING, not served here) from
/// 7.4.0, so this stays below that until tracking exists.
pub const REDIS_VERSION: &str = "7.2.0";

/// The state behind every front end.
#[derive(Debug)]
pub struct Backend {
    /// The SDK client all requests go through.
    pub client: Client,
    /// Replication factor the client was built with.
    pub replicas: usize,
    /// Request counts and latencies.
    pub metrics: ProxyMetrics,
    /// RESP connections open now.
    pub resp_connections: AtomicUsize,
    /// RESP connections accepted since start.
    pub resp_accepted: AtomicU64,
    /// True once shutdown began: `/readyz` answers 503 while the front ends
    /// still serve (the drain delay), then they close.
    pub draining: AtomicBool,
    started: Instant,
}

impl Backend {
    /// A backend over `client`.
    pub fn new(client: Client, replicas: usize) -> Self {
        Self {
            metrics: ProxyMetrics::new(client.clone()),
            client,
            replicas,
            resp_connections: AtomicUsize::new(0),
            resp_accepted: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Seconds since the proxy started.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// True when at least one node is considered healthy.
    pub fn any_healthy(&self) -> bool {
        self.client.health().iter().any(|(_, h)| *h)
    }

    /// `None` when the proxy is ready (front ends open and not draining, at
    /// least one node healthy), else why it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Some("draining: shutting down")
        } else if !self.any_healthy() {
            Some("no healthy node")
        } else {
            None
        }
    }

    /// Live keys per node (None when a node did not answer), asked through
    /// the SDK's connections (so with the proxy's token and CA).
    pub async fn node_keys(&self) -> Vec<(String, Option<u64>)> {
        self.client
            .health_checks()
            .await
            .into_iter()
            .map(|(url, r)| (url, r.ok().map(|h| h.keys)))
            .collect()
    }

    /// An estimate of distinct live keys: the sum over nodes divided by the
    /// replication factor (exact when every replica holds every key it owns).
    pub async fn dbsize(&self) -> u64 {
        let total: u64 = self.node_keys().await.iter().filter_map(|(_, k)| *k).sum();
        let n = self.client.ring().len().min(self.replicas).max(1) as u64;
        total / n
    }

    /// The INFO text: Redis's sections that clients read, with distcache's figures.
    pub async fn info(&self) -> String {
        let health = self.client.health();
        let healthy = health.iter().filter(|(_, h)| *h).count();
        let stats = self.client.stats();
        let mut s = String::new();
        s.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n"
        ));
        s.push_str(&format!(
            "distcache_version:{}\r\nuptime_in_seconds:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            self.uptime_secs()
        ));
        s.push_str(&format!(
            "\r\n# Clients\r\nconnected_clients:{}\r\n",
            self.resp_connections.load(Ordering::Relaxed)
        ));
        s.push_str(&format!(
            "\r\n# Stats\r\ntotal_connections_received:{}\r\nupstream_attempts:{}\r\nupstream_failovers:{}\r\nupstream_retries:{}\r\n",
            self.resp_accepted.load(Ordering::Relaxed),
            stats.attempts,
            stats.failovers,
            stats.retries
        ));
        s.push_str(&format!(
            "\r\n# Cluster\r\nnodes:{}\r\nhealthy_nodes:{}\r\nreplicas:{}\r\n",
            health.len(),
            healthy,
            self.replicas
        ));
        s.push_str(&format!(
            "\r\n# Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n",
            self.dbsize().await
        ));
        s
    }
}
