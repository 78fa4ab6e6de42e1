//! The SDK against a node that requires client certificates (mTLS, the
//! node's `--tls-client-ca`): with `ClientBuilder::tls_identity` its calls
//! succeed; without one, or with a certificate from another CA, they fail
//! and say why. Certificates are made here (rcgen); the node runs in-process
//! on 127.0.0.1:0.

// Test support: a failed set-up should stop the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use distcache::{Client, ConfigError, Error};
use distcache_node::NodeConfig;
use distcache_tests::tls::Ca;
use distcache_tests::{TestNode, test_config};

/// A scratch folder for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distcache-mtls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A node config serving TLS with a certificate from `ca` for 127.0.0.1
/// and requiring client certificates from `ca`.
fn mtls_config(ca: &Ca, dir: &Path) -> NodeConfig {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    std::fs::write(dir.join("server.pem"), cert).expect("write");
    std::fs::write(dir.join("server.key"), key).expect("write");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    let mut c = test_config();
    c.tls.cert = Some(dir.join("server.pem"));
    c.tls.key = Some(dir.join("server.key"));
    c.tls.client_ca = Some(dir.join("ca.pem"));
    c
}

/// A client of `node` trusting `ca`, presenting `identity` if given. Short
/// deadlines: the failures below are refused handshakes, not slow nodes.
async fn client(
    node: &TestNode,
    ca: &Ca,
    identity: Option<&(String, String)>,
) -> Result<Client, Error> {
    let mut b = Client::builder()
        .nodes([format!("https://{}", node.grpc)])
        .replicas(1)
        .timeout(Duration::from_secs(1))
        .tls_ca(ca.pem());
    if let Some((cert, key)) = identity {
        b = b.tls_identity(cert.clone(), key.clone());
    }
    b.build().await
}

/// Polls `cache` with writes until one succeeds (at most ~10 s): the node
/// loads its certificates as it starts.
async fn wait_served(cache: &Client) {
    for _ in 0..100 {
        if cache.set("ready", b"1", None).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node never served a client with a certificate");
}

/// Polls the health check of a client whose connections the node refuses
/// until its error names the TLS alert `alert` (at most 50 tries): the
/// node sends the alert after the client's side of the TLS 1.3 handshake,
/// so a request that was already queued on the connection may instead see
/// it closed, with no reason.
async fn refused_with(cache: &Client, alert: &str) -> String {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let (_, answer) = cache.health_checks().await.remove(0);
        let why = answer.expect_err("the node answered a client it should refuse");
        let why = why.to_string();
        if why.contains(alert) {
            return why;
        }
        seen.push(why);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no health check named {alert}: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_certificate_from_the_nodes_ca_is_served() {
    let dir = scratch("served");
    let ca = Ca::new("cluster ca");
    let node = TestNode::spawn(mtls_config(&ca, &dir)).await;
    let identity = ca.leaf(&["app-1"], true);
    let cache = client(&node, &ca, Some(&identity)).await.expect("build");
    wait_served(&cache).await;

    let v = cache.set("user:1", b"alice", None).await.expect("set");
    let e = cache.get("user:1").await.expect("get").expect("present");
    assert_eq!((&e.value[..], e.version), (&b"alice"[..], v));
    assert_eq!(cache.incr_by("n", 2).await.expect("incr"), 2);
    let answer = cache.health_checks().await.remove(0).1;
    assert!(answer.is_ok(), "{answer:?}");
    drop(cache);
    node.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_or_with_one_from_another_ca_calls_fail() {
    let dir = scratch("refused");
    let ca = Ca::new("cluster ca");
    let node = TestNode::spawn(mtls_config(&ca, &dir)).await;
    let good = client(&node, &ca, Some(&ca.leaf(&["app-1"], true)))
        .await
        .expect("build");
    wait_served(&good).await;

    let stranger = Ca::new("other ca").leaf(&["app-2"], true);
    for (who, identity, alert) in [
        ("no certificate", None, "CertificateRequired"),
        ("another CA", Some(&stranger), "UnknownCA"),
    ] {
        let cache = client(&node, &ca, identity).await.expect("build");
        let e = cache.get("ready").await.expect_err(who);
        // Like an unreachable node: the node closes the connection.
        assert!(
            matches!(
                e,
                Error::Unavailable { .. } | Error::Timeout(_) | Error::Rpc(_)
            ),
            "{who}: {e:?}"
        );
        assert!(cache.set("k", b"v", None).await.is_err(), "{who}: set");
        // The health check names the refusal.
        let why = refused_with(&cache, alert).await;
        assert!(why.contains("received fatal alert"), "{who}: {why}");
    }
    // The refused clients changed nothing; the good one is still served.
    assert!(good.get("k").await.expect("get").is_none());
    drop(good);
    node.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_malformed_identity_or_one_without_a_ca_is_refused_by_build() {
    let ca = Ca::new("cluster ca");
    let (cert, key) = ca.leaf(&["app-1"], true);
    let build = |ca_pem: Option<String>, cert: String, key: String| async move {
        let mut b = Client::builder()
            .nodes(["127.0.0.1:1"])
            .probe_interval(Duration::ZERO)
            .tls_identity(cert, key);
        if let Some(pem) = ca_pem {
            b = b.tls_ca(pem);
        }
        b.build().await
    };
    let garbled = key.replace("\nMI", "\nXX");
    for (what, r) in [
        ("no CA", build(None, cert.clone(), key.clone()).await),
        (
            "garbled key",
            build(Some(ca.pem()), cert.clone(), garbled).await,
        ),
        (
            "key as cert",
            build(Some(ca.pem()), key.clone(), key.clone()).await,
        ),
    ] {
        assert!(
            matches!(&r, Err(Error::Config(ConfigError::Tls(_)))),
            "{what}: {:?}",
            r.as_ref().err()
        );
    }
    assert!(build(Some(ca.pem()), cert, key).await.is_ok());
}
