//! The real `distcache-proxy` binary with `--dev`: it starts on ports the
//! kernel picks (read back from its "listening" log line, written with the
//! prototype's `--log-file` and `--log-level` flags), answers Redis commands,
//! and exits 0 on SIGTERM.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child if the test fails before it exits.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The RESP address from the proxy's `listening … resp=ADDR …` log line.
fn resp_addr(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("listening"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("resp="))?
        .parse()
        .ok()
}

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
    let log = std::env::temp_dir().join(format!("distcache-proxy-dev-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let child = Command::new(env!("CARGO_BIN_EXE_distcache-proxy"))
        .args(["--dev", "--log-level", "info", "--log-file"])
        .arg(&log)
        .args(["--resp-listen", "127.0.0.1:0"])
        .args(["--grpc-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn distcache-proxy");
    let mut proxy = Proxy(child);

    let addr = poll(Duration::from_secs(60), || {
        assert!(
            proxy.0.try_wait().expect("wait").is_none(),
            "the proxy exited early"
        );
        resp_addr(&std::fs::read_to_string(&log).ok()?)
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
