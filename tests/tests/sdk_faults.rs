//! Failover, replication and repair with nodes killed and restarted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use distcache::{Client, Consistency, RetryConfig};
use distcache_tests::{BoxError, ClusterNode, client, cluster, eventually};

const LIMIT: Duration = Duration::from_secs(10);

async fn wait_health(client: &Client, url: &str, healthy: bool) -> Result<(), BoxError> {
    eventually(LIMIT, || async {
        client
            .health()
            .iter()
            .any(|(u, h)| u == url && *h == healthy)
    })
    .await
}

/// Mixed load from 8 workers: each runs `ops` operations on the keys
/// `{prefix}:0..keys` (worker `w`'s `n`th touches key `(w * a + n * b) % keys`),
/// one write in `write_every`, the rest reads that must find the key.
struct Load {
    workers: Vec<tokio::task::JoinHandle<()>>,
    errors: Arc<AtomicUsize>,
    /// Operations finished so far.
    done: Arc<AtomicUsize>,
}

impl Load {
    fn start(
        cache: &Client,
        prefix: &'static str,
        keys: usize,
        ops: usize,
        write_every: usize,
        (a, b): (usize, usize),
    ) -> Self {
        let errors = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let workers = (0..8usize)
            .map(|w| {
                let (cache, errors, done) = (cache.clone(), errors.clone(), done.clone());
                tokio::spawn(async move {
                    for n in 0..ops {
                        let key = format!("{prefix}:{}", (w * a + n * b) % keys);
                        let r = if n % write_every == 0 {
                            cache.set(&key, format!("w{w}n{n}"), None).await.map(|_| ())
                        } else {
                            cache.get(&key).await.and_then(|e| {
                                e.map(|_| ()).ok_or(distcache::Error::Unavailable {
                                    needed: 0,
                                    acked: 0,
                                })
                            })
                        };
                        if let Err(e) = r {
                            eprintln!("client-visible error: {e}");
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self {
            workers,
            errors,
            done,
        }
    }

    /// Waits for every worker; the number of client-visible errors.
    async fn errors(self) -> Result<usize, BoxError> {
        for w in self.workers {
            w.await?;
        }
        Ok(self.errors.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_load_yields_no_errors() -> Result<(), BoxError> {
    let mut nodes = cluster(3).await?;
    let cache = client(&nodes).build().await?;
    for i in 0..300 {
        cache
            .set(format!("load:{i}"), format!("v{i}"), None)
            .await?;
    }
    let load = Load::start(&cache, "load", 300, 400, 4, (37, 11));
    // Kill a node once the load is well under way.
    eventually(LIMIT, || async { load.done.load(Ordering::Relaxed) >= 600 }).await?;
    let victim = nodes[1].url();
    nodes[1].kill();
    assert_eq!(load.errors().await?, 0);
    // The dead node is skipped, not paid for with a timeout on every request.
    wait_health(&cache, &victim, false).await?;
    let before = cache.stats();
    for i in 0..100 {
        assert!(cache.get(format!("load:{i}")).await?.is_some());
    }
    let after = cache.stats();
    assert_eq!(
        after.failovers, before.failovers,
        "healthy replicas served directly"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_is_readmitted_and_quorum_reads_stay_newest() -> Result<(), BoxError> {
    let mut nodes = cluster(3).await?;
    let cache = client(&nodes)
        .replicas(3)
        .read_consistency(Consistency::Quorum)
        .write_consistency(Consistency::Quorum)
        .build()
        .await?;
    let old = cache.set("k", "old", None).await?;
    cache.set("gone", "old", None).await?;
    let gone_old = cache.get("gone").await?.unwrap().version;
    cache.set("kept", "v", None).await?;

    let addr = nodes[0].addr;
    let url = nodes[0].url();
    nodes[0].kill();
    wait_health(&cache, &url, false).await?;
    let new = cache.set("k", "new", None).await?;
    assert!(new > old);
    assert!(cache.delete("gone").await?);

    // Back on the same address, first empty, then holding what an old WAL
    // would have had: the values from before it died.
    nodes[0] = ClusterNode::start_at(addr).await?;
    nodes[0].raw_set("k", "old", old).await?;
    nodes[0].raw_set("gone", "old", gone_old).await?;
    wait_health(&cache, &url, true).await?;

    for _ in 0..50 {
        let e = cache.get("k").await?.unwrap();
        assert_eq!((&e.value[..], e.version), (&b"new"[..], new));
        assert_eq!(cache.get("gone").await?, None, "a delete resurrected");
        assert!(cache.get("kept").await?.is_some());
    }
    // An All read involves the restarted node and repairs it.
    let all = cache.with_read_consistency(Consistency::All);
    assert_eq!(&all.get("k").await?.unwrap().value[..], b"new");
    assert_eq!(all.get("gone").await?, None);
    assert!(all.get("kept").await?.is_some());
    let n0 = &nodes[0];
    eventually(LIMIT, || async {
        let k = n0.raw_get("k").await;
        let g = n0.raw_get("gone").await;
        let kept = n0.raw_get("kept").await;
        matches!((k, g, kept), (Ok(k), Ok(g), Ok(kept))
            if k.found && k.version == new && !g.found && kept.found)
    })
    .await?;
    // The returning node was fenced and caught up before it served a read
    // (so no read had anything to repair).
    let s = cache.stats();
    assert!(s.catch_ups >= 1, "{s:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_never_resurrect_from_a_stale_replica() -> Result<(), BoxError> {
    let mut nodes = cluster(2).await?;
    // N = 2: Quorum is both replicas.
    let cache = client(&nodes).build().await?;
    let quorum = cache.with_read_consistency(Consistency::Quorum);
    let v = cache.set("doomed", "alive", None).await?;
    let addr = nodes[1].addr;
    let url = nodes[1].url();
    nodes[1].kill();
    wait_health(&cache, &url, false).await?;
    // Default write consistency One: the delete succeeds with a node down.
    assert!(cache.delete("doomed").await?);
    nodes[1] = ClusterNode::start_at(addr).await?;
    nodes[1].raw_set("doomed", "alive", v).await?;
    wait_health(&cache, &url, true).await?;
    for _ in 0..20 {
        assert_eq!(quorum.get("doomed").await?, None);
    }
    // The stale replica got the tombstone by read repair.
    let n1 = &nodes[1];
    eventually(LIMIT, || async {
        matches!(n1.raw_get("doomed").await, Ok(r) if !r.found)
    })
    .await?;
    for _ in 0..20 {
        assert_eq!(cache.get("doomed").await?, None);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_races_have_exactly_one_winner_per_version() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    let cache = client(&nodes).build().await?;
    cache.set("lock", "init", None).await?;
    for round in 0..10 {
        let current = cache.get("lock").await?.unwrap().version;
        let mut racers = Vec::new();
        for t in 0..16 {
            let cache = cache.clone();
            racers.push(tokio::spawn(async move {
                cache
                    .compare_and_swap("lock", current, format!("r{round}t{t}"), None)
                    .await
            }));
        }
        let mut winners = 0;
        for r in racers {
            if r.await?
                .map_err(|e| format!("round {round}: {e:?}"))?
                .applied
            {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_retries_when_all_nodes_are_down() -> Result<(), BoxError> {
    let mut nodes = cluster(3).await?;
    let cache = client(&nodes)
        .retry(RetryConfig {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retries: 5,
            budget_min_per_sec: 1,
            budget_ratio: 0.1,
            budget_window: Duration::from_secs(10),
        })
        .build()
        .await?;
    for n in &mut nodes {
        n.kill();
    }
    let calls = 200u64;
    for i in 0..calls {
        let r = cache.get(format!("k{i}")).await;
        assert!(r.is_err(), "a dead cluster answered");
    }
    let s = cache.stats();
    // 10 % of the calls plus a reserve of 1/s over the 10 s window, not 5 per call.
    assert!(s.retries <= calls / 10 + 10 + 2, "retries = {}", s.retries);
    assert!(s.budget_exhausted > 0);
    // Each call tries at most the key's 2 replicas per round.
    assert!(
        s.attempts <= 2 * (calls + s.retries),
        "attempts = {}",
        s.attempts
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_and_counters_fail_over_when_the_primary_is_down() -> Result<(), BoxError> {
    let mut nodes = cluster(3).await?;
    // No active probes and a high threshold: the client still believes the
    // dead primary is healthy, so the operation must fail over by itself.
    let cache = client(&nodes)
        .probe_interval(Duration::ZERO)
        .failure_threshold(100)
        .build()
        .await?;
    let v = cache
        .with_write_consistency(Consistency::All)
        .set("c", "0", None)
        .await?;
    // Without probes, the client learns that the nodes (fenced since they
    // started) caught up only by reading from them: once, from all.
    let all = cache.with_read_consistency(Consistency::All);
    assert!(all.get("c").await?.is_some());
    let primary = cache.owners("c")[0].clone();
    let victim = nodes.iter().position(|n| n.url() == primary).unwrap();
    nodes[victim].kill();
    let swapped = cache.compare_and_swap("c", v, "10", None).await?;
    assert!(swapped.applied);
    assert_eq!(cache.incr_by("c", 5).await?, 15);
    assert_eq!(&cache.get("c").await?.unwrap().value[..], b"15");
    Ok(())
}

/// A TCP relay in front of a node that can be frozen: it then stops moving
/// bytes both ways but keeps every connection open, which is how a node that
/// hangs (SIGSTOP, a stuck disk) looks to a client, unlike one that dies.
struct Relay {
    url: String,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes read from clients (forwarded or, while frozen, held).
    from_client: Arc<AtomicUsize>,
}

async fn relay(target: std::net::SocketAddr) -> Result<Relay, BoxError> {
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Reads even while frozen (one buffer's worth, held until thawed), so
    // that `read` shows what a client sent to the hung node.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        frozen: Arc<AtomicBool>,
        read: Option<Arc<AtomicUsize>>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Some(read) = &read {
                read.fetch_add(n, Ordering::Relaxed);
            }
            while frozen.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let frozen = Arc::new(AtomicBool::new(false));
    let from_client = Arc::new(AtomicUsize::new(0));
    let (f, read) = (frozen.clone(), from_client.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(node) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (nr, nw) = node.into_split();
            tokio::spawn(pump(cr, nw, f.clone(), Some(read.clone())));
            tokio::spawn(pump(nr, cw, f.clone(), None));
        }
    });
    Ok(Relay {
        url,
        frozen,
        from_client,
    })
}

/// A node that stops answering without closing its connections costs no
/// client errors: its batches time out, requests fail over to the other
/// replica, the node is marked unhealthy and skipped, and once it answers
/// again it is re-admitted and serves its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_is_timed_out_skipped_and_readmitted() -> Result<(), BoxError> {
    let nodes = cluster(3).await?;
    let hung = relay(nodes[0].addr).await?;
    let cache = Client::builder()
        .nodes([hung.url.clone(), nodes[1].url(), nodes[2].url()])
        .replicas(2)
        .timeout(Duration::from_secs(10))
        .attempt_timeout(Duration::from_millis(500))
        .build()
        .await?;
    for i in 0..200 {
        cache.set(format!("h:{i}"), format!("v{i}"), None).await?;
    }
    hung.frozen.store(true, Ordering::Relaxed);
    let load = Load::start(&cache, "h", 200, 60, 3, (31, 7));
    assert_eq!(load.errors().await?, 0);
    wait_health(&cache, &hung.url, false).await?;

    hung.frozen.store(false, Ordering::Relaxed);
    wait_health(&cache, &hung.url, true).await?;
    // Keys whose first replica is the recovered node: written and read
    // through it again.
    let mine: Vec<String> = (0..200)
        .map(|i| format!("h:{i}"))
        .filter(|k| cache.owners(k).first() == Some(&hung.url))
        .take(20)
        .collect();
    assert!(!mine.is_empty());
    for k in &mine {
        cache.set(k, "after", None).await?;
        let e = cache.get(k).await?.expect("present");
        assert_eq!(&e.value[..], b"after");
    }
    Ok(())
}

/// An operation whose deadline passes while it waits in the coalescer's
/// queue (behind a batch stuck on a hung node) fails with a timeout and is
/// never sent: once the node answers again it still has not applied it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_that_expires_in_the_queue_is_never_sent() -> Result<(), BoxError> {
    let nodes = cluster(1).await?;
    let hung = relay(nodes[0].addr).await?;
    let cache = Client::builder()
        .nodes([hung.url.clone()])
        .replicas(1)
        .timeout(LIMIT)
        .attempt_timeout(Duration::from_secs(5))
        .probe_interval(Duration::from_secs(3600))
        .build()
        .await?;
    cache.set("warm", "up", None).await?;
    let before = hung.from_client.load(Ordering::Relaxed);
    hung.frozen.store(true, Ordering::Relaxed);
    // A is sent and stuck: the node's one batch in flight.
    let a = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.set("a", "1", None).await })
    };
    eventually(LIMIT, || async {
        hung.from_client.load(Ordering::Relaxed) > before
    })
    .await?;
    // B queues behind it, and its deadline passes there.
    let b = cache
        .with_timeout(Duration::from_millis(50))
        .set("b", "2", None)
        .await;
    assert!(b.is_err(), "B had nowhere to go: {b:?}");
    // A's batch completes; the coalescer then takes B, past its deadline.
    hung.frozen.store(false, Ordering::Relaxed);
    a.await??;
    // C is sent after anything B could have gone out with.
    cache.set("c", "3", None).await?;
    assert!(cache.get("c").await?.is_some());
    assert!(
        cache.get("b").await?.is_none(),
        "an operation that expired in the queue reached the node"
    );
    Ok(())
}

/// With `--write-consistency all` and a replica down, a conditional
/// operation fails before it applies anything: three "failed" INCRs used to
/// leave the counter at 3, and clients retry errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_cannot_meet_its_consistency_is_not_applied() -> Result<(), BoxError> {
    let mut nodes = cluster(2).await?;
    let cache = client(&nodes).build().await?;
    let all = cache.with_write_consistency(Consistency::All);
    all.set("n", "0", None).await?;
    let owners = cache.owners("n");
    let replica = nodes.iter().position(|n| n.url() == owners[1]).unwrap();
    nodes[replica].kill();
    // The client's prober notices (every 500 ms).
    distcache_tests::eventually(Duration::from_secs(10), || async {
        cache.health().iter().any(|(_, healthy)| !healthy)
    })
    .await?;
    for _ in 0..3 {
        match all.incr_by("n", 1).await {
            Err(distcache::Error::Unavailable {
                needed: 2,
                acked: 1,
            }) => {}
            other => panic!("expected Unavailable before applying, got {other:?}"),
        }
    }
    let primary = nodes.iter().position(|n| n.url() == owners[0]).unwrap();
    let held = nodes[primary].raw_get("n").await?;
    assert_eq!(&held.value[..], b"0", "nothing was applied");
    // At consistency One the counter still works.
    assert_eq!(cache.incr_by("n", 1).await?, 1);
    Ok(())
}

/// EXPIRE is decided by one replica and its whole entry copied: a replica
/// that missed a write does not end with the same version and another value
/// (which Quorum reads then flip between forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_copies_the_deciding_replicas_entry() -> Result<(), BoxError> {
    let nodes = cluster(2).await?;
    let cache = client(&nodes).build().await?;
    let v1 = cache
        .with_write_consistency(Consistency::All)
        .set("k", "old", None)
        .await?;
    let owners = cache.owners("k");
    let by_url = |u: &str| nodes.iter().find(|n| n.url() == u).unwrap();
    let (primary, other) = (by_url(&owners[0]), by_url(&owners[1]));
    // The other replica misses a newer write.
    primary.raw_set("k", "new", v1 + 1).await?;
    assert!(cache.expire("k", Some(Duration::from_secs(60))).await?);
    let (a, b) = (primary.raw_get("k").await?, other.raw_get("k").await?);
    assert_eq!(
        (a.version, &a.value),
        (b.version, &b.value),
        "one entry on both"
    );
    assert_eq!(&a.value[..], b"new");
    assert!(a.ttl_ms > 0 && b.ttl_ms > 0);
    Ok(())
}

/// Writes a caller was told timed out are not sent later from the client's
/// queue (issue 21, finding 16): against a node that stalls, batches wait
/// for HTTP/2's window on the client; once their callers gave up they are
/// dropped, so when the node answers again only what had already left the
/// queue is applied (what fits the node's 1 MiB HTTP/2 window and the
/// client's send buffer: about three of these 800 KiB MSETs), not every
/// "failed" MSET (before: all ten).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_batches_to_a_stalled_node_are_not_sent_later() -> Result<(), BoxError> {
    let nodes = cluster(1).await?;
    let hung = relay(nodes[0].addr).await?;
    let cache = Client::builder()
        .nodes([hung.url.clone()])
        .replicas(1)
        .timeout(Duration::from_millis(400))
        .attempt_timeout(Duration::from_millis(400))
        .build()
        .await?;
    cache.set("warm", "up", None).await?;
    hung.frozen.store(true, Ordering::Relaxed);
    let value = vec![b'x'; 100 * 1024];
    let batches: Vec<Vec<(String, Vec<u8>)>> = (0..10)
        .map(|b| {
            (0..8)
                .map(|k| (format!("m{b}:{k}"), value.clone()))
                .collect()
        })
        .collect();
    let writes = futures_util::future::join_all(batches.iter().map(|items| {
        let items: Vec<(&str, &[u8])> = items.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        let cache = cache.clone();
        async move { cache.mset(&items, None).await }
    }))
    .await;
    assert!(
        writes.iter().all(Result::is_err),
        "a stalled node acknowledges nothing"
    );
    hung.frozen.store(false, Ordering::Relaxed);
    let reader = Client::builder()
        .nodes([nodes[0].url()])
        .replicas(1)
        .build()
        .await?;
    // What reached the node is applied by the time a later write is.
    reader.set("after", "thaw", None).await?;
    eventually(LIMIT, || async { cache.get("after").await.is_ok() }).await?;
    let mut applied = 0;
    for b in 0..10 {
        if reader.get(format!("m{b}:0")).await?.is_some() {
            applied += 1;
        }
    }
    assert!(
        applied <= 4,
        "{applied} of 10 timed-out MSETs were applied once the node answered again"
    );
    Ok(())
}
