//! Starts a node on listeners the caller bound, and runs it until `shutdown`
//! resolves; then drains within the grace period. The admin endpoint starts
//! first and answers throughout (`/readyz` 503 while recovering); then two
//! halves: [`assemble`] builds the parts from the configuration (the gRPC
//! port does not serve yet), `serve` spawns the tasks, serves and drains.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use distcache_proto::v1::cache_service_server::CacheServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use distcache_serve::reload::{self, Reloads};
use distcache_serve::security::{
    Bounds, LiveTls, Reloader, Security, SecurityError, SecurityLayer, live_tls,
};
use distcache_serve::{reflection, stopped};

use crate::admin::Probes;
use crate::config::{ConfigError, NodeConfig};
use crate::fence::{CATCH_UP_MARGIN_MS, Fence};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::service::CacheNode;
use crate::state::Shared;
use crate::store::Store;
use crate::tracking::Tracker;
use crate::wal::{OpenError, Wal};

/// The sockets a node serves on, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &NodeConfig) -> std::io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind(config.server.listen).await?,
            admin: TcpListener::bind(config.server.admin_listen).await?,
        })
    }
}

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// gRPC reflection could not be set up.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// TLS files or auth secrets cannot be used.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// Socket I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The data directory could not be locked or recovered.
    #[error(transparent)]
    Wal(#[from] OpenError),
}

/// Background tasks, stopped together when the node shuts down.
struct Tasks {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Tasks {
    async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// How long the expiry sweeper may go without finishing a round before
/// `/livez` says the node is stalled (at least ten sweep intervals).
const LIVENESS_STALL: Duration = Duration::from_secs(30);

/// What runs before the node is assembled: the admin endpoint, answering
/// from the first moment of start-up, and the stop flag every task watches.
struct Early {
    stop: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    probes: Arc<Probes>,
    admin: JoinHandle<()>,
}

impl Early {
    /// Starts the admin endpoint on `admin` over probes of `store`.
    fn start(admin: TcpListener, store: Arc<Store>, config: &NodeConfig) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let stall = LIVENESS_STALL.max(config.store.sweep_interval.0 * 10);
        let probes = Arc::new(Probes::new(store, stall));
        let admin = tokio::spawn(crate::admin::serve(admin, probes.clone(), stop_rx.clone()));
        Self {
            stop,
            stop_rx,
            probes,
            admin,
        }
    }

