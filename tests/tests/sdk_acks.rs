//! Acknowledgements tell the truth: a write that a replica did not take,
//! because it held a newer version (a writer whose clock is ahead, a
//! concurrent write), is never answered OK as if it were applied. The SDK
//! moves its clock past that version and resends, and a read right after
//! the acknowledgement sees the write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distcache_proto::v1 as pb;
use distcache_tests::{BoxError, TestNode, test_config};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// Writes `key` on `node` directly, with a version `ahead` in the future
/// (within the node's skew bound): what a writer with a fast clock leaves.
async fn write_ahead(node: &TestNode, key: &str, value: &str, ahead: Duration) -> u64 {
    let version = distcache_proto::version_floor(now_ms() + ahead.as_millis() as u64);
    let r = node
        .client()
        .await
        .set(pb::SetRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            version,
            ..Default::default()
        })
        .await
        .expect("set")
        .into_inner();
    assert!(r.applied);
    version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_over_a_newer_version_is_resent_not_acknowledged() -> Result<(), BoxError> {
    let node = TestNode::start(test_config()).await;
    let cache = distcache::Client::builder()
        .nodes([node.url()])
        .replicas(1)
        .build()
        .await?;
    let ahead = write_ahead(&node, "k", "from a fast clock", Duration::from_secs(5)).await;
    let version = cache.set("k", "mine", None).await?;
    assert!(version > ahead, "stamped past the version the node held");
    let e = cache.get("k").await?.expect("present");
    assert_eq!(
        &e.value[..],
        b"mine",
        "the acknowledged write is what a read sees"
    );
    assert_eq!(e.version, version);

    // The same for a delete, and for each key of an mset.
    write_ahead(&node, "gone", "from a fast clock", Duration::from_secs(5)).await;
    cache.delete("gone").await?;
    assert!(cache.get("gone").await?.is_none());
    write_ahead(&node, "m1", "from a fast clock", Duration::from_secs(5)).await;
    cache.mset(&[("m1", "one"), ("m2", "two")], None).await?;
    let got = cache.mget(&["m1", "m2"]).await?;
    assert_eq!(&got[0].as_ref().expect("m1").value[..], b"one");
    assert_eq!(&got[1].as_ref().expect("m2").value[..], b"two");
    node.stop().await?;
    Ok(())
}

/// Two nodes, in this process.
async fn two_nodes() -> [TestNode; 2] {
    [
        TestNode::start(test_config()).await,
        TestNode::start(test_config()).await,
    ]
}

/// The index in `nodes` of the owner at `url`.
fn owner(nodes: &[TestNode], url: &str) -> usize {
    nodes
        .iter()
        .position(|n| n.url() == url)
        .expect("an owner is one of the nodes")
}

/// Reads `key` on `node` directly: (found, value, version, tombstone version).
async fn read_on(node: &TestNode, key: &str) -> (bool, String, u64, u64) {
    let r = node
        .client()
        .await
        .get(pb::GetRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    (
        r.found,
        String::from_utf8_lossy(&r.value).into_owned(),
        r.version,
        r.tombstone_version,
    )
}

/// The replica that decides conditional operations (and serves `One`
/// reads) orders the writes: a delete it took is acknowledged although the
/// other replica already holds a newer write (there, the copy of a lock
/// taken on the first replica after this delete arrived before the delete
/// did), and it is not stamped again, which would apply it a second time
/// and delete that lock. When the first replica itself holds the newer
/// version, the delete is stamped again and wins on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_first_replica_took_is_not_applied_again() -> Result<(), BoxError> {
    let nodes = two_nodes().await;
    let cache = distcache::Client::builder()
        .nodes(nodes.iter().map(TestNode::url))
        .replicas(2)
        // Both answers are awaited (at `One` the second may come too late
        // to be looked at).
        .write_consistency(distcache::Consistency::All)
        .build()
        .await?;
    let by_url = |url: &str| &nodes[owner(&nodes, url)];
    let owners = cache.owners("lock");
    let (first, other) = (by_url(&owners[0]), by_url(&owners[1]));

    // The first replica holds the lock as it was; the other already holds
    // what was decided after the delete (a version ahead of the delete's).
    write_ahead(first, "lock", "old holder", Duration::ZERO).await;
    let later = write_ahead(other, "lock", "new holder", Duration::from_secs(2)).await;
    cache.delete("lock").await?;
    let (found, _, _, tombstone) = read_on(first, "lock").await;
    assert!(!found && tombstone > 0 && tombstone < later, "deleted once");
    let (found, value, version, _) = read_on(other, "lock").await;
    assert!(
        found && value == "new holder" && version == later,
        "the later lock survives"
    );

    // The other way round: the first replica holds a newer version (a
    // writer with a fast clock): the delete is stamped past it, on both.
    let owners = cache.owners("fast");
    let (first, other) = (by_url(&owners[0]), by_url(&owners[1]));
    let ahead = write_ahead(first, "fast", "from a fast clock", Duration::from_secs(2)).await;
    write_ahead(other, "fast", "old", Duration::ZERO).await;
    cache.delete("fast").await?;
    let (found, _, _, tombstone) = read_on(first, "fast").await;
    assert!(!found && tombstone > ahead, "stamped again");
    let (found, _, _, t) = read_on(other, "fast").await;
    assert!(!found && t == tombstone, "and on the other replica");
    for n in nodes {
        n.stop().await?;
    }
    Ok(())
}

