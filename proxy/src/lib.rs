//! The distcache sidecar proxy: Redis-protocol and gRPC front ends over the
//! SDK, plus an admin endpoint, so services in any language use the cluster
//! through localhost.
//!
//! ```text
//!   redis client ── RESP :6380 ──► resp::server ─┐
//!   gRPC client ── gRPC :50051 ──► grpc (CacheService, health, reflection)
//!   Prometheus ── HTTP :9100 ───► admin          ├─► Backend ─► distcache::Client ─► nodes
//!                                                 │     (ring, replication, failover)
//!   --dev: three in-process nodes (dev) ─────────┘
//! ```
//!
//! Membership is `--nodes`, or follows a source at run time (see
//! [`membership`]: a TOML cluster file reloaded on change and on SIGHUP, DNS,
//! or HTTP discovery such as Consul); every change rebuilds the SDK's ring
//! without dropping requests in flight.
//!
//! Front-end TLS and tokens are in [`security`] and [`resp::auth`]; the
//! token and CA the proxy uses towards nodes are the SDK's.

pub mod admin;
pub mod backend;
pub mod cli;
pub mod dev;
pub mod grpc;
pub mod membership;
pub mod metrics;
pub mod resp;
pub mod security;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distcache::proto::cache_service_server::CacheServiceServer;
use distcache_node::security::connections::bounded_incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;

pub use backend::Backend;
pub use security::FrontSecurity;

/// Default bound on RESP connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default [`FrontendConfig::login_timeout`].
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on gRPC requests served at once (as on a node).
pub const DEFAULT_GRPC_MAX_IN_FLIGHT: usize = 4096;
/// Default bound on concurrent streams per gRPC connection (as on a node).
pub const DEFAULT_GRPC_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Default bound on RESP connections from one IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_000;
/// Default time in-flight requests get to finish once shutdown starts.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The sockets the proxy serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC front end.
    pub grpc: TcpListener,
    /// Redis-protocol front end.
    pub resp: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
}

/// How the front ends behave.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Bounds on RESP requests.
    pub resp_limits: resp::Limits,
    /// Most RESP connections open at once.
    pub max_connections: usize,
    /// TLS and tokens on both front ends (default: off).
    pub security: FrontSecurity,
    /// Once shutdown starts, how long the front ends keep accepting and
    /// serving while `/readyz` and gRPC health say the proxy is not ready
    /// (so traffic moves away first); zero: stop accepting at once.
    pub drain_delay: Duration,
    /// Once the front ends stop accepting, how long open connections get to
    /// finish the requests they have sent; then they are closed.
    pub shutdown_grace: Duration,
    /// How long a RESP connection has to send its first request and, when
    /// tokens are required, to log in; then it is closed. Zero: no limit.
    pub login_timeout: Duration,
    /// Most RESP connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Most gRPC connections open at once; more wait in the accept queue.
    pub grpc_max_connections: usize,
    /// Most gRPC requests served at once; more get RESOURCE_EXHAUSTED.
    pub grpc_max_in_flight: usize,
    /// Most concurrent HTTP/2 streams on one gRPC connection.
    pub grpc_max_concurrent_streams: u32,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            resp_limits: resp::Limits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            security: FrontSecurity::default(),
            drain_delay: Duration::ZERO,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            grpc_max_connections: DEFAULT_MAX_CONNECTIONS,
            grpc_max_in_flight: DEFAULT_GRPC_MAX_IN_FLIGHT,
            grpc_max_concurrent_streams: DEFAULT_GRPC_MAX_CONCURRENT_STREAMS,
        }
    }
}

/// Why the proxy stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// gRPC reflection could not be set up.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub(crate) use distcache_node::server::stopped;

/// Serves every front end until `shutdown` resolves; then reports unready
/// and goes on serving for `config.drain_delay`, stops accepting, lets
/// requests already received finish within `config.shutdown_grace`, and
/// returns once every front end has closed.
pub async fn run(
    listeners: Listeners,
    backend: Arc<Backend>,
    config: FrontendConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProxyError> {
    let (stop, stop_rx) = watch::channel(false);
    let (grace, drain) = (config.shutdown_grace, config.drain_delay);
    let (grpc_connections, grpc_streams) = (
        config.grpc_max_connections,
        config.grpc_max_concurrent_streams,
    );
    let mut grpc_server = Server::builder();
    if let Some(tls) = config.security.grpc_tls.clone() {
        grpc_server = grpc_server.tls_config(tls)?;
    }
    let auth = config
        .security
        .grpc_layer(config.grpc_max_in_flight, backend.metrics.security.clone());
    let resp = tokio::spawn(resp::server::serve(
        listeners.resp,
        backend.clone(),
        config,
        stop_rx.clone(),
    ));
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        backend.clone(),
        stop_rx.clone(),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CacheServiceServer<grpc::ProxyService>>()
        .await;
    let reflection_v1 = distcache_node::server::reflection().build_v1()?;
    let reflection_v1alpha = distcache_node::server::reflection().build_v1alpha()?;
    let mut grpc_stop = stop_rx.clone();
    let grpc = grpc_server
        .layer(auth)
        .max_concurrent_streams(Some(grpc_streams))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            CacheServiceServer::new(
                grpc::ProxyService::new(backend.clone()).with_shutdown(stop_rx.clone()),
            )
            .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            bounded_incoming(listeners.grpc, grpc_connections),
            async move {
                stopped(&mut grpc_stop).await;
            },
        );
    let mut grpc = tokio::spawn(grpc);
    let service = <CacheServiceServer<grpc::ProxyService> as tonic::server::NamedService>::NAME;
    let health_follower = tokio::spawn(distcache_node::admin::follow_readiness(
        {
            let backend = backend.clone();
            move || backend.not_ready().is_none()
        },
        health.clone(),
        service,
        stop_rx.clone(),
    ));
    tracing::info!("distcache proxy serving");
    shutdown.await;
    backend
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for name in ["", service] {
        health
            .set_service_status(name, tonic_health::ServingStatus::NotServing)
            .await;
    }
    if !drain.is_zero() {
        tracing::info!(
            drain_delay_ms = drain.as_millis() as u64,
            "proxy shutting down: unready, serving for the drain delay"
        );
        tokio::time::sleep(drain).await;
    }
    tracing::info!("proxy shutting down");
    let _ = stop.send(true);
    let _ = health_follower.await;
    let deadline = tokio::time::Instant::now() + grace;
    // RESP bounds its own drain by the same grace period.
    let _ = resp.await;
    let _ = admin.await;
    match tokio::time::timeout_at(deadline, &mut grpc).await {
        Ok(Ok(r)) => r?,
        Ok(Err(_)) => tracing::warn!("gRPC front end task failed"),
        Err(_) => {
            tracing::warn!("gRPC front end did not drain in time; closing its connections");
            grpc.abort();
        }
    }
    Ok(())
}
