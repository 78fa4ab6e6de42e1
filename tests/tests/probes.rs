//! `/livez`, `/readyz` and `/healthz` on the node's and the proxy's admin
//! ports, and gRPC health following readiness, against real servers on
//! loopback. (Drain on SIGTERM is tested on the real binaries, in
//! `node/tests/drain.rs` and `proxy/tests/drain.rs`.)

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use distcache_proto::v1::{self as pb, operation};
use distcache_tests::proxy::frontend;
use distcache_tests::{TestNode, TestProxy, eventually, http_get, test_config};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const LIMIT: Duration = Duration::from_secs(30);

/// grpc.health.v1 status of `service` at `addr` (1 SERVING, 2 NOT_SERVING).
async fn grpc_health(addr: SocketAddr, service: &str) -> i32 {
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("check")
        .into_inner()
        .status
}

#[tokio::test]
async fn a_serving_node_is_live_and_ready_on_every_probe_path() {
    let node = TestNode::start(test_config()).await;
    for path in ["/livez", "/readyz", "/healthz"] {
        assert_eq!(
            http_get(node.admin, path).await,
            (200, "ok\n".into()),
            "{path}"
        );
    }
    for service in ["", "distcache.v1.CacheService"] {
        assert_eq!(grpc_health(node.grpc, service).await, 1, "{service:?}");
    }
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn a_node_outage_makes_the_proxy_unready_but_never_unlive() {
    let node = TestNode::start(test_config()).await;
    let proxy = TestProxy::start(TestProxy::backend(vec![node.url()]).await, frontend()).await;
    eventually(LIMIT, || async {
        http_get(proxy.admin, "/readyz").await.0 == 200 && grpc_health(proxy.grpc, "").await == 1
    })
    .await
    .expect("ready and SERVING while the node is up");

    node.stop().await.expect("stop");
    eventually(LIMIT, || async {
        http_get(proxy.admin, "/readyz").await == (503, "no healthy node\n".into())
    })
    .await
    .expect("/readyz turns 503 once no node is healthy");
    assert_eq!(http_get(proxy.admin, "/healthz").await.0, 503, "the alias");
    assert_eq!(
        http_get(proxy.admin, "/livez").await,
        (200, "ok\n".into()),
        "a sidecar whose nodes are down is alive: restarting it would not help"
    );
    eventually(LIMIT, || async {
        grpc_health(proxy.grpc, "").await == 2
            && grpc_health(proxy.grpc, "distcache.v1.CacheService").await == 2
    })
    .await
    .expect("gRPC health follows readiness to NOT_SERVING");
    proxy.stop().await.expect("proxy stops");
}

/// Writes `n` keys through `Batch`es of 1000.
async fn fill(node: &TestNode, n: usize) {
    let mut c = node.client().await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let operations = chunk
            .iter()
            .map(|i| pb::Operation {
                op: Some(operation::Op::Set(pb::SetRequest {
                    key: format!("key:{i:08}").into_bytes().into(),
                    value: vec![b'v'; 64].into(),
                    ..Default::default()
                })),
            })
            .collect();
        c.batch(pb::BatchRequest { operations })
            .await
            .expect("batch");
    }
}

#[tokio::test]
async fn the_node_admin_port_answers_while_the_wal_is_replayed() {
    const KEYS: usize = 100_000;
    let dir = tempfile::tempdir().expect("dir");
    let mut config = test_config();
    config.wal.data_dir = Some(dir.path().to_owned());
    config.snapshot.interval.0 = Duration::ZERO; // all of it is WAL to replay
    let node = TestNode::start(config.clone()).await;
    fill(&node, KEYS).await;
    node.stop().await.expect("stop");

    // Listeners are bound before `run`, so this request waits in the accept
    // queue at worst; the admin loop answers it before the replay is over.
    let node = TestNode::spawn(config).await;
    let started = Instant::now();
    let (status, body) = http_get(node.admin, "/readyz").await;
    assert_eq!(status, 503, "not ready while replaying ({body:?})");
    assert!(body.starts_with("recovering: "), "{body:?}");
    assert_eq!(
        http_get(node.admin, "/livez").await.0,
        200,
        "alive meanwhile"
    );
    let (status, metrics) = http_get(node.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("\ndistcache_ready 0\n"), "{metrics}");
    assert!(metrics.contains("distcache_build_info{"), "{metrics}");

    eventually(Duration::from_secs(120), || async {
        http_get(node.admin, "/readyz").await.0 == 200
    })
    .await
    .expect("ready once recovered");
    let replay = started.elapsed();
    let (_, metrics) = http_get(node.admin, "/metrics").await;
    assert!(
        metrics.contains(&format!("\ndistcache_keys {KEYS}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("\ndistcache_ready 1\n"));
    eprintln!("replayed {KEYS} records in {replay:?}");
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn a_draining_proxy_is_unready_and_not_serving_yet_still_answers() {
    let node = TestNode::start(test_config()).await;
    let config = distcache_proxy::FrontendConfig {
        drain_delay: Duration::from_secs(3),
        ..frontend()
    };
    let proxy = TestProxy::start(TestProxy::backend(vec![node.url()]).await, config).await;
    let (admin, grpc, resp) = (proxy.admin, proxy.grpc, proxy.resp);
    eventually(LIMIT, || async {
        http_get(admin, "/readyz").await.0 == 200
    })
    .await
    .expect("ready");

    let started = Instant::now();
    let stopping = tokio::spawn(proxy.stop());
    eventually(LIMIT, || async {
        http_get(admin, "/readyz").await == (503, "draining: shutting down\n".into())
    })
    .await
    .expect("unready as soon as shutdown begins");
    assert_eq!(grpc_health(grpc, "").await, 2, "NOT_SERVING while draining");
    assert_eq!(http_get(admin, "/livez").await.0, 200);
    // A new RESP connection is still accepted and answered.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(resp)
        .await
        .expect("accepted");
    c.write_all(b"PING\r\n").await.expect("write");
    let mut buf = [0u8; 7];
    c.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"+PONG\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "checked within the delay"
    );

    stopping.await.expect("join").expect("proxy stops");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "not before the delay"
    );
    node.stop().await.expect("stop");
}
