//! The node's admin HTTP endpoint: `/metrics` (Prometheus / OpenMetrics
//! text), `/metrics.json`, and `/healthz` (200 while serving, 503 once
//! shutdown began). The HTTP loop is `distcache_serve::admin`'s; this file
//! only routes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use distcache_serve::admin::{PROMETHEUS_CONTENT_TYPE, reply, serve_http};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::Shared;

fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            PROMETHEUS_CONTENT_TYPE,
            shared.metrics.prometheus(),
        ),
        "/metrics.json" => reply(StatusCode::OK, "application/json", shared.metrics.json()),
        "/healthz" | "/readyz" => {
            if shared.serving.load(Ordering::Relaxed) {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n".into(),
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /metrics.json or /healthz\n".into(),
        ),
    }
}

/// Serves admin requests on `listener` until `stop` turns true.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    serve_http(
        listener,
        shared,
        |s, req| async move { route(&s, &req) },
        stop,
    )
    .await;
}
