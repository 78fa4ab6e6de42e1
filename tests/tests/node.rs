//! A real node on loopback, driven through the generated tonic client.

#![allow(clippy::expect_used)] // helpers outside #[test] fns fail loudly too

use std::time::Duration;

use distcache_proto::v1::{self as pb, operation, operation_result};
use distcache_tests::{TestNode, http_get, test_config};
use tonic::Code;

fn set(key: &str, value: &str) -> pb::SetRequest {
    pb::SetRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn key(k: &str) -> prost::bytes::Bytes {
    prost::bytes::Bytes::copy_from_slice(k.as_bytes())
}

async fn channel(node: &TestNode) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(node.url())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

#[tokio::test]
async fn set_get_delete_miss_and_cas() {
    let node = TestNode::start(test_config()).await;
    let mut c = node.client().await;

    let miss = c
        .get(pb::GetRequest {
            key: key("user:123"),
            ..Default::default()
        })
        .await
        .expect("a miss is not an error")
        .into_inner();
    assert!(!miss.found);

    let w = c
        .set(set("user:123", r#"{"name":"Alice"}"#))
        .await
        .expect("set")
        .into_inner();
    assert!(w.applied && w.version > 0);

    let got = c
        .get(pb::GetRequest {
            key: key("user:123"),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert!(got.found);
    assert_eq!(&got.value[..], br#"{"name":"Alice"}"#);
    assert_eq!(got.version, w.version);
    assert_eq!(got.ttl_ms, 0);

    let stale = c
        .compare_and_swap(pb::CompareAndSwapRequest {
            key: key("user:123"),
            expected_version: w.version - 1,
            value: b"x".to_vec().into(),
            ttl_ms: 0,
        })
        .await
        .expect("cas mismatch is an answer, not an error")
        .into_inner();
    assert!(!stale.swapped);
    assert_eq!(stale.version, w.version);
    let swapped = c
        .compare_and_swap(pb::CompareAndSwapRequest {
            key: key("user:123"),
            expected_version: w.version,
            value: b"Bob".to_vec().into(),
            ttl_ms: 0,
        })
        .await
        .expect("cas")
        .into_inner();
    assert!(swapped.swapped && swapped.version > w.version);

    let d = c
        .delete(pb::DeleteRequest {
            key: key("user:123"),
            version: 0,
            return_value: false,
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(d.deleted && d.version > swapped.version);
    // A replicated write older than the tombstone does not bring it back.
    let late = c
        .set(pb::SetRequest {
            version: swapped.version + 1,
            ..set("user:123", "late")
        })
        .await
        .expect("set")
        .into_inner();
    assert!(!late.applied);
    assert_eq!(late.version, d.version);
    let gone = c
        .get(pb::GetRequest {
            key: key("user:123"),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert!(!gone.found);
    // The miss reports the tombstone, and a key never written none.
    assert_eq!(gone.tombstone_version, d.version);
    let never = c
        .get(pb::GetRequest {
            key: key("never"),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert!(!never.found && never.tombstone_version == 0);
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn ttl_expires() {
    let node = TestNode::start(test_config()).await;
    let mut c = node.client().await;
    c.set(pb::SetRequest {
        ttl_ms: 100,
        ..set("short", "lived")
    })
    .await
    .expect("set");
    let live = c
        .get(pb::GetRequest {
            key: key("short"),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    // The key may already be gone on a very slow machine; if found, its TTL is bounded.
    assert!(!live.found || (live.ttl_ms > 0 && live.ttl_ms <= 100));
    // Poll until the deadline passes rather than sleeping a fixed time.
    let mut found = true;
    for _ in 0..100 {
        found = c
            .get(pb::GetRequest {
                key: key("short"),
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner()
            .found;
        if !found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!found, "key outlived its TTL by seconds");
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn oversize_input_is_invalid_argument_naming_the_limit() {
    let mut cfg = test_config();
    cfg.limits.max_key_bytes.0 = 16;
    cfg.limits.max_value_bytes.0 = 1024;
    cfg.limits.max_ttl.0 = Duration::from_secs(60);
    let node = TestNode::start(cfg).await;
    let mut c = node.client().await;
    let cases = [
        (set(&"k".repeat(17), "v"), "max-key-bytes"),
        (set("", "v"), "empty"),
        (set("k", &"v".repeat(1025)), "max-value-bytes"),
        (
            pb::SetRequest {
                ttl_ms: 61_000,
                ..set("k", "v")
            },
            "max-ttl",
        ),
        (
            pb::SetRequest {
                condition: 42,
                ..set("k", "v")
            },
            "condition",
        ),
    ];
    for (req, limit) in cases {
        let e = c.set(req).await.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(limit), "{limit}: {}", e.message());
    }
    // Nothing was stored, and the node still answers.
    let h = c
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!(h.keys, 0);
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn counters_expire_and_batch() {
    let node = TestNode::start(test_config()).await;
    let mut c = node.client().await;
    let n = c
        .incr_by(pb::IncrByRequest {
            key: key("n"),
            delta: 5,
        })
        .await
        .expect("incr")
        .into_inner();
    assert_eq!(n.value, 5);
    c.set(set("text", "abc")).await.expect("set");
    let e = c
        .incr_by(pb::IncrByRequest {
            key: key("text"),
            delta: 1,
        })
        .await
        .expect_err("not an integer");
    assert_eq!(e.code(), Code::FailedPrecondition);

    let ex = c
        .expire(pb::ExpireRequest {
            key: key("n"),
            ttl_ms: 60_000,
            version: 0,
        })
        .await
        .expect("expire")
        .into_inner();
    assert!(ex.applied);

    let op = |o| pb::Operation { op: Some(o) };
    let batch = c
        .batch(pb::BatchRequest {
            operations: vec![
                op(operation::Op::Set(set("a", "1"))),
                op(operation::Op::Get(pb::GetRequest {
                    key: key("a"),
                    ..Default::default()
                })),
                op(operation::Op::Get(pb::GetRequest {
                    key: key("nope"),
                    ..Default::default()
                })),
                op(operation::Op::Set(set("", "bad"))),
                op(operation::Op::IncrBy(pb::IncrByRequest {
                    key: key("n"),
                    delta: -2,
                })),
                op(operation::Op::Delete(pb::DeleteRequest {
                    key: key("a"),
                    version: 0,
                    return_value: false,
                })),
                pb::Operation { op: None },
            ],
        })
        .await
        .expect("batch")
        .into_inner();
    use operation_result::Result as R;
    let r: Vec<_> = batch.results.into_iter().map(|r| r.result).collect();
    assert_eq!(r.len(), 7);
    assert!(matches!(&r[0], Some(R::Set(s)) if s.applied));
    assert!(matches!(&r[1], Some(R::Get(g)) if g.found && &g.value[..] == b"1"));
    assert!(matches!(&r[2], Some(R::Get(g)) if !g.found));
    assert!(matches!(&r[3], Some(R::Error(e)) if e.code == Code::InvalidArgument as i32));
    assert!(matches!(&r[4], Some(R::IncrBy(i)) if i.value == 3));
    assert!(matches!(&r[5], Some(R::Delete(d)) if d.deleted));
    assert!(matches!(&r[6], Some(R::Error(e)) if e.code == Code::InvalidArgument as i32));
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn health_grpc_health_and_reflection() {
    let mut cfg = test_config();
    cfg.server.node_id = "node-a".into();
    let node = TestNode::start(cfg).await;
    let mut c = node.client().await;
    c.set(set("k", "v")).await.expect("set");
    let h = c
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!(h.status, pb::ServingStatus::Serving as i32);
    assert_eq!(h.node_id, "node-a");
    assert_eq!(h.keys, 1);
    assert!(h.memory_bytes > 0 && h.max_memory_bytes == 64 << 20);

    // The standard health service, as a Kubernetes gRPC probe asks it.
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(channel(&node).await);
    for service in ["", "distcache.v1.CacheService"] {
        let s = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner();
        assert_eq!(s.status, 1, "{service:?} is SERVING");
    }

    // Server reflection, as grpcurl uses it.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel(&node).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"distcache.v1.CacheService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn metrics_over_http_and_grpc() {
    let node = TestNode::start(test_config()).await;
    let mut c = node.client().await;
    c.set(set("k", "v")).await.expect("set");
    c.get(pb::GetRequest {
        key: key("k"),
        ..Default::default()
    })
    .await
    .expect("get");
    c.get(pb::GetRequest {
        key: key("missing"),
        ..Default::default()
    })
    .await
    .expect("get");

    let (status, body) = http_get(node.admin, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        r#"distcache_operations_total{op="set",result="ok"} 1"#,
        r#"distcache_operations_total{op="get",result="ok"} 1"#,
        r#"distcache_operations_total{op="get",result="miss"} 1"#,
        "distcache_cache_hits_total 1",
        "distcache_cache_misses_total 1",
        "distcache_keys 1",
        "distcache_request_duration_seconds_bucket",
        "distcache_memory_bytes",
        "distcache_evictions_total 0",
    ] {
        assert!(body.contains(needle), "missing {needle} in:\n{body}");
    }
    let (status, json) = http_get(node.admin, "/metrics.json").await;
    assert_eq!(status, 200);
    assert!(json.contains(r#""keys":1"#), "{json}");
    assert_eq!(http_get(node.admin, "/healthz").await.0, 200);
    assert_eq!(http_get(node.admin, "/nope").await.0, 404);

    let m = c
        .get_metrics(pb::GetMetricsRequest {
            format: pb::MetricsFormat::Json as i32,
        })
        .await
        .expect("metrics")
        .into_inner();
    assert_eq!(m.content_type, "application/json");
    assert!(m.body.contains(r#""hits":1"#), "{}", m.body);
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn memory_bound_holds_under_load_and_node_keeps_answering() {
    let mut cfg = test_config();
    cfg.store.max_memory.0 = 2 << 20;
    let node = TestNode::start(cfg).await;
    let mut c = node.client().await;
    let value = "x".repeat(1000);
    // 8 MiB of values into a 2 MiB node.
    for i in 0..8192 {
        c.set(set(&format!("key:{i}"), &value)).await.expect("set");
    }
    let h = c
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("health")
        .into_inner();
    assert!(h.memory_bytes <= 2 << 20, "{} bytes", h.memory_bytes);
    assert!(h.keys > 1000 && h.keys < 2100, "{} keys", h.keys);
    let newest = c
        .get(pb::GetRequest {
            key: key("key:8191"),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert!(newest.found);
    let (_, body) = http_get(node.admin, "/metrics").await;
    assert!(
        !body.contains("distcache_evictions_total 0\n"),
        "evictions counted"
    );
    node.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_returns() {
    let node = TestNode::start(test_config()).await;
    let admin = node.admin;
    node.stop().await.expect("clean stop");
    // The admin listener is closed after shutdown.
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}

/// A `Pipeline` stream answers every message by id (mixed reads, writes and
/// bad operations, per-operation errors), keeps answering while open, and
/// ends cleanly when the node shuts down instead of holding up the drain.
#[tokio::test]
async fn pipeline_answers_by_id_and_ends_at_shutdown() {
    use operation_result::Result as R;
    let node = TestNode::start(test_config()).await;
    let mut c = node.client().await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<pb::PipelineRequest>();
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut answers = c.pipeline(outbound).await.expect("open").into_inner();
    let op = |o| pb::Operation { op: Some(o) };
    // Many messages before reading any answer: they are pipelined.
    for id in 0..100u64 {
        let k = format!("p{id}");
        let v = format!("v{id}");
        tx.send(pb::PipelineRequest {
            id: 1000 + id,
            operations: vec![
                op(operation::Op::Set(set(&k, &v))),
                op(operation::Op::Get(pb::GetRequest {
                    key: key(&k),
                    ..Default::default()
                })),
                op(operation::Op::Set(set("", "empty key"))),
            ],
            ..Default::default()
        })
        .expect("send");
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100 {
        let a = answers.message().await.expect("answer").expect("open");
        let id = a.id - 1000;
        assert!(
            id < 100 && seen.insert(id),
            "each id answered once: {}",
            a.id
        );
        let r: Vec<_> = a.results.into_iter().map(|r| r.result).collect();
        assert_eq!(r.len(), 3);
        assert!(matches!(&r[0], Some(R::Set(s)) if s.applied));
        let want = format!("v{id}");
        assert!(matches!(&r[1], Some(R::Get(g)) if g.found && g.value == want.as_bytes()));
        assert!(matches!(&r[2], Some(R::Error(e)) if e.code == Code::InvalidArgument as i32));
    }
    // The writes are visible to ordinary calls.
    let g = c
        .get(pb::GetRequest {
            key: key("p42"),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&g.value[..], b"v42");

    // Shutdown with the stream still open (the client never closes it):
    // the node ends the stream and returns well within its 5 s grace.
    let stopped = tokio::time::timeout(Duration::from_secs(4), node.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "node stopped promptly");
    let end = answers.message().await;
    assert!(!matches!(end, Ok(Some(_))), "stream ended: {end:?}");
    drop(tx);
}

/// Sends raw bytes as a gRPC request body and decodes the answer with the
/// stubs' codec, so a test can put malformed protobuf on the wire.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Self::Item,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = prost::bytes::Bytes;
    type Decode = pb::SetResponse;
    type Encoder = RawEncoder;
    type Decoder = <distcache_proto::codec::ProtoCodec<pb::SetResponse, pb::SetResponse> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic::codec::Codec::decoder(&mut distcache_proto::codec::ProtoCodec::<
            pb::SetResponse,
            pb::SetResponse,
        >::default())
    }
}

#[tokio::test]
async fn malformed_protobuf_is_an_error_and_the_node_keeps_serving() {
    let node = TestNode::start(test_config()).await;
    let ch = channel(&node).await;
    let mut raw = tonic::client::Grpc::new(ch.clone());
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/distcache.v1.CacheService/Set");
    let garbage: [&[u8]; 4] = [
        // key (field 1, bytes) claims 16 bytes; one follows.
        b"\x0a\x10a",
        // a varint that never ends
        b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        // wire type 7 does not exist
        b"\x0f",
        // a value (field 2) of length 2^63
        b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
    ];
    for body in garbage {
        raw.ready().await.expect("ready");
        let err = raw
            .unary(
                tonic::Request::new(prost::bytes::Bytes::from_static(body)),
                path.clone(),
                RawCodec,
            )
            .await
            .expect_err("malformed request refused");
        assert_eq!(err.code(), Code::Internal, "{body:?}: {err}");
        assert!(err.message().contains("decode"), "{err}");
    }
    // A well-formed request on the same connection still works, and nothing
    // the malformed ones carried was stored.
    let mut client = pb::cache_service_client::CacheServiceClient::new(ch);
    let ok = client.set(set("k", "v")).await.expect("set").into_inner();
    assert!(ok.applied);
    let got = client
        .get(pb::GetRequest {
            key: key("a"),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert!(!got.found);
}

/// Idle sockets on the admin port are closed once the header timeout passes,
/// and while every admin slot is held the port still answers once one frees:
/// silent clients cannot use up the node's file descriptors.
#[tokio::test]
async fn silent_admin_connections_are_closed_and_bounded() {
    use tokio::io::AsyncReadExt;
    let node = TestNode::start(test_config()).await;
    let limit = distcache_serve::admin::MAX_ADMIN_CONNECTIONS;
    let mut silent = Vec::new();
    for _ in 0..limit + 8 {
        silent.push(
            tokio::net::TcpStream::connect(node.admin)
                .await
                .expect("connect"),
        );
    }
    // More than the bound are waiting; a scrape is answered once the header
    // timeout has closed the silent ones.
    let bound = distcache_serve::admin::ADMIN_HEADER_TIMEOUT * 4;
    let (status, body) = tokio::time::timeout(bound, http_get(node.admin, "/metrics"))
        .await
        .expect("answered once the silent connections timed out");
    assert_eq!(status, 200);
    assert!(body.contains("distcache_"));
    let mut first = silent.swap_remove(0);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(bound, first.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent admin connection was closed"
    );
    node.stop().await.expect("stop");
}

/// One far-future version (a clock bug, or any `user` token calling `Set`
/// with a huge `version`) is refused, so the key stays writable by honest
/// writers and no SDK clock adopts it.
#[tokio::test]
async fn a_version_far_ahead_of_the_clock_is_refused_and_the_key_stays_writable() {
    let node = TestNode::start(test_config()).await;
    let mut c = node.client().await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut far = set("k", "from the future");
    far.version = distcache_proto::version_floor(now_ms + 3_600_000);
    let e = c.set(far).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("max-version-skew"), "{}", e.message());
    let mut max = set("k", "max");
    max.version = u64::MAX;
    assert_eq!(
        c.set(max).await.expect_err("refused").code(),
        Code::InvalidArgument
    );
    let mut tomb = pb::DeleteRequest {
        key: key("k"),
        version: u64::MAX,
        return_value: false,
    };
    assert_eq!(
        c.delete(tomb.clone()).await.expect_err("refused").code(),
        Code::InvalidArgument
    );
    // Within the bound (a few seconds of skew) replicated writes still apply.
    tomb.version = distcache_proto::version_floor(now_ms + 5_000);
    assert!(c.delete(tomb).await.is_ok());
    let cache = distcache::Client::builder()
        .nodes([node.url()])
        .replicas(1)
        .build()
        .await
        .expect("client");
    cache
        .set("k2", "honest", None)
        .await
        .expect("an honest write");
    assert_eq!(
        &cache.get("k2").await.expect("get").expect("found").value[..],
        b"honest"
    );
    node.stop().await.expect("stop");
}

/// A client that never reads its answers keeps only `max_in_flight` of
/// them on the node (issue 21, finding 6): an answer holds its in-flight
/// slot until it is sent, so once that many answers wait behind a shut
/// flow-control window, further requests are refused RESOURCE_EXHAUSTED
/// instead of building more answers; when the reader goes, the slots free.
#[tokio::test]
async fn answers_a_client_never_reads_hold_their_in_flight_slots() {
    let mut config = test_config();
    config.server.max_in_flight = 2;
    let node = TestNode::start(config).await;
    let value = vec![b'v'; 1 << 20];
    let mut c = node.client().await;
    c.set(pb::SetRequest {
        key: key("big"),
        value: value.into(),
        ..Default::default()
    })
    .await
    .expect("set");
    let gets = || pb::BatchRequest {
        operations: (0..4)
            .map(|_| pb::Operation {
                op: Some(operation::Op::Get(pb::GetRequest {
                    key: key("big"),
                    ..Default::default()
                })),
            })
            .collect(),
    };
    // Two batches of 4 MiB answers whose bodies are never read: each
    // waits behind HTTP/2's 64 KiB window once its headers arrived.
    let stuck = channel(&node).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut grpc = tonic::client::Grpc::new(stuck.clone());
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/distcache.v1.CacheService/Batch",
        );
        let codec =
            distcache_proto::codec::ProtoCodec::<pb::BatchRequest, pb::BatchResponse>::default();
        let answer = grpc
            .server_streaming(tonic::Request::new(gets()), path, codec)
            .await
            .expect("headers");
        held.push(answer);
    }
    let mut other = pb::cache_service_client::CacheServiceClient::new(channel(&node).await);
    let refused = other
        .get(pb::GetRequest {
            key: key("big"),
            ..Default::default()
        })
        .await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(Code::ResourceExhausted),
        "both slots are held by unsent answers"
    );
    // The reader goes away: its answers are dropped with their slots.
    drop(held);
    drop(stuck);
    let mut served = false;
    for _ in 0..200 {
        if other
            .get(pb::GetRequest {
                key: key("big"),
                ..Default::default()
            })
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served, "the slots were freed");
    node.stop().await.expect("stop");
}
