//! SIGHUP on the real binaries: a node and a `--nodes` proxy survive it and
//! re-read their certificates, secrets and token file; a bad file keeps
//! the old material and counts a failed reload.
//!
//! Needs the binaries built (`cargo build -p distcache-node -p
//! distcache-proxy`; see `distcache_tests::procs`).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use distcache_proto::v1::GetRequest;
use distcache_proto::v1::cache_service_client::CacheServiceClient;
use distcache_serve::security::auth::unix_now;
use distcache_serve::security::{Claims, KeySet, Role};
use distcache_tests::procs::{Proc, resp_command};
use distcache_tests::tls::Ca;
use distcache_tests::{BoxError, eventually};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const OK: &str = "distcache_reloads_total{result=\"ok\"}";
const FAILED: &str = "distcache_reloads_total{result=\"failed\"}";
const PROXY_OK: &str = "distcache_proxy_reloads_total{result=\"ok\"}";
const PROXY_FAILED: &str = "distcache_proxy_reloads_total{result=\"failed\"}";

const SECRET_1: &str = "k1:first-secret-0123456789abcdef012345";
const SECRET_2: &str = "k2:second-secret-0123456789abcdef01234";

fn token(secret_line: &str, role: Role) -> String {
    let keys = KeySet::parse(secret_line).expect("keys");
    let now = unix_now();
    keys.sign(&Claims {
        sub: "reload-test".into(),
        role,
        iat: now,
        exp: now + 3600,
    })
    .expect("sign")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    // Rewritten in place by the tests; 0600 as a secret file must be.
    distcache_tests::write_private(&path, text);
    path.to_str().expect("utf-8 path").to_owned()
}

/// A gRPC channel to `p`, over TLS trusting only `ca` when given.
async fn channel(p: &Proc, ca: Option<&str>) -> Result<Channel, BoxError> {
    let port = p.grpc.port();
    let endpoint = match ca {
        None => Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?,
        Some(ca) => Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost"),
        )?,
    };
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// A `Get` over `ch`, with `token` as bearer when given.
async fn get(ch: &Channel, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(GetRequest {
        key: b"k".to_vec().into(),
        ..Default::default()
    });
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    CacheServiceClient::new(ch.clone())
        .get(req)
        .await
        .map(|_| ())
}

async fn health(p: &Proc) -> bool {
    let Ok(ch) = channel(p, None).await else {
        return false;
    };
    let req = distcache_proto::v1::HealthCheckRequest {};
    CacheServiceClient::new(ch).health_check(req).await.is_ok()
}

#[tokio::test]
async fn sighup_never_kills_a_node_or_a_nodes_proxy() {
    let dir = tempfile::tempdir().expect("dir");
    let mut node = Proc::node(dir.path(), "node", &[]).await;
    for n in 1..=2 {
        node.hangup();
        node.wait_metric(OK, f64::from(n)).await;
    }
    assert!(node.alive(), "{}", node.log_text());
    assert!(health(&node).await, "HealthCheck after SIGHUP");

    let url = format!("http://{}", node.grpc);
    let mut proxy = Proc::proxy(dir.path(), "proxy", &["--nodes", &url]).await;
    let resp = proxy.resp.expect("resp");
    proxy.hangup();
    proxy.wait_metric(PROXY_OK, 1.0).await;
    assert!(proxy.alive(), "{}", proxy.log_text());
    assert_eq!(
        resp_command(resp, &["SET", "a", "1"]).await.as_deref(),
        Some("+OK")
    );
    assert_eq!(
        resp_command(resp, &["PING"]).await.as_deref(),
        Some("+PONG")
    );
    assert_eq!(proxy.metric(PROXY_FAILED).await, 0.0);
}

#[tokio::test]
async fn a_node_serves_a_rotated_certificate_to_new_connections() {
    let dir = tempfile::tempdir().expect("dir");
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let (cert, key) = old_ca.leaf(&["localhost"], false);
    let cert_path = write(dir.path(), "node.pem", &cert);
    let key_path = write(dir.path(), "node.key", &key);
    let node = Proc::node(
        dir.path(),
        "node",
        &["--tls-cert", &cert_path, "--tls-key", &key_path],
    )
    .await;
    let before = channel(&node, Some(&old_ca.pem())).await.expect("old CA");
    get(&before, None)
        .await
        .expect("get over the old certificate");
    assert!(channel(&node, Some(&new_ca.pem())).await.is_err());

    let (cert, key) = new_ca.leaf(&["localhost"], false);
    write(dir.path(), "node.pem", &cert);
    write(dir.path(), "node.key", &key);
    node.hangup();
    node.wait_metric(OK, 1.0).await;

    let after = channel(&node, Some(&new_ca.pem())).await.expect("new CA");
    get(&after, None)
        .await
        .expect("get over the new certificate");
    assert!(
        channel(&node, Some(&old_ca.pem())).await.is_err(),
        "a new connection trusting only the old CA must fail"
    );
    get(&before, None)
        .await
        .expect("a connection made before the reload keeps its certificate");
}

