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
//!
//! # Layout
//!
//! Top-down; a module uses only those below it.
//!
//! - this file: [`run`], which starts every front end and drains them.
//! - [`resp`]: the Redis front end: `server` (accept loop, connection loop,
//!   pipeline scheduler), `session` (HELLO and the RESP2/RESP3 switch),
//!   `auth`, `exec` (commands → SDK), `command` (what a command is), `codec`
//!   (both protocols), `output`, `per_ip`.
//! - [`grpc`]: `CacheService` over the SDK.
//! - [`admin`]: `/metrics`, `/metrics.json`, `/livez`, `/readyz`, `/ring`.
//! - [`membership`]: where the node list comes from at run time.
//! - [`backend`]: the SDK client and the proxy's metrics, shared by all.
//! - [`metrics`], [`security`], [`config`], [`cli`]: leaves; `spans.rs`:
//!   the tracing span of each gRPC request and RESP command.
//! - [`dev`]: `--dev`'s in-process nodes (feature `dev`, on by default: the
//!   only module that links `distcache-node`).

pub mod admin;
pub mod backend;
pub mod cli;
pub mod config;
pub mod dev;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod membership;
pub mod metrics;
pub mod resp;
pub mod security;
mod spans;

use std::future::Future;
use std::sync::Arc;

use distcache::proto::cache_service_server::CacheServiceServer;
use distcache_serve::security::live_tls::incoming;
use distcache_serve::stopped;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;

pub use backend::Backend;
pub use config::{
    DEFAULT_GRPC_MAX_CONCURRENT_STREAMS, DEFAULT_GRPC_MAX_IN_FLIGHT, DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_SHUTDOWN_GRACE,
    FrontendConfig,
};
pub use security::FrontSecurity;

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
    let grpc_tls = config.security.grpc_tls.clone();
    let auth = config
        .security
        .grpc_layer(config.grpc_max_in_flight, backend.metrics.security.clone());
    let resp_config = resp::server::RespConfig {
        limits: config.resp_limits,
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        login_timeout: config.login_timeout,
        shutdown_grace: config.shutdown_grace,
        security: config.security,
    };
    let resp = tokio::spawn(resp::server::serve(
        listeners.resp,
        backend.clone(),
        resp_config,
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
    let reflection_v1 = distcache_serve::reflection().build_v1()?;
    let reflection_v1alpha = distcache_serve::reflection().build_v1alpha()?;
    let mut grpc_stop = stop_rx.clone();
    let grpc = Server::builder()
        .trace_fn(spans::rpc)
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
            incoming(listeners.grpc, grpc_connections, grpc_tls),
            async move {
                stopped(&mut grpc_stop).await;
            },
        );
    let mut grpc = tokio::spawn(grpc);
    let service = <CacheServiceServer<grpc::ProxyService> as tonic::server::NamedService>::NAME;
    let health_follower = tokio::spawn(distcache_serve::admin::follow_readiness(
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
