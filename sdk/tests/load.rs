//! `Client::get_or_load` against a real node: one load for many callers,
//! callers that give up, loaders that fail or panic, and a value the cache
//! refuses.
//!
//! Loaders wait on a gate that a test opens only once every caller has
//! either joined the load or is running a loader itself, so the callers
//! really overlap. That is observed without a clock: a caller's loader is
//! dropped unused when it joins a load, so once the live loaders are
//! exactly the ones called, nobody is still on its way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use distcache::{Client, Error, LoadAborted};
use distcache_node::{Listeners, NodeConfig};
use tokio::sync::Semaphore;
use tokio::time::Instant;

const TTL: Option<Duration> = Some(Duration::from_secs(60));

/// A node on fresh loopback ports (a client's `build` waits for its first
/// health probe, so it is serving by then).
async fn node(config: NodeConfig) -> String {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    tokio::spawn(distcache_node::run(
        Listeners { grpc, admin },
        config,
        std::future::pending(),
    ));
    url
}

async fn cache() -> Client {
    cache_of(NodeConfig::default()).await
}

async fn cache_of(mut config: NodeConfig) -> Client {
    // No fence hold (for other clients that lost the node): one client,
    // which sees the node from its start.
    config.server.fence_hold.0 = Duration::ZERO;
    let url = node(config).await;
    Client::builder()
        .nodes([url])
        .replicas(1)
        .build()
        .await
        .unwrap()
}

type Answer = Result<&'static str, Refused>;
type Loading = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A backend behind a gate: counts the calls of its loaders, and every
/// loader it made and not yet dropped (each holds a clone of it).
#[derive(Clone)]
struct Backend {
    calls: Arc<AtomicU32>,
    gate: Arc<Semaphore>,
}

impl Default for Backend {
    fn default() -> Self {
        Self {
            calls: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Backend {
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// A loader that counts its call, waits for the gate, then answers.
    fn loader(&self, answer: fn() -> Answer) -> impl FnOnce() -> Loading + Send + 'static {
        let this = self.clone();
        move || {
            Box::pin(async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let _permit = this.gate.acquire().await.unwrap();
                answer()
            })
        }
    }

    /// Waits until every loader made so far was dropped unused (its caller
    /// joined a load) or was called (and waits at the gate).
    async fn all_joined(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        // This handle, plus one per live loader.
        while Arc::strong_count(&self.calls) != 1 + self.calls() as usize {
            assert!(Instant::now() < until, "callers still on their way");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    async fn open_when_all_joined(&self) {
        self.all_joined().await;
        self.open();
    }
}

/// The backend's own error type, which callers get back by downcasting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused(u16);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend refused with {}", self.0)
    }
}

impl std::error::Error for Refused {}

fn loaded() -> Answer {
    Ok("loaded")
}

fn refused() -> Answer {
    Err(Refused(503))
}

fn explode() -> Answer {
    panic!("backend exploded")
}

/// `n` callers of `get_or_load("k")`, each with a loader of `backend`.
fn callers(
    n: usize,
    cache: &Client,
    backend: &Backend,
    answer: fn() -> Answer,
) -> Vec<tokio::task::JoinHandle<distcache::Result<distcache::Bytes>>> {
    (0..n)
        .map(|_| {
            let (cache, loader) = (cache.clone(), backend.loader(answer));
            tokio::spawn(async move { cache.get_or_load("k", TTL, loader).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_of_one_key_run_the_loader_once() {
    let cache = cache().await;
    let backend = Backend::default();
    let callers = callers(50, &cache, &backend, loaded);
    backend.open_when_all_joined().await;
    for c in callers {
        assert_eq!(&c.await.unwrap().unwrap()[..], b"loaded");
    }
    assert_eq!(backend.calls(), 1);
    // Cached with its TTL; a hit does not call the loader.
    let entry = cache.get("k").await.unwrap().unwrap();
    assert_eq!(&entry.value[..], b"loaded");
    assert!(entry.ttl.is_some_and(|t| t <= Duration::from_secs(60)));
    let again = cache
        .get_or_load("k", TTL, backend.loader(refused))
        .await
        .unwrap();
    assert_eq!(&again[..], b"loaded");
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_do_not_fail_the_others() {
    let cache = cache().await;
    let backend = Backend::default();
    // The first caller starts the load.
    let first = callers(1, &cache, &backend, loaded).remove(0);
    let until = Instant::now() + Duration::from_secs(10);
    while backend.calls() == 0 {
        assert!(Instant::now() < until, "the loader was never called");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let others = callers(5, &cache, &backend, || Ok("not this one"));
    // One more, with a deadline of its own that passes while it waits.
    let hasty = {
        let (cache, loader) = (cache.clone(), backend.loader(loaded));
        tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_millis(50),
                cache.get_or_load("k", TTL, loader),
            )
            .await
        })
    };
    backend.all_joined().await;
    // The first caller is dropped while it waits (aborted), the hasty one
    // gives up by its timeout; the load goes on for the others.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert!(hasty.await.unwrap().is_err(), "its timeout fired");
    backend.open();
    for c in others {
        assert_eq!(&c.await.unwrap().unwrap()[..], b"loaded");
    }
    assert_eq!(backend.calls(), 1);
    let cached = cache.get("k").await.unwrap().unwrap();
    assert_eq!(&cached.value[..], b"loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_loader_fails_every_waiter_and_the_next_call_loads_again() {
    let cache = cache().await;
    let backend = Backend::default();
    let callers = callers(10, &cache, &backend, explode);
    backend.open_when_all_joined().await;
    for c in callers {
        match c.await.unwrap() {
            Err(Error::Load(e)) => assert_eq!(
                e.downcast_ref::<LoadAborted>(),
                Some(&LoadAborted::Panicked("backend exploded".into()))
            ),
            other => panic!("expected a load error, got {other:?}"),
        }
    }
    assert_eq!(backend.calls(), 1);
    assert!(cache.get("k").await.unwrap().is_none());
    let v = cache
        .get_or_load("k", TTL, backend.loader(|| Ok("second try")))
        .await
        .unwrap();
    assert_eq!(&v[..], b"second try");
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_error_reaches_every_waiter_and_nothing_is_cached() {
    let cache = cache().await;
    let backend = Backend::default();
    let callers = callers(10, &cache, &backend, refused);
    backend.open_when_all_joined().await;
    for c in callers {
        match c.await.unwrap() {
            Err(Error::Load(e)) => {
                assert_eq!(e.downcast_ref::<Refused>(), Some(&Refused(503)));
                assert_eq!(
                    Error::Load(e).to_string(),
                    "loader failed: backend refused with 503"
                );
            }
            other => panic!("expected a load error, got {other:?}"),
        }
    }
    assert_eq!(backend.calls(), 1);
    assert!(cache.get("k").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_cache_refuses_is_returned_uncached() {
    let mut config = NodeConfig::default();
    config.limits.max_value_bytes.0 = 16;
    let cache = cache_of(config).await;
    let big = "x".repeat(100);
    let v = cache
        .get_or_load("k", TTL, move || async move { Ok::<_, Refused>(big) })
        .await
        .unwrap();
    assert_eq!(v.len(), 100);
    assert!(cache.get("k").await.unwrap().is_none());
    assert_eq!(cache.stats().load_cache_failures, 1, "counted");
}
