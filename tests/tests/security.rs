//! End-to-end tests of the node's security stack: TLS and mTLS with
//! certificates made here (rcgen), bearer tokens and roles against every RPC,
//! key rotation, and rate limits. Nodes run in-process on 127.0.0.1:0.

// Test support: a failed set-up should stop the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distcache_node::NodeConfig;
use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient, operation};
use distcache_serve::security::{Claims, KeySet, Role};
use distcache_tests::tls::Ca;
use distcache_tests::{TestNode, http_get, test_config};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A scratch folder for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distcache-sec-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Writes a server certificate signed by `ca` and returns a TLS config for it.
fn tls_config(ca: &Ca, dir: &std::path::Path, client_ca: bool) -> NodeConfig {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    std::fs::write(dir.join("server.pem"), cert).expect("write");
    std::fs::write(dir.join("server.key"), key).expect("write");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    let mut c = test_config();
    c.tls.cert = Some(dir.join("server.pem"));
    c.tls.key = Some(dir.join("server.key"));
    if client_ca {
        c.tls.client_ca = Some(dir.join("ca.pem"));
    }
    c
}

async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls)?
        .connect()
        .await
}

async fn plain_channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
}

/// Whether the standard health service answers SERVING on `channel`.
async fn healthy(channel: Result<Channel, tonic::transport::Error>) -> bool {
    let Ok(ch) = channel else { return false };
    let req = HealthCheckRequest {
        service: String::new(),
    };
    matches!(HealthClient::new(ch).check(req).await, Ok(r) if r.get_ref().status == 1)
}

