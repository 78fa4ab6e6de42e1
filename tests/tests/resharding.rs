//! Warm resharding: a membership change moves the data. Real nodes on
//! loopback and two clients (two proxies, say) that see each change at
//! different moments; 2 replicas, read and write at `One` (the defaults).
//! Through 3 → 4 nodes, 4 → 3 nodes and an add-then-remove flip, every
//! previously written key reads as last written from both clients (no
//! miss, no stale value, no resurrected delete), during the move and
//! after; once the move is done, a fresh client on the new membership (no
//! old owner to ask) reads everything too: the data was copied.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use distcache::{Client, MovePhase, RebalanceConfig};
use distcache_tests::{
    BoxError, ClusterNode, client, cluster, eventually, restart_at as restart, urls,
};

const KEYS: usize = 600;
const LIMIT: Duration = Duration::from_secs(30);

/// A client whose moves wait `grace` before copying.
async fn mover(nodes: &[ClusterNode], grace: Duration) -> Result<Client, BoxError> {
    Ok(client(nodes)
        .rebalance(RebalanceConfig {
            grace,
            forget_moved: true,
            ..RebalanceConfig::default()
        })
        .build()
        .await?)
}

/// What every key should hold: `None` for a deleted one.
type Model = BTreeMap<String, Option<String>>;

/// Writes `KEYS` keys through `a`, overwrites some through `b`, deletes
/// some.
async fn load(a: &Client, b: &Client) -> Result<Model, BoxError> {
    let mut model = Model::new();
    let pairs: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("k{i}"), format!("v1-{i}")))
        .collect();
    a.mset(&pairs, None).await?;
    for (k, v) in pairs {
        model.insert(k, Some(v));
    }
    for i in (0..KEYS).step_by(5) {
        let (k, v) = (format!("k{i}"), format!("v2-{i}"));
        b.set(&k, &v, None).await?;
        model.insert(k, Some(v));
    }
    for i in (1..KEYS).step_by(7) {
        let k = format!("k{i}");
        a.delete(&k).await?;
        model.insert(k, None);
    }
    Ok(model)
}

/// Reads every key of the model through `c` and fails on the first one
/// that differs.
async fn check(c: &Client, model: &Model, who: &str) -> Result<(), BoxError> {
    let keys: Vec<&String> = model.keys().collect();
    let got = c.mget(&keys).await?;
    for ((k, want), e) in model.iter().zip(got) {
        let got = e.map(|e| String::from_utf8_lossy(&e.value).into_owned());
        if &got != want {
            return Err(format!("{who}: {k} read {got:?}, last written {want:?}").into());
        }
    }
    // One by one too (the single-key read path).
    for (k, want) in model.iter().step_by(11) {
        let got = c
            .get(k)
            .await?
            .map(|e| String::from_utf8_lossy(&e.value).into_owned());
        if &got != want {
            return Err(format!("{who}: get {k} read {got:?}, last written {want:?}").into());
        }
    }
    Ok(())
}

