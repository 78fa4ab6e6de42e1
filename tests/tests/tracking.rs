//! Client-side caching on a real node (issue 16, part 2): the
//! `Invalidations` stream and reads that register their keys on it. Every
//! kind of change a key can go through is sent once to each subscriber
//! that read it; a full table sends its oldest keys; a read for a
//! subscriber the node does not have is refused; a stream that ends
//! unsubscribes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient};
use distcache_tests::{TestNode, http_get, test_config};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

fn key(k: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(k.as_bytes())
}

/// Subscribes: the stream and its subscriber id.
async fn subscribe(c: &mut CacheServiceClient<Channel>) -> (Streaming<pb::Invalidation>, u64) {
    let mut s = c
        .invalidations(pb::InvalidationsRequest {})
        .await
        .expect("subscribe")
        .into_inner();
    let hello = s.message().await.expect("hello").expect("first message");
    assert!(hello.subscriber_id != 0 && hello.keys.is_empty());
    (s, hello.subscriber_id)
}

/// Reads `k`, registering it for `id`.
async fn tracked_get(c: &mut CacheServiceClient<Channel>, k: &str, id: u64) -> pb::GetResponse {
    c.get(pb::GetRequest {
        key: key(k),
        tracking_id: id,
    })
    .await
    .expect("get")
    .into_inner()
}

