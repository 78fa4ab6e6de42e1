//! The real binary reloads its cluster file on SIGHUP. The poll interval is
//! an hour, so only the signal can explain the change. The nodes need not
//! exist: the ring changes whatever their health.
#![cfg(unix)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Proxy;

const LIMIT: Duration = Duration::from_secs(60);

/// Waits for a JSON log line whose message is `message`; returns its fields.
fn wait_for(lines: &mpsc::Receiver<String>, message: &str, seen: &mut Vec<String>) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {message:?} log line; saw:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["fields"]["message"] == message
        {
            return v["fields"].clone();
        }
    }
}

#[test]
fn sighup_reloads_the_cluster_file() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("cluster.toml");
    std::fs::write(
        &file,
        "[cluster]\nnodes = [\"http://127.0.0.1:17001\", \"http://127.0.0.1:17002\"]\n",
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcache-proxy"))
        .arg("--config")
        .arg(&file)
        .args(["--discovery-interval", "1h", "--log-format", "json"])
        .args([
            "--resp-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the proxy");
    let stderr = child.stderr.take().expect("stderr");
    let child = Proxy(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    wait_for(&lines, "watching membership", &mut seen);

    std::fs::write(
        &file,
        "[cluster]\nnodes = [\"http://127.0.0.1:17002\", \"http://127.0.0.1:17003\"]\n",
    )
    .expect("rewrite");
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let change = wait_for(&lines, "ring changed", &mut seen);
    assert_eq!(change["added"], r#"["http://127.0.0.1:17003"]"#, "{change}");
    assert_eq!(
        change["removed"], r#"["http://127.0.0.1:17001"]"#,
        "{change}"
    );

    // A bad file on SIGHUP is logged; the proxy keeps running.
    std::fs::write(&file, "[cluster]\nnodes = []\n").expect("rewrite");
    Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .expect("kill");
    let failed = wait_for(
        &lines,
        "membership source failed; keeping the current nodes",
        &mut seen,
    );
    assert!(
        failed["error"].as_str().unwrap_or("").contains("empty"),
        "{failed}"
    );
    let mut child = child;
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "the proxy is still running"
    );
}
