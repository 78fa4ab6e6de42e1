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
//! `distcache_build_info` and `distcache_ready 0`. The HTTP loop is
//! `distcache_serve::admin`'s; this file only routes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use distcache_serve::admin::{PROMETHEUS_CONTENT_TYPE, reply, serve_http};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::Shared;
use crate::store::Store;

/// What the probes report, from start-up to shutdown. Created before the
/// WAL is replayed; [`Probes::serving`] hands it the node once recovery is
/// over, [`Probes::draining`] marks the start of a shutdown.
#[derive(Debug)]
pub(crate) struct Probes {
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
    pub(crate) fn new(store: Arc<Store>, stall: Duration) -> Self {
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
    pub(crate) fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// `None` while the node is live, else why not.
    pub(crate) fn not_live(&self) -> Option<String> {
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
    pub(crate) fn serving(&self, shared: Arc<Shared>) {
        let _ = self.shared.set(shared);
    }

    /// Shutdown began: report unready while requests are still served.
    pub(crate) fn draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// `None` when the node is ready, else why it is not.
    pub(crate) fn not_ready(&self) -> Option<String> {
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
        if shared.wal_failed() {
            return Some(crate::state::WAL_FAILED.into());
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
                distcache_serve::metrics::register_build_info(&mut r);
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
pub(crate) async fn serve(listener: TcpListener, probes: Arc<Probes>, stop: watch::Receiver<bool>) {
    serve_http(
        listener,
        probes,
        |p, req| async move { route(&p, &req) },
        stop,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(stall: Duration) -> Probes {
        let store = Arc::new(Store::new(
            crate::NodeConfig::default().store.store_config(),
        ));
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
