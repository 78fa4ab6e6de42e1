//! A proxy serving in this process, on fresh loopback ports, over an SDK
//! client: what the proxy's end-to-end tests start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use distcache_proxy::{Backend, FrontendConfig, Listeners, ProxyError, resp};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running `distcache_proxy::run`.
#[derive(Debug)]
pub struct TestProxy {
    /// RESP address.
    pub resp: SocketAddr,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// What the front ends serve from.
    pub backend: Arc<Backend>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ProxyError>>,
}

/// Front-end settings for tests: default RESP limits, 64 connections.
pub fn frontend() -> FrontendConfig {
    FrontendConfig {
        resp_limits: resp::Limits::default(),
        max_connections: 64,
        ..FrontendConfig::default()
    }
}

impl TestProxy {
    /// The backend proxy tests use over `nodes`: 2 replicas, deadlines
    /// generous enough for debug builds on a loaded machine (tests check
    /// behaviour, not speed).
    pub async fn backend(nodes: Vec<String>) -> Arc<Backend> {
        Self::backend_with(nodes, distcache::RebalanceConfig::default()).await
    }

    /// [`TestProxy::backend`] whose membership changes move data as `r` says.
    pub async fn backend_with(nodes: Vec<String>, r: distcache::RebalanceConfig) -> Arc<Backend> {
        let client = distcache::Client::builder()
            .nodes(nodes)
            .replicas(2)
            .timeout(Duration::from_secs(10))
            .attempt_timeout(Duration::from_secs(3))
            .rebalance(r)
            .build()
            .await
            .expect("client");
        Arc::new(Backend::new(client, 2))
    }

    /// Serves `backend` with `config` on fresh loopback ports.
    pub async fn start(backend: Arc<Backend>, config: FrontendConfig) -> Self {
        let bind = || TcpListener::bind("127.0.0.1:0");
        let listeners = Listeners {
            grpc: bind().await.expect("bind"),
            resp: bind().await.expect("bind"),
            admin: bind().await.expect("bind"),
        };
        let (resp, grpc, admin) = (
            listeners.resp.local_addr().expect("addr"),
            listeners.grpc.local_addr().expect("addr"),
            listeners.admin.local_addr().expect("addr"),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(distcache_proxy::run(
            listeners,
            backend.clone(),
            config,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            resp,
            grpc,
            admin,
            backend,
            stop: Some(tx),
            task,
        }
    }

    /// `/ring`'s nodes, as (ring name, URL), sorted by name.
    pub async fn ring_members(&self) -> Vec<(String, String)> {
        let ring = self.ring_json().await;
        let mut nodes: Vec<(String, String)> = ring["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                let field = |f: &str| n[f].as_str().expect(f).to_owned();
                (field("node"), field("url"))
            })
            .collect();
        nodes.sort();
        nodes
    }

    /// `/ring`'s phase: `stable`, or `moving` while a membership change
    /// moves data.
    pub async fn phase(&self) -> String {
        self.ring_json().await["phase"]
            .as_str()
            .expect("phase")
            .to_owned()
    }

    /// `/ring`, parsed.
    pub async fn ring_json(&self) -> serde_json::Value {
        let (status, body) = crate::http_get(self.admin, "/ring").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("ring JSON")
    }

    /// The value of an unlabelled series of `/metrics`, or the sum over a
    /// family's labels.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = crate::http_get(self.admin, "/metrics").await;
        text.lines()
            .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Starts shutdown and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), ProxyError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("proxy task panicked")
    }
}
