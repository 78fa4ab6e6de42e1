//! Starts a node on listeners the caller bound, and runs it until `shutdown`
//! resolves; then drains within the grace period.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use distcache_proto::v1::cache_service_server::CacheServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::config::{ConfigError, NodeConfig};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::security::{self, Security, SecurityError};
use crate::service::{CacheNode, Shared};
use crate::store::Store;
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

/// Runs a node until `shutdown` resolves, then stops taking requests (new
/// ones get `UNAVAILABLE`, health turns `NOT_SERVING`), lets in-flight ones
/// finish for up to `server.shutdown_grace`, and returns.
pub async fn run(
    listeners: Listeners,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    config.validate()?;
    let store = Arc::new(Store::new(config.store_config()));
    let node_id = config.node_id();
    let mut metrics = Metrics::new(store.clone(), node_id.clone());
    // Before the WAL is opened or any task starts, so a bad certificate or
    // secret stops nothing and leaves the data directory untouched.
    let security = Security::from_config(&config, &metrics.security)?;
    let mut builder = Server::builder();
    if let Some(tls) = security.tls {
        builder = builder.tls_config(tls)?;
    }
    // The admin port answers from here on (/livez 200, /readyz 503 while
    // recovering), so a long WAL replay is "not ready", never "dead".
    let (stop, stop_rx) = watch::channel(false);
    let probes = Arc::new(crate::admin::Probes::new(
        store.clone(),
        LIVENESS_STALL.max(config.store.sweep_interval.0 * 10),
    ));
    let admin = tokio::spawn(crate::admin::serve(
        listeners.admin,
        probes.clone(),
        stop_rx.clone(),
    ));
    // Recovery runs before the gRPC port serves, so no request sees a
    // half-loaded store.
    let wal = match config.wal_options() {
        Some(opts) => match Wal::open(opts, store.clone()).await {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                let _ = stop.send(true);
                let _ = admin.await;
                return Err(e.into());
            }
        },
        None => None,
    };
    if let Some(w) = &wal {
        metrics.add_wal(w.stats().clone());
    }
    let shared = Arc::new(Shared {
        metrics,
        store: store.clone(),
        limits: Limits::from(config.limits),
        node_id: node_id.clone(),
        serving: AtomicBool::new(true),
        wal: wal.clone(),
        max_message_bytes: usize::try_from(config.server.max_message_bytes.0).unwrap_or(usize::MAX),
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CacheServiceServer<CacheNode>>().await;
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let max_msg = usize::try_from(config.server.max_message_bytes.0).unwrap_or(usize::MAX);
    let cache =
        CacheServiceServer::new(CacheNode::new(shared.clone()).with_shutdown(stop_rx.clone()))
            .max_decoding_message_size(max_msg)
            .max_encoding_message_size(max_msg);
    let mut tasks = Tasks {
        stop,
        handles: vec![
            tokio::spawn(sweep(
                store.clone(),
                config.store.sweep_interval.0,
                probes.clone(),
                stop_rx.clone(),
            )),
            admin,
            tokio::spawn(crate::admin::follow_readiness(
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

    let grpc_addr = listeners.grpc.local_addr()?;
    let mut grpc_stop = stop_rx.clone();
    let incoming =
        security::connections::bounded_incoming(listeners.grpc, config.server.max_connections);
    let server = builder
        .layer(security.layer)
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
    tracing::info!(%node_id, grpc = %grpc_addr, "distcache node serving");

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

/// How long the expiry sweeper may go without finishing a round before
/// `/livez` says the node is stalled (at least ten sweep intervals).
const LIVENESS_STALL: Duration = Duration::from_secs(30);

/// Reclaims expired entries a slice at a time so no shard lock is held long;
/// each round over every shard is a heartbeat for `/livez`.
async fn sweep(
    store: Arc<Store>,
    every: Duration,
    probes: Arc<crate::admin::Probes>,
    mut stop: watch::Receiver<bool>,
) {
    const SLOTS_PER_SHARD: usize = 64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        let removed: u64 = (0..store.shard_count())
            .map(|i| store.sweep_shard(i, SLOTS_PER_SHARD))
            .sum();
        probes.beat();
        if removed > 0 {
            tracing::trace!(removed, "swept expired entries");
        }
    }
}

/// The async runtime of a node or proxy process: `threads` worker threads,
/// 0 for one per CPU core. With 1, a current-thread runtime: no work
/// stealing and no wake-ups across threads, the cheapest way to serve when
/// several processes share a few cores (as redis-server and twemproxy do).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        b.worker_threads(threads);
    }
    b.enable_all().build()
}

/// Resolves once the stop flag turns true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// [`stopped`] for an optional flag: never resolves without one.
pub async fn stopped_if(stop: Option<watch::Receiver<bool>>) {
    match stop {
        Some(mut rx) => stopped(&mut rx).await,
        None => std::future::pending().await,
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// gRPC reflection over `distcache.v1` and `grpc.health.v1`, as grpcurl
/// needs it; build it with `build_v1()` and `build_v1alpha()` (grpcurl asks
/// for either). Used by the node and the proxy.
pub fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(distcache_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
