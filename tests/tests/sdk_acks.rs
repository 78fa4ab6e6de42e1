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
