//! The real binaries on loopback: three `distcache-node` processes (two with
//! a WAL in `--data-dir`, one memory-only) and two `distcache-proxy`
//! processes reading a cluster file (`--config`), with the nemesis's
//! levers: SIGKILL + restart on the same port, SIGSTOP/SIGCONT, and
//! removing/re-adding a node in the cluster file.
//!
//! The binaries are found next to the running executable (Cargo puts a
//! test in `target/<profile>/deps/` and the workspace's binaries in
//! `target/<profile>/`; `cargo test --workspace` builds them because the
//! node and proxy packages have integration tests of their own), or in
//! `DISTCACHE_BIN_DIR`. Ports are the kernel's (port 0) at first start and
//! reused on restart; readiness is polled (`/healthz`, `PING`), never slept.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("gave up after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the `distcache-node` and `distcache-proxy` binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `distcache-node`.
    pub node: PathBuf,
    /// `distcache-proxy`.
    pub proxy: PathBuf,
}

impl Bins {
    /// Finds both binaries (see the module doc).
    pub fn locate() -> Result<Bins, String> {
        let dir = match std::env::var_os("DISTCACHE_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let mut dir = exe.parent().ok_or("no exe dir")?.to_path_buf();
                if dir.ends_with("deps") {
                    dir.pop();
                }
                dir
            }
        };
        let bins = Bins {
            node: dir.join("distcache-node"),
            proxy: dir.join("distcache-proxy"),
        };
        for b in [&bins.node, &bins.proxy] {
            if !b.exists() {
                return Err(format!(
                    "{} not found: run `cargo build -p distcache-node -p distcache-proxy` (same profile) or set DISTCACHE_BIN_DIR",
                    b.display()
                ));
            }
        }
        Ok(bins)
    }
}

/// A minimal HTTP/1.0 GET on loopback: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// The `name=ADDR` or `"name":"ADDR"` address on the last `listening` log
/// line written after byte `from` of `log`.
fn listen_addr(log: &Path, from: usize, name: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .get(from..)?
        .lines()
        .rfind(|l| l.contains("listening"))?;
    let text_form = format!("{name}=");
    let json_form = format!("\"{name}\":\"");
    let rest = line
        .split_once(text_form.as_str())
        .or_else(|| line.split_once(json_form.as_str()))?
        .1;
    rest.split(|c: char| c == '"' || c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

fn signal(child: &Child, sig: &str) -> Result<(), String> {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if ok {
        Ok(())
    } else {
        Err(format!("kill {sig} failed"))
    }
}

/// One node process, restartable on its ports.
#[derive(Debug)]
pub struct NodeProc {
    /// Its stable name (`--node-id`).
    pub name: String,
    /// `--data-dir`, if it has a WAL; memory-only nodes restart empty.
    pub data_dir: Option<PathBuf>,
    log: PathBuf,
    bin: PathBuf,
    /// gRPC address (fixed after the first start).
    pub grpc: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    child: Option<Child>,
    /// Whether it is SIGSTOPped.
    pub paused: bool,
}

impl NodeProc {
    /// A node not started yet.
    pub fn new(bin: &Path, dir: &Path, name: &str, wal: bool) -> Self {
        NodeProc {
            name: name.to_owned(),
            data_dir: wal.then(|| dir.join(format!("{name}-data"))),
            log: dir.join(format!("{name}.log")),
            bin: bin.to_path_buf(),
            grpc: None,
            admin: None,
            child: None,
            paused: false,
        }
    }

    /// The node's URL for the SDK and the cluster file.
    pub fn url(&self) -> String {
        self.grpc.map(|a| format!("http://{a}")).unwrap_or_default()
    }

    /// Whether the process is running (paused counts).
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it (on its previous ports if it ran before) and waits until
    /// `/healthz` answers 200.
    pub fn start(&mut self) -> Result<(), String> {
        let from = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let port = |a: Option<SocketAddr>| a.map_or("127.0.0.1:0".to_owned(), |a| a.to_string());
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .args(["--listen", &port(self.grpc)])
            .args(["--admin-listen", &port(self.admin)])
            .args(["--node-id", &self.name, "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(d) = &self.data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let found = poll(READY_TIMEOUT, || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(None);
            }
            let g = listen_addr(&self.log, from, "grpc")?;
            let a = listen_addr(&self.log, from, "admin")?;
            Some(Some((g, a)))
        });
        let Ok(Some((grpc, admin))) = found else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} did not start; see {}",
                self.name,
                self.log.display()
            ));
        };
        self.grpc = Some(grpc);
        self.admin = Some(admin);
        self.child = Some(child);
        self.paused = false;
        poll(READY_TIMEOUT, || {
            http_get(admin, "/healthz").and_then(|(c, _)| (c == 200).then_some(()))
        })
        .map_err(|e| format!("{} never became healthy: {e}", self.name))
    }

    /// SIGKILL (a paused process dies too) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP.
    pub fn pause(&mut self) -> Result<(), String> {
        let c = self.child.as_ref().ok_or("not running")?;
        signal(c, "-STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> Result<(), String> {
        let c = self.child.as_ref().ok_or("not running")?;
        signal(c, "-CONT")?;
        self.paused = false;
        Ok(())
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One proxy process.
#[derive(Debug)]
pub struct ProxyProc {
    child: Child,
    /// Its RESP address.
    pub resp: SocketAddr,
    /// Its admin address (`/ring`).
    pub admin: SocketAddr,
}

impl ProxyProc {
    /// Starts a proxy over `cluster` with extra flags and waits until it
    /// answers PING.
    pub fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        cluster: &Path,
        extra: &[&str],
    ) -> Result<Self, String> {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(bin)
            .env_clear()
            .arg("--config")
            .arg(cluster)
            .args([
                "--resp-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--admin-listen",
                "127.0.0.1:0",
                "--discovery-interval",
                "200ms",
            ])
            .args(["--threads", "1"])
            .arg("--log-file")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let addrs = poll(READY_TIMEOUT, || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(None);
            }
            Some(Some((
                listen_addr(&log, 0, "resp")?,
                listen_addr(&log, 0, "admin")?,
            )))
        });
        let Ok(Some((resp, admin))) = addrs else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name} did not start; see {}", log.display()));
        };
        let p = ProxyProc { child, resp, admin };
        poll(READY_TIMEOUT, || p.ping().then_some(()))
            .map_err(|e| format!("{name} never answered PING: {e}"))?;
        Ok(p)
    }

    /// Whether it answers PING with PONG.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.resp, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Its `/ring` JSON.
    pub fn ring(&self) -> Option<String> {
        http_get(self.admin, "/ring").map(|(_, b)| b)
    }

    /// The value of the `/metrics` series `series` (name and labels as
    /// exported), if it answers.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = http_get(self.admin, "/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the cluster file atomically (write + rename), so a proxy never
/// reads half of it.
/// The node URLs of a cluster file [`write_cluster`] wrote (the quoted
/// strings of its `nodes` line).
pub fn read_cluster(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("nodes"))
        .ok_or("no nodes line")?;
    Ok(line
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect())
}

pub fn write_cluster(path: &Path, urls: &[String]) -> Result<(), String> {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let text = format!("[cluster]\nnodes = [{}]\n", list.join(", "));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