/// Polls the standard health service until it answers (at most ~10 s), over
/// TLS when `ca_pem` is given.
async fn wait_healthy(addr: SocketAddr, ca_pem: Option<&str>, identity: Option<&(String, String)>) {
    for _ in 0..200 {
        let ch = match ca_pem {
            Some(ca) => tls_channel(addr, ca, identity).await,
            None => plain_channel(addr).await,
        };
        if healthy(ch).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node at {addr} never became healthy");
}

#[tokio::test]
async fn tls_node_refuses_plaintext_and_serves_tls() {
    let dir = scratch("tls");
    let ca = Ca::new("test ca");
    let node = TestNode::spawn(tls_config(&ca, &dir, false)).await;
    wait_healthy(node.grpc, Some(&ca.pem()), None).await;

    assert!(
        !healthy(plain_channel(node.grpc).await).await,
        "plaintext got an answer"
    );
    let other = Ca::new("other ca");
    let untrusted = tls_channel(node.grpc, &other.pem(), None).await;
    assert!(
        !healthy(untrusted).await,
        "a client trusting another CA connected"
    );

    let ch = tls_channel(node.grpc, &ca.pem(), None).await.expect("tls");
    let mut c = CacheServiceClient::new(ch);
    let set = pb::SetRequest {
        key: "k".into(),
        value: "v".into(),
        ..Default::default()
    };
    c.set(set).await.expect("set over TLS");
    let got = c
        .get(pb::GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect("get");
    assert_eq!(&got.get_ref().value[..], b"v");
    node.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_offered() {
    use tokio_rustls::rustls::{self, ProtocolVersion, RootCertStore, pki_types::ServerName};
    let dir = scratch("tls-versions");
    let ca = Ca::new("test ca");
    let node = TestNode::spawn(tls_config(&ca, &dir, false)).await;
    wait_healthy(node.grpc, Some(&ca.pem()), None).await;
    let mut roots = RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).expect("root");
    for (version, want) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let provider = rustls::crypto::ring::default_provider();
        let cfg = rustls::ClientConfig::builder_with_provider(provider.into())
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(node.grpc)
            .await
            .expect("tcp");
        let name = ServerName::try_from("localhost").expect("name");
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(want));
    }
    node.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_ca() {
    let dir = scratch("mtls");
    let ca = Ca::new("test ca");
    let node = TestNode::spawn(tls_config(&ca, &dir, true)).await;
    let client = ca.leaf(&["client-a"], true);
    wait_healthy(node.grpc, Some(&ca.pem()), Some(&client)).await;

    let without = tls_channel(node.grpc, &ca.pem(), None).await;
    assert!(!healthy(without).await, "no client certificate, yet served");
    let stranger = Ca::new("other ca").leaf(&["client-b"], true);
    let foreign = tls_channel(node.grpc, &ca.pem(), Some(&stranger)).await;
    assert!(
        !healthy(foreign).await,
        "certificate from another CA, yet served"
    );
    assert!(!healthy(plain_channel(node.grpc).await).await);
    node.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(dir);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn mint(keys: &KeySet, sub: &str, role: Role, exp: u64) -> String {
    let claims = Claims {
        sub: sub.into(),
        role,
        iat: now(),
        exp,
    };
    keys.sign(&claims).expect("sign")
}

fn authed<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        let v = format!("Bearer {t}").parse().expect("ascii");
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// A node requiring tokens signed by the keys in `key_file` (its text).
async fn auth_node(name: &str, key_file: &str, tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let dir = scratch(name);
    let path = dir.join("keys");
    distcache_tests::write_private(&path, key_file);
    let mut c = test_config();
    c.auth.secret_file = Some(path);
    tweak(&mut c);
    let node = TestNode::spawn(c).await;
    // grpc.health.v1 is open: no token needed to probe.
    wait_healthy(node.grpc, None, None).await;
    node
}

/// Runs `rpc` with `token` and returns the status code (Ok as `Code::Ok`).
async fn code(c: &mut CacheServiceClient<Channel>, rpc: &str, token: Option<&str>) -> Code {
    let k = || prost::bytes::Bytes::from_static(b"k");
    let get = || pb::Operation {
        op: Some(operation::Op::Get(pb::GetRequest {
            key: k(),
            ..Default::default()
        })),
    };
    let r = match rpc {
        "Get" => c
            .get(authed(
                pb::GetRequest {
                    key: k(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Set" => {
            let m = pb::SetRequest {
                key: k(),
                value: "1".into(),
                ..Default::default()
            };
            c.set(authed(m, token)).await.map(drop)
        }
        "Delete" => {
            let m = pb::DeleteRequest {
                key: k(),
                ..Default::default()
            };
            c.delete(authed(m, token)).await.map(drop)
        }
        "CompareAndSwap" => {
            let m = pb::CompareAndSwapRequest {
                key: k(),
                value: "2".into(),
                ..Default::default()
            };
            c.compare_and_swap(authed(m, token)).await.map(drop)
        }
        "IncrBy" => {
            let m = pb::IncrByRequest {
                key: "n".into(),
                delta: 1,
            };
            c.incr_by(authed(m, token)).await.map(drop)
        }
        "Expire" => {
            let m = pb::ExpireRequest {
                key: k(),
                ttl_ms: 60_000,
                ..Default::default()
            };
            c.expire(authed(m, token)).await.map(drop)
        }
        "BatchGet" => {
            let m = pb::BatchRequest {
                operations: vec![get(), get()],
            };
            c.batch(authed(m, token)).await.map(drop)
        }
        "BatchWrite" => {
            let set = pb::Operation {
                op: Some(operation::Op::Set(pb::SetRequest {
                    key: k(),
                    value: "3".into(),
                    ..Default::default()
                })),
            };
            let m = pb::BatchRequest {
                operations: vec![get(), set],
            };
            c.batch(authed(m, token)).await.map(drop)
        }
        "HealthCheck" => c
            .health_check(authed(pb::HealthCheckRequest {}, token))
            .await
            .map(drop),
        "GetMetrics" => c
            .get_metrics(authed(pb::GetMetricsRequest::default(), token))
            .await
            .map(drop),
        other => panic!("no such rpc {other}"),
    };
    r.map_or_else(|s| s.code(), |()| Code::Ok)
}

const RPCS: [&str; 10] = [
    "Get",
    "Set",
    "Delete",
    "CompareAndSwap",
    "IncrBy",
    "Expire",
    "BatchGet",
    "BatchWrite",
    "HealthCheck",
    "GetMetrics",
];

fn allowed(role: Role, rpc: &str) -> bool {
    match role {
        Role::Admin => true,
        Role::User => rpc != "GetMetrics",
        Role::Readonly => matches!(rpc, "Get" | "BatchGet" | "HealthCheck"),
    }
}

#[tokio::test]
async fn each_role_against_each_rpc_and_each_token_failure() {
    let keys = KeySet::parse("k1:0123456789abcdef0123456789abcdef").expect("keys");
    let node = auth_node("roles", "k1:0123456789abcdef0123456789abcdef\n", |_| {}).await;
    let mut c = CacheServiceClient::new(plain_channel(node.grpc).await.expect("connect"));

    for role in [Role::Readonly, Role::User, Role::Admin] {
        let t = mint(&keys, "alice", role, now() + 600);
        for rpc in RPCS {
            let got = code(&mut c, rpc, Some(&t)).await;
            let want = if allowed(role, rpc) {
                Code::Ok
            } else {
                Code::PermissionDenied
            };
            assert_eq!(got, want, "{} calling {rpc}", role.name());
        }
    }

    let good = mint(&keys, "alice", Role::Admin, now() + 600);
    let (head, sig) = good.rsplit_once('.').expect("dots");
    let mut flipped = sig.as_bytes().to_vec();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}", String::from_utf8(flipped).expect("ascii"));
    let foreign = mint(
        &KeySet::parse("k1:some-other-secret-of-some-length").expect("keys"),
        "mallory",
        Role::Admin,
        now() + 600,
    );
    let unknown_kid = mint(
        &KeySet::parse("k9:0123456789abcdef0123456789abcdef").expect("keys"),
        "mallory",
        Role::Admin,
        now() + 600,
    );
    let expired = mint(&keys, "alice", Role::Admin, now() - 60);
    for (what, token) in [
        ("missing", None),
        ("malformed", Some("not-a-token")),
        ("tampered", Some(tampered.as_str())),
        ("foreign secret", Some(foreign.as_str())),
        ("unknown key id", Some(unknown_kid.as_str())),
        ("expired", Some(expired.as_str())),
    ] {
        assert_eq!(
            code(&mut c, "Get", token).await,
            Code::Unauthenticated,
            "{what}"
        );
    }
    // Within the clock-skew leeway (5 s) an expired token still works.
    let just_expired = mint(&keys, "alice", Role::User, now() - 1);
    assert_eq!(code(&mut c, "Get", Some(&just_expired)).await, Code::Ok);

    // Reflection needs a token (any role); grpc.health.v1 does not.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let mut refl = ServerReflectionClient::new(plain_channel(node.grpc).await.expect("connect"));
    let list = || {
        tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    let e = refl.server_reflection_info(authed(list(), None)).await;
    assert_eq!(e.expect_err("no token").code(), Code::Unauthenticated);
    let ro = mint(&keys, "bob", Role::Readonly, now() + 600);
    refl.server_reflection_info(authed(list(), Some(&ro)))
        .await
        .expect("reflection with a token");

    let (status, body) = http_get(node.admin, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "distcache_auth_failures_total{reason=\"missing\"} 2",
        "distcache_auth_failures_total{reason=\"malformed\"} 1",
        "distcache_auth_failures_total{reason=\"bad_signature\"} 2",
        "distcache_auth_failures_total{reason=\"unknown_key\"} 1",
        "distcache_auth_failures_total{reason=\"expired\"} 1",
        // readonly: 7 refused RPCs; user: GetMetrics.
        "distcache_permission_denied_total 8",
    ] {
        assert!(body.contains(line), "{line} not in\n{body}");
    }
    node.stop().await.expect("stop");
}

/// Tokens the secret's holder should never have minted are refused: one
/// that never expires (`exp` = u64::MAX), one issued in the future, one
/// with an empty subject. The token tool refuses to mint the first.
#[tokio::test]
async fn tokens_that_never_expire_or_name_nobody_are_refused() {
    let keys = KeySet::parse("k1:0123456789abcdef0123456789abcdef").expect("keys");
    let node = auth_node("lifetime", "k1:0123456789abcdef0123456789abcdef\n", |_| {}).await;
    let mut c = CacheServiceClient::new(plain_channel(node.grpc).await.expect("connect"));
    let forever = mint(&keys, "alice", Role::Admin, u64::MAX);
    assert_eq!(
        code(&mut c, "Get", Some(&forever)).await,
        Code::Unauthenticated
    );
    let nobody = mint(&keys, "", Role::Admin, now() + 600);
    assert_eq!(
        code(&mut c, "Get", Some(&nobody)).await,
        Code::Unauthenticated
    );
    let future = keys
        .sign(&Claims {
            sub: "alice".into(),
            role: Role::Admin,
            iat: now() + 3600,
            exp: now() + 7200,
        })
        .expect("sign");
    assert_eq!(
        code(&mut c, "Get", Some(&future)).await,
        Code::Unauthenticated
    );
    let fine = mint(&keys, "alice", Role::Admin, now() + 600);
    assert_eq!(code(&mut c, "Get", Some(&fine)).await, Code::Ok);
}

#[tokio::test]
async fn key_rotation_accepts_old_keys_until_removed() {
    let old = KeySet::parse("k1:first-secret-0123456789abcdef0123").expect("keys");
    let new = KeySet::parse("k2:second-secret-0123456789abcdef012").expect("keys");
    let t_old = mint(&old, "alice", Role::User, now() + 600);
    let t_new = mint(&new, "alice", Role::User, now() + 600);

    let both = "k1:first-secret-0123456789abcdef0123\nk2:second-secret-0123456789abcdef012\n";
    let node = auth_node("rot-both", both, |_| {}).await;
    let mut c = CacheServiceClient::new(plain_channel(node.grpc).await.expect("connect"));
    assert_eq!(code(&mut c, "Set", Some(&t_old)).await, Code::Ok);
    assert_eq!(code(&mut c, "Set", Some(&t_new)).await, Code::Ok);
    node.stop().await.expect("stop");

    let node = auth_node("rot-new", "k2:second-secret-0123456789abcdef012\n", |_| {}).await;
    let mut c = CacheServiceClient::new(plain_channel(node.grpc).await.expect("connect"));
    assert_eq!(
        code(&mut c, "Set", Some(&t_old)).await,
        Code::Unauthenticated
    );
    assert_eq!(code(&mut c, "Set", Some(&t_new)).await, Code::Ok);
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn per_client_and_global_rate_limits() {
    let keys = KeySet::parse("k1:0123456789abcdef0123456789abcdef").expect("keys");
    // A refill so slow that it never matters within the test.
    let node = auth_node("rate", "k1:0123456789abcdef0123456789abcdef\n", |c| {
        c.rate_limit.per_client_rps = 0.001;
        c.rate_limit.per_client_burst = 3;
    })
    .await;
    let mut c = CacheServiceClient::new(plain_channel(node.grpc).await.expect("connect"));
    let alice = mint(&keys, "alice", Role::User, now() + 600);
    let bob = mint(&keys, "bob", Role::User, now() + 600);
    for _ in 0..3 {
        assert_eq!(code(&mut c, "Get", Some(&alice)).await, Code::Ok);
    }
    assert_eq!(
        code(&mut c, "Get", Some(&alice)).await,
        Code::ResourceExhausted
    );
    let e = c
        .get(authed(
            pb::GetRequest {
                key: "k".into(),
                ..Default::default()
            },
            Some(&alice),
        ))
        .await
        .expect_err("still limited");
    let after = e.metadata().get(distcache_serve::security::RETRY_AFTER_MS);
    assert!(after.is_some(), "no retry-after-ms in {:?}", e.metadata());
    assert_eq!(
        code(&mut c, "Get", Some(&bob)).await,
        Code::Ok,
        "bob is unaffected"
    );
    // Probes are never limited.
    assert!(healthy(plain_channel(node.grpc).await).await);
    let (_, body) = http_get(node.admin, "/metrics").await;
    assert!(
        body.contains("distcache_rate_limited_total{scope=\"client\"} 2"),
        "{body}"
    );
    // A Batch is charged per operation: carol's burst of 3 covers one batch
    // of 50 gets (in debt), not 50 batches.
    let carol = mint(&keys, "carol", Role::User, now() + 600);
    let gets = || pb::BatchRequest {
        operations: (0..50)
            .map(|_| pb::Operation {
                op: Some(operation::Op::Get(pb::GetRequest {
                    key: "k".into(),
                    ..Default::default()
                })),
            })
            .collect(),
    };
    assert!(c.batch(authed(gets(), Some(&carol))).await.is_ok());
    let e = c
        .batch(authed(gets(), Some(&carol)))
        .await
        .expect_err("the first batch used the burst and more");
    assert_eq!(e.code(), Code::ResourceExhausted);
    node.stop().await.expect("stop");

    // Without tokens the client is the peer address; a global limit holds for all.
    let mut cfg = test_config();
    cfg.rate_limit.global_rps = 0.001;
    cfg.rate_limit.global_burst = 4;
    let node = TestNode::spawn(cfg).await;
    wait_healthy(node.grpc, None, None).await;
    let mut a = CacheServiceClient::new(plain_channel(node.grpc).await.expect("connect"));
    let mut b = CacheServiceClient::new(plain_channel(node.grpc).await.expect("connect"));
    for _ in 0..2 {
        assert_eq!(code(&mut a, "Get", None).await, Code::Ok);
        assert_eq!(code(&mut b, "Get", None).await, Code::Ok);
    }
    assert_eq!(code(&mut a, "Get", None).await, Code::ResourceExhausted);
    assert_eq!(code(&mut b, "Get", None).await, Code::ResourceExhausted);
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn without_tokens_each_peer_address_has_its_own_bucket() {
    let mut cfg = test_config();
    cfg.rate_limit.per_client_rps = 0.001;
    cfg.rate_limit.per_client_burst = 2;
    let node = TestNode::spawn(cfg).await;
    wait_healthy(node.grpc, None, None).await;
    let from = |ip: [u8; 4]| async move {
        let ch = Channel::from_shared(format!("http://{}", node.grpc))
            .expect("url")
            .local_address(Some(std::net::IpAddr::from(ip)))
            .connect()
            .await
            .expect("connect");
        CacheServiceClient::new(ch)
    };
    let mut a = from([127, 0, 0, 1]).await;
    let mut a2 = from([127, 0, 0, 1]).await;
    let mut b = from([127, 0, 0, 2]).await;
    assert_eq!(code(&mut a, "Get", None).await, Code::Ok);
    assert_eq!(code(&mut a2, "Get", None).await, Code::Ok);
    // A second connection from the same address shares the bucket.
    assert_eq!(code(&mut a, "Get", None).await, Code::ResourceExhausted);
    assert_eq!(code(&mut a2, "Get", None).await, Code::ResourceExhausted);
    assert_eq!(
        code(&mut b, "Get", None).await,
        Code::Ok,
        "another address is unaffected"
    );
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn prototype_flags_give_a_tls_node_that_wants_tokens() {
    use clap::Parser as _;
    let dir = scratch("proto-flags");
    let ca = Ca::new("test ca");
    let (cert, key) = ca.leaf(&["localhost"], false);
    std::fs::write(dir.join("server.pem"), cert).expect("write");
    std::fs::write(dir.join("server.key"), key).expect("write");
    let tls_toml = dir.join("tls.toml");
    std::fs::write(&tls_toml, "cert = \"server.pem\"\nkey = \"server.key\"\n").expect("write");
    let secret = "prototype-secret-0123456789abcdef";
    let args = distcache_node::cli::Args::try_parse_from([
        "distcache-node",
        "--use-tls",
        "--tls-config",
        tls_toml.to_str().expect("utf-8"),
        "--enable-auth",
        "--auth-secret",
        secret,
        "--enable-validation",
        "--enable-rate-limiting",
    ])
    .expect("flags parse");
    let mut cfg = args.into_config().expect("valid");
    cfg.store = test_config().store;
    let node = TestNode::spawn(cfg).await;
    wait_healthy(node.grpc, Some(&ca.pem()), None).await;

    let keys = KeySet::parse(&format!("default:{secret}")).expect("keys");
    let token = mint(&keys, "alice", Role::User, now() + 600);
    let ch = tls_channel(node.grpc, &ca.pem(), None).await.expect("tls");
    let mut c = CacheServiceClient::new(ch);
    assert_eq!(code(&mut c, "Set", None).await, Code::Unauthenticated);
    assert_eq!(code(&mut c, "Set", Some(&token)).await, Code::Ok);
    assert_eq!(
        code(&mut c, "GetMetrics", Some(&token)).await,
        Code::PermissionDenied
    );
    node.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_node_with_auth_enabled_but_no_secret_refuses_to_start() {
    let mut c = test_config();
    c.auth.enabled = true;
    let node = TestNode::spawn(c).await;
    let e = node.stop().await.expect_err("must not start");
    assert!(e.to_string().contains("no secret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_sends_its_token_and_maps_auth_errors() {
    let secret = "sdk-secret-0123456789abcdef012345";
    let keys = KeySet::parse(&format!("k1:{secret}")).expect("keys");
    let node = auth_node("sdk", &format!("k1:{secret}\n"), |_| {}).await;
    let url = format!("http://{}", node.grpc);
    let build = |token: Option<String>| {
        let mut b = distcache::Client::builder().nodes([url.clone()]);
        if let Some(t) = token {
            b = b.token(t);
        }
        b.build()
    };
    let user = build(Some(mint(&keys, "svc-a", Role::User, now() + 600)))
        .await
        .expect("client");
    user.set("k", "v", None)
        .await
        .expect("set with a user token");
    let got = user.get("k").await.expect("get").expect("found");
    assert_eq!(&got.value[..], b"v");

    let readonly = build(Some(mint(&keys, "svc-b", Role::Readonly, now() + 600)))
        .await
        .expect("client");
    assert!(readonly.get("k").await.expect("get").is_some());
    let e = readonly.set("k", "w", None).await.expect_err("readonly");
    assert!(matches!(e, distcache::Error::PermissionDenied(_)), "{e:?}");

    let anonymous = build(None).await.expect("client");
    let e = anonymous.get("k").await.expect_err("no token");
    assert!(matches!(e, distcache::Error::Unauthenticated(_)), "{e:?}");

    // Node figures (the proxy's DBSIZE and INFO) go over the same
    // connections, token included.
    let checks = user.health_checks().await;
    assert!(matches!(&checks[0].1, Ok(h) if h.keys == 1), "{checks:?}");
    let checks = anonymous.health_checks().await;
    assert!(
        matches!(&checks[0].1, Err(distcache::Error::Unauthenticated(_))),
        "{checks:?}"
    );
    node.stop().await.expect("stop");
}

/// Every message of a `Pipeline` stream is checked like a `Batch` call: the
/// token when the stream opens, the role against each message's contents,
/// and one rate-limit token per message.
#[tokio::test]
async fn pipeline_messages_are_checked_for_role_and_rate() {
    use distcache_proto::v1::{operation, operation_result::Result as R};
    let keys = KeySet::parse("k1:0123456789abcdef0123456789abcdef").expect("keys");
    let node = auth_node("pipeline", "k1:0123456789abcdef0123456789abcdef\n", |c| {
        c.rate_limit.per_client_rps = 0.001;
        c.rate_limit.per_client_burst = 6;
    })
    .await;
    let mut c = CacheServiceClient::new(plain_channel(node.grpc).await.expect("connect"));
    let open =
        |token: Option<String>| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<pb::PipelineRequest>();
            let outbound = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            });
            (tx, authed(outbound, token.as_deref()))
        };
    let (_tx, req) = open(None);
    let e = c.pipeline(req).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);

    let ro = mint(&keys, "reader", Role::Readonly, now() + 600);
    let (tx, req) = open(Some(ro));
    // Opening takes the first of the reader's 6 tokens; each message then
    // takes one per operation.
    let mut answers = c.pipeline(req).await.expect("open").into_inner();
    let get = || pb::Operation {
        op: Some(operation::Op::Get(pb::GetRequest {
            key: "k".into(),
            ..Default::default()
        })),
    };
    let set = || pb::Operation {
        op: Some(operation::Op::Set(pb::SetRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        })),
    };
    let mut ask = async |id: u64, operations: Vec<pb::Operation>| {
        tx.send(pb::PipelineRequest {
            id,
            operations,
            ..Default::default()
        })
        .expect("send");
        let a = answers.message().await.expect("answer").expect("open");
        assert_eq!(a.id, id);
        a.results.into_iter().map(|r| r.result).collect::<Vec<_>>()
    };
    let r = ask(1, vec![get(), get()]).await;
    assert!(r.iter().all(|r| matches!(r, Some(R::Get(_)))), "{r:?}");
    let denied = Code::PermissionDenied as i32;
    let r = ask(2, vec![get(), set()]).await;
    assert!(
        r.iter()
            .all(|r| matches!(r, Some(R::Error(e)) if e.code == denied)),
        "{r:?}"
    );
    let r = ask(3, vec![get()]).await;
    assert!(matches!(&r[0], Some(R::Get(_))), "{r:?}");
    // Six tokens spent (open + 5 operations): the next message is refused.
    let limited = Code::ResourceExhausted as i32;
    let r = ask(4, vec![get()]).await;
    assert!(
        matches!(&r[0], Some(R::Error(e)) if e.code == limited),
        "{r:?}"
    );
    let (_, body) = http_get(node.admin, "/metrics").await;
    assert!(
        body.contains("distcache_rate_limited_total{scope=\"client\"} 1"),
        "{body}"
    );
    node.stop().await.expect("stop");
}

/// A `Pipeline` stream outlives no token: once the token that opened it has
/// expired (plus the leeway), the next message ends the stream with
/// UNAUTHENTICATED, and the SDK would open a new one with its current token.
#[tokio::test]
async fn pipeline_streams_end_when_their_token_expires() {
    use distcache_proto::v1::operation;
    let keys = KeySet::parse("k1:0123456789abcdef0123456789abcdef").expect("keys");
    let node = auth_node(
        "pipeline-exp",
        "k1:0123456789abcdef0123456789abcdef\n",
        |c| {
            c.auth.leeway.0 = Duration::ZERO;
        },
    )
    .await;
    let mut c = CacheServiceClient::new(plain_channel(node.grpc).await.expect("connect"));
    let short = mint(&keys, "brief", Role::User, now() + 2);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<pb::PipelineRequest>();
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut answers = c
        .pipeline(authed(outbound, Some(&short)))
        .await
        .expect("open")
        .into_inner();
    let get = || pb::Operation {
        op: Some(operation::Op::Get(pb::GetRequest {
            key: "k".into(),
            ..Default::default()
        })),
    };
    tx.send(pb::PipelineRequest {
        id: 1,
        operations: vec![get()],
        ..Default::default()
    })
    .expect("send");
    assert_eq!(
        answers.message().await.expect("answer").expect("open").id,
        1
    );
    // Keep asking until the token has run out; the stream then ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut id = 1;
    let status = loop {
        assert!(std::time::Instant::now() < deadline, "stream never ended");
        id += 1;
        tx.send(pb::PipelineRequest {
            id,
            operations: vec![get()],
            ..Default::default()
        })
        .expect("send");
        match answers.message().await {
            Ok(Some(a)) => {
                assert_eq!(a.id, id);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(None) => panic!("stream ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    node.stop().await.expect("stop");
}
