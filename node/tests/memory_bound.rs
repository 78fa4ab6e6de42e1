//! The real `distcache-node` binary, bounded at 32 MiB, takes 200 MiB of
//! writes: its resident memory stays well under 128 MiB and it keeps answering;
//! and answers that would be huge (10,000 gets of a 1 MiB value) are budgeted
//! to the message limit while they are built, so the node lives and stays small.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient};
use support::{spawn, status_bytes};

#[tokio::test]
async fn two_hundred_mib_into_a_32_mib_node() {
    let (node, addr) = spawn(&["--max-memory", "32MiB"]);
    let mut c = CacheServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut written = 0usize;
    let mut i = 0u64;
    while written < 200 << 20 {
        // Values from 1 KiB to 64 KiB, sent 16 to a batch.
        let operations = (0..16)
            .map(|_| {
                i += 1;
                let len = 1024 + (i * 7919 % 63) as usize * 1024;
                written += len;
                pb::Operation {
                    op: Some(pb::operation::Op::Set(pb::SetRequest {
                        key: format!("key:{i}").into_bytes().into(),
                        value: vec![(i % 251) as u8; len].into(),
                        ..Default::default()
                    })),
                }
            })
            .collect();
        c.batch(pb::BatchRequest { operations })
            .await
            .expect("batch");
    }
    let h = c
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("still answering")
        .into_inner();
    assert!(
        h.memory_bytes <= 32 << 20,
        "accounted {} bytes",
        h.memory_bytes
    );
    let newest = c
        .get(pb::GetRequest {
            key: format!("key:{i}").into_bytes().into(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert!(newest.found, "the newest write survives eviction");
    let rss = status_bytes(node.pid(), "VmRSS");
    assert!(rss < 128 << 20, "RSS {} MiB", rss >> 20);
    eprintln!(
        "wrote {} MiB; RSS {} MiB; {} keys",
        written >> 20,
        rss >> 20,
        h.keys
    );
}

/// A client that accepts answers up to 64 MiB (tonic's default is 4 MiB).
async fn big_client(addr: &str) -> CacheServiceClient<tonic::transport::Channel> {
    CacheServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
}

fn get(key: &str) -> pb::Operation {
    pb::Operation {
        op: Some(pb::operation::Op::Get(pb::GetRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })),
    }
}

fn found(r: &pb::OperationResult) -> bool {
    matches!(&r.result, Some(pb::operation_result::Result::Get(g)) if g.found)
}

/// Counts the answers of a budgeted answer: (found, not run).
fn tally(results: &[pb::OperationResult]) -> (usize, usize) {
    let full = results
        .iter()
        .filter(|r| distcache_proto::budget::is_answer_full(r))
        .count();
    (results.iter().filter(|r| found(r)).count(), full)
}

async fn store_big_value(c: &mut CacheServiceClient<tonic::transport::Channel>) {
    c.set(pb::SetRequest {
        key: "big".into(),
        value: vec![7u8; 1 << 20].into(),
        ..Default::default()
    })
    .await
    .expect("set big");
    c.set(pb::SetRequest {
        key: "small".into(),
        value: "v".into(),
        ..Default::default()
    })
    .await
    .expect("set small");
}

#[tokio::test]
async fn a_batch_of_10000_gets_of_a_1_mib_value_is_answered_within_the_message_limit() {
    let (node, addr) = spawn(&[]);
    let mut c = big_client(&addr).await;
    store_big_value(&mut c).await;
    // 90 KB of request asking for a 10 GB answer: the node used to abort
    // (with 60,000 gets, now refused whole, it asked for 63 GB).
    let operations = (0..10_000).map(|_| get("big")).collect();
    let answer = c
        .batch(pb::BatchRequest { operations })
        .await
        .expect("batch answered")
        .into_inner();
    assert_eq!(answer.results.len(), 10_000);
    let (hits, not_run) = tally(&answer.results);
    assert!(
        (10..=16).contains(&hits),
        "{hits} values in a 16 MiB answer"
    );
    assert_eq!(
        hits + not_run,
        10_000,
        "every other read says it did not run"
    );
    assert!(
        answer.results[..hits].iter().all(found),
        "the answer is a prefix"
    );
    assert!(prost::Message::encoded_len(&answer) <= 16 << 20);
    // Alive, and the answer was never built at full size.
    c.health_check(pb::HealthCheckRequest {})
        .await
        .expect("still answering");
    let peak = status_bytes(node.pid(), "VmHWM");
    assert!(peak < 256 << 20, "peak RSS {} MiB", peak >> 20);
}

#[tokio::test]
async fn a_pipeline_message_past_the_limit_gets_a_partial_answer_and_the_stream_stays_open() {
    let (_node, addr) = spawn(&[]);
    let mut c = big_client(&addr).await;
    store_big_value(&mut c).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut answers = c.pipeline(requests).await.expect("open").into_inner();
    tx.send(pb::PipelineRequest {
        id: 1,
        operations: (0..10_000).map(|_| get("big")).collect(),
        ..Default::default()
    })
    .expect("send");
    let first = answers.message().await.expect("answer").expect("open");
    assert_eq!(first.id, 1);
    let (hits, not_run) = tally(&first.results);
    assert!(hits >= 10 && hits + not_run == 10_000, "{hits} + {not_run}");
    // Too many operations: refused whole, on the same stream.
    tx.send(pb::PipelineRequest {
        id: 2,
        operations: (0..10_001).map(|_| get("small")).collect(),
        ..Default::default()
    })
    .expect("send");
    let second = answers.message().await.expect("answer").expect("open");
    assert_eq!(second.id, 2);
    assert!(second.results.iter().all(|r| matches!(
        &r.result,
        Some(pb::operation_result::Result::Error(e)) if e.code == tonic::Code::InvalidArgument as i32
    )));
    tx.send(pb::PipelineRequest {
        id: 3,
        operations: vec![get("small")],
        ..Default::default()
    })
    .expect("send");
    let third = answers.message().await.expect("answer").expect("open");
    assert_eq!((third.id, tally(&third.results)), (3, (1, 0)));
}

#[tokio::test]
async fn a_batch_of_more_than_10000_operations_is_refused_whole() {
    let (_node, addr) = spawn(&[]);
    let mut c = big_client(&addr).await;
    let operations = (0..60_000).map(|_| get("k")).collect();
    let err = c
        .batch(pb::BatchRequest { operations })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("10000"), "{}", err.message());
}
