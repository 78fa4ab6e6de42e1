//! What the tests of the real `distcache-proxy` binary share: starting it
//! with `--dev` on ports the kernel picks (read back from its "listening"
//! log line), polling instead of sleeping, and reading its memory.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child if the test fails before it exits.
pub struct Proxy(pub Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address `name=ADDR` from the proxy's `listening …` log line.
pub fn listen_addr(log: &str, name: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("listening"))?;
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))?
        .parse()
        .ok()
}

/// A log file path of this test process's own.
pub fn log_path(tag: &str) -> PathBuf {
    let log =
        std::env::temp_dir().join(format!("distcache-proxy-{tag}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    log
}

/// Spawns `distcache-proxy --dev` on loopback ports 0, logging to `log`.
pub fn spawn_dev(log: &PathBuf, extra: &[&str]) -> Proxy {
    let child = Command::new(env!("CARGO_BIN_EXE_distcache-proxy"))
        .args(["--dev", "--log-level", "info", "--log-file"])
        .arg(log)
        .args(["--resp-listen", "127.0.0.1:0"])
        .args(["--grpc-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn distcache-proxy");
    Proxy(child)
}

/// Waits for the `listening` line; returns the (RESP, gRPC) addresses.
pub fn wait_listening(proxy: &mut Proxy, log: &PathBuf) -> (SocketAddr, SocketAddr) {
    poll(Duration::from_secs(60), || {
        assert!(
            proxy.0.try_wait().expect("wait").is_none(),
            "the proxy exited early"
        );
        let text = std::fs::read_to_string(log).ok()?;
        Some((listen_addr(&text, "resp")?, listen_addr(&text, "grpc")?))
    })
}

/// A `/proc/PID/status` figure in bytes (`VmRSS`, `VmHWM`).
pub fn proc_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb * 1024
}
