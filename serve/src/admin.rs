//! The admin HTTP loop of a server process: HTTP/1.1 over hyper, GET and
//! HEAD only, until the stop flag turns true. What each path answers is the
//! caller's: the node and the proxy each pass their own handler. Also the
//! task that keeps gRPC health in line with the caller's readiness.

use std::convert::Infallible;
use std::future::Future;
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

use crate::shutdown::stopped;

/// Content type of the text exposition format prometheus-client writes.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A response with `body` and a content type.
pub fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Admin HTTP connections open at once (a scraper and a few humans need a
/// handful).
pub const MAX_ADMIN_CONNECTIONS: usize = 128;

/// Time an admin client has to send a request's headers.
pub const ADMIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves HTTP/1.1 on `listener`, answering GET and HEAD with `handler`
/// (other methods get 405), until `stop` turns true. Shared by the node's
/// and the proxy's admin endpoints. At most [`MAX_ADMIN_CONNECTIONS`] are
/// open at once, and a connection that takes longer than
/// [`ADMIN_HEADER_TIMEOUT`] to send a request's headers (including the
/// first) is closed.
pub async fn serve_http<S, H, Fut>(
    listener: TcpListener,
    state: Arc<S>,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    // Bounded like every listener: while all slots are taken the loop stops
    // accepting, so idle sockets cannot use up the process's descriptors.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            () = stopped(&mut stop) => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let (state, handler) = (state.clone(), handler.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                // Both admin endpoints are read-only.
                let read = req.method() == Method::GET || req.method() == Method::HEAD;
                let fut = read.then(|| handler(state.clone(), req));
                async move {
                    Ok::<_, Infallible>(match fut {
                        Some(fut) => fut.await,
                        None => reply(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "text/plain",
                            "use GET\n".into(),
                        ),
                    })
                }
            });
            // A client that does not send its request headers in time (a
            // silent socket) is closed.
            let served = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// How often gRPC health is brought in line with readiness.
const HEALTH_FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Keeps `grpc.health.v1` in line with `/readyz` until `stop` turns true:
/// `service` and the whole server (`""`, what a Kubernetes gRPC probe asks
/// by default) are SERVING exactly while `ready()` says so (the node's or
/// the proxy's readiness).
pub async fn follow_readiness(
    ready: impl Fn() -> bool + Send,
    health: tonic_health::server::HealthReporter,
    service: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(HEALTH_FOLLOW_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        let now = ready();
        if last != Some(now) {
            let status = if now {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            for name in ["", service] {
                health.set_service_status(name, status).await;
            }
            last = Some(now);
        }
    }
}
