//! The node's metrics: request counts by operation and result, request latency
//! histograms, and the store's own figures (keys, memory, hits, misses,
//! evictions, expirations) read at scrape time. Rendered as Prometheus text
//! (prometheus-client) or as a JSON object.
//!
//! Counter and histogram handles are created once at start-up, so recording a
//! request is an atomic add and a histogram observe, with no label lookup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distcache_serve::metrics::{counter, gauge};
use distcache_serve::reload::ReloadCounter;
use distcache_serve::security::SecurityCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Store;

/// The operations a node counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Get.
    Get,
    /// Set.
    Set,
    /// Delete.
    Delete,
    /// CompareAndSwap.
    Cas,
    /// IncrBy.
    IncrBy,
    /// Expire.
    Expire,
    /// Batch (the RPC; its operations are also counted by type).
    Batch,
    /// HealthCheck.
    Health,
    /// GetMetrics.
    Metrics,
    /// Scan (a peer's catch-up reading this node).
    Scan,
    /// Fence (raising or lifting this node's fence).
    Fence,
    /// Forget (dropping hash ranges a membership change moved away).
    Forget,
}

impl Op {
    const ALL: [Op; 12] = [
        Op::Get,
        Op::Set,
        Op::Delete,
        Op::Cas,
        Op::IncrBy,
        Op::Expire,
        Op::Batch,
        Op::Health,
        Op::Metrics,
        Op::Scan,
        Op::Fence,
        Op::Forget,
    ];

    /// The outcomes this operation can have (only these series are exported
    /// before they first occur).
    fn outcomes(self) -> &'static [Outcome] {
        use Outcome::*;
        match self {
            Op::Get => &[Ok, Miss, InvalidArgument],
            Op::Set | Op::Delete | Op::Cas | Op::Expire => {
                &[Ok, NotApplied, InvalidArgument, Error]
            }
            Op::IncrBy => &[Ok, InvalidArgument, Error],
            Op::Batch => &[Ok, InvalidArgument],
            Op::Health | Op::Metrics | Op::Scan | Op::Fence => &[Ok],
            Op::Forget => &[Ok, InvalidArgument, Error],
        }
    }

    /// The label value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Cas => "compare_and_swap",
            Op::IncrBy => "incr_by",
            Op::Expire => "expire",
            Op::Batch => "batch",
            Op::Health => "health_check",
            Op::Metrics => "get_metrics",
            Op::Scan => "scan",
            Op::Fence => "fence",
            Op::Forget => "forget",
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done (a write applied, a read of a live key, a health answer).
    Ok,
    /// A read that found nothing.
    Miss,
    /// A write not applied: condition false, CAS mismatch, older version.
    NotApplied,
    /// Refused as bad input.
    InvalidArgument,
    /// Refused for another reason (counter on text, memory exhausted).
    Error,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Miss,
        Outcome::NotApplied,
        Outcome::InvalidArgument,
        Outcome::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Miss => "miss",
            Outcome::NotApplied => "not_applied",
            Outcome::InvalidArgument => "invalid_argument",
            Outcome::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpResult {
    op: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// The node's metrics registry and pre-created handles.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Counters of the security layers.
    pub security: SecurityCounters,
    /// `distcache_reloads_total{result}`: reloads on SIGHUP.
    pub reloads: ReloadCounter,
    /// `distcache_ready`: 1 while `/readyz` answers 200; the admin endpoint
    /// sets it before each scrape.
    pub ready: Gauge,
    registry: Registry,
    requests: Family<OpResult, Counter>,
    counts: Vec<Option<Counter>>,
    latency: Vec<Histogram>,
    store: Arc<Store>,
    started: Instant,
    node_id: String,
    wal: Option<Arc<crate::wal::WalStats>>,
}

fn index(op: Op, outcome: Outcome) -> usize {
    op as usize * Outcome::ALL.len() + outcome as usize
}