#[tokio::test]
async fn a_node_accepts_tokens_of_its_new_secret_and_refuses_the_old() {
    let dir = tempfile::tempdir().expect("dir");
    let secrets = write(dir.path(), "auth.keys", &format!("{SECRET_1}\n"));
    let node = Proc::node(dir.path(), "node", &["--auth-secret-file", &secrets]).await;
    let (old, new) = (token(SECRET_1, Role::User), token(SECRET_2, Role::User));
    let ch = channel(&node, None).await.expect("channel");
    get(&ch, Some(&old)).await.expect("old token before");
    let refused = get(&ch, Some(&new)).await.expect_err("new token before");
    assert_eq!(refused.code(), Code::Unauthenticated);

    write(dir.path(), "auth.keys", &format!("{SECRET_2}\n"));
    node.hangup();
    node.wait_metric(OK, 1.0).await;
    get(&ch, Some(&new)).await.expect("new token after");
    let refused = get(&ch, Some(&old)).await.expect_err("old token after");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

#[tokio::test]
async fn a_proxy_presents_its_rewritten_token_file_after_sighup() {
    let dir = tempfile::tempdir().expect("dir");
    let secrets = write(dir.path(), "auth.keys", &format!("{SECRET_1}\n"));
    let node = Proc::node(dir.path(), "node", &["--auth-secret-file", &secrets]).await;
    let token_file = write(dir.path(), "proxy.token", &token(SECRET_1, Role::User));
    let url = format!("http://{}", node.grpc);
    let proxy = Proc::proxy(
        dir.path(),
        "proxy",
        &["--nodes", &url, "--token-file", &token_file],
    )
    .await;
    let resp = proxy.resp.expect("resp");
    let set = || async move { resp_command(resp, &["SET", "k", "v"]).await };
    eventually(Duration::from_secs(20), || async {
        set().await.as_deref() == Some("+OK")
    })
    .await
    .expect("SET through the proxy with the first token");

    // The node retires k1: the proxy's token is refused, its streams end.
    write(dir.path(), "auth.keys", &format!("{SECRET_2}\n"));
    node.hangup();
    node.wait_metric(OK, 1.0).await;
    eventually(Duration::from_secs(20), || async {
        set().await.is_some_and(|r| r.starts_with('-'))
    })
    .await
    .expect("the proxy's old token stops working");

    write(dir.path(), "proxy.token", &token(SECRET_2, Role::User));
    proxy.hangup();
    proxy.wait_metric(PROXY_OK, 1.0).await;
    eventually(Duration::from_secs(20), || async {
        set().await.as_deref() == Some("+OK")
    })
    .await
    .unwrap_or_else(|e| panic!("SET with the new token ({e}): {}", proxy.log_text()));
}

#[tokio::test]
async fn a_bad_file_on_sighup_keeps_the_old_material() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("CA");
    let (cert, key) = ca.leaf(&["localhost"], false);
    let cert_path = write(dir.path(), "node.pem", &cert);
    let key_path = write(dir.path(), "node.key", &key);
    let secrets = write(dir.path(), "auth.keys", &format!("{SECRET_1}\n"));
    let node = Proc::node(
        dir.path(),
        "node",
        &[
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
            "--auth-secret-file",
            &secrets,
        ],
    )
    .await;
    let old = token(SECRET_1, Role::User);
    // A garbage certificate, and a secret file that would retire k1: the
    // reload fails as a whole, so k1 stays too.
    write(
        dir.path(),
        "node.pem",
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    );
    write(dir.path(), "auth.keys", &format!("{SECRET_2}\n"));
    node.hangup();
    node.wait_metric(FAILED, 1.0).await;
    assert_eq!(node.metric(OK).await, 0.0);
    let ch = channel(&node, Some(&ca.pem()))
        .await
        .expect("the old certificate is still served");
    get(&ch, Some(&old))
        .await
        .expect("the old secret still counts");
    assert!(node.log_text().contains("reload failed"));

    // The proxy: an empty token file keeps the token it has.
    let url = format!("https://localhost:{}", node.grpc.port());
    let ca_path = write(dir.path(), "ca.pem", &ca.pem());
    let token_file = write(dir.path(), "proxy.token", &old);
    let proxy = Proc::proxy(
        dir.path(),
        "proxy",
        &[
            "--nodes",
            &url,
            "--tls-ca",
            &ca_path,
            "--token-file",
            &token_file,
        ],
    )
    .await;
    let resp = proxy.resp.expect("resp");
    write(dir.path(), "proxy.token", "");
    proxy.hangup();
    proxy.wait_metric(PROXY_FAILED, 1.0).await;
    eventually(Duration::from_secs(20), || async {
        resp_command(resp, &["SET", "k", "v"]).await.as_deref() == Some("+OK")
    })
    .await
    .unwrap_or_else(|e| panic!("SET after a failed reload ({e}): {}", proxy.log_text()));
    assert_eq!(proxy.metric(PROXY_OK).await, 0.0);
}
