//! The proxy against nodes that require client certificates (mTLS, the
//! nodes' `--tls-client-ca`): with `--node-tls-cert`/`--node-tls-key` it is
//! served; without them every request fails; and the flags are checked at
//! start-up. Real `distcache-node` and `distcache-proxy` processes on
//! loopback, certificates made here (rcgen).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use distcache_tests::eventually;
use distcache_tests::procs::{Proc, binary, resp_command};
use distcache_tests::tls::Ca;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// A node serving TLS with a certificate from `ca`, requiring client
/// certificates from `ca`; returns it and its CA file.
async fn mtls_node(dir: &Path, ca: &Ca) -> (Proc, String) {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    let cert = write(dir, "node.pem", &cert);
    let key = write(dir, "node.key", &key);
    let ca_file = write(dir, "ca.pem", &ca.pem());
    let node = Proc::node(
        dir,
        "node",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca_file,
        ],
    )
    .await;
    (node, ca_file)
}

/// A proxy of `node` alone (one replica) trusting `ca_file`, with `extra`
/// flags.
async fn proxy_of(dir: &Path, node: &Proc, ca_file: &str, extra: &[&str]) -> Proc {
    let url = format!("https://{}", node.grpc);
    let mut args = vec!["--nodes", &url, "--replicas", "1", "--tls-ca", ca_file];
    args.extend_from_slice(extra);
    Proc::proxy(dir, "proxy", &args).await
}

#[tokio::test]
async fn a_proxy_with_a_client_certificate_is_served_by_mtls_nodes() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("nodes");
    let (node, ca_file) = mtls_node(dir.path(), &ca).await;
    let (cert, key) = ca.leaf(&["proxy"], true);
    let cert = write(dir.path(), "proxy.pem", &cert);
    let key = write(dir.path(), "proxy.key", &key);
    let proxy = proxy_of(
        dir.path(),
        &node,
        &ca_file,
        &["--node-tls-cert", &cert, "--node-tls-key", &key],
    )
    .await;
    let resp = proxy.resp.expect("resp");
    eventually(Duration::from_secs(20), || async {
        resp_command(resp, &["SET", "k", "v"]).await.as_deref() == Some("+OK")
    })
    .await
    .unwrap_or_else(|e| panic!("SET through the proxy ({e}): {}", proxy.log_text()));
    assert_eq!(
        resp_command(resp, &["GET", "k"]).await.as_deref(),
        Some("$1"),
        "GET after SET"
    );
}

#[tokio::test]
async fn without_a_client_certificate_the_proxy_is_refused_by_mtls_nodes() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("nodes");
    let (node, ca_file) = mtls_node(dir.path(), &ca).await;
    let proxy = proxy_of(dir.path(), &node, &ca_file, &["--timeout", "1s"]).await;
    let resp = proxy.resp.expect("resp");
    let answer = resp_command(resp, &["SET", "k", "v"])
        .await
        .expect("an answer");
    assert!(
        answer.starts_with('-'),
        "served without a certificate: {answer}"
    );
}

#[test]
fn the_client_certificate_flags_are_checked_at_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = write(dir.path(), "ca.pem", &Ca::new("nodes").pem());
    let cert = write(dir.path(), "c.pem", "not a certificate");
    let key = write(dir.path(), "c.key", "not a key");
    let check = |args: &[&str]| {
        let out = std::process::Command::new(binary("distcache-proxy"))
            .args(["--nodes", "https://127.0.0.1:1", "--check-config"])
            .args(args)
            .output()
            .expect("run distcache-proxy");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = check(&["--node-tls-cert", &cert]);
    assert!(
        !ok && err.contains("--node-tls-key"),
        "a certificate without its key: {err}"
    );
    let (ok, err) = check(&["--node-tls-cert", &cert, "--node-tls-key", &key]);
    assert!(
        !ok && err.contains("--tls-ca"),
        "without the nodes' CA: {err}"
    );
    let (ok, err) = check(&[
        "--tls-ca",
        &ca,
        "--node-tls-cert",
        &cert,
        "--node-tls-key",
        &key,
    ]);
    assert!(!ok && err.contains("holds no PEM"), "not PEM: {err}");
}