/// The next invalidated keys, within 10 s.
async fn next_keys(s: &mut Streaming<pb::Invalidation>) -> Vec<String> {
    let m = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("an invalidation within 10 s")
        .expect("stream")
        .expect("message");
    assert!(!m.flush);
    m.keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

async fn set(c: &mut CacheServiceClient<Channel>, k: &str, v: &str, version: u64) {
    c.set(pb::SetRequest {
        key: key(k),
        value: v.as_bytes().to_vec().into(),
        version,
        ..Default::default()
    })
    .await
    .expect("set");
}

async fn metric(node: &TestNode, name: &str) -> f64 {
    let (_, text) = http_get(node.admin, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Each way a key changes is sent to the subscriber that read it, once
/// (then the registration is gone), and only to subscribers that read it.
#[tokio::test]
async fn every_change_to_a_read_key_is_sent_once() {
    let node = TestNode::start(test_config()).await;
    let mut c = node.client().await;
    let (mut s, id) = subscribe(&mut c).await;
    let (mut other, _) = subscribe(&mut c).await;
    set(&mut c, "k", "v1", 0).await;

    // A write from another client.
    assert!(tracked_get(&mut c, "k", id).await.found);
    set(&mut node.client().await, "k", "v2", 0).await;
    assert_eq!(next_keys(&mut s).await, ["k"]);
    // Forgotten once sent: this write is not sent again; the next message
    // is about the key read after it.
    set(&mut c, "k", "v3", 0).await;
    tracked_get(&mut c, "marker", id).await;
    set(&mut c, "marker", "m", 0).await;
    assert_eq!(next_keys(&mut s).await, ["marker"]);

    // A delete, a replicated write (a catch-up copy, read repair), an
    // EXPIRE, a counter, a CAS.
    let changes: [(&str, Change); 5] = [
        (
            "delete",
            Box::new(|| {
                op(pb::operation::Op::Delete(pb::DeleteRequest {
                    key: key("k"),
                    ..Default::default()
                }))
            }),
        ),
        (
            "replicated",
            Box::new(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                op(pb::operation::Op::Set(pb::SetRequest {
                    key: key("k"),
                    value: "copied".into(),
                    version: distcache_proto::version_floor(now + 1_000),
                    ..Default::default()
                }))
            }),
        ),
        (
            "expire",
            Box::new(|| {
                op(pb::operation::Op::Expire(pb::ExpireRequest {
                    key: key("k"),
                    ttl_ms: 60_000,
                    ..Default::default()
                }))
            }),
        ),
        (
            "cas",
            Box::new(|| {
                op(pb::operation::Op::CompareAndSwap(
                    pb::CompareAndSwapRequest {
                        key: key("c"),
                        expected_version: 0,
                        value: "swapped".into(),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "incr",
            Box::new(|| {
                op(pb::operation::Op::IncrBy(pb::IncrByRequest {
                    key: key("n"),
                    delta: 1,
                }))
            }),
        ),
    ];
    for (what, change) in &changes {
        let k = match *what {
            "incr" => "n",
            // Absent, so that expected version 0 swaps.
            "cas" => "c",
            _ => "k",
        };
        tracked_get(&mut c, k, id).await;
        let r = c
            .batch(pb::BatchRequest {
                operations: vec![change()],
            })
            .await
            .expect("batch")
            .into_inner();
        assert_eq!(r.results.len(), 1, "{what}");
        assert_eq!(next_keys(&mut s).await, [k], "{what}");
    }

    // The other subscriber read nothing, so it was sent nothing (what was
    // queued to `s` is here, and would have been queued to it at the same
    // moment); it gets what it reads itself.
    use futures_util::FutureExt;
    assert!(
        other.message().now_or_never().is_none(),
        "sent to a subscriber that read nothing"
    );
    let mut c2 = node.client().await;
    let (mut third, third_id) = subscribe(&mut c2).await;
    tracked_get(&mut c2, "theirs", third_id).await;
    set(&mut c2, "theirs", "x", 0).await;
    assert_eq!(next_keys(&mut third).await, ["theirs"]);
    drop(other);
    assert!(metric(&node, "distcache_invalidations_total").await >= 8.0);
    node.stop().await.expect("stop");
}

/// Makes one change to a key.
type Change = Box<dyn Fn() -> pb::Operation>;

fn op(op: pb::operation::Op) -> pb::Operation {
    pb::Operation { op: Some(op) }
}

/// A full table drops its oldest keys and sends them; a read for an id
/// the node does not know is refused; a stream that ends unsubscribes.
#[tokio::test]
async fn the_table_is_bounded_and_subscriptions_end_with_their_stream() {
    let mut config = test_config();
    config.server.tracking_table_keys = 16;
    let node = TestNode::start(config).await;
    let mut c = node.client().await;
    let (mut s, id) = subscribe(&mut c).await;
    for i in 0..40 {
        tracked_get(&mut c, &format!("k{i}"), id).await;
    }
    // At most 16 are kept: the others were sent, oldest first, with no
    // write to any of them.
    let mut sent = Vec::new();
    while sent.len() < 24 {
        sent.extend(next_keys(&mut s).await);
    }
    assert!(metric(&node, "distcache_tracking_keys").await <= 16.0);
    assert!(metric(&node, "distcache_tracking_evictions_total").await >= 24.0);
    assert!(sent.iter().all(|k| k.starts_with('k')));

    let refused = c
        .get(pb::GetRequest {
            key: key("k"),
            tracking_id: id ^ 0x5555,
        })
        .await
        .expect_err("not a subscriber of this node");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("Invalidations"),
        "{}",
        refused.message()
    );

    assert_eq!(metric(&node, "distcache_tracking_subscribers").await, 1.0);
    drop(s);
    distcache_tests::eventually(Duration::from_secs(10), || async {
        metric(&node, "distcache_tracking_subscribers").await == 0.0
    })
    .await
    .expect("the subscription ends with its stream");
    let gone = c
        .get(pb::GetRequest {
            key: key("k"),
            tracking_id: id,
        })
        .await
        .expect_err("its id is gone with it");
    assert_eq!(gone.code(), Code::FailedPrecondition);
    node.stop().await.expect("stop");

    // Off: the stream is refused, saying so.
    let mut config = test_config();
    config.server.tracking_table_keys = 0;
    let node = TestNode::start(config).await;
    let e = node
        .client()
        .await
        .invalidations(pb::InvalidationsRequest {})
        .await
        .expect_err("off");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("tracking-table-keys"),
        "{}",
        e.message()
    );
    node.stop().await.expect("stop");
}

/// A node that stops ends its streams: the subscriber learns that every
/// key it read there may have changed.
#[tokio::test]
async fn a_stopping_node_ends_its_streams() {
    let node = TestNode::start(test_config()).await;
    let mut c = node.client().await;
    let (mut s, id) = subscribe(&mut c).await;
    tracked_get(&mut c, "k", id).await;
    node.stop().await.expect("stop");
    let end = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("the stream ends within 10 s");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}
