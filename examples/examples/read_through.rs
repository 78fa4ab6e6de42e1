//! A read-through cache in front of a slow service.
//!
//! ```text
//! cargo run -p distcache-examples --example read_through
//! ```
//!
//! Starts three distcache nodes in this process (or uses the comma-separated
//! URLs in `DISTCACHE_NODES`), then serves "user profiles" from a backend
//! that takes 100 ms per call: the first read of a user misses and loads from
//! the backend, later reads are cache hits; an update writes the backend and
//! invalidates the cache entry; finally one node is shut down and every read
//! still succeeds from the key's other replica.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use distcache::Client;
use distcache_node::{Listeners, NodeConfig};
use tokio::sync::oneshot;

/// The slow system of record the cache protects.
#[derive(Debug, Default)]
struct UserService {
    calls: AtomicU64,
}

impl UserService {
    async fn load(&self, id: u32) -> String {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        format!(r#"{{"id":{id},"name":"user-{id}"}}"#)
    }
}

/// Read-through: look in the cache, else load and fill it with a TTL.
#[derive(Debug)]
struct Profiles {
    cache: Client,
    backend: UserService,
    ttl: Duration,
}

impl Profiles {
    async fn get(&self, id: u32) -> Result<(String, bool), distcache::Error> {
        let key = format!("profile:{id}");
        if let Some(hit) = self.cache.get(&key).await? {
            return Ok((String::from_utf8_lossy(&hit.value).into_owned(), true));
        }
        let fresh = self.backend.load(id).await;
        // If-absent: a concurrent update's invalidation+refill is not
        // overwritten by this (possibly older) load.
        self.cache
            .set_if_absent(&key, &fresh, Some(self.ttl))
            .await?;
        Ok((fresh, false))
    }

    async fn rename(&self, id: u32) -> Result<(), distcache::Error> {
        // Write the system of record first, then drop the cached copy; the
        // delete leaves versioned tombstones on every replica.
        self.backend.calls.fetch_add(1, Ordering::Relaxed);
        self.cache.delete(format!("profile:{id}")).await?;
        Ok(())
    }
}

async fn start_node() -> Result<(String, oneshot::Sender<()>), Box<dyn std::error::Error>> {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", grpc.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    let mut config = NodeConfig::default();
    config.server.node_id = url.clone();
    config.server.shutdown_grace.0 = Duration::from_millis(200);
    tokio::spawn(distcache_node::run(
        Listeners { grpc, admin },
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    Ok((url, stop))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "distcache=info,distcache_node=warn".into()),
        )
        .init();
    let mut stops = Vec::new();
    let nodes: Vec<String> = match std::env::var("DISTCACHE_NODES") {
        Ok(list) => list.split(',').map(str::to_owned).collect(),
        Err(_) => {
            let mut urls = Vec::new();
            for _ in 0..3 {
                let (url, stop) = start_node().await?;
                urls.push(url);
                stops.push(stop);
            }
            urls
        }
    };
    println!("nodes: {}", nodes.join(", "));
    let profiles = Profiles {
        cache: Client::builder().nodes(nodes).replicas(2).build().await?,
        backend: UserService::default(),
        ttl: Duration::from_secs(300),
    };

    for round in 1..=2 {
        let t = Instant::now();
        let mut hits = 0;
        for id in 0..20 {
            hits += usize::from(profiles.get(id).await?.1);
        }
        println!(
            "round {round}: 20 reads, {hits} cache hits, {:.0?} (backend calls so far: {})",
            t.elapsed(),
            profiles.backend.calls.load(Ordering::Relaxed)
        );
    }

    profiles.rename(7).await?;
    let (_, hit) = profiles.get(7).await?;
    println!("after updating user 7: cache hit = {hit} (reloaded from the backend)");

    if let Some(stop) = stops.pop() {
        let _ = stop.send(());
        println!("shut down one node; reading every profile again…");
        let t = Instant::now();
        let mut hits = 0;
        for id in 0..20 {
            hits += usize::from(profiles.get(id).await?.1);
        }
        println!(
            "20 reads with a node down: {hits} cache hits, 0 errors, {:.0?}",
            t.elapsed()
        );
        for (url, healthy) in profiles.cache.health() {
            println!("  {url}: {}", if healthy { "healthy" } else { "unhealthy" });
        }
    }
    Ok(())
}
