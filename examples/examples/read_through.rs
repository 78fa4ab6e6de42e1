//! A read-through cache in front of a slow service, with
//! `Client::get_or_load`.
//!
//! ```text
//! cargo run -p distcache-examples --example read_through
//! ```
//!
//! On three nodes started in this process (or the comma-separated URLs in
//! `DISTCACHE_NODES`), "user profiles" come from a backend that takes
//! 100 ms per call:
//!
//! 1. 100 concurrent requests for one profile nobody has cached: one
//!    backend call (the others wait for it: single-flight).
//! 2. A page of 20 profiles, twice: the first loads the 19 not cached yet,
//!    the second is all cache hits.
//! 3. An update writes the backend, then deletes the cached copy; the next
//!    read loads the new profile.
//! 4. One node shuts down (in-process nodes only) and every read still
//!    succeeds, from each key's other replica.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use distcache::{Bytes, Client};
use distcache_examples::{Cluster, NODES_ENV};
use tokio::task::JoinSet;

/// The slow system of record the cache protects.
#[derive(Debug)]
struct UserService {
    latency: Duration,
    renamed: Mutex<HashMap<u32, String>>,
    calls: AtomicU64,
}

impl UserService {
    async fn load(&self, id: u32) -> Result<String, Infallible> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        let renamed = self.renamed.lock().ok().and_then(|r| r.get(&id).cloned());
        let name = renamed.unwrap_or_else(|| format!("user-{id}"));
        Ok(format!(r#"{{"id":{id},"name":"{name}"}}"#))
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Profiles, read through the cache.
#[derive(Debug)]
struct Profiles {
    cache: Client,
    backend: Arc<UserService>,
    ttl: Duration,
}

impl Profiles {
    /// A profile: cached, or loaded once however many callers miss it.
    async fn get(&self, id: u32) -> Result<Bytes, distcache::Error> {
        let backend = self.backend.clone();
        self.cache
            .get_or_load(
                format!("profile:{id}"),
                Some(self.ttl),
                move || async move { backend.load(id).await },
            )
            .await
    }

    /// Writes the system of record first, then drops the cached copy (a
    /// versioned tombstone on every replica), so the next read loads it.
    async fn rename(&self, id: u32, name: &str) -> Result<(), distcache::Error> {
        if let Ok(mut r) = self.backend.renamed.lock() {
            r.insert(id, name.to_owned());
        }
        self.cache.delete(format!("profile:{id}")).await?;
        Ok(())
    }

    /// Reads profiles `ids` concurrently; how many succeeded.
    async fn page(self: &Arc<Self>, ids: std::ops::Range<u32>) -> usize {
        let mut reads = JoinSet::new();
        for id in ids {
            let profiles = self.clone();
            reads.spawn(async move { profiles.get(id).await });
        }
        let mut ok = 0;
        while let Some(read) = reads.join_next().await {
            match read {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(e)) => eprintln!("a read failed: {e}"),
                Err(e) => eprintln!("a read panicked: {e}"),
            }
        }
        ok
    }
}

/// Backend calls each step made.
#[derive(Debug)]
struct Report {
    stampede: u64,
    first_page: u64,
    second_page: u64,
    after_update: u64,
    /// Reads that succeeded with one node stopped (of 20), and the backend
    /// calls they made; `None` on given nodes.
    node_down: Option<(usize, u64)>,
}

async fn run(
    cluster: &mut Cluster,
    latency: Duration,
) -> Result<Report, Box<dyn std::error::Error>> {
    let profiles = Arc::new(Profiles {
        cache: cluster.client().await?,
        backend: Arc::new(UserService {
            latency,
            renamed: Mutex::default(),
            calls: AtomicU64::new(0),
        }),
        ttl: Duration::from_secs(300),
    });
    let calls = || profiles.backend.calls();
    // Keys of an earlier run against the same nodes would be hits.
    for id in 0..20 {
        profiles.cache.delete(format!("profile:{id}")).await?;
    }

    let t = Instant::now();
    let mut stampede = JoinSet::new();
    for _ in 0..100 {
        let profiles = profiles.clone();
        stampede.spawn(async move { profiles.get(7).await });
    }
    while let Some(read) = stampede.join_next().await {
        read??;
    }
    let stampede = calls();
    println!(
        "100 concurrent reads of profile 7, none cached: {stampede} backend call, {:.0?}",
        t.elapsed()
    );

    let mut page = [0; 2];
    for (round, loads) in page.iter_mut().enumerate() {
        let (before, t) = (calls(), Instant::now());
        let ok = profiles.page(0..20).await;
        *loads = calls() - before;
        println!(
            "page of 20 profiles, round {}: {ok} reads ok, {loads} backend calls, {:.0?}",
            round + 1,
            t.elapsed()
        );
    }

    let before = calls();
    profiles.rename(7, "Alice").await?;
    let fresh = profiles.get(7).await?;
    let after_update = calls() - before;
    println!(
        "after renaming user 7: {} ({after_update} backend call)",
        String::from_utf8_lossy(&fresh)
    );

    let node_down = match cluster.stop_one().await {
        None => None,
        Some(url) => {
            let (before, t) = (calls(), Instant::now());
            let ok = profiles.page(0..20).await;
            let loads = calls() - before;
            println!(
                "stopped {url}; page of 20: {ok} reads ok, {loads} backend calls, {:.0?}",
                t.elapsed()
            );
            for (url, healthy) in profiles.cache.health() {
                println!("  {url}: {}", if healthy { "healthy" } else { "unhealthy" });
            }
            Some((ok, loads))
        }
    };
    Ok(Report {
        stampede,
        first_page: page[0],
        second_page: page[1],
        after_update,
        node_down,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    distcache_examples::init_tracing();
    let mut cluster = Cluster::from_list_or_start(std::env::var(NODES_ENV).ok()).await?;
    println!("nodes: {}", cluster.urls().join(", "));
    let r = run(&mut cluster, Duration::from_millis(100)).await?;
    let down = r.node_down.map_or(0, |(_, loads)| loads);
    println!(
        "backend calls: {} in all ({} stampede, {} + {} pages, {} update, {down} node down)",
        r.stampede + r.first_page + r.second_page + r.after_update + down,
        r.stampede,
        r.first_page,
        r.second_page,
        r.after_update,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_concurrent_misses_load_once_and_a_node_down_fails_no_read() {
        let mut cluster = Cluster::start(3).await.unwrap();
        let r = run(&mut cluster, Duration::from_millis(100)).await.unwrap();
        assert_eq!(r.stampede, 1, "{r:?}");
        assert_eq!(r.first_page, 19, "{r:?}");
        assert_eq!(r.second_page, 0, "{r:?}");
        assert_eq!(r.after_update, 1, "{r:?}");
        assert_eq!(r.node_down.map(|(ok, _)| ok), Some(20), "{r:?}");
    }
}
