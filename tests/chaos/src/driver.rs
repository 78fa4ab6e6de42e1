//! Runs a checked fault-injection session: starts the cluster
//! ([`crate::cluster`]), drives clients through both proxies (RESP) and the
//! SDK directly while a nemesis injects faults, heals, reads every key at
//! `All`, and checks the history ([`crate::check`]).
//!
//! Clients are threads with their own seeded RNG; the SDK's async calls run
//! on one shared tokio runtime through `Handle::block_on`. Proxy A uses the
//! default levels (read/write `one`), proxy B `quorum`; SDK clients read at
//! `One` or `Quorum` per request. Faults come one at a time and each heals
//! itself before the next (a killed node is restarted, a paused one resumed,
//! a removed one re-added), so the nemesis never takes more than one node
//! of three away at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distcache::{Client, Consistency};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Handle;

use crate::check::{self, Report};
use crate::cluster::{Bins, NodeProc, ProxyProc, poll, read_cluster, write_cluster};
use crate::history::{Call, Op, Outcome, Ret};

/// A kind of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL a node with a WAL, restart it from its WAL.
    KillRestartWal,
    /// SIGKILL the memory-only node, restart it empty.
    KillRestartEmpty,
    /// SIGSTOP a node for 1–3 s, then SIGCONT.
    Pause,
    /// Remove a node from the proxies' cluster file for 1–3 s, then re-add it.
    Membership,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 4] = [
        Fault::KillRestartWal,
        Fault::KillRestartEmpty,
        Fault::Pause,
        Fault::Membership,
    ];

    /// A short name for reports and flags.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillRestartWal => "kill-restart-wal",
            Fault::KillRestartEmpty => "kill-restart-empty",
            Fault::Pause => "pause",
            Fault::Membership => "remove-readd",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long clients run with faults.
    pub duration: Duration,
    /// Seeds the clients' and the nemesis's choices (timing still varies).
    pub seed: u64,
    /// The fault kinds the nemesis picks from; empty: no faults.
    pub faults: Vec<Fault>,
    /// Keys per family (`r:`, `c:`, `l:`).
    pub keys: usize,
    /// RESP clients per proxy.
    pub resp_clients: usize,
    /// SDK clients.
    pub sdk_clients: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            duration: Duration::from_secs(30),
            seed: 14,
            faults: Fault::ALL.to_vec(),
            keys: 5,
            resp_clients: 2,
            sdk_clients: 2,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcomes {
    /// The checks' verdict.
    pub report: Report,
    /// Faults injected, per kind.
    pub faults: BTreeMap<Fault, usize>,
    /// Operations that failed or timed out (in doubt).
    pub in_doubt: usize,
    /// From the end of the faults until every node and proxy was healthy
    /// and every final read at `All` had succeeded.
    pub heal: Duration,
    /// The whole history, for inspection.
    pub history: Vec<Op>,
    /// The direct SDK client's counters at the end (failovers, fences,
    /// catch-ups): how often it lost a node, with or without faults.
    pub sdk_stats: distcache::ClientStats,
    /// What the nemesis did, one line per event, with its time.
    pub fault_log: Vec<String>,
    /// Requests the two proxies moved to another replica
    /// (`distcache_proxy_upstream_failovers_total`, summed): with the SDK's
    /// `failovers`, whether any client lost a node, which a loaded machine
    /// causes without faults (a probe or request past its timeout).
    pub proxy_failovers: u64,
}

impl Outcomes {
    /// Requests moved to another replica, by the SDK client and the
    /// proxies: 0 when no client lost a node during the run.
    pub fn failovers(&self) -> u64 {
        self.sdk_stats.failovers + self.proxy_failovers
    }
}

type Log = Arc<Mutex<Vec<Op>>>;

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

enum Backend {
    Resp {
        addr: SocketAddr,
        con: Option<redis::Connection>,
    },
    Sdk {
        client: Client,
        rt: Handle,
    },
}

/// One client thread's loop.
struct Worker {
    id: u32,
    via: &'static str,
    backend: Backend,
    rng: StdRng,
    keys: usize,
    seq: u64,
    start: Instant,
    log: Log,
}

fn resp_outcome<T>(r: redis::RedisResult<T>, ok: impl FnOnce(T) -> Ret) -> (Outcome, bool) {
    match r {
        Ok(v) => (Outcome::Ok(ok(v)), false),
        Err(e) if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() => {
            (Outcome::Unknown, true)
        }
        Err(_) => (Outcome::Failed, false),
    }
}

