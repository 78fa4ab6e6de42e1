//! The SDK against a real node's answer budget: large values read by many
//! callers at once, and multi-key requests larger than one message, all
//! succeed; an `mget` past `max_answer_bytes` fails cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use distcache::{Client, Error};
use distcache_tests::{BoxError, client, cluster};

const MIB: usize = 1 << 20;

fn value(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; MIB]
}

/// One node, so every operation goes through the same coalescer (one batch
/// in flight): concurrent reads then share batches whose answers are far
/// over the node's 16 MiB message limit.
async fn one_node() -> Result<(Vec<distcache_tests::ClusterNode>, Client), BoxError> {
    let nodes = cluster(1).await?;
    let c = client(&nodes).replicas(1).build().await?;
    Ok((nodes, c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_of_large_values_never_fail_each_other() -> Result<(), BoxError> {
    let (_nodes, c) = one_node().await?;
    for i in 0..40 {
        c.set(format!("big:{i}"), value(i), None).await?;
    }
    c.set("small", "v", None).await?;
    // 40 MiB of answers asked for at once, with small reads among them:
    // a batch that went over the limit used to fail every read in it.
    let reads = (0..40).map(|i| {
        let c = c.clone();
        async move { (i, c.get(format!("big:{i}")).await) }
    });
    let smalls = (0..20).map(|_| {
        let c = c.clone();
        async move { c.get("small").await }
    });
    let (bigs, smalls) = tokio::join!(
        futures_util::future::join_all(reads),
        futures_util::future::join_all(smalls)
    );
    for (i, r) in bigs {
        assert_eq!(r?.expect("present").value, value(i), "big:{i}");
    }
    for r in smalls {
        assert_eq!(&r?.expect("present").value[..], b"v");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_and_mset_larger_than_a_message_round_trip() -> Result<(), BoxError> {
    let (_nodes, c) = one_node().await?;
    // 40 MiB in one mset: more than two of the node's 16 MiB messages.
    let items: Vec<(String, Vec<u8>)> = (0..40).map(|i| (format!("k{i}"), value(i))).collect();
    c.mset(&items, None).await?;
    let mut keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
    // Asked for twice: fetched once, answered twice.
    keys.push("k3".into());
    keys.push("absent".into());
    let got = c.mget(&keys).await?;
    assert_eq!(got.len(), 42);
    for (i, e) in got[..40].iter().enumerate() {
        assert_eq!(e.as_ref().expect("present").value, value(i), "k{i}");
    }
    assert_eq!(got[40].as_ref().expect("present").value, value(3));
    assert!(got[41].is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mget_past_max_answer_bytes_fails_and_the_client_goes_on() -> Result<(), BoxError> {
    let nodes = cluster(1).await?;
    let c = client(&nodes)
        .replicas(1)
        .max_answer_bytes(8 * MIB)
        .build()
        .await?;
    c.set("big", value(1), None).await?;
    let keys = vec!["big"; 9];
    match c.mget(&keys).await {
        Err(Error::ResourceExhausted { message: m, .. }) => {
            assert!(m.contains("max_answer_bytes"), "{m}")
        }
        other => panic!("expected ResourceExhausted, got {other:?}"),
    }
    assert_eq!(c.mget(&keys[..8]).await?.len(), 8);
    Ok(())
}

/// The reads of one key a node ran: `distcache_operations_total` for get.
async fn gets_run(node: &distcache_tests::TestNode) -> f64 {
    let (_, text) = distcache_tests::http_get(node.admin, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(r#"distcache_operations_total{op="get""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Many callers reading one hot key at once cost the node one read per
/// batch: identical GETs queued together are sent once and share the
/// answer. A write between them in the batch ends the sharing, so a read
/// queued after a write sees it. (A current-thread runtime: every caller
/// queues before the coalescer's task runs, so they share one batch.)
#[tokio::test]
async fn identical_gets_in_one_batch_are_read_once() -> Result<(), BoxError> {
    let node = distcache_tests::TestNode::start(distcache_tests::test_config()).await;
    let c = Client::builder()
        .nodes([node.url()])
        .replicas(1)
        .build()
        .await?;
    c.set("hot", "v1", None).await?;
    let before = gets_run(&node).await;
    let reads = futures_util::future::join_all((0..60).map(|_| c.get("hot"))).await;
    for r in reads {
        assert_eq!(&r?.expect("present").value[..], b"v1");
    }
    let ran = gets_run(&node).await - before;
    assert!(
        ran <= 2.0,
        "60 concurrent reads of one key ran {ran} reads on the node"
    );

    // Past a few keys the batch looks reads up in a map: the same holds.
    for i in 0..20 {
        c.set(format!("k{i}"), format!("v{i}"), None).await?;
    }
    let before = gets_run(&node).await;
    let keys: Vec<String> = (0..60).map(|i| format!("k{}", i % 20)).collect();
    let reads = futures_util::future::join_all(keys.iter().map(|k| c.get(k))).await;
    for (k, r) in keys.iter().zip(reads) {
        assert_eq!(
            r?.expect("present").value,
            format!("v{}", &k[1..]).into_bytes()
        );
    }
    let ran = gets_run(&node).await - before;
    assert!(
        ran <= 21.0,
        "60 reads of 20 keys ran {ran} reads on the node"
    );

    let (first, write, second) = tokio::join!(c.get("hot"), c.set("hot", "v2", None), c.get("hot"));
    assert_eq!(&first?.expect("present").value[..], b"v1");
    write?;
    assert_eq!(
        &second?.expect("present").value[..],
        b"v2",
        "a read queued after a write is not answered by the read before it"
    );
    node.stop().await?;
    Ok(())
}
