//! The proxy's admin HTTP endpoint: `/metrics` (Prometheus/OpenMetrics text),
//! `/metrics.json`, `/ring` (JSON: nodes, health, share of the key space)
//! and the probes:
//!
//! - `/livez`: 200 while the process answers. It does not depend on the
//!   nodes, so a liveness probe never restarts a sidecar during a node
//!   outage.
//! - `/readyz`: 200 while the front ends are open and not draining and at
//!   least one node is healthy; else 503 with the reason.
//! - `/healthz`: the alias of `/readyz` it has always been.

use std::sync::Arc;

use bytes::Bytes;
pub use distcache_serve::admin::PROMETHEUS_CONTENT_TYPE;
use distcache_serve::admin::{reply, serve_http};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::Backend;

/// The ring as JSON: every node with its health, whether it is fenced
/// (catching up: no reads go to it), and its share of the key space; the
/// phase (`stable`, or `moving` after a membership change) and, while
/// moving, the move's progress.
pub fn ring_json(backend: &Backend) -> String {
    let ring = backend.client.ring();
    let shares = ring.ownership();
    let health = backend.client.health();
    let fenced = backend.client.fenced();
    let members = backend.client.members();
    let nodes: Vec<_> = ring
        .nodes()
        .iter()
        .zip(shares)
        .map(|(node, share)| {
            let healthy = health.iter().any(|(n, h)| n == node && *h);
            let fenced = fenced.contains(node);
            let url = members.iter().find(|(n, _)| n == node).map(|(_, u)| u);
            serde_json::json!({ "node": node, "url": url, "healthy": healthy, "fenced": fenced, "share": share })
        })
        .collect();
    let moving = backend.client.moving().map(|m| {
        serde_json::json!({
            "phase": match m.phase {
                distcache::MovePhase::Grace => "grace",
                distcache::MovePhase::Copying => "copying",
                distcache::MovePhase::Retrying => "retrying",
                _ => "draining",
            },
            "from": m.from,
            "to": m.to,
            "elapsed_ms": m.elapsed.as_millis() as u64,
            "started_unix_ms": m.started_unix_ms,
            "sources_done": m.sources_done,
            "sources": m.sources,
            "scanned": m.scanned,
            "copied": m.copied,
            "copied_bytes": m.copied_bytes,
            "passes": m.passes,
            "eta_ms": m.eta.map(|d| d.as_millis() as u64),
        })
    });
    serde_json::json!({
        "vnodes_per_node": ring.vnodes(),
        "replicas": backend.replicas,
        "nodes": nodes,
        "phase": if moving.is_some() { "moving" } else { "stable" },
        "move": moving,
    })
    .to_string()
}

/// Upstream and connection figures as JSON.
pub async fn metrics_json(backend: &Backend) -> String {
    let s = backend.client.stats();
    let nodes: Vec<_> = backend
        .node_keys()
        .await
        .into_iter()
        .map(|(node, keys)| serde_json::json!({ "node": node, "keys": keys }))
        .collect();
    serde_json::json!({
        "uptime_seconds": backend.uptime_secs(),
        "resp_connections": backend.resp_connections.load(std::sync::atomic::Ordering::Relaxed),
        "upstream_attempts": s.attempts,
        "upstream_failovers": s.failovers,
        "upstream_retries": s.retries,
        "read_repairs": s.read_repairs,
        "catch_ups": s.catch_ups,
        "catch_up_entries": s.catch_up_entries,
        "catch_up_failures": s.catch_up_failures,
        "fenced_nodes": s.fenced_nodes,
        "moves": s.moves,
        "rebalance_entries": s.rebalance_entries,
        "nodes": nodes,
    })
    .to_string()
}

async fn route(backend: &Backend, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            PROMETHEUS_CONTENT_TYPE,
            backend.metrics.prometheus(),
        ),
        "/metrics.json" => reply(
            StatusCode::OK,
            "application/json",
            metrics_json(backend).await,
        ),
        "/ring" => reply(StatusCode::OK, "application/json", ring_json(backend)),
        "/livez" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" | "/healthz" => match backend.not_ready() {
            None => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /metrics.json, /livez, /readyz or /ring\n".into(),
        ),
    }
}

/// Serves admin requests until `stop` turns true.
pub async fn serve(listener: TcpListener, backend: Arc<Backend>, stop: watch::Receiver<bool>) {
    serve_http(
        listener,
        backend,
        |b, req| async move { route(&b, &req).await },
        stop,
    )
    .await;
}