    /// Start-up failed: stops the admin endpoint.
    async fn abandon(self) {
        let _ = self.stop.send(true);
        let _ = self.admin.await;
    }
}

/// A node built from its configuration and not yet serving: the store
/// recovered, the security stack loaded, the shared state made.
struct Assembled {
    shared: Arc<Shared>,
    /// TLS for the gRPC port, when configured.
    tls: Option<Arc<LiveTls>>,
    /// The layer wrapping every service.
    layer: SecurityLayer,
    /// Re-reads the certificates and secrets on SIGHUP.
    reloader: Reloader,
}

/// Builds the node's parts from `config` (already validated) over `store`:
/// metrics, security stack and WAL, in that order, so a bad certificate or
/// secret leaves the data directory untouched, and recovery runs before the
/// gRPC port serves (no request sees a half-loaded store).
async fn assemble(config: &NodeConfig, store: Arc<Store>) -> Result<Assembled, NodeError> {
    let node_id = config.node_id();
    let mut metrics = Metrics::new(store.clone(), node_id.clone());
    let bounds = Bounds {
        max_connections: config.server.max_connections,
        max_in_flight: config.server.max_in_flight,
    };
    let security = Security::from_config(
        &config.tls,
        &config.auth,
        &config.rate_limit,
        bounds,
        &metrics.security,
    )?;
    let wal = match config.wal_options() {
        Some(opts) => Some(Arc::new(Wal::open(opts, store.clone()).await?)),
        None => None,
    };
    if let Some(w) = &wal {
        metrics.add_wal(w.stats().clone());
    }
    let tracker = Arc::new(Tracker::new(config.server.tracking_table_keys));
    store.set_tracker(tracker.clone());
    metrics.add_tracking(tracker.clone());
    let fence = Arc::new(start_fence(&store, config.server.fence_hold.0));
    fence.watch_stalls(crate::clock::now_ms)?;
    metrics.add_fence(fence.clone());
    let shared = Arc::new(Shared {
        tracker,
        fence,
        metrics,
        store,
        limits: Limits::from(config.limits),
        node_id,
        serving: AtomicBool::new(true),
        wal,
        max_message_bytes: usize::try_from(config.server.max_message_bytes.0).unwrap_or(usize::MAX),
    });
    Ok(Assembled {
        shared,
        tls: security.tls,
        layer: security.layer,
        reloader: security.reloader,
    })
}

/// The fence a node starts with: it lacks what was written while it was
/// down, so everything since its newest recovered entry (less the margin),
/// or anything at all when it starts empty.
fn start_fence(store: &Store, hold: Duration) -> Fence {
    match store.newest_version() {
        0 => Fence::started(0, "started empty".into(), hold),
        v => Fence::started(
            (v >> 16).saturating_sub(CATCH_UP_MARGIN_MS),
            "restarted from its write-ahead log".into(),
            hold,
        ),
    }
}

/// Runs a node until `shutdown` resolves, then stops taking requests (new
/// ones get `UNAVAILABLE`, health turns `NOT_SERVING`), lets in-flight ones
/// finish for up to `server.shutdown_grace`, and returns. Nothing is
/// reloaded (see [`run_reloading`]).
pub async fn run(
    listeners: Listeners,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    run_reloading(listeners, config, shutdown, reload::never()).await
}

/// [`run`], re-reading the TLS certificate, key and client CA and the auth
/// secret file at every tick of `reloads` (SIGHUP: `reload::hangups`). A
/// failed reload keeps what was in force, logs why and counts it in
/// `distcache_reloads_total{result="failed"}`.
pub async fn run_reloading(
    listeners: Listeners,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
    reloads: Reloads,
) -> Result<(), NodeError> {
    config.validate()?;
    let store = Arc::new(Store::new(config.store.store_config()));
    // The admin port answers from here on (/livez 200, /readyz 503 while
    // recovering), so a long WAL replay is "not ready", never "dead".
    let early = Early::start(listeners.admin, store.clone(), &config);
    let node = match assemble(&config, store).await {
        Ok(node) => node,
        Err(e) => {
            early.abandon().await;
            return Err(e);
        }
    };
    serve(node, early, listeners.grpc, &config, shutdown, reloads).await
}

/// Serves an assembled node on `listeners` until `shutdown` resolves, then
/// drains (see [`run`]).
async fn serve(
    node: Assembled,
    early: Early,
    grpc: TcpListener,
    config: &NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
    reloads: Reloads,
) -> Result<(), NodeError> {
    let Assembled {
        shared,
        tls,
        layer,
        reloader,
    } = node;
    let (store, wal) = (shared.store.clone(), shared.wal.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CacheServiceServer<CacheNode>>().await;
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let max_msg = usize::try_from(config.server.max_message_bytes.0).unwrap_or(usize::MAX);
    let Early {
        stop,
        stop_rx,
        probes,
        admin,
    } = early;
    let cache =
        CacheServiceServer::new(CacheNode::new(shared.clone()).with_shutdown(stop_rx.clone()))
            .max_decoding_message_size(max_msg)
            .max_encoding_message_size(max_msg);
    let mut tasks = Tasks {
        stop,
        handles: vec![
            tokio::spawn(crate::sweeper::sweep(
                store.clone(),
                config.store.sweep_interval.0,
                probes.clone(),
                stop_rx.clone(),
            )),
            admin,
            tokio::spawn(distcache_serve::admin::follow_readiness(
                {
                    let probes = probes.clone();
                    move || probes.not_ready().is_none()
                },
                health.clone(),
                <CacheServiceServer<CacheNode> as tonic::server::NamedService>::NAME,
                stop_rx.clone(),
            )),
        ],
    };
    if let Some(w) = &wal {
        tasks
            .handles
            .push(tokio::spawn(w.clone().run_snapshotter(stop_rx.clone())));
    }
    tasks.handles.push(tokio::spawn(reload::follow(
        reloads,
        shared.metrics.reloads.clone(),
        stop_rx.clone(),
        move || reloader.reload().map_err(|e| e.to_string()),
    )));

    let grpc_addr = grpc.local_addr()?;
    let mut grpc_stop = stop_rx.clone();
    let incoming = live_tls::incoming(grpc, config.server.max_connections, tls);
    let server = Server::builder()
        .trace_fn(crate::spans::rpc)
        .layer(layer)
        .max_concurrent_streams(Some(config.server.max_concurrent_streams))
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(cache)
        .serve_with_incoming_shutdown(incoming, async move {
            stopped(&mut grpc_stop).await;
        });
    let mut server = tokio::spawn(server);
    probes.serving(shared.clone());
    tracing::info!(node_id = %shared.node_id, grpc = %grpc_addr, "distcache node serving");

    tokio::select! {
        () = shutdown => {}
        result = &mut server => {
            tasks.stop().await;
            close_wal(wal.as_deref()).await;
            return match result {
                Ok(r) => r.map_err(NodeError::from),
                Err(e) => Err(std::io::Error::other(e).into()),
            };
        }
    }

    // Unready first, still serving: load balancers and proxies stop sending
    // new work during the drain delay, and what still arrives is answered.
    probes.draining();
    for name in [
        "",
        <CacheServiceServer<CacheNode> as tonic::server::NamedService>::NAME,
    ] {
        health
            .set_service_status(name, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let drain = config.server.drain_delay.0;
    if !drain.is_zero() {
        tracing::info!(
            drain_delay_ms = drain.as_millis() as u64,
            "shutting down: unready, serving for the drain delay"
        );
        tokio::time::sleep(drain).await;
    }
    let grace = config.server.shutdown_grace.0;
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    shared.serving.store(false, Ordering::Relaxed);
    tasks.stop().await;
    match tokio::time::timeout(grace, &mut server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => return Err(std::io::Error::other(e).into()),
        Err(_) => {
            tracing::warn!("grace period over; closing remaining connections");
            server.abort();
        }
    }
    close_wal(wal.as_deref()).await;
    tracing::info!("node stopped");
    Ok(())
}

/// The one place the WAL is flushed and fsynced on the way out (with a final
/// snapshot if configured), once no request is in flight.
async fn close_wal(wal: Option<&Wal>) {
    if let Some(w) = wal
        && let Err(e) = w.close().await
    {
        tracing::error!(error = %e, "could not flush the write-ahead log");
    }
}
