//! The `distcache` binary against a real node: one-shot commands and the
//! line-by-line REPL with redis-cli style answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use distcache_node::{Listeners, NodeConfig};

async fn node() -> String {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    tokio::spawn(distcache_node::run(
        Listeners { grpc, admin },
        NodeConfig::default(),
        std::future::pending(),
    ));
    url
}

fn cli(url: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcache"))
        .arg("--nodes")
        .arg(url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()
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