fn sdk_outcome<T>(r: distcache::Result<T>, ok: impl FnOnce(T) -> Ret) -> Outcome {
    match r {
        Ok(v) => Outcome::Ok(ok(v)),
        Err(distcache::Error::Timeout(_)) => Outcome::Unknown,
        Err(_) => Outcome::Failed,
    }
}

impl Worker {
    fn record(&self, key: &str, call: Call, invoke: u64, outcome: Outcome) -> Outcome {
        let op = Op {
            client: self.id,
            via: self.via,
            key: key.to_owned(),
            call,
            invoke,
            complete: micros(self.start),
            outcome: outcome.clone(),
            final_read: false,
        };
        if let Ok(mut l) = self.log.lock() {
            l.push(op);
        }
        outcome
    }

    fn value(&mut self) -> String {
        self.seq += 1;
        format!("{}:{}", self.id, self.seq)
    }

    fn step(&mut self) {
        let k = self.rng.random_range(0..self.keys);
        let family = self.rng.random_range(0..10);
        let (key, call) = match family {
            0..5 => {
                let key = format!("r:{k}");
                match self.rng.random_range(0..10) {
                    0..4 => (key, Call::Set(self.value())),
                    4..8 => (key, Call::Get),
                    _ => (key, Call::Del),
                }
            }
            5..7 => (format!("c:{k}"), Call::Incr),
            _ => {
                let key = format!("l:{k}");
                let sdk = matches!(self.backend, Backend::Sdk { .. });
                match self.rng.random_range(0..10) {
                    0..4 => (key, Call::SetNx(self.value())),
                    // A CAS is a GET then a CAS on the version read (SDK only).
                    4..6 if sdk => {
                        let new = self.value();
                        (
                            key,
                            Call::Cas {
                                expected: None,
                                new,
                            },
                        )
                    }
                    6..8 => (key, Call::Get),
                    _ => (key, Call::Del),
                }
            }
        };
        match &mut self.backend {
            Backend::Resp { .. } => self.resp(&key, call),
            Backend::Sdk { .. } => self.sdk(&key, call),
        }
    }

