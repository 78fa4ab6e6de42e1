//! The real `distcache-proxy` binary with `--dev`: it starts on ports the
//! kernel picks (read back from its "listening" log line, written with the
//! prototype's `--log-file` and `--log-level` flags), answers Redis commands,
//! and exits 0 on SIGTERM.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::{listen_addr, log_path, poll, spawn_dev};

/// Sends one command and reads one reply line (and a bulk's body).
fn cmd(s: &mut BufReader<TcpStream>, args: &[&str]) -> std::io::Result<String> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.get_mut().write_all(out.as_bytes())?;
    let mut line = String::new();
    s.read_line(&mut line)?;
    let line = line.trim_end().to_owned();
    if let Some(n) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
        let mut body = vec![0; n + 2];
        s.read_exact(&mut body)?;
        return Ok(String::from_utf8_lossy(&body[..n]).into_owned());
    }
    Ok(line)
}

#[test]
fn dev_starts_answers_and_exits_cleanly_on_sigterm() {
    let log = log_path("dev");
    let mut proxy = spawn_dev(&log, &[]);

    let addr = poll(Duration::from_secs(60), || {
        assert!(
            proxy.0.try_wait().expect("wait").is_none(),
            "the proxy exited early"
        );
        listen_addr(&std::fs::read_to_string(&log).ok()?, "resp")
    });
    let mut c = poll(Duration::from_secs(30), || {
        let mut c = BufReader::new(TcpStream::connect(addr).ok()?);
        (cmd(&mut c, &["PING"]).ok()? == "+PONG").then_some(c)
    });
    assert_eq!(
        cmd(&mut c, &["SET", "user:123", "alice"]).expect("set"),
        "+OK"
    );
    assert_eq!(cmd(&mut c, &["GET", "user:123"]).expect("get"), "alice");
    drop(c);
    // The in-process nodes start fenced (empty); the proxy caught them up
    // before it served, and /ring says so.
    let text = std::fs::read_to_string(&log).expect("log");
    let admin = listen_addr(&text, "admin").expect("admin address in the log");
    let ring = http_get(admin, "/ring");
    assert_eq!(ring.matches("\"fenced\":false").count(), 3, "{ring}");

    let pid = proxy.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = poll(Duration::from_secs(30), || {
        proxy.0.try_wait().expect("wait")
    });
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("proxy shutting down"), "{text}");
    let _ = std::fs::remove_file(&log);
}

/// The body of `GET path` on `addr` (HTTP/1.0, so the server closes).
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// With a file-descriptor limit below what `--max-connections` needs, the
/// proxy lowers the bound to fit and says so, instead of failing every
/// `accept` once the descriptors run out.
#[test]
fn a_connection_bound_over_the_descriptor_limit_is_lowered_and_logged() {
    let log = log_path("fds");
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 512; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_distcache-proxy"))
        .args(["--dev", "--log-level", "info", "--log-file"])
        .arg(&log)
        .args(["--resp-listen", "127.0.0.1:0"])
        .args(["--grpc-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let _proxy = support::Proxy(child);
    let text = poll(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("listening").then_some(text)
    });
    assert!(
        text.contains("--max-connections lowered to fit the file-descriptor limit"),
        "{text}"
    );
    assert!(text.contains("allowed=128"), "{text}");
    let _ = std::fs::remove_file(&log);
}
