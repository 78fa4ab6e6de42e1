//! The SDK's operations against a real 3-node cluster, and routing agreement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use distcache::{Client, CoalesceConfig, Condition, Consistency};
use distcache_tests::{BoxError, client, cluster, urls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_round_trip() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    exercise(&client(&nodes).build().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_round_trip_without_coalescing() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    let off = CoalesceConfig {
        max_batch: 1,
        ..CoalesceConfig::default()
    };
    exercise(&client(&nodes).coalesce(off).build().await?).await
}

/// Timeouts too long to add to a clock reading (`Duration::MAX`, a way to
/// say "no limit") are cut to `MAX_TIMEOUT` instead of panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_timeouts_are_clamped() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    let cache = client(&nodes)
        .timeout(Duration::MAX)
        .attempt_timeout(Duration::MAX)
        .build()
        .await?;
    exercise(&cache).await?;
    let unlimited = cache.with_timeout(Duration::MAX);
    unlimited.set("unlimited", "v", None).await?;
    assert!(unlimited.get("unlimited").await?.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_coalesced_operations_get_their_own_answers() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    let cache = client(&nodes).build().await?;
    let mut tasks = Vec::new();
    for t in 0..32 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let key = format!("co:{t}:{i}");
                cache.set(&key, format!("{t}/{i}"), None).await?;
                let got = cache.get(&key).await?.map(|e| e.value);
                assert_eq!(got.as_deref(), Some(format!("{t}/{i}").as_bytes()));
                assert_eq!(cache.get(format!("co:none:{t}:{i}")).await?, None);
            }
            Ok::<_, distcache::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn exercise(cache: &Client) -> Result<(), BoxError> {
    assert_eq!(cache.get("nope").await?, None);
    let v1 = cache.set("user:1", "alice", None).await?;
    let e = cache.get("user:1").await?.expect("written");
    assert_eq!(&e.value[..], b"alice");
    assert_eq!(e.version, v1);
    assert_eq!(e.ttl, None);

    // The Bytes variants send what they are given, without copying.
    let (k, v) = (
        bytes::Bytes::from_static(b"user:2"),
        bytes::Bytes::from("bob"),
    );
    let w = cache
        .set_with_bytes(k.clone(), v.clone(), None, Condition::Always)
        .await?;
    let e = cache.get_bytes(k).await?.expect("written");
    assert_eq!((e.value, e.version), (v, w.version));

    cache.set("ttl", "x", Some(Duration::from_secs(60))).await?;
    let ttl = cache.get("ttl").await?.unwrap().ttl.unwrap();
    assert!(ttl <= Duration::from_secs(60) && ttl > Duration::from_secs(50));
    assert!(cache.expire("ttl", None).await?);
    assert_eq!(cache.get("ttl").await?.unwrap().ttl, None);
    assert!(cache.expire("ttl", Some(Duration::from_secs(5))).await?);
    assert!(cache.get("ttl").await?.unwrap().ttl.is_some());
    assert!(!cache.expire("absent", Some(Duration::from_secs(5))).await?);

    assert!(cache.set_if_absent("nx", "first", None).await?);
    assert!(!cache.set_if_absent("nx", "second", None).await?);
    assert!(!cache.set_if_present("xx", "v", None).await?);
    assert!(cache.set_if_present("nx", "third", None).await?);
    let all = cache.with_read_consistency(Consistency::All);
    assert_eq!(&all.get("nx").await?.unwrap().value[..], b"third");

    let cur = cache.get("user:1").await?.unwrap().version;
    let stale = cache.compare_and_swap("user:1", cur - 1, "x", None).await?;
    assert!(!stale.applied);
    assert_eq!(stale.version, cur);
    let swapped = cache.compare_and_swap("user:1", cur, "bob", None).await?;
    assert!(swapped.applied && swapped.version > cur);
    // The new version was propagated: every replica agrees.
    let e = all.get("user:1").await?.unwrap();
    assert_eq!((&e.value[..], e.version), (&b"bob"[..], swapped.version));
    assert!(cache.compare_and_swap("fresh", 0, "v", None).await?.applied);

    assert_eq!(cache.incr_by("n", 5).await?, 5);
    assert_eq!(cache.incr_by("n", -2).await?, 3);
    assert_eq!(&all.get("n").await?.unwrap().value[..], b"3");
    assert!(matches!(
        cache.incr_by("user:1", 1).await,
        Err(distcache::Error::NotAnInteger(_))
    ));

    // Write All: with One, the second delete may reach a replica that the
    // first one's background write has not reached yet.
    let wall = cache.with_write_consistency(Consistency::All);
    assert!(wall.delete("user:1").await?);
    assert!(!wall.delete("user:1").await?);
    assert_eq!(all.get("user:1").await?, None);

    let items: Vec<(String, String)> = (0..50)
        .map(|i| (format!("m{i}"), format!("v{i}")))
        .collect();
    cache.mset(&items, None).await?;
    let mut keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
    keys.push("missing".into());
    for c in [Consistency::One, Consistency::Quorum] {
        let got = cache.with_read_consistency(c).mget(&keys).await?;
        assert_eq!(got.len(), 51);
        for (i, g) in got[..50].iter().enumerate() {
            assert_eq!(g.as_ref().unwrap().value, format!("v{i}").as_bytes());
        }
        assert!(got[50].is_none());
    }

    let out = cache
        .set_with("cond", "v", None, Condition::IfAbsent)
        .await?;
    assert!(out.applied && out.version > 0);
    let big = vec![b'x'; 2 << 20];
    assert!(matches!(
        cache.set("big", &big, None).await,
        Err(distcache::Error::InvalidArgument(_))
    ));
    cache.delete("cond").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_agrees_across_clients() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    let mut reversed = urls(&nodes);
    reversed.reverse();
    // replicas(1): a key lives on exactly one node, so a read through the
    // other client only finds it if both route it to the same node.
    let a = client(&nodes).replicas(1).build().await?;
    let b = Client::builder()
        .nodes(reversed)
        .replicas(1)
        .build()
        .await?;
    for i in 0..200 {
        let key = format!("route:{i}");
        assert_eq!(a.owners(&key), b.owners(&key));
        a.set(&key, "v", None).await?;
        assert!(b.get(&key).await?.is_some(), "{key} routed differently");
    }
    let owners = a.owners("route:0");
    assert_eq!(owners.len(), 1);
    let three = client(&nodes).replicas(3).build().await?;
    let mut all = three.owners("route:0");
    assert_eq!(all[0], owners[0]);
    all.sort();
    let mut expect = urls(&nodes);
    expect.sort();
    assert_eq!(all, expect);
    Ok(())
}

/// A batch too big for the node fails on its own, at once and with a clear
/// error (it is not retried), while other requests to that node, on the
/// shared `Pipeline` stream, go on undisturbed. (An `mset` too big for one
/// message whose items fit is split, and succeeds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_batch_fails_alone() -> Result<(), BoxError> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut cfg = distcache_tests::test_config();
    cfg.server.max_message_bytes.0 = 2 << 20;
    let node = distcache_tests::TestNode::start(cfg).await;
    let cache = Client::builder()
        .nodes([node.url()])
        .replicas(1)
        .timeout(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(3))
        .build()
        .await?;
    cache.set("small", "v", None).await?;
    let (stop, errors) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (cache, stop, errors) = (cache.clone(), stop.clone(), errors.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if !matches!(cache.get("small").await, Ok(Some(_))) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // One value over the node's 2 MiB message limit: no split can help.
    let big = vec![("big".to_owned(), vec![b'x'; 5 << 19])];
    let started = std::time::Instant::now();
    let e = cache
        .mset(&big, None)
        .await
        .expect_err("over the node's message limit");
    assert!(matches!(e, distcache::Error::InvalidArgument(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried to the deadline"
    );
    // A batch under the node's limit still goes through, and so does one
    // over it whose items fit: the SDK splits it (5.4 MB in 900 KiB items).
    let mid: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("mid{i}"), vec![b'y'; 500 << 10]))
        .collect();
    cache.mset(&mid, None).await?;
    let split: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("split{i}"), vec![b'x'; 900 << 10]))
        .collect();
    cache.mset(&split, None).await?;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await?;
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert_eq!(
        cache.get("mid2").await?.map(|e| e.value.len()),
        Some(500 << 10)
    );
    node.stop().await?;
    Ok(())
}

/// GETDEL is one step on the deciding replica: of two concurrent ones only
/// one gets the value (34 of 40 pairs both did when it was a read and a
/// delete), and afterwards the key is gone from every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_getdels_hand_the_value_to_exactly_one() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    let cache = client(&nodes).build().await?;
    for i in 0..40 {
        let key = format!("gd{i}");
        cache
            .with_write_consistency(Consistency::All)
            .set(&key, "v", None)
            .await?;
        let (a, b) = tokio::join!(cache.get_del(&key), cache.get_del(&key));
        let got = [a?, b?].iter().filter(|v| v.is_some()).count();
        assert_eq!(got, 1, "pair {i}: exactly one GETDEL gets the value");
        assert!(
            cache
                .with_read_consistency(Consistency::All)
                .get(&key)
                .await?
                .is_none()
        );
    }
    assert!(cache.get_del("never-set").await?.is_none());
    Ok(())
}
