//! `--dev`: three memory-only nodes in this process, on loopback ports the
//! kernel picks, so one command gives a working cluster to try.
//!
//! The only place the proxy links the storage node, behind the default-on
//! `dev` feature; built without it, `--dev` fails at start-up saying so.

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Nodes running in this process.
#[derive(Debug)]
pub struct DevCluster {
    /// Their gRPC URLs.
    pub urls: Vec<String>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl DevCluster {
    /// Starts `n` nodes of 256 MiB each.
    #[cfg(feature = "dev")]
    pub async fn start(n: usize) -> std::io::Result<Self> {
        use distcache_node::{Listeners, NodeConfig};
        use tokio::net::TcpListener;

        let (stop, rx) = watch::channel(false);
        let mut urls = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let grpc = TcpListener::bind("127.0.0.1:0").await?;
            let admin = TcpListener::bind("127.0.0.1:0").await?;
            let addr = grpc.local_addr()?;
            let mut config = NodeConfig::default();
            config.server.node_id = format!("dev-{}", i + 1);
            config.store.max_memory.0 = 256 << 20;
            let mut rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                let shutdown = async move { distcache_serve::stopped(&mut rx).await };
                if let Err(e) =
                    distcache_node::run(Listeners { grpc, admin }, config, shutdown).await
                {
                    tracing::error!(error = %e, "dev node failed");
                }
            }));
            tracing::info!(node = i + 1, %addr, "dev node started");
            urls.push(format!("http://{addr}"));
        }
        Ok(Self { urls, stop, tasks })
    }

    /// Fails: this proxy was built without the `dev` feature.
    #[cfg(not(feature = "dev"))]
    pub async fn start(_n: usize) -> std::io::Result<Self> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "--dev needs a distcache-proxy built with the `dev` feature (on by default)",
        ))
    }

    /// Stops every node and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
