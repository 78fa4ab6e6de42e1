//! The `distcache` binary against a real node: one-shot commands, the
//! line-by-line REPL with redis-cli style answers and quoting, `--version`,
//! and client certificates (`--tls-cert`/`--tls-key`) for a node that
//! requires them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use distcache_node::{Listeners, NodeConfig};

async fn node() -> String {
    serve(NodeConfig::default(), "http").await
}

/// Starts a node with `config` on 127.0.0.1:0; its URL with `scheme`.
async fn serve(config: NodeConfig, scheme: &str) -> String {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("{scheme}://{}", grpc.local_addr().unwrap());
    tokio::spawn(distcache_node::run(
        Listeners { grpc, admin },
        config,
        std::future::pending(),
    ));
    url
}

/// Runs the binary with `args` and `stdin`; its whole output.
fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcache"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn cli(url: &str, args: &[&str], stdin: &str) -> String {
    let argv: Vec<&str> = ["--nodes", url].iter().chain(args).copied().collect();
    String::from_utf8(run(&argv, stdin).stdout).unwrap()
}

#[test]
fn version_prints_the_crate_version() {
    // Before connecting to anything: no node is needed.
    let out = run(&["--nodes", "http://127.0.0.1:1", "--version"], "");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        concat!("distcache ", env!("CARGO_PKG_VERSION"), "\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repl_lines_are_split_as_redis_cli_splits_them() {
    let url = node().await;
    let script = concat!(
        "set k \"a b\\n\\x41\"\n",
        "get k\n",
        "set j {\"n\":1}\n",
        "get j\n",
        "set 'it\\'s' 'x y'\n",
        "get \"it's\"\n",
        "get \"open\n",
        "get \"k\"x\n",
    );
    let out = tokio::task::spawn_blocking(move || cli(&url, &[], script))
        .await
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "OK",
            r#""a b\nA""#,
            "OK",
            r#""{\"n\":1}""#,
            "OK",
            r#""x y""#,
            "(error) unbalanced quotes",
            "(error) closing quote must be followed by a space",
        ]
    );
}

/// Writes a CA, a node certificate for 127.0.0.1 and a client certificate
/// into `dir`; returns a config for a node requiring client certificates.
fn mtls_files(dir: &Path) -> NodeConfig {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose};
    use rcgen::{IsCa, KeyPair};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, usage) in [
        ("node", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    let mut c = NodeConfig::default();
    c.tls.cert = Some(dir.join("node.pem"));
    c.tls.key = Some(dir.join("node.key"));
    c.tls.client_ca = Some(dir.join("ca.pem"));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_with_tls_cert_and_tls_key() {
    let dir = std::env::temp_dir().join(format!("distcache-cli-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = serve(mtls_files(&dir), "https").await;
    let f = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (f("ca.pem"), f("client.pem"), f("client.key"));
    let out = tokio::task::spawn_blocking(move || {
        let with = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
        let set = cli(&url, &[&with[..], &["set", "k", "v"]].concat(), "");
        let get = cli(&url, &[&with[..], &["get", "k"]].concat(), "");
        let without = run(&["--nodes", &url, "--tls-ca", &ca, "get", "k"], "");
        let half = run(
            &[
                "--nodes",
                &url,
                "--tls-ca",
                &ca,
                "--tls-cert",
                &cert,
                "get",
                "k",
            ],
            "",
        );
        (set, get, without, half)
    })
    .await
    .unwrap();
    let (set, get, without, half) = out;
    assert_eq!((set.as_str(), get.as_str()), ("OK\n", "\"v\"\n"));
    // Refused by the node: the answer says too few replicas answered, and
    // standard error adds the node's health check error.
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stdout).starts_with("(error) "));
    assert!(String::from_utf8_lossy(&without.stderr).contains("distcache: https://127.0.0.1:"));
    // --tls-cert without --tls-key is a usage error.
    assert_eq!(half.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&half.stderr).contains("--tls-key"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_and_repl() {
    let url = node().await;
    // The node is bound already; the client connects lazily and retries.
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        cli(
            &u,
            &["set", "user:123", r#"{"name":"Alice"}"#, "--ttl", "60"],
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(out, "OK\n");
    let script = "get user:123\nincr hits 3\nget nothing\nmset a 1 b 2\nmget a b c\ndel a b\nttl user:123\nnonsense\nring k\n";
    let out = tokio::task::spawn_blocking(move || cli(&url, &[], script))
        .await
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], r#""{\"name\":\"Alice\"}""#);
    assert_eq!(lines[1], "(integer) 3");
    assert_eq!(lines[2], "(nil)");
    assert_eq!(lines[3], "OK");
    assert_eq!(&lines[4..7], ["1) \"1\"", "2) \"2\"", "3) (nil)"]);
    assert_eq!(lines[7], "(integer) 2");
    assert!(lines[8] == "(integer) 60" || lines[8] == "(integer) 59");
    assert!(lines[9].starts_with("(error)"));
    assert!(lines[10].starts_with("1) http://127.0.0.1:"));
}
