//! SIGTERM with `--drain-delay` on the real `distcache-proxy` binary (with
//! `--dev` nodes): the proxy turns unready (`/readyz` 503, gRPC health
//! NOT_SERVING) and keeps accepting and serving RESP for the whole delay,
//! as a sidecar must while Kubernetes still routes to its pod; then it
//! closes its ports and exits 0.
#![cfg(unix)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::Proxy;

const LIMIT: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(3);

/// (status, body) of `GET path` over HTTP/1.0.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status.unwrap_or(0), body.unwrap_or_default())
}

/// Sends one RESP command line and reads one reply line.
fn command(conn: &mut TcpStream, line: &str) -> String {
    conn.write_all(format!("{line}\r\n").as_bytes())
        .expect("write");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        conn.read_exact(&mut byte).expect("read a reply");
        reply.push(byte[0]);
    }
    String::from_utf8_lossy(&reply).trim_end().to_owned()
}

fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_a_drain_delay_keeps_accepting_while_unready_then_exits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcache-proxy"))
        .args(["--dev", "--log-format", "json", "--threads", "1"])
        .args([
            "--resp-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--drain-delay", &format!("{}s", DRAIN.as_secs())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the proxy");
    let stderr = child.stderr.take().expect("stderr");
    let pid = child.id();
    let mut child = Proxy(child);
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (resp, admin) = loop {
        let line = lines.recv_timeout(LIMIT).expect("a listening log line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "listening" {
            let field = |k: &str| v["fields"][k].as_str().expect("address").to_owned();
            break (field("resp"), field("admin"));
        }
    };
    until("/readyz answers 200", || {
        http_get(&admin, "/readyz").0 == 200
    });
    let mut old = TcpStream::connect(&resp).expect("connect");
    assert_eq!(command(&mut old, "SET k v"), "+OK");

    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    until("/readyz answers 503", || {
        http_get(&admin, "/readyz") == (503, "draining: shutting down\n".into())
    });
    assert_eq!(http_get(&admin, "/livez").0, 200, "alive while draining");
    // A connection opened during the drain delay is accepted and served, and
    // so is the one opened before.
    let mut new = TcpStream::connect(&resp).expect("accepted during the drain delay");
    assert_eq!(command(&mut new, "PING"), "+PONG");
    assert_eq!(command(&mut new, "SET k2 v2"), "+OK");
    assert_eq!(command(&mut old, "GET k2"), "$2");
    assert!(
        signalled.elapsed() < DRAIN,
        "the checks above ran within the drain delay (took {:?}); the machine is too slow for this test",
        signalled.elapsed()
    );

    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() >= DRAIN,
        "exited after {:?}, before the drain delay was over",
        signalled.elapsed()
    );
    assert!(
        TcpStream::connect(&resp).is_err(),
        "RESP port closed after exit"
    );
}
