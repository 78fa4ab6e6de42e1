//! Killable nodes for SDK fault tests: each [`ClusterNode`] runs on its own
//! tokio runtime, so a test can kill it the hard way (the runtime is shut
//! down: sockets close mid-request, as when a process dies) and restart it,
//! empty, on the same address.

use std::net::SocketAddr;
use std::time::Duration;

use distcache_node::{Listeners, NodeConfig};
use distcache_proto::v1::cache_service_client::CacheServiceClient;
use distcache_proto::v1::{GetRequest, GetResponse, HealthCheckRequest, ServingStatus, SetRequest};
use tonic::transport::Channel;

/// Why a test node could not start.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A node running in-process on its own runtime.
#[derive(Debug)]
pub struct ClusterNode {
    /// The gRPC address.
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ClusterNode {
    /// Starts a node on a free loopback port and waits until it serves.
    pub async fn start() -> Result<Self, BoxError> {
        Self::start_at("127.0.0.1:0".parse()?).await
    }

    /// Starts an empty node on `addr` (e.g. the address of a killed node).
    pub async fn start_at(addr: SocketAddr) -> Result<Self, BoxError> {
        Self::start_named(addr, None).await
    }

    /// Starts an empty node on `addr` that reports `node_id` in its health
    /// answers (`None`: its address, as [`ClusterNode::start_at`]).
    pub async fn start_named(addr: SocketAddr, node_id: Option<&str>) -> Result<Self, BoxError> {
        let grpc = std::net::TcpListener::bind(addr)?;
        let admin = std::net::TcpListener::bind("127.0.0.1:0")?;
        grpc.set_nonblocking(true)?;
        admin.set_nonblocking(true)?;
        let addr = grpc.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let mut config = NodeConfig::default();
        config.server.node_id = node_id.map_or_else(|| addr.to_string(), str::to_owned);
        config.server.shutdown_grace.0 = Duration::from_millis(100);
        runtime.spawn(async move {
            let listeners = Listeners {
                grpc: tokio::net::TcpListener::from_std(grpc)?,
                admin: tokio::net::TcpListener::from_std(admin)?,
            };
            distcache_node::run(listeners, config, std::future::pending())
                .await
                .map_err(|e| -> BoxError { Box::new(e) })
        });
        let node = Self {
            addr,
            runtime: Some(runtime),
        };
        node.wait_serving().await?;
        Ok(node)
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the node abruptly: its runtime stops, its sockets close.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// A raw gRPC stub to this node (bypassing the SDK).
    pub async fn raw(&self) -> Result<CacheServiceClient<Channel>, BoxError> {
        Ok(CacheServiceClient::connect(self.url()).await?)
    }

    /// Reads `key` straight from this node.
    pub async fn raw_get(&self, key: &str) -> Result<GetResponse, BoxError> {
        let req = GetRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        };
        Ok(self.raw().await?.get(req).await?.into_inner())
    }

    /// Writes `key` straight to this node at `version` (0: node assigns),
    /// e.g. to simulate data recovered from an old WAL.
    pub async fn raw_set(&self, key: &str, value: &str, version: u64) -> Result<(), BoxError> {
        let req = SetRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            version,
            ..SetRequest::default()
        };
        self.raw().await?.set(req).await?;
        Ok(())
    }

    async fn wait_serving(&self) -> Result<(), BoxError> {
        let url = self.url();
        eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let Ok(mut c) = CacheServiceClient::connect(url).await else {
                    return false;
                };
                matches!(c.health_check(HealthCheckRequest {}).await,
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
            }
        })
        .await
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts an empty node on `addr` again (a restart of a killed node),
/// retrying until the killed one let go of the port.
pub async fn restart_at(addr: SocketAddr) -> Result<ClusterNode, BoxError> {
    restart_named(addr, None).await
}

/// [`restart_at`] with the node reporting `node_id` (see
/// [`ClusterNode::start_named`]).
pub async fn restart_named(
    addr: SocketAddr,
    node_id: Option<&str>,
) -> Result<ClusterNode, BoxError> {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ClusterNode::start_named(addr, node_id).await {
            Ok(n) => return Ok(n),
            Err(e) if std::time::Instant::now() < until => {
                drop(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Starts `n` nodes.
pub async fn cluster(n: usize) -> Result<Vec<ClusterNode>, BoxError> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(ClusterNode::start().await?);
    }
    Ok(nodes)
}

/// The URLs of `nodes`.
pub fn urls(nodes: &[ClusterNode]) -> Vec<String> {
    nodes.iter().map(ClusterNode::url).collect()
}

/// Polls `check` (every 10 ms) until it returns true; fails after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("condition not met in time".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client builder for `nodes` with deadlines generous enough for debug
/// builds on a loaded machine: tests check behaviour, not speed.
pub fn client(nodes: &[ClusterNode]) -> distcache::ClientBuilder {
    distcache::Client::builder()
        .nodes(urls(nodes))
        .timeout(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(3))
}
