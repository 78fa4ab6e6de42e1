//! The SDK's near cache against real nodes (issue 16, part 2): reads are
//! answered in process once tracked, and every change a node sees reaches
//! the cache: another client's write or delete, this client's own write (at
//! once), a TTL running out, a node that stops.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use distcache::Client;
use distcache_tests::{BoxError, TestNode, eventually, test_config};

const LIMIT: Duration = Duration::from_secs(10);

async fn value(c: &Client, k: &str) -> Option<String> {
    c.get(k)
        .await
        .expect("get")
        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
}

/// Reads `k` until the near cache answers it (the node streams subscribe
/// in the background after `build`).
async fn until_cached(c: &Client, k: &str) {
    eventually(LIMIT, || async {
        let before = c.stats().near_hits;
        let _ = c.get(k).await;
        c.stats().near_hits > before
    })
    .await
    .expect("the near cache answers once the key is tracked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_cache_serves_reads_and_follows_every_change() -> Result<(), BoxError> {
    let nodes = [
        TestNode::start(test_config()).await,
        TestNode::start(test_config()).await,
    ];
    let urls: Vec<String> = nodes.iter().map(TestNode::url).collect();
    let cached = Client::builder()
        .nodes(urls.clone())
        .replicas(2)
        .near_cache(1 << 20)
        .build()
        .await?;
    let other = Client::builder().nodes(urls).replicas(2).build().await?;
    other.set("k", "v1", None).await?;
    until_cached(&cached, "k").await;
    assert_eq!(value(&cached, "k").await.as_deref(), Some("v1"));

    // Another client's write and delete reach it.
    other.set("k", "v2", None).await?;
    eventually(LIMIT, || async {
        value(&cached, "k").await.as_deref() == Some("v2")
    })
    .await?;
    until_cached(&cached, "k").await;
    other.delete("k").await?;
    eventually(LIMIT, || async { value(&cached, "k").await.is_none() }).await?;
    // An absent key is cached as absent, and its creation reaches it.
    until_cached(&cached, "k").await;
    assert_eq!(value(&cached, "k").await, None);
    other.set("k", "v3", None).await?;
    eventually(LIMIT, || async {
        value(&cached, "k").await.as_deref() == Some("v3")
    })
    .await?;

    // Its own writes are seen at once.
    until_cached(&cached, "k").await;
    for i in 0..20 {
        let v = format!("mine{i}");
        cached.set("k", &v, None).await?;
        assert_eq!(value(&cached, "k").await.as_deref(), Some(v.as_str()));
    }
    until_cached(&cached, "n").await;
    assert_eq!(cached.incr_by("n", 5).await?, 5);
    assert_eq!(value(&cached, "n").await.as_deref(), Some("5"));

    // A TTL runs out here as on the node, with no invalidation.
    other
        .set("t", "short", Some(Duration::from_millis(300)))
        .await?;
    until_cached(&cached, "t").await;
    eventually(LIMIT, || async { value(&cached, "t").await.is_none() }).await?;

    let s = cached.stats();
    assert!(
        s.near_hits > 0 && s.near_misses > 0 && s.near_invalidations > 0,
        "{s:?}"
    );
    assert!(s.near_entries > 0);
    for n in nodes {
        n.stop().await?;
    }
    Ok(())
}

/// A node whose stream ends voids what was read from it: the next read
/// goes to a node (here the other replica), not to the stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_takes_its_entries_with_it() -> Result<(), BoxError> {
    let nodes = [
        TestNode::start(test_config()).await,
        TestNode::start(test_config()).await,
    ];
    let urls: Vec<String> = nodes.iter().map(TestNode::url).collect();
    let cached = Client::builder()
        .nodes(urls.clone())
        .replicas(2)
        .near_cache(1 << 20)
        .probe_interval(Duration::from_millis(100))
        .build()
        .await?;
    cached.set("k", "v1", None).await?;
    until_cached(&cached, "k").await;
    let owners = cached.owners("k");
    let [first, second] = [0, 1].map(|i| {
        nodes
            .iter()
            .position(|n| n.url() == owners[i])
            .expect("an owner")
    });
    // The key changes on the second replica only (as if written while the
    // first was away), and the first stops.
    let mut raw = nodes[second].client().await;
    raw.set(distcache_proto::v1::SetRequest {
        key: "k".into(),
        value: "v2".into(),
        version: distcache_proto::version_floor(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64
                + 1_000,
        ),
        ..Default::default()
    })
    .await?;
    let [a, b] = nodes;
    let (stopped, kept) = if first == 0 { (a, b) } else { (b, a) };
    stopped.stop().await?;
    eventually(LIMIT, || async {
        value(&cached, "k").await.as_deref() == Some("v2")
    })
    .await?;
    kept.stop().await?;
    Ok(())
}
