//! The resharding measurement (issue 15; `scripts/reshard.sh`): real node
//! processes on loopback, two SDK clients (two proxies' worth) that see
//! each membership change a second apart, `keys` keys of 100 bytes written
//! first, and a 90/10 read/write load (5 % of the writes deletes) on those
//! keys throughout: steady state, 3 → 4 nodes, after, 4 → 3 nodes, after.
//!
//! Every read is judged against what had been acknowledged for its key
//! when the read started (each key has one writer, so the order is known),
//! unless a write of the key was in flight meanwhile (a *concurrent* read,
//! not judged): a *hit* found the acknowledged value, a *miss* found
//! nothing where a value was acknowledged, *stale* found an older value,
//! *resurrected* found a value older than an acknowledged delete.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use distcache::{Client, RebalanceConfig};

use crate::cluster::{Bins, NodeProc};

/// Value length, as in the "1M keys of 100 B".
const VALUE_LEN: usize = 100;
/// Bits of a key's model word besides its generation: the last
/// acknowledged write deleted it; a write is in flight; a write failed (it
/// may still apply: the key is not judged any more).
const DELETED: u32 = 1 << 31;
const PENDING: u32 = 1 << 30;
const DOUBT: u32 = 1 << 29;
const GENERATION: u32 = DOUBT - 1;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub keys: usize,
    /// Concurrent workers, half on each client.
    pub workers: usize,
    /// Length of the steady-state and after phases.
    pub phase: Duration,
    pub rebalance: RebalanceConfig,
}

/// What one phase measured.
#[derive(Debug, Default, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub seconds: f64,
    pub ops: u64,
    pub reads: u64,
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub resurrected: u64,
    /// Reads a write of their key overlapped (not judged).
    pub concurrent: u64,
    pub errors: u64,
    /// For a move: entries and bytes copied (both clients).
    pub copied: u64,
    pub copied_bytes: u64,
    /// Catch-ups of fenced nodes finished in the phase (both clients): a
    /// node that stalled under the load fences itself.
    pub catch_ups: u64,
}

impl Phase {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }
    /// Reads of keys holding an acknowledged value that found it (or newer).
    pub fn hit_rate(&self) -> f64 {
        let expected = self.hits + self.misses + self.stale;
        if expected == 0 {
            1.0
        } else {
            self.hits as f64 / expected as f64
        }
    }
}

#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    reads: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    resurrected: AtomicU64,
    concurrent: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    fn take(&self, name: &'static str, seconds: f64) -> Phase {
        let t = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        Phase {
            name,
            seconds,
            ops: t(&self.ops),
            reads: t(&self.reads),
            hits: t(&self.hits),
            misses: t(&self.misses),
            stale: t(&self.stale),
            resurrected: t(&self.resurrected),
            concurrent: t(&self.concurrent),
            errors: t(&self.errors),
            ..Phase::default()
        }
    }
}

fn key(i: usize) -> String {
    format!("rs:{i:08}")
}

fn value(generation: u32, i: usize) -> Vec<u8> {
    let mut v = format!("{generation:010}:{i}").into_bytes();
    v.resize(VALUE_LEN, b'x');
    v
}

fn generation_of(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v.get(..10)?).ok()?.parse().ok()
}

/// Runs the measurement; the caller removes `dir`.
pub fn run(config: &Config, bins: &Bins, dir: &std::path::Path) -> Result<Vec<Phase>, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut nodes: Vec<NodeProc> = (0..4)
        .map(|i| NodeProc::new(&bins.node, dir, &format!("n{i}"), false))
        .collect();
    for n in &mut nodes {
        n.start()?;
    }
    let urls: Vec<String> = nodes.iter().map(NodeProc::url).collect();
    let result = rt.block_on(measure(config, &urls));
    for n in &mut nodes {
        n.kill();
    }
    result
}

