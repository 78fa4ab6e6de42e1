//! The admin HTTP endpoint: `/metrics` (Prometheus / OpenMetrics text),
//! `/metrics.json`, and the probes:
//!
//! - `/livez`: 200 while the process answers and its loops run: the expiry
//!   sweeper, which takes every shard's lock in turn, has finished a round
//!   within [`Probes::new`]'s `stall` (a wedged lock or runtime turns it to
//!   503). Nothing a node waits for (recovery, its disk, its peers) does, so
//!   a liveness probe never restarts a node that is merely busy or unready.
//! - `/readyz`: 200 once recovered, while the WAL accepts writes and the
//!   node is neither draining nor shutting down; otherwise 503 with the
//!   reason (`recovering: 12000 entries loaded so far`, `draining`, ...).
//! - `/healthz`: the alias of `/readyz` it has always been.
//!
//! It answers from the first moment of start-up: [`Probes`] starts in the
//! recovering phase, before the WAL is replayed, when `/metrics` carries only
//! `distcache_build_info` and `distcache_ready 0`. HTTP/1.1 over hyper; it
//! stops accepting when the node shuts down.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::service::Shared;
use crate::store::Store;

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

/// What the probes report, from start-up to shutdown. Created before the
/// WAL is replayed; [`Probes::serving`] hands it the node once recovery is
/// over, [`Probes::draining`] marks the start of a shutdown.
#[derive(Debug)]
pub struct Probes {
    store: Arc<Store>,
    shared: OnceLock<Arc<Shared>>,
    draining: AtomicBool,
    started: Instant,
    /// Milliseconds after `started`, plus one, of the sweeper's last round;
    /// 0 before its first (recovery, which is not a stall).
    beat: AtomicU64,
    stall: Duration,
}

impl Probes {
    /// Probes for a node whose `store` is being recovered; `/livez` fails
    /// once the sweeper, after its first round, has not finished one for
    /// `stall`.
    pub fn new(store: Arc<Store>, stall: Duration) -> Self {
        Self {
            store,
            shared: OnceLock::new(),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            beat: AtomicU64::new(0),
            stall,
        }
    }

    /// The sweeper finished a round over every shard.
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// `None` while the node is live, else why not.
    pub fn not_live(&self) -> Option<String> {
        let beat = self.beat.load(Ordering::Relaxed);
        if beat == 0 {
            return None;
        }
        let since = self
            .started
            .elapsed()
            .saturating_sub(Duration::from_millis(beat - 1));
        (since > self.stall).then(|| {
            format!(
                "stalled: the expiry sweeper has not finished a round for {} ms",
                since.as_millis()
            )
        })
    }

    /// Recovery is over: report ready and serve `shared`'s metrics.
    pub fn serving(&self, shared: Arc<Shared>) {
        let _ = self.shared.set(shared);
    }

    /// Shutdown began: report unready while requests are still served.
    pub fn draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// `None` when the node is ready, else why it is not.
    pub fn not_ready(&self) -> Option<String> {
        let Some(shared) = self.shared.get() else {
            return Some(format!(
                "recovering: {} entries loaded so far",
                self.store.len()
            ));
        };
        if self.draining.load(Ordering::Relaxed) {
            return Some("draining: shutting down".into());
        }
        if !shared.serving.load(Ordering::Relaxed) {
            return Some("shutting down".into());
        }
        if shared.wal.as_ref().is_some_and(|w| w.stats().has_failed()) {
            return Some("write-ahead log failed: writes are refused".into());
        }
        None
    }

    fn prometheus(&self) -> String {
        let ready = self.not_ready().is_none();
        match self.shared.get() {
            Some(shared) => {
                shared.metrics.ready.set(i64::from(ready));
                shared.metrics.prometheus()
            }
            // Recovering: the metrics registry belongs to the node being
            // built; say which version is starting and that it is not ready.
            None => {
                let mut r = Registry::with_prefix("distcache");
                crate::metrics::register_build_info(&mut r);
                r.register(
                    "ready",
                    "1 while the node is ready to serve (/readyz answers 200)",
                    Gauge::<i64>::default(),
                );
                let mut out = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut out, &r);
                out
            }
        }
    }
}

fn route(probes: &Probes, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, probes.prometheus()),
        "/metrics.json" => match probes.shared.get() {
            Some(shared) => reply(StatusCode::OK, "application/json", shared.metrics.json()),
            None => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "recovering\n".into(),
            ),
        },
        "/livez" => match probes.not_live() {
            None => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        "/readyz" | "/healthz" => match probes.not_ready() {
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
            "not found; try /metrics, /metrics.json, /livez or /readyz\n".into(),
        ),
    }
}

/// Serves admin requests on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, probes: Arc<Probes>, stop: watch::Receiver<bool>) {
    serve_http(
        listener,
        probes,
        |p, req| async move { route(&p, &req) },
        stop,
    )
    .await;
}

/// How often gRPC health is brought in line with readiness.
const HEALTH_FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

/// Keeps `grpc.health.v1` in line with `/readyz` until `stop` turns true:
/// `service` and the whole server (`""`, what a Kubernetes gRPC probe asks
/// by default) are SERVING exactly while the node is ready.
pub async fn follow_readiness(
    ready: impl Fn() -> bool + Send,
    health: HealthReporter,
    service: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(HEALTH_FOLLOW_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = crate::server::stopped(&mut stop) => return,
        }
        let now = ready();
        if last != Some(now) {
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in ["", service] {
                health.set_service_status(name, status).await;
            }
            last = Some(now);
        }
    }
}

/// Admin HTTP connections open at once (a scraper and a few humans need a
/// handful).
pub const MAX_ADMIN_CONNECTIONS: usize = 128;

/// Time an admin client has to send a request's headers.
pub const ADMIN_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves HTTP/1.1 on `listener`, answering GET and HEAD with `handler` (other
/// methods get 405),
/// until `stop` turns true. Shared by the node's and the proxy's admin
/// endpoints. At most [`MAX_ADMIN_CONNECTIONS`] are open at once, and a
/// connection that takes longer than [`ADMIN_HEADER_TIMEOUT`] to send a
/// request's headers (including the first) is closed.
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
            () = crate::server::stopped(&mut stop) => return,
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
            () = crate::server::stopped(&mut stop) => return,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(stall: Duration) -> Probes {
        let store = Arc::new(Store::new(crate::NodeConfig::default().store_config()));
        Probes::new(store, stall)
    }

    #[test]
    fn a_node_is_live_while_recovering_and_while_its_sweeper_runs() {
        let p = probes(Duration::from_secs(60));
        assert_eq!(p.not_live(), None, "recovering, no sweeper yet");
        assert!(
            p.not_ready()
                .unwrap_or_default()
                .starts_with("recovering: 0 entries")
        );
        p.beat();
        assert_eq!(p.not_live(), None);
    }

    #[test]
    fn a_sweeper_that_stops_finishing_rounds_makes_the_node_unlive() {
        let p = probes(Duration::from_millis(5));
        p.beat();
        // Past the stall bound with no round finished.
        std::thread::sleep(Duration::from_millis(30));
        let why = p.not_live().expect("stalled");
        assert!(why.starts_with("stalled: the expiry sweeper"), "{why}");
        p.beat();
        assert_eq!(p.not_live(), None, "a round later it is live again");
    }
}