/// A Quorum read returns once the replicas it asked hold what it returns
/// (a blocking read repair). A write still on its way to the first replica
/// may already be on the other one: a read that answers it must not be
/// followed by a conditional operation on the first replica's older state
/// (a lock read free, then refused to `SET NX`/CAS with nothing in between:
/// what the checker found without faults). Each round puts a release (a
/// tombstone) or a new holder (a newer value) on the second replica only,
/// reads at Quorum, and looks at the first replica at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_read_is_not_followed_by_an_older_state() -> Result<(), BoxError> {
    let nodes = two_nodes().await;
    let cache = distcache::Client::builder()
        .nodes(nodes.iter().map(TestNode::url))
        .replicas(2)
        .read_consistency(distcache::Consistency::Quorum)
        .build()
        .await?;
    let by_url = |url: &str| owner(&nodes, url);
    // Connected before the rounds: a look at the first replica right after
    // the read must not wait for a connection.
    let mut raw = Vec::new();
    for n in &nodes {
        raw.push(n.client().await);
    }
    for round in 0..20 {
        let key = format!("lock:{round}");
        let owners = cache.owners(&key);
        let (first, other) = (by_url(&owners[0]), by_url(&owners[1]));
        write_ahead(&nodes[first], &key, "old holder", Duration::ZERO).await;
        let released = round % 2 == 0;
        let later = distcache_proto::version_floor(now_ms() + 1_000);
        let k: bytes::Bytes = key.as_bytes().to_vec().into();
        if released {
            raw[other]
                .delete(pb::DeleteRequest {
                    key: k.clone(),
                    version: later,
                    return_value: false,
                })
                .await?;
        } else {
            raw[other]
                .set(pb::SetRequest {
                    key: k.clone(),
                    value: "new holder".into(),
                    version: later,
                    ..Default::default()
                })
                .await?;
        }
        let read = cache.get(&key).await?;
        let on_first = raw[first]
            .get(pb::GetRequest {
                key: k.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        if released {
            assert!(read.is_none(), "round {round}: the newer release wins");
            assert!(
                !on_first.found && on_first.tombstone_version == later,
                "round {round}: the first replica holds the release once the read returned"
            );
            let swap = cache.compare_and_swap(&key, 0, "mine", None).await?;
            assert!(swap.applied, "round {round}: a lock read free is free");
        } else {
            let e = read.expect("the newer holder wins");
            assert_eq!(&e.value[..], b"new holder", "round {round}");
            assert!(
                on_first.found && on_first.version == later,
                "round {round}: the first replica holds the new holder once the read returned"
            );
            let swap = cache
                .compare_and_swap(&key, e.version, "mine", None)
                .await?;
            assert!(swap.applied, "round {round}: CAS on the version read");
        }
    }
    for n in nodes {
        n.stop().await?;
    }
    Ok(())
}