    fn resp(&mut self, key: &str, call: Call) {
        let Backend::Resp { addr, con } = &mut self.backend else {
            return;
        };
        if con.is_none() {
            let c = redis::Client::open(format!("redis://{addr}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)));
            let Ok(c) = c else { return };
            let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
            let _ = c.set_write_timeout(Some(Duration::from_secs(3)));
            *con = Some(c);
        }
        let Some(c) = con.as_mut() else { return };
        let invoke = micros(self.start);
        let (outcome, broken) = match &call {
            Call::Set(v) => resp_outcome(redis::cmd("SET").arg(key).arg(v).query::<()>(c), |_| {
                Ret::Done
            }),
            Call::Get => resp_outcome(
                redis::cmd("GET").arg(key).query::<Option<String>>(c),
                Ret::Value,
            ),
            Call::Del => resp_outcome(redis::cmd("DEL").arg(key).query::<i64>(c), |_| Ret::Done),
            Call::Incr => resp_outcome(redis::cmd("INCR").arg(key).query::<i64>(c), Ret::Int),
            Call::SetNx(v) => resp_outcome(
                redis::cmd("SET")
                    .arg(key)
                    .arg(v)
                    .arg("NX")
                    .query::<Option<String>>(c),
                |r| Ret::Applied(r.is_some()),
            ),
            Call::Cas { .. } => return,
        };
        if broken {
            *con = None;
        }
        self.record(key, call, invoke, outcome);
    }

    fn sdk(&mut self, key: &str, call: Call) {
        let Backend::Sdk { client, rt } = &self.backend else {
            return;
        };
        let (client, rt) = (client.clone(), rt.clone());
        let client = if self.rng.random_bool(0.5) {
            client.with_read_consistency(Consistency::Quorum)
        } else {
            client
        };
        let invoke = micros(self.start);
        let outcome = match &call {
            Call::Set(v) => {
                let r = rt.block_on(client.set(key, v, None));
                if let Ok(version) = &r {
                    note_lead(*version);
                }
                sdk_outcome(r, |_| Ret::Done)
            }
            Call::Get => sdk_outcome(rt.block_on(client.get(key)), |e| Ret::Value(entry_value(e))),
            Call::Del => sdk_outcome(rt.block_on(client.delete(key)), |_| Ret::Done),
            Call::Incr => sdk_outcome(rt.block_on(client.incr_by(key, 1)), Ret::Int),
            Call::SetNx(v) => sdk_outcome(
                rt.block_on(client.set_if_absent(key, v, None)),
                Ret::Applied,
            ),
            Call::Cas { new, .. } => {
                let read = rt.block_on(client.get(key));
                let seen = read.as_ref().ok().map(|e| e.as_ref().map(|e| e.version));
                let got = sdk_outcome(read, |e| Ret::Value(entry_value(e)));
                let Outcome::Ok(Ret::Value(expected)) = self.record(key, Call::Get, invoke, got)
                else {
                    return;
                };
                let version = seen.flatten().unwrap_or(0);
                let invoke = micros(self.start);
                let r = rt.block_on(client.compare_and_swap(key, version, new, None));
                let out = sdk_outcome(r, |w| Ret::Applied(w.applied));
                let call = Call::Cas {
                    expected,
                    new: new.clone(),
                };
                self.record(key, call, invoke, out);
                return;
            }
        };
        self.record(key, call, invoke, outcome);
    }
}

/// The most the SDK's write versions ran ahead of the wall clock, in ms:
/// versions are compared across writers, so a clock ahead orders an earlier
/// write after a later one.
pub static SDK_CLOCK_LEAD_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn note_lead(version: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    SDK_CLOCK_LEAD_MS.fetch_max((version >> 16) as i64 - now, Ordering::Relaxed);
}

fn entry_value(e: Option<distcache::Entry>) -> Option<String> {
    e.map(|e| String::from_utf8_lossy(&e.value).into_owned())
}

/// The processes of one run.
struct Cluster {
    nodes: Vec<NodeProc>,
    file: PathBuf,
}

impl Cluster {
    fn urls(&self, except: Option<usize>) -> Vec<String> {
        (0..self.nodes.len())
            .filter(|i| Some(*i) != except)
            .map(|i| self.nodes[i].url())
            .collect()
    }

    /// Injects one fault and heals it, noting in `log` what it did to
    /// which node, and when (µs since `start`).
    fn inject(
        &mut self,
        fault: Fault,
        rng: &mut StdRng,
        log: &mut Vec<String>,
        start: Instant,
    ) -> Result<(), String> {
        let ms = |rng: &mut StdRng, a: u64, b: u64| Duration::from_millis(rng.random_range(a..b));
        let mut note = |what: &str, i: usize| {
            log.push(format!(
                "Fault {{ at: {}, node: n{i}, {what} }}",
                micros(start)
            ));
        };
        match fault {
            Fault::KillRestartWal | Fault::KillRestartEmpty => {
                let wal = fault == Fault::KillRestartWal;
                let pick: Vec<usize> = (0..self.nodes.len())
                    .filter(|i| self.nodes[*i].data_dir.is_some() == wal)
                    .collect();
                let i = pick[rng.random_range(0..pick.len())];
                note("killed", i);
                self.nodes[i].kill();
                std::thread::sleep(ms(rng, 300, 2_000));
                let r = self.nodes[i].start();
                note(
                    if wal {
                        "restarted from its WAL"
                    } else {
                        "restarted empty"
                    },
                    i,
                );
                r
            }
            Fault::Pause => {
                let i = rng.random_range(0..self.nodes.len());
                note("paused", i);
                self.nodes[i].pause()?;
                std::thread::sleep(ms(rng, 1_000, 3_000));
                let r = self.nodes[i].resume();
                note("resumed", i);
                r
            }
            Fault::Membership => {
                let i = rng.random_range(0..self.nodes.len());
                note("removed from the cluster file", i);
                write_cluster(&self.file, &self.urls(Some(i)))?;
                std::thread::sleep(ms(rng, 1_000, 3_000));
                let r = write_cluster(&self.file, &self.urls(None));
                note("re-added to the cluster file", i);
                r
            }
        }
    }
}

/// Runs one session in a fresh temporary directory `dir` (the caller
/// removes it).
pub fn run(config: &Config, bins: &Bins, dir: &Path) -> Result<Outcomes, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut nodes = vec![
        NodeProc::new(&bins.node, dir, "n0", true),
        NodeProc::new(&bins.node, dir, "n1", true),
        NodeProc::new(&bins.node, dir, "n2", false),
    ];
    for n in &mut nodes {
        n.start()?;
    }
    let mut cluster = Cluster {
        nodes,
        file: dir.join("cluster.toml"),
    };
    write_cluster(&cluster.file, &cluster.urls(None))?;
    let timeout = ["--timeout", "1s"];
    let quorum = [
        "--timeout",
        "1s",
        "--read-consistency",
        "quorum",
        "--write-consistency",
        "quorum",
    ];
    let proxies = [
        ProxyProc::start(&bins.proxy, dir, "proxy-a", &cluster.file, &timeout)?,
        ProxyProc::start(&bins.proxy, dir, "proxy-b", &cluster.file, &quorum)?,
    ];
    let sdk = |nodes: Vec<String>| {
        rt.block_on(
            Client::builder()
                .nodes(nodes)
                .replicas(2)
                .timeout(Duration::from_secs(1))
                .probe_interval(Duration::from_millis(200))
                .build(),
        )
        .map_err(|e| e.to_string())
    };
    let direct = sdk(cluster.urls(None))?;
    // The SDK follows the cluster file as the proxies do (polled every
    // second): an application linking the SDK watches the membership
    // source its sidecars watch.
    // (The task ends with the runtime, after the final reads.)
    {
        let (client, file) = (direct.clone(), cluster.file.clone());
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Ok(nodes) = read_cluster(&file) {
                    let _ = client.set_nodes(nodes);
                }
            }
        });
    }

    let start = Instant::now();
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let mut id = 0u32;
    for (p, via) in proxies.iter().zip(["proxy-a-one", "proxy-b-quorum"]) {
        for _ in 0..config.resp_clients {
            workers.push((
                via,
                Backend::Resp {
                    addr: p.resp,
                    con: None,
                },
            ));
        }
    }
    for _ in 0..config.sdk_clients {
        let b = Backend::Sdk {
            client: direct.clone(),
            rt: rt.handle().clone(),
        };
        workers.push(("sdk", b));
    }
    let mut threads = Vec::new();
    for (via, backend) in workers {
        id += 1;
        let mut w = Worker {
            id,
            via,
            backend,
            rng: StdRng::seed_from_u64(config.seed.wrapping_mul(1_000).wrapping_add(u64::from(id))),
            keys: config.keys.max(1),
            seq: 0,
            start,
            log: log.clone(),
        };
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                w.step();
            }
        }));
    }

    let mut faults: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut nemesis_error = None;
    let mut fault_log = Vec::new();
    while start.elapsed() < config.duration {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1_000)));
        if config.faults.is_empty() || start.elapsed() >= config.duration {
            continue;
        }
        let f = config.faults[rng.random_range(0..config.faults.len())];
        *faults.entry(f).or_default() += 1;
        if let Err(e) = cluster.inject(f, &mut rng, &mut fault_log, start) {
            nemesis_error = Some(e);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if let Some(e) = nemesis_error {
        return Err(format!("nemesis: {e}"));
    }

    // Heal: every node up and healthy (each fault healed itself), the file
    // full, both proxies seeing three healthy nodes; then final reads.
    let healing = Instant::now();
    write_cluster(&cluster.file, &cluster.urls(None))?;
    for p in &proxies {
        poll(Duration::from_secs(30), || {
            let ring = p.ring()?;
            (ring.matches("\"healthy\":true").count() == 3).then_some(())
        })
        .map_err(|e| format!("a proxy never saw three healthy nodes: {e}"))?;
    }
    let reader = sdk(cluster.urls(None))?.with_read_consistency(Consistency::All);
    poll(Duration::from_secs(30), || {
        reader.health().iter().all(|(_, h)| *h).then_some(())
    })?;
    let mut history = std::mem::take(&mut *log.lock().map_err(|e| e.to_string())?);
    for family in ["r", "c", "l"] {
        for k in 0..config.keys.max(1) {
            let key = format!("{family}:{k}");
            let got = poll(Duration::from_secs(30), || {
                let invoke = micros(start);
                let r = rt.block_on(reader.get(&key)).ok()?;
                Some((invoke, r))
            })
            .map_err(|e| format!("final read of {key}: {e}"))?;
            history.push(Op {
                client: 0,
                via: "final-all",
                key,
                call: Call::Get,
                invoke: got.0,
                complete: micros(start),
                outcome: Outcome::Ok(Ret::Value(entry_value(got.1))),
                final_read: true,
            });
        }
    }
    let heal = healing.elapsed();
    let in_doubt = history.iter().filter(|o| !o.acked()).count();
    let report = check::check(&history);
    let sdk_stats = direct.stats();
    for (i, n) in cluster.nodes.iter().enumerate() {
        fault_log.push(format!("Node {{ node: n{i}, url: {} }}", n.url()));
    }
    for family in ["r", "c", "l"] {
        for k in 0..config.keys.max(1) {
            let key = format!("{family}:{k}");
            fault_log.push(format!(
                "Owners {{ key: {key}, owners: {:?} }}",
                direct.owners(&key)
            ));
        }
    }
    let proxy_failovers = proxies
        .iter()
        .filter_map(|p| p.metric("distcache_proxy_upstream_failovers_total"))
        .sum::<f64>() as u64;
    drop(proxies);
    drop(cluster);
    Ok(Outcomes {
        proxy_failovers,
        report,
        faults,
        in_doubt,
        heal,
        history,
        sdk_stats,
        fault_log,
    })
}
