//! The real `distcache-node` and `distcache-proxy` binaries as child
//! processes on loopback, for tests of what only a process has: signals
//! (SIGHUP), its exit. Each [`Proc`] binds port 0, logs JSON to a file in
//! the test's folder, is found ready by polling (the `listening` log line,
//! then `/healthz` or `PING`), never by sleeping, and is killed on drop.
//!
//! The binaries are found next to the running test (Cargo puts a test in
//! `target/<profile>/deps/` and the workspace's binaries in
//! `target/<profile>/`; build them with `cargo build -p distcache-node -p
//! distcache-proxy`, which `cargo test --workspace` does), or in
//! `DISTCACHE_BIN_DIR`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http_get;

/// How long a process gets to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of the workspace binary `name` (see the module doc).
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("DISTCACHE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            let mut dir = exe.parent().expect("exe dir").to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p distcache-node -p distcache-proxy` (same profile) \
         or set DISTCACHE_BIN_DIR",
        bin.display()
    );
    bin
}

/// A running server process.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// RESP address (proxies only).
    pub resp: Option<SocketAddr>,
}

/// The `"name":"ADDR"` address on the `listening` log line of `log`.
fn listen_addr(log: &Path, name: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rfind(|l| l.contains("listening"))?;
    let rest = line.split_once(format!("\"{name}\":\"").as_str())?.1;
    rest.split('"').next()?.parse().ok()
}

impl Proc {
    /// Starts `distcache-node` with `args` (besides ports and logging) and
    /// waits until `/healthz` answers 200.
    pub async fn node(dir: &Path, name: &str, args: &[&str]) -> Self {
        let p = Self::spawn(
            &binary("distcache-node"),
            dir,
            name,
            &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            args,
            false,
        )
        .await;
        let admin = p.admin;
        crate::eventually(START_TIMEOUT, || async move {
            http_get(admin, "/healthz").await.0 == 200
        })
        .await
        .unwrap_or_else(|e| panic!("{name} never became healthy ({e}); see {}", p.log.display()));
        p
    }

    /// Starts `distcache-proxy` with `args` (besides ports and logging) and
    /// waits until it answers `PING`.
    pub async fn proxy(dir: &Path, name: &str, args: &[&str]) -> Self {
        let ports = [
            "--resp-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--threads",
            "1",
        ];
        let p = Self::spawn(&binary("distcache-proxy"), dir, name, &ports, args, true).await;
        let resp = p.resp.expect("resp");
        crate::eventually(START_TIMEOUT, || async move {
            resp_command(resp, &["PING"]).await.as_deref() == Some("+PONG")
        })
        .await
        .unwrap_or_else(|e| panic!("{name} never answered PING ({e}); see {}", p.log.display()));
        p
    }

    async fn spawn(
        bin: &Path,
        dir: &Path,
        name: &str,
        ports: &[&str],
        args: &[&str],
        resp: bool,
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(bin)
            .env_clear()
            .args(ports)
            .args(["--log-format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("{name} exited at start-up ({status}):\n{text}");
            }
            let found = (
                listen_addr(&log, "grpc"),
                listen_addr(&log, "admin"),
                listen_addr(&log, "resp"),
            );
            if let (Some(grpc), Some(admin), r) = found
                && (r.is_some() || !resp)
            {
                return Self {
                    child,
                    log,
                    grpc,
                    admin,
                    resp: r,
                };
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{name} did not start; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGHUP (with the `kill` command: no libc in tests).
    pub fn hangup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -HUP failed");
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The value of the `/metrics` series `series` (name and labels exactly
    /// as exported, e.g. `distcache_reloads_total{result="ok"}`), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = http_get(self.admin, "/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `series` reaches `n` (a reload is counted once it ran).
    pub async fn wait_metric(&self, series: &str, n: f64) {
        let limit = Duration::from_secs(20);
        crate::eventually(limit, || async move { self.metric(series).await >= n })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{series} never reached {n} ({e}); see {}",
                    self.log.display()
                )
            });
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one RESP command to `addr` on a fresh connection and returns the
/// first line of the reply (`None` if the connection failed).
pub async fn resp_command(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 512];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .ok()??;
    let text = String::from_utf8_lossy(&buf);
    text.split("\r\n").next().map(str::to_owned)
}