impl Metrics {
    /// Registers everything for a node serving `store`.
    pub(crate) fn new(store: Arc<Store>, node_id: String) -> Self {
        let mut registry = Registry::with_prefix("distcache");
        let requests = Family::<OpResult, Counter>::default();
        let latency = Family::<OpLabel, Histogram>::new_with_constructor(|| {
            // 20 µs .. ~1.3 s
            Histogram::new(exponential_buckets(0.000_02, 2.0, 17))
        });
        registry.register(
            "operations",
            "Operations served, by operation and result",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to serve a request, by RPC",
            latency.clone(),
        );
        let mut counts = Vec::new();
        for op in Op::ALL {
            for outcome in Outcome::ALL {
                let label = OpResult {
                    op: op.name(),
                    result: outcome.name(),
                };
                counts.push(
                    op.outcomes()
                        .contains(&outcome)
                        .then(|| requests.get_or_create_owned(&label)),
                );
            }
        }
        let latency = Op::ALL
            .iter()
            .map(|op| latency.get_or_create_owned(&OpLabel { op: op.name() }))
            .collect();
        let security = SecurityCounters::default();
        security.register(&mut registry);
        let reloads = ReloadCounter::default();
        reloads.register(&mut registry);
        distcache_serve::metrics::register_build_info(&mut registry);
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while the node is ready to serve (/readyz answers 200)",
            ready.clone(),
        );
        let started = Instant::now();
        registry.register_collector(Box::new(StoreCollector {
            store: store.clone(),
            started,
        }));
        Self {
            security,
            reloads,
            ready,
            registry,
            requests,
            counts,
            latency,
            store,
            started,
            node_id,
            wal: None,
        }
    }

    /// Adds the fence's figures (see `fence.rs`).
    pub(crate) fn add_fence(&mut self, fence: Arc<crate::fence::Fence>) {
        self.registry
            .register_collector(Box::new(crate::fence::FenceCollector(fence)));
    }

    /// Adds the client-side caching figures (see `tracking.rs`).
    pub(crate) fn add_tracking(&mut self, tracker: Arc<crate::tracking::Tracker>) {
        self.registry
            .register_collector(Box::new(crate::tracking::TrackingCollector(tracker)));
    }

    /// Adds the durability layer's figures (WAL, snapshots, recovery).
    pub(crate) fn add_wal(&mut self, stats: Arc<crate::wal::WalStats>) {
        self.registry
            .register_collector(Box::new(crate::wal::WalCollector(stats.clone())));
        self.wal = Some(stats);
    }

    /// Counts one operation.
    pub(crate) fn count(&self, op: Op, outcome: Outcome) {
        match &self.counts[index(op, outcome)] {
            Some(c) => {
                c.inc();
            }
            None => {
                self.requests
                    .get_or_create(&OpResult {
                        op: op.name(),
                        result: outcome.name(),
                    })
                    .inc();
            }
        }
    }

    /// Records how long an RPC took.
    pub(crate) fn observe(&self, op: Op, elapsed: Duration) {
        self.latency[op as usize].observe(elapsed.as_secs_f64());
    }

    /// Time since the node started.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Prometheus text exposition format.
    pub(crate) fn prometheus(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The same figures as one JSON object.
    pub(crate) fn json(&self) -> String {
        let st = self.store.stats();
        let mut ops = serde_json::Map::new();
        for op in Op::ALL {
            let mut by = serde_json::Map::new();
            for &outcome in op.outcomes() {
                let n = self.counts[index(op, outcome)]
                    .as_ref()
                    .map_or(0, Counter::get);
                by.insert(outcome.name().into(), n.into());
            }
            ops.insert(op.name().into(), by.into());
        }
        let wal = self.wal.as_ref().map(|w| w.json());
        serde_json::json!({
            "node_id": self.node_id,
            "uptime_seconds": self.uptime().as_secs(),
            "keys": st.keys,
            "entries": st.entries,
            "memory_bytes": st.memory_bytes,
            "max_memory_bytes": self.store.max_memory(),
            "hits": st.hits,
            "misses": st.misses,
            "evictions": st.evictions,
            "expirations": st.expirations,
            "operations": ops,
            "security": self.security.json(),
            "wal": wal,
        })
        .to_string()
    }
}

/// Reads the store's figures at scrape time.
#[derive(Debug)]
struct StoreCollector {
    store: Arc<Store>,
    started: Instant,
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let st = self.store.stats();
        gauge(&mut enc, "keys", "Live keys", st.keys)?;
        gauge(
            &mut enc,
            "entries",
            "Stored entries including tombstones",
            st.entries,
        )?;
        gauge(
            &mut enc,
            "memory_bytes",
            "Bytes charged to entries",
            st.memory_bytes,
        )?;
        gauge(
            &mut enc,
            "max_memory_bytes",
            "Configured memory bound",
            self.store.max_memory(),
        )?;
        gauge(
            &mut enc,
            "uptime_seconds",
            "Seconds since the node started",
            self.started.elapsed().as_secs(),
        )?;
        counter(
            &mut enc,
            "cache_hits",
            "Reads that found a live value",
            st.hits,
        )?;
        counter(
            &mut enc,
            "cache_misses",
            "Reads that found no live value",
            st.misses,
        )?;
        counter(
            &mut enc,
            "evictions",
            "Entries evicted by the memory bound",
            st.evictions,
        )?;
        counter(
            &mut enc,
            "expirations",
            "Entries removed at the end of their TTL",
            st.expirations,
        )
    }
}
