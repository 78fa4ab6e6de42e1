//! The proxy's admin HTTP endpoint: `/metrics` (Prometheus/OpenMetrics text),
//! `/metrics.json`, `/healthz` (200 while at least one node is healthy, else
//! 503) and `/ring` (JSON: nodes, health, share of the key space).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::Backend;

/// Content type of the text exposition format prometheus-client writes.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// The ring as JSON: every node with its health and share of the key space.
pub fn ring_json(backend: &Backend) -> String {
    let ring = backend.client.ring();
    let shares = ring.ownership();
    let health = backend.client.health();
    let nodes: Vec<_> = ring
        .nodes()
        .iter()
        .zip(shares)
        .map(|(node, share)| {
            let healthy = health.iter().any(|(n, h)| n == node && *h);
            serde_json::json!({ "node": node, "healthy": healthy, "share": share })
        })
        .collect();
    serde_json::json!({
        "vnodes_per_node": ring.vnodes(),
        "replicas": backend.replicas,
        "nodes": nodes,
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
        "nodes": nodes,
    })
    .to_string()
}

async fn route(backend: &Backend, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
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
        "/healthz" | "/readyz" => {
            if backend.any_healthy() {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no healthy node\n".into(),
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /metrics.json, /healthz or /ring\n".into(),
        ),
    }
}

/// Serves admin requests until `stop` turns true.
pub async fn serve(listener: TcpListener, backend: Arc<Backend>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::stopped(&mut stop) => return,
        };
        let backend = backend.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let backend = backend.clone();
                async move { Ok::<_, Infallible>(route(&backend, &req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}
