//! `Client::set_nodes`: membership changes of a live client against real
//! nodes: keys follow the new ring, removed nodes get nothing once the
//! move is done, and operations running through changes all succeed and
//! read what they wrote. (What moves, and under load with two clients:
//! `resharding.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use distcache::RebalanceConfig;
use distcache::ring::{DEFAULT_VNODES, Ring};
use distcache_tests::{BoxError, client, cluster, eventually, urls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_node_takes_its_share_of_the_keys() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    let all = urls(&nodes);
    let cache = client(&nodes[..2]).replicas(1).build().await?;
    let change = cache.set_nodes(&all)?;
    assert_eq!(change.added, [all[2].clone()]);
    assert!(change.removed.is_empty());
    assert_eq!(cache.ring().len(), 3);
    assert_eq!(cache.stats().membership_changes, 1);

    // Placement is the ring's over the new list, the same as a fresh client's.
    let fresh = Ring::new(all.clone(), DEFAULT_VNODES);
    let mut moved = 0;
    for i in 0..200 {
        let key = format!("grow:{i}");
        let owner = cache.owners(&key)[0].clone();
        assert_eq!(owner, fresh.node(fresh.primary(key.as_bytes()).unwrap()));
        cache.set(&key, format!("v{i}"), None).await?;
        if owner == all[2] {
            moved += 1;
            // During the move the old owner takes the write too, and may
            // be the one that acknowledged it.
            let want = format!("v{i}");
            eventually(Duration::from_secs(10), || async {
                let held = nodes[2].raw_get(&key).await.expect("raw get");
                held.found && held.value == want.as_bytes()
            })
            .await?;
        }
    }
    // About a third of the keys; far from none and far from all.
    assert!((30..=120).contains(&moved), "{moved} of 200 keys moved");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_receives_nothing_afterwards() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    let all = urls(&nodes);
    let cache = client(&nodes)
        .rebalance(RebalanceConfig {
            grace: Duration::ZERO,
            ..RebalanceConfig::default()
        })
        .build()
        .await?;
    let change = cache.set_nodes(&all[..2])?;
    assert_eq!(change.removed, [all[2].clone()]);
    assert!(change.added.is_empty());
    let health: Vec<String> = cache.health().into_iter().map(|(u, _)| u).collect();
    assert_eq!(health, all[..2]);
    // Until the move is done the removed node takes writes too (its keys
    // are being copied away); then nothing.
    assert!(cache.moving().is_some());
    eventually(Duration::from_secs(10), || async {
        cache.moving().is_none()
    })
    .await?;
    assert_eq!(cache.stats().moves, 1);

    let mut pairs = Vec::new();
    for i in 0..100 {
        pairs.push((format!("shrink:m{i}"), format!("v{i}")));
        let key = format!("shrink:{i}");
        cache.set(&key, "v", None).await?;
        assert_eq!(cache.get(&key).await?.map(|e| e.value), Some("v".into()));
        assert!(cache.owners(&key).iter().all(|o| o != &all[2]));
        assert!(
            !nodes[2].raw_get(&key).await?.found,
            "{key} reached a removed node"
        );
    }
    cache.mset(&pairs, None).await?;
    for (key, _) in &pairs {
        assert!(
            !nodes[2].raw_get(key).await?.found,
            "{key} reached a removed node"
        );
    }

    // An empty list is refused and changes nothing.
    let none: [&str; 0] = [];
    assert!(matches!(
        cache.set_nodes(none),
        Err(distcache::Error::Config(_))
    ));
    assert!(cache.set_nodes(["http://[::1"]).is_err());
    assert_eq!(cache.ring().nodes(), &all[..2]);
    // The same set again is no change.
    assert!(cache.set_nodes([&all[1], &all[0]])?.is_empty());
    assert_eq!(cache.stats().membership_changes, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_during_membership_changes_all_succeed() -> Result<(), BoxError> {
    let nodes = cluster(4).await?;
    let all = urls(&nodes);
    let cache = client(&nodes[..3]).build().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (cache, stop, ops) = (cache.clone(), stop.clone(), ops.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 50 {
                let key = format!("churn:{w}:{}", i % 64);
                let value = format!("{w}/{i}");
                cache.set(&key, &value, None).await?;
                // A change between the write and the read moves the key:
                // the read asks its old and new owners, never missing it.
                let e = cache.get(&key).await?;
                assert_eq!(e.map(|e| e.value), Some(value.clone().into()), "{key}");
                cache
                    .mset(&[(format!("{key}:m"), value.clone())], None)
                    .await?;
                cache.mget(&[format!("{key}:m")]).await?;
                ops.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, distcache::Error>(())
        }));
    }
    let lists = [
        vec![&all[1], &all[2], &all[3]],
        vec![&all[0], &all[3]],
        vec![&all[0], &all[1], &all[2], &all[3]],
        vec![&all[0], &all[1], &all[2]],
    ];
    let mut changes = 0;
    for round in 0..24 {
        // Let some operations start on each membership.
        let seen = ops.load(Ordering::Relaxed);
        eventually(Duration::from_secs(10), || async {
            ops.load(Ordering::Relaxed) >= seen + 5
        })
        .await?;
        if !cache
            .set_nodes(lists[round % lists.len()].clone())?
            .is_empty()
        {
            changes += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await??;
    }
    assert_eq!(cache.stats().membership_changes, changes);
    assert!(changes >= 20);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prober_checks_nodes_added_later() -> Result<(), BoxError> {
    let nodes = cluster(1).await?;
    let cache = client(&nodes)
        .probe_interval(Duration::from_millis(50))
        .build()
        .await?;
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", l.local_addr()?)
    };
    cache.set_nodes([nodes[0].url(), dead.clone()])?;
    eventually(Duration::from_secs(10), || async {
        cache.health().iter().any(|(u, h)| u == &dead && !h)
    })
    .await?;
    assert!(
        cache
            .health()
            .iter()
            .any(|(u, h)| u == &nodes[0].url() && *h)
    );
    Ok(())
}