async fn measure(config: &Config, urls: &[String]) -> Result<Vec<Phase>, String> {
    let build = || async {
        Client::builder()
            .nodes(&urls[..3])
            .timeout(Duration::from_secs(5))
            .rebalance(config.rebalance.clone())
            .build()
            .await
            .map_err(|e| e.to_string())
    };
    let (a, b) = (build().await?, build().await?);
    let model: Arc<Vec<AtomicU32>> =
        Arc::new((0..config.keys).map(|_| AtomicU32::new(1)).collect());
    let loaded = Instant::now();
    let chunk = 1_000;
    for start in (0..config.keys).step_by(chunk) {
        let pairs: Vec<(String, Vec<u8>)> = (start..(start + chunk).min(config.keys))
            .map(|i| (key(i), value(1, i)))
            .collect();
        a.mset(&pairs, None)
            .await
            .map_err(|e| format!("load: {e}"))?;
    }
    eprintln!(
        "loaded {} keys of {VALUE_LEN} B in {:.1} s",
        config.keys,
        loaded.elapsed().as_secs_f64()
    );

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..config.workers {
        let c = if w % 2 == 0 { a.clone() } else { b.clone() };
        let (model, counts, stop) = (model.clone(), counts.clone(), stop.clone());
        let workers = config.workers;
        tasks.push(tokio::spawn(async move {
            let mut rng = (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            while !stop.load(Ordering::Relaxed) {
                step(&c, &model, &counts, w, workers, &mut rng).await;
            }
        }));
    }

    let catch_ups = || a.stats().catch_ups + b.stats().catch_ups;
    let mut phases = Vec::new();
    let mut seen = catch_ups();
    let mut t = Instant::now();
    tokio::time::sleep(config.phase).await;
    phases.push(counts.take("steady, 3 nodes", t.elapsed().as_secs_f64()));
    let mut mark = |p: &mut Phase| {
        let now = catch_ups();
        p.catch_ups = now - seen;
        seen = now;
    };
    mark(&mut phases[0]);
    for (name, to, after) in [
        ("move 3 -> 4", urls, "after, 4 nodes"),
        ("move 4 -> 3", &urls[..3], "after, 3 nodes"),
    ] {
        let before = a.stats().rebalance_entries + b.stats().rebalance_entries;
        t = Instant::now();
        a.set_nodes(to).map_err(|e| e.to_string())?;
        let mut bytes = (0, 0);
        let mut b_changed = false;
        while a.moving().is_some() || b.moving().is_some() || !b_changed {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !b_changed && t.elapsed() >= Duration::from_secs(1) {
                b.set_nodes(to).map_err(|e| e.to_string())?;
                b_changed = true;
            }
            if let Some(m) = a.moving() {
                bytes.0 = m.copied_bytes;
            }
            if let Some(m) = b.moving() {
                bytes.1 = m.copied_bytes;
            }
        }
        let mut p = counts.take(name, t.elapsed().as_secs_f64());
        p.copied = a.stats().rebalance_entries + b.stats().rebalance_entries - before;
        p.copied_bytes = bytes.0 + bytes.1;
        mark(&mut p);
        phases.push(p);
        t = Instant::now();
        tokio::time::sleep(config.phase).await;
        let mut p = counts.take(after, t.elapsed().as_secs_f64());
        mark(&mut p);
        phases.push(p);
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    Ok(phases)
}

/// Prints, for the first few misses and stale reads, what each node holds
/// for the key (a one-node client per node): what a reader needs to tell
/// a replica the copy missed from one read too early.
async fn explain(c: &Client, i: usize, acked: u32, seen: Option<u32>) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) >= 5 {
        return;
    }
    let owners = c.owners(key(i));
    let mut held = Vec::new();
    for (url, _) in c.health() {
        let one = Client::builder()
            .nodes([url.clone()])
            .replicas(1)
            .probe_interval(Duration::ZERO)
            .build()
            .await;
        let got = match one {
            Ok(one) => match one.get(key(i)).await {
                Ok(e) => format!("{:?}", e.and_then(|e| generation_of(&e.value))),
                Err(e) => format!("error {e}"),
            },
            Err(e) => format!("error {e}"),
        };
        held.push(format!(
            "{url}{}: {got}",
            if owners.contains(&url) {
                " (owner)"
            } else {
                ""
            }
        ));
    }
    eprintln!(
        "{} read generation {seen:?} of {} after {acked} was acknowledged (moving: {}); now {}",
        if seen.is_none() { "miss:" } else { "stale:" },
        key(i),
        c.moving().is_some(),
        held.join(", ")
    );
}

/// One operation: a read of any key (90 %), or a write or delete of one of
/// this worker's own keys.
async fn step(
    c: &Client,
    model: &[AtomicU32],
    counts: &Counts,
    w: usize,
    workers: usize,
    rng: &mut u64,
) {
    // xorshift64: no dependency, reproducible per worker.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let r = *rng;
    let n = model.len();
    counts.ops.fetch_add(1, Ordering::Relaxed);
    if !r.is_multiple_of(10) {
        let i = (r >> 8) as usize % n;
        let acked = model[i].load(Ordering::Acquire);
        counts.reads.fetch_add(1, Ordering::Relaxed);
        let got = match c.get(key(i)).await {
            Ok(e) => e,
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let seen = got.as_ref().and_then(|e| generation_of(&e.value));
        let after = model[i].load(Ordering::Acquire);
        if after != acked || (acked & (PENDING | DOUBT)) != 0 {
            counts.concurrent.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let generation = acked & GENERATION;
        let deleted = acked & DELETED != 0;
        if !deleted && seen.is_none_or(|g| g < generation) {
            explain(c, i, generation, seen).await;
        }
        let which = match (deleted, seen) {
            (true, None) => &counts.hits,
            (true, Some(g)) if g > generation => &counts.hits,
            (true, Some(_)) => &counts.resurrected,
            (false, None) => &counts.misses,
            (false, Some(g)) if g >= generation => &counts.hits,
            (false, Some(_)) => &counts.stale,
        };
        which.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // This worker's keys: i % workers == w.
    let per = n.div_ceil(workers);
    let i = ((r >> 8) as usize % per) * workers + w;
    if i >= n {
        return;
    }
    let word = model[i].load(Ordering::Acquire);
    let next = (word & GENERATION) + 1;
    model[i].store(word | PENDING, Ordering::Release);
    let done = if r % 200 < 10 {
        c.delete(key(i)).await.map(|_| next | DELETED)
    } else {
        c.set(key(i), value(next, i), None).await.map(|_| next)
    };
    match done {
        Ok(g) => model[i].store(g, Ordering::Release),
        // In doubt: it may still apply; the key is not judged any more.
        Err(_) => {
            model[i].store(next | DOUBT, Ordering::Release);
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