/// The keys rounds read: a quarter. (A read of a moved key repairs its new
/// owners; the other keys reach them only by the move's copy, which the
/// fresh client's check at the end then proves.)
fn sampled(model: &Model) -> Model {
    model
        .iter()
        .filter(|(k, _)| k[1..].parse::<usize>().is_ok_and(|i| i % 4 == 0))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One round of traffic during a move: writes and deletes through both
/// clients, then both read a quarter of the keys.
async fn round(a: &Client, b: &Client, model: &mut Model, r: usize) -> Result<(), BoxError> {
    // Only keys `4n + 1` are written during moves: the others reach their
    // new owners by the move's copy alone.
    for i in (r % 13..KEYS).step_by(13).filter(|i| i % 4 == 1) {
        let k = format!("k{i}");
        let c = if i % 2 == 0 { a } else { b };
        if i % 3 == 0 {
            c.delete(&k).await?;
            model.insert(k, None);
        } else {
            let v = format!("r{r}-{i}");
            c.set(&k, &v, None).await?;
            model.insert(k, Some(v));
        }
    }
    let some = sampled(model);
    check(a, &some, "client a").await?;
    check(b, &some, "client b").await
}

/// Runs rounds of traffic until neither client is moving any more.
async fn through_the_move(a: &Client, b: &Client, model: &mut Model) -> Result<usize, BoxError> {
    let until = std::time::Instant::now() + LIMIT;
    let mut r = 0;
    while a.moving().is_some() || b.moving().is_some() {
        assert!(std::time::Instant::now() < until, "the move never ended");
        round(a, b, model, r).await?;
        r += 1;
    }
    Ok(r)
}

/// A client on `nodes` alone, with no move, reads everything as last
/// written; and each of a key's owners holds it (the primary alone would
/// answer a read at `One`).
async fn fresh_check(nodes: &[ClusterNode], model: &Model) -> Result<(), BoxError> {
    let fresh = client(nodes).build().await?;
    assert!(fresh.moving().is_none());
    check(&fresh, model, "a fresh client").await?;
    for (k, want) in model {
        for owner in fresh.owners(k) {
            let node = nodes.iter().find(|n| n.url() == owner).expect("an owner");
            let held = node.raw_get(k).await?;
            let got = held
                .found
                .then(|| String::from_utf8_lossy(&held.value).into_owned());
            if &got != want {
                return Err(format!("{owner} holds {got:?} for {k}, last written {want:?}").into());
            }
        }
    }
    Ok(())
}

/// Every key a node holds (values and tombstones), by a full `Scan`.
async fn held(node: &ClusterNode) -> Result<std::collections::HashSet<String>, BoxError> {
    let mut raw = node.raw().await?;
    let mut out = std::collections::HashSet::new();
    let mut cursor = 0;
    loop {
        let page = raw
            .scan(distcache_proto::v1::ScanRequest {
                cursor,
                max_entries: 1_000,
                ..Default::default()
            })
            .await?
            .into_inner();
        out.extend(
            page.entries
                .iter()
                .map(|e| String::from_utf8_lossy(&e.key).into_owned()),
        );
        if page.done {
            return Ok(out);
        }
        cursor = page.next_cursor;
    }
}

/// Once the move is done, no node holds a key of `model` that it does not
/// own in the ring `owner_of` uses (old owners forgot what moved away),
/// except the keys written during the move (`4n + 1`, newer than what a
/// forget removes).
async fn old_owners_forgot(
    nodes: &[ClusterNode],
    owner_of: &Client,
    model: &Model,
) -> Result<(), BoxError> {
    let before_the_move = |k: &str| k[1..].parse::<usize>().is_ok_and(|i| i % 4 != 1);
    let stray = std::sync::Mutex::new(Vec::new());
    let last = &stray;
    let found = eventually(LIMIT, || async move {
        let mut now = Vec::new();
        for n in nodes {
            let Ok(keys) = held(n).await else {
                return false;
            };
            for k in model.keys().filter(|k| before_the_move(k)) {
                if keys.contains(k) && !owner_of.owners(k).contains(&n.url()) {
                    now.push(format!("{} holds {k}", n.url()));
                }
            }
        }
        let empty = now.is_empty();
        *last.lock().unwrap() = now;
        empty
    })
    .await;
    let stray = stray.into_inner().unwrap();
    found.map_err(|e| format!("{e}: {:?}", &stray[..stray.len().min(5)]).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_node_moves_its_keys_and_nothing_reads_stale() -> Result<(), BoxError> {
    let nodes = cluster(4).await?;
    // Long enough for b to see the change, and both copies to end, within
    // it on a loaded machine.
    let grace = Duration::from_secs(2);
    let (a, b) = (
        mover(&nodes[..3], grace).await?,
        mover(&nodes[..3], grace).await?,
    );
    let mut model = load(&a, &b).await?;
    let all = urls(&nodes);
    assert_eq!(a.set_nodes(&all)?.added, [all[3].clone()]);
    let m = a.moving().expect("a move");
    assert_eq!(m.phase, MovePhase::Grace);
    assert!(m.eta.is_some_and(|t| t <= grace * 2), "{:?}", m.eta);
    // b still routes on the old ring for a while.
    round(&a, &b, &mut model, 100).await?;
    b.set_nodes(&all)?;
    let rounds = through_the_move(&a, &b, &mut model).await?;
    assert!(rounds > 0);
    round(&a, &b, &mut model, 200).await?;
    fresh_check(&nodes, &model).await?;
    // The two clients copied each moved entry once between them (copy
    // claims, `claim.rs`), not once each: at most one write per key and
    // new owner (and a few claim keys), where two full copies would be
    // twice that.
    let moved = (a.stats().rebalance_entries, b.stats().rebalance_entries);
    let three = client(&nodes[..3]).build().await?;
    let once: u64 = model
        .keys()
        .map(|k| {
            let old = three.owners(k);
            a.owners(k).iter().filter(|o| !old.contains(o)).count() as u64
        })
        .sum();
    assert!(once > 0);
    assert!(
        moved.0 + moved.1 >= once && moved.0 + moved.1 <= once + 10,
        "copied {moved:?}, one copy is {once}"
    );
    assert_eq!((a.stats().moves, b.stats().moves), (1, 1));
    // The new node holds its share.
    let on_new = model
        .keys()
        .filter(|k| a.owners(k).contains(&all[3]))
        .count();
    assert!(on_new > KEYS / 4, "{on_new} keys on the new node");
    // The old owners of the new node's keys dropped them.
    old_owners_forgot(&nodes, &a, &model).await?;
    assert!(a.stats().rebalance_forgotten + b.stats().rebalance_forgotten > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_node_moves_its_keys_away_before_it_goes() -> Result<(), BoxError> {
    let mut nodes = cluster(4).await?;
    let grace = Duration::from_secs(2);
    let (a, b) = (mover(&nodes, grace).await?, mover(&nodes, grace).await?);
    let mut model = load(&a, &b).await?;
    let all = urls(&nodes);
    assert_eq!(a.set_nodes(&all[..3])?.removed, [all[3].clone()]);
    round(&a, &b, &mut model, 100).await?;
    b.set_nodes(&all[..3])?;
    through_the_move(&a, &b, &mut model).await?;
    // The node leaving forgot what it held before the move.
    old_owners_forgot(&nodes, &a, &model).await?;
    // The node goes away for good; nothing it held is missed.
    nodes[3].kill();
    round(&a, &b, &mut model, 200).await?;
    fresh_check(&nodes[..3], &model).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_then_removed_within_the_move_leaves_nothing_stale() -> Result<(), BoxError> {
    let nodes = cluster(4).await?;
    let grace = Duration::from_secs(1);
    let (a, b) = (
        mover(&nodes[..3], grace).await?,
        mover(&nodes[..3], grace).await?,
    );
    let mut model = load(&a, &b).await?;
    let all = urls(&nodes);
    a.set_nodes(&all)?;
    round(&a, &b, &mut model, 100).await?;
    // The fourth node flaps out again before the move copied anything; b
    // saw only the flap's second half (it polled between).
    a.set_nodes(&all[..3])?;
    round(&a, &b, &mut model, 101).await?;
    b.set_nodes(&all)?;
    b.set_nodes(&all[..3])?;
    through_the_move(&a, &b, &mut model).await?;
    fresh_check(&nodes[..3], &model).await?;
    // And back in: what the fourth node holds from its first stay is older
    // than what its keys hold now, and is never read.
    a.set_nodes(&all)?;
    b.set_nodes(&all)?;
    through_the_move(&a, &b, &mut model).await?;
    fresh_check(&nodes, &model).await?;
    Ok(())
}

/// Counters and locks on keys whose primary moves: during the move the old
/// primary decides (for a client that saw the change and one that did not
/// yet alike), and the new one holds the outcome once the move is done; no
/// increment is lost and a held lock stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_locks_survive_their_primary_moving() -> Result<(), BoxError> {
    let nodes = cluster(4).await?;
    let all = urls(&nodes);
    let (a, b) = (
        mover(&nodes[..3], Duration::from_secs(2)).await?,
        mover(&nodes[..3], Duration::from_secs(2)).await?,
    );
    // Keys whose primary will be the new node.
    let four = client(&nodes).build().await?;
    let moving: Vec<String> = (0..10_000)
        .map(|i| format!("c{i}"))
        .filter(|k| four.owners(k)[0] == all[3])
        .take(2)
        .collect();
    let (counter, lock) = (&moving[0], &moving[1]);
    for _ in 0..10 {
        a.incr_by(counter, 1).await?;
    }
    assert!(a.set_if_absent(lock, "holder-a", None).await?, "lock taken");
    a.set_nodes(&all)?;
    // b still routes on the old ring, a is moving from it: one counter.
    for i in 0..10 {
        let c = if i % 2 == 0 { &a } else { &b };
        c.incr_by(counter, 1).await?;
    }
    b.set_nodes(&all)?;
    for _ in 0..10 {
        b.incr_by(counter, 1).await?;
    }
    assert!(
        !b.set_if_absent(lock, "holder-b", None).await?,
        "a held lock was taken on the new primary"
    );
    eventually(LIMIT, || async {
        a.moving().is_none() && b.moving().is_none()
    })
    .await?;
    assert_eq!(a.incr_by(counter, 1).await?, 31);
    let fresh = client(&nodes).build().await?;
    assert_eq!(&fresh.get(counter).await?.unwrap().value[..], b"31");
    assert_eq!(&fresh.get(lock).await?.unwrap().value[..], b"holder-a");
    Ok(())
}

/// A node named by an id (`ID=URL`) that comes back at another address (a
/// pod restarted with a new IP) keeps its place on the ring: no move, no
/// key changes owner, and once caught up it holds its keys again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_at_a_new_address_under_its_id_keeps_its_place() -> Result<(), BoxError> {
    let mut nodes = cluster(3).await?;
    let named = |nodes: &[ClusterNode]| -> Vec<String> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("cache-{i}={}", n.url()))
            .collect()
    };
    let cache = client(&[])
        .nodes(named(&nodes))
        .rebalance(RebalanceConfig {
            grace: Duration::ZERO,
            ..RebalanceConfig::default()
        })
        .build()
        .await?;
    assert_eq!(cache.ring().nodes(), ["cache-0", "cache-1", "cache-2"]);
    let mut model = Model::new();
    for i in 0..300 {
        let (k, v) = (format!("p{i}"), format!("v{i}"));
        cache.set(&k, &v, None).await?;
        model.insert(k, Some(v));
    }
    let owners: Vec<Vec<String>> = model.keys().map(|k| cache.owners(k)).collect();
    // cache-2 restarts empty on another port.
    nodes[2].kill();
    nodes[2] = ClusterNode::start().await?;
    let change = cache.set_nodes(named(&nodes))?;
    assert!(
        change.added.is_empty() && change.removed.is_empty(),
        "{change:?}"
    );
    assert_eq!(change.readdressed, [format!("cache-2={}", nodes[2].url())]);
    assert!(cache.moving().is_none(), "a new address moves no data");
    assert_eq!(cache.stats().membership_changes, 0);
    let after: Vec<Vec<String>> = model.keys().map(|k| cache.owners(k)).collect();
    assert_eq!(owners, after, "no key changed owner");
    assert!(
        cache
            .members()
            .contains(&("cache-2".to_owned(), nodes[2].url()))
    );
    check(&cache, &model, "the client").await?;
    // Caught up: it holds its keys again.
    eventually(LIMIT, || async { cache.stats().fenced_nodes == 0 }).await?;
    for k in model
        .keys()
        .filter(|k| cache.owners(k).contains(&"cache-2".to_owned()))
    {
        assert!(
            nodes[2].raw_get(k).await?.found,
            "{k} on the restarted node"
        );
    }
    Ok(())
}

/// `Scan` limited to hash ranges answers only the keys whose ring hash lies
/// in them (what a move asks old owners for), and refuses too many ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_limited_to_hash_ranges_answers_only_their_keys() -> Result<(), BoxError> {
    use distcache::proto::{HashRange, ScanRequest};
    use distcache::ring::key_hash;
    let nodes = cluster(1).await?;
    let cache = client(&nodes).replicas(1).build().await?;
    let keys: Vec<String> = (0..500).map(|i| format!("h{i}")).collect();
    for k in &keys {
        cache.set(k, "v", None).await?;
    }
    // A wrapping range and a plain one.
    let ranges = vec![
        HashRange {
            start: u64::MAX - (u64::MAX / 8),
            end: u64::MAX / 8,
        },
        HashRange {
            start: u64::MAX / 2,
            end: u64::MAX / 2 + u64::MAX / 8,
        },
    ];
    let inside = |k: &str| {
        let h = key_hash(k.as_bytes());
        ranges.iter().any(|r| distcache_proto::ring::in_range(r, h))
    };
    let mut raw = nodes[0].raw().await?;
    let (mut got, mut cursor) = (Vec::new(), 0);
    loop {
        let page = raw
            .scan(ScanRequest {
                cursor,
                max_entries: 50,
                ranges: ranges.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        got.extend(
            page.entries
                .into_iter()
                .map(|e| String::from_utf8_lossy(&e.key).into_owned()),
        );
        if page.done {
            break;
        }
        cursor = page.next_cursor;
    }
    got.sort();
    let mut want: Vec<String> = keys.iter().filter(|k| inside(k)).cloned().collect();
    want.sort();
    assert!(
        want.len() > 100 && want.len() < 300,
        "{} keys inside",
        want.len()
    );
    assert_eq!(got, want);
    let too_many = ScanRequest {
        ranges: vec![HashRange { start: 1, end: 2 }; distcache_proto::ring::MAX_SCAN_RANGES + 1],
        ..Default::default()
    };
    let e = raw.scan(too_many).await.expect_err("refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    Ok(())
}

/// The node that joins is restarted empty after the copy gave it its keys:
/// it is fenced and caught up from its peers like any restarted node (not
/// skipped as a joining one), and reads never see it empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_restarted_during_the_move_is_caught_up() -> Result<(), BoxError> {
    let mut nodes = cluster(4).await?;
    let grace = Duration::from_secs(3);
    let (a, b) = (
        mover(&nodes[..3], grace).await?,
        mover(&nodes[..3], grace).await?,
    );
    let mut model = load(&a, &b).await?;
    let all = urls(&nodes);
    a.set_nodes(&all)?;
    b.set_nodes(&all)?;
    eventually(LIMIT, || async {
        a.moving().is_some_and(|m| m.phase == MovePhase::Draining)
    })
    .await?;
    let addr = nodes[3].addr;
    nodes[3].kill();
    nodes[3] = restart(addr).await?;
    through_the_move(&a, &b, &mut model).await?;
    eventually(LIMIT, || async {
        a.stats().fenced_nodes == 0 && b.stats().fenced_nodes == 0
    })
    .await?;
    fresh_check(&nodes, &model).await
}

/// With one replica, a move whose old owner is down cannot copy its keys:
/// it waits (retrying) instead of letting the old ring go, and finishes once
/// the owner is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_waits_while_the_only_owner_of_moved_keys_is_down() -> Result<(), BoxError> {
    let mut nodes = cluster(3).await?;
    let cache = client(&nodes[..2])
        .replicas(1)
        .rebalance(RebalanceConfig {
            grace: Duration::from_millis(200),
            ..RebalanceConfig::default()
        })
        .build()
        .await?;
    for i in 0..200 {
        cache.set(format!("w{i}"), "v", None).await?;
    }
    let addr = nodes[1].addr;
    nodes[1].kill();
    eventually(LIMIT, || async {
        cache
            .health()
            .iter()
            .any(|(u, h)| *u == format!("http://{addr}") && !*h)
    })
    .await?;
    cache.set_nodes(urls(&nodes))?;
    eventually(LIMIT, || async {
        cache
            .moving()
            .is_some_and(|m| m.phase == MovePhase::Retrying)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cache.moving().is_some(), "the move let the old ring go");
    nodes[1] = restart(addr).await?;
    eventually(Duration::from_secs(60), || async {
        cache.moving().is_none()
    })
    .await?;
    assert_eq!(cache.stats().moves, 1);
    Ok(())
}

/// A node named by id comes back at another address while a move is under
/// way (the joining node, restarted on a new port): the move goes on over
/// the same ring and copies to the node at its new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_readdressed_during_a_move_gets_its_keys_at_the_new_address() -> Result<(), BoxError>
{
    let mut nodes = cluster(4).await?;
    let named = |nodes: &[ClusterNode]| -> Vec<String> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("cache-{i}={}", n.url()))
            .collect()
    };
    let cache = client(&[])
        .nodes(named(&nodes[..3]))
        .rebalance(RebalanceConfig {
            grace: Duration::from_secs(2),
            ..RebalanceConfig::default()
        })
        .build()
        .await?;
    let mut model = Model::new();
    for i in 0..300 {
        let (k, v) = (format!("q{i}"), format!("v{i}"));
        cache.set(&k, &v, None).await?;
        model.insert(k, Some(v));
    }
    cache.set_nodes(named(&nodes))?;
    nodes[3].kill();
    nodes[3] = ClusterNode::start().await?;
    let change = cache.set_nodes(named(&nodes))?;
    assert_eq!(change.readdressed, [format!("cache-3={}", nodes[3].url())]);
    assert!(cache.moving().is_some(), "the move goes on");
    eventually(LIMIT, || async { cache.moving().is_none() }).await?;
    check(&cache, &model, "the client").await?;
    let fresh = client(&[]).nodes(named(&nodes)).build().await?;
    let members = fresh.members();
    for (k, want) in &model {
        for owner in fresh.owners(k) {
            let (_, url) = members.iter().find(|(n, _)| *n == owner).expect("a member");
            let node = nodes.iter().find(|n| &n.url() == url).expect("a node");
            let held = node.raw_get(k).await?;
            let got = held
                .found
                .then(|| String::from_utf8_lossy(&held.value).into_owned());
            assert_eq!(&got, want, "{owner} holds {k}");
        }
    }
    Ok(())
}
