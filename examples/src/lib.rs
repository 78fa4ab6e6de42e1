//! Example applications that use distcache; each is an `examples/*.rs`
//! file, run with `cargo run -p distcache-examples --example NAME`, and
//! tested by `cargo test -p distcache-examples` (the tests at the bottom of
//! each file run its logic on an in-process cluster).
//!
//! This library holds only what every example needs and none is about:
//! [`Cluster`], the nodes an example talks to (the URLs in
//! `DISTCACHE_NODES`, or three nodes started in this process), and
//! [`init_tracing`].
//!
//! # Layout
//!
//! - `read_through`: `Client::get_or_load` in front of a slow "user
//!   service": 100 concurrent misses load once; keeps serving while one
//!   node shuts down.
//! - `session_store`: an axum web service keeping sessions in the cache
//!   (TTL), with a shopping cart updated by concurrent requests through
//!   compare-and-swap and a retry loop.
//! - `lock`: a distributed lock (set-if-absent with a TTL and a random
//!   token, released by compare-and-swap on its version).
//! - `leaderboard`: counters (`incr_by`) read back with one `mget`.
//! - `python/rate_limiter.py` (not a Rust example): a fixed-window rate
//!   limiter over the Redis protocol, through `distcache-proxy --dev`.

use std::time::Duration;

use distcache::Client;
use distcache_node::{Listeners, NodeConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The environment variable the examples' `main`s read node URLs from
/// (comma-separated); unset, they start a cluster in-process.
pub const NODES_ENV: &str = "DISTCACHE_NODES";

/// Nodes an in-process cluster starts with.
pub const IN_PROCESS_NODES: usize = 3;

/// How long a stopped in-process node keeps serving after the signal
/// (its shutdown grace): short, the examples stop nodes on purpose.
const NODE_GRACE: Duration = Duration::from_millis(200);

/// The nodes an example talks to: given ones, or nodes it started itself
/// (stopped when this is dropped).
#[derive(Debug)]
pub struct Cluster {
    urls: Vec<String>,
    started: Vec<StartedNode>,
}

#[derive(Debug)]
struct StartedNode {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), distcache_node::NodeError>>,
}

impl Cluster {
    /// The nodes in `list` (comma-separated URLs, the value of
    /// [`NODES_ENV`]) when given and not blank; else
    /// [`IN_PROCESS_NODES`] nodes started here.
    pub async fn from_list_or_start(list: Option<String>) -> std::io::Result<Self> {
        match list.filter(|l| !l.trim().is_empty()) {
            Some(list) => Ok(Self {
                urls: list.split(',').map(|u| u.trim().to_owned()).collect(),
                started: Vec::new(),
            }),
            None => Self::start(IN_PROCESS_NODES).await,
        }
    }

    /// Starts `n` nodes in this process, on loopback ports the kernel
    /// picks. Each is bound when this returns; a client's `build` waits for
    /// its first health probe.
    pub async fn start(n: usize) -> std::io::Result<Self> {
        let mut started = Vec::with_capacity(n);
        for _ in 0..n {
            let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", grpc.local_addr()?);
            let (stop, stopped) = oneshot::channel::<()>();
            let mut config = NodeConfig::default();
            config.server.node_id = url.clone();
            config.server.shutdown_grace.0 = NODE_GRACE;
            // No fence hold (1 s by default, for clients elsewhere that lost
            // the node): this process's clients see every node from its start.
            config.server.fence_hold.0 = Duration::ZERO;
            let task = tokio::spawn(distcache_node::run(
                Listeners { grpc, admin },
                config,
                async move {
                    let _ = stopped.await;
                },
            ));
            started.push(StartedNode { url, stop, task });
        }
        Ok(Self {
            urls: started.iter().map(|n| n.url.clone()).collect(),
            started,
        })
    }

    /// The node URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Whether the nodes run in this process (so one can be stopped).
    pub fn in_process(&self) -> bool {
        !self.started.is_empty()
    }

    /// A client of these nodes, each key on two of them.
    pub async fn client(&self) -> Result<Client, distcache::Error> {
        Client::builder()
            .nodes(self.urls.iter())
            .replicas(2)
            .build()
            .await
    }

    /// Stops the last node started here and waits until it has exited;
    /// its URL, or `None` for given nodes (they are not this process's).
    pub async fn stop_one(&mut self) -> Option<String> {
        let node = self.started.pop()?;
        let _ = node.stop.send(());
        let _ = node.task.await;
        Some(node.url)
    }
}

/// Logs to stderr: `RUST_LOG` when set, else the SDK's warnings (a node
/// marked unhealthy, …) and the in-process nodes' errors.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "distcache=warn,distcache_node=error,distcache_serve=error".into()
            }),
        )
        .init();
}
