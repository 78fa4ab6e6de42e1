//! SIGTERM with `--drain-delay` on the real `distcache-node` binary: the node
//! first turns unready (`/readyz` 503, gRPC health NOT_SERVING) while it
//! still accepts and serves, for the whole delay; then it drains and exits 0.
#![cfg(unix)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use distcache_proto::v1 as pb;
use pb::cache_service_client::CacheServiceClient;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const LIMIT: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(3);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_with_a_drain_delay_turns_unready_first_and_serves_until_it_ends() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcache-node"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--log-format", "json", "--threads", "1"])
        .args(["--drain-delay", &format!("{}s", DRAIN.as_secs())])
        .args(["--shutdown-grace", "5s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the node");
    let stderr = child.stderr.take().expect("stderr");
    let pid = child.id();
    let mut child = Killed(child);
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (grpc, admin) = loop {
        let line = lines.recv_timeout(LIMIT).expect("a listening log line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "listening" {
            let field = |k: &str| v["fields"][k].as_str().expect("address").to_owned();
            break (field("grpc"), field("admin"));
        }
    };
    until("/readyz answers 200", || {
        http_get(&admin, "/readyz").0 == 200
    })
    .await;
    let url = format!("http://{grpc}");
    let mut c = CacheServiceClient::connect(url.clone())
        .await
        .expect("connect");
    c.set(pb::SetRequest {
        key: b"k".to_vec().into(),
        value: b"v".to_vec().into(),
        ..Default::default()
    })
    .await
    .expect("set");

    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    until("/readyz answers 503", || {
        http_get(&admin, "/readyz") == (503, "draining: shutting down\n".into())
    })
    .await;
    assert_eq!(http_get(&admin, "/livez").0, 200, "alive while draining");
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("a new connection is still accepted"),
    );
    for service in ["", "distcache.v1.CacheService"] {
        let s = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(s.status, 2, "{service:?} is NOT_SERVING while draining");
    }
    // Still serving, on an old and on a new connection.
    let got = c
        .get(pb::GetRequest {
            key: b"k".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("get on the old connection")
        .into_inner();
    assert!(got.found && &got.value[..] == b"v");
    let mut fresh = CacheServiceClient::connect(url)
        .await
        .expect("new connection");
    fresh
        .get(pb::GetRequest {
            key: b"k".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("get on a new connection during the drain delay");
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
        assert!(Instant::now() < deadline, "the node did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() >= DRAIN,
        "exited after {:?}, before the drain delay was over",
        signalled.elapsed()
    );
    let mut seen = Vec::new();
    while let Ok(line) = lines.try_recv() {
        seen.push(line);
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("unready, serving for the drain delay")),
        "{seen:#?}"
    );
}
