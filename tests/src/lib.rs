//! Helpers for end-to-end tests: start real nodes in-process on `127.0.0.1:0`,
//! wait until they answer health checks, stop them.
//!
//! # Layout
//!
//! - this file: `TestNode`, one node on port 0, polled healthy, stopped.
//! - [`cluster`]: several nodes and an SDK client over them.
//! - [`dns`]: `TestDns`, a DNS server on loopback answering from a table.
//! - [`proxy`]: `TestProxy`, a proxy in front of a cluster.
//! - [`procs`]: the node and proxy binaries as child processes (signals).
//! - [`tls`]: throw-away certificates.
//!
//! The tests themselves are `tests/*.rs`, one file per subject.

// Test support: a failed set-up should stop the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod cluster;
pub mod dns;
pub mod procs;
pub mod proxy;
pub mod tls;

pub use cluster::{
    BoxError, ClusterNode, client, cluster, eventually, restart_at, restart_named, urls,
};
pub use dns::{TestDns, Zone};
pub use proxy::TestProxy;

use std::net::SocketAddr;
use std::time::Duration;

use distcache_node::{Listeners, NodeConfig};
use distcache_proto::v1::cache_service_client::CacheServiceClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A node running in this process.
#[derive(Debug)]
pub struct TestNode {
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), distcache_node::NodeError>>,
}

/// Writes a file only its owner can read (mode 0600), as secret files must
/// be: a node or proxy refuses a secret file every user can read.
pub fn write_private(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
}

/// A small config suitable for tests (16 shards, 64 MiB).
pub fn test_config() -> NodeConfig {
    let mut c = NodeConfig::default();
    c.store.shards = 16;
    c.store.max_memory.0 = 64 << 20;
    c.server.shutdown_grace.0 = Duration::from_secs(5);
    // No fence hold (default 1 s): it makes every client built against a
    // fresh node wait a second, and protects only other clients that lost
    // the node. The killable nodes of `cluster.rs` and the checker keep it.
    c.server.fence_hold.0 = Duration::ZERO;
    c
}

impl TestNode {
    /// Starts a node with `config` on fresh loopback ports and waits until it
    /// answers a health check.
    pub async fn start(config: NodeConfig) -> Self {
        let node = Self::spawn(config).await;
        node.wait_healthy().await;
        node
    }

    /// Starts a node without waiting for it: for nodes that need TLS or a
    /// token, whose callers poll health their own way.
    pub async fn spawn(config: NodeConfig) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (grpc_addr, admin_addr) = (
            grpc.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(distcache_node::run(
            Listeners { grpc, admin },
            config,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            grpc: grpc_addr,
            admin: admin_addr,
            stop: Some(tx),
            task,
        }
    }

    /// The node's gRPC URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A connected client.
    pub async fn client(&self) -> CacheServiceClient<Channel> {
        CacheServiceClient::connect(self.url())
            .await
            .expect("connect")
    }

    /// Polls the health check until it answers (at most ~10 s).
    pub async fn wait_healthy(&self) {
        for _ in 0..200 {
            if let Ok(mut c) = CacheServiceClient::connect(self.url()).await
                && c.health_check(distcache_proto::v1::HealthCheckRequest {})
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node at {} never became healthy", self.grpc);
    }

    /// Signals shutdown and waits for the node to return.
    pub async fn stop(mut self) -> Result<(), distcache_node::NodeError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.expect("node task panicked")
    }
}

/// GETs `path` from an HTTP server with a bare HTTP/1.0 request; returns
/// (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
