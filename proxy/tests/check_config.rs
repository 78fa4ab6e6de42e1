//! `distcache-proxy --check-config` on the real binary: exit 0 and the
//! effective configuration for a usable one, exit 1 and the reason for an
//! unusable one. It binds no port and contacts no node.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distcache-proxy"))
        .arg("--check-config")
        .args(args)
        // The default ports may be in use: nothing may be bound anyway.
        .args([
            "--resp-listen",
            "127.0.0.1:1",
            "--admin-listen",
            "127.0.0.1:1",
        ])
        .output()
        .expect("run distcache-proxy")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_usable_configuration_exits_0_and_prints_it() {
    let dir = tempfile::tempdir().expect("dir");
    let cluster = dir.path().join("cluster.toml");
    std::fs::write(
        &cluster,
        "[cluster]\nnodes = [\"http://distcache-node-0.distcache-node:7001\", \"http://distcache-node-1.distcache-node:7001\"]\n",
    )
    .expect("write");
    let token = dir.path().join("token");
    std::fs::write(&token, "dc1.k1.payload.signature\n").expect("write");
    let out = check(&[
        "--config",
        cluster.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
        "--drain-delay",
        "5s",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("configuration ok"), "{stderr}");
    assert!(
        stdout.contains("distcache-node-1.distcache-node:7001"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("payload.signature"),
        "the token is not printed"
    );
}

#[test]
fn an_unusable_configuration_exits_1_and_says_why() {
    let dir = tempfile::tempdir().expect("dir");
    let cluster = dir.path().join("cluster.toml");
    std::fs::write(&cluster, "[cluster]\nnode = [\"http://a:7001\"]\n").expect("write");
    let out = check(&["--config", cluster.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cluster.toml"),
        "{}",
        text(&out.stderr)
    );

    let missing = dir.path().join("no-such-token");
    let out = check(&[
        "--nodes",
        "http://a:7001",
        "--token-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no-such-token"));

    let out = check(&["--dev", "--tls-cert", "front.pem"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cert and key"),
        "{}",
        text(&out.stderr)
    );

    let out = check(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no node source: {}",
        text(&out.stderr)
    );
}
