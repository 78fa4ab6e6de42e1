//! Issue 21: eight writers of large values (64 KiB to 1 MiB, new keys and
//! overwrites, so eviction runs all the time) against a node with eight
//! worker threads. Its resident memory must stay within 1.2 × `--max-memory`
//! plus the runtime's own baseline, and it must stay alive and answering.
//! Debug build, 256 MiB bound, 1.5 GiB written: peak 298–302 MiB (limit 323);
//! with values on the heap, as before the fix, 442–520 MiB.
//!
//! `measure_rss_under_load` (ignored) is the same load for a chosen binary,
//! bound and duration, printing the figures instead of asserting them:
//!
//! ```text
//! DISTCACHE_RSS_NODE=target/release/distcache-node DISTCACHE_RSS_MAX_MIB=256 \
//! DISTCACHE_RSS_SECS=45 cargo test -p distcache-node --test memory_under_load \
//!   -- --ignored --nocapture
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{Node, spawn_command, status_bytes};

const WRITERS: u64 = 8;
const MIN_VALUE: usize = 64 << 10;
const MAX_VALUE: usize = 1 << 20;

/// When the load stops.
#[derive(Clone, Copy)]
enum Until {
    /// After this many value bytes were written, all writers together.
    Written(u64),
    /// After this long.
    Elapsed(Duration),
}

/// What the sampler saw: `VmRSS` every few milliseconds, and `VmHWM` at the end.
struct Figures {
    samples: Vec<u64>,
    hwm: u64,
    written: u64,
    elapsed: Duration,
}

impl Figures {
    /// The median RSS over the second half of the run (eviction running).
    fn steady(&self) -> u64 {
        let mut late = self.samples[self.samples.len() / 2..].to_vec();
        late.sort_unstable();
        late.get(late.len() / 2).copied().unwrap_or(0)
    }

    fn report(&self, max_memory: u64) -> String {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        format!(
            "wrote {:.0} MiB in {:.1} s; peak (VmHWM) {:.0} MiB = {:.2}x, steady (median VmRSS, second half) {:.0} MiB = {:.2}x of --max-memory {:.0} MiB",
            mib(self.written),
            self.elapsed.as_secs_f64(),
            mib(self.hwm),
            self.hwm as f64 / max_memory as f64,
            mib(self.steady()),
            self.steady() as f64 / max_memory as f64,
            mib(max_memory),
        )
    }
}

/// One writer on its own connection: random sizes, half new keys, half
/// overwrites of keys it wrote before. Returns the last key it wrote.
async fn writer(addr: String, id: u64, stop: Arc<AtomicBool>, written: Arc<AtomicU64>) -> String {
    let mut c = CacheServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut rng = SmallRng::seed_from_u64(0x21 + id);
    let mut keys = 0u64;
    let mut last = String::new();
    while !stop.load(Ordering::Relaxed) {
        let n = if keys == 0 || rng.random_bool(0.5) {
            keys += 1;
            keys
        } else {
            rng.random_range(1..=keys)
        };
        let len = rng.random_range(MIN_VALUE..=MAX_VALUE);
        last = format!("w{id}:{n}");
        c.set(pb::SetRequest {
            key: last.clone().into_bytes().into(),
            value: vec![(n % 251) as u8; len].into(),
            ..Default::default()
        })
        .await
        .expect("set answered");
        written.fetch_add(len as u64, Ordering::Relaxed);
    }
    last
}

/// Runs the load against `node` and samples its memory until `until`.
async fn load(node: &mut Node, addr: &str, until: Until) -> Figures {
    let pid = node.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(addr.to_owned(), id, stop.clone(), written.clone())))
        .collect();
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        assert!(node.alive(), "the node died under load");
        samples.push(status_bytes(pid, "VmRSS"));
        let done = match until {
            Until::Written(bytes) => written.load(Ordering::Relaxed) >= bytes,
            Until::Elapsed(d) => start.elapsed() >= d,
        };
        if done || writers.iter().any(|w| w.is_finished()) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut last = Vec::new();
    for w in writers {
        last.push(w.await.expect("writer"));
    }
    let figures = Figures {
        samples,
        hwm: status_bytes(pid, "VmHWM"),
        written: written.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    };
    // Alive and answering: health, and the last write of each writer.
    let mut c = CacheServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect after load")
        .max_decoding_message_size(4 << 20);
    let h = c
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("health after load")
        .into_inner();
    assert!(
        figures.written > 2 * h.max_memory_bytes && h.memory_bytes <= h.max_memory_bytes,
        "the load evicted: {} bytes accounted",
        h.memory_bytes
    );
    // (A writer's last value may be gone: with 1 MiB values a shard holds
    // one or two, and a write evicts from its own shard first.)
    for key in last {
        c.get(pb::GetRequest {
            key: key.into_bytes().into(),
            ..Default::default()
        })
        .await
        .expect("get after load");
    }
    c.set(pb::SetRequest {
        key: "after".into(),
        value: vec![1u8; MAX_VALUE].into(),
        ..Default::default()
    })
    .await
    .expect("set after load");
    let got = c
        .get(pb::GetRequest {
            key: "after".into(),
            ..Default::default()
        })
        .await
        .expect("get after load")
        .into_inner();
    assert!(
        got.found && got.value.len() == MAX_VALUE,
        "a write after the load reads back"
    );
    figures
}

fn node_args(max_mib: u64) -> Vec<String> {
    ["--max-memory", &format!("{max_mib}MiB"), "--threads", "8"]
        .map(str::to_owned)
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with DISTCACHE_RSS_* set, see the module docs"]
async fn measure_rss_under_load() {
    let bin = std::env::var("DISTCACHE_RSS_NODE")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_distcache-node").to_owned());
    let max_mib: u64 = std::env::var("DISTCACHE_RSS_MAX_MIB").map_or(256, |v| v.parse().unwrap());
    let secs: u64 = std::env::var("DISTCACHE_RSS_SECS").map_or(45, |v| v.parse().unwrap());
    let args = node_args(max_mib);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut node, addr) = spawn_command(Command::new(&bin), &args);
    let idle = status_bytes(node.pid(), "VmRSS");
    let f = load(&mut node, &addr, Until::Elapsed(Duration::from_secs(secs))).await;
    eprintln!(
        "{bin}: idle {} MiB; {}",
        idle >> 20,
        f.report(max_mib << 20)
    );
}

/// The bound of the regression test, the issue's: large enough that the
/// requests in flight (8 × up to 1 MiB, held about three times over: h2's
/// frames, tonic's decode buffer, the stored copy before eviction) fit in
/// its 0.2, small enough to churn within seconds.
const MAX_MIB: u64 = 256;

/// What the node holds besides its entries and requests in flight: the
/// binary, the runtime's threads and their stacks, the store's tables.
/// Measured idle RSS of the debug binary: 13–14 MiB; 16 MiB leaves room.
const BASELINE: u64 = 16 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_of_large_values_keep_the_node_within_1_2_times_its_bound() {
    // A safety net for a regression: past 4× the bound the node's mallocs
    // fail and it aborts, rather than taking the machine's memory. The data
    // limit (anonymous writable memory) is what the node's heap and mapped
    // values count against; reserved but unused address space is not.
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!(
            "ulimit -d {}; exec \"$0\" \"$@\"",
            (4 * MAX_MIB) << 10
        ))
        .arg(env!("CARGO_BIN_EXE_distcache-node"));
    let args = node_args(MAX_MIB);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut node, addr) = spawn_command(sh, &args);
    let idle = status_bytes(node.pid(), "VmRSS");
    let max_memory = MAX_MIB << 20;
    // Six times the bound: the store is rewritten several times over.
    let f = load(&mut node, &addr, Until::Written(6 * max_memory)).await;
    eprintln!("idle {} MiB; {}", idle >> 20, f.report(max_memory));
    let allowed = max_memory * 6 / 5 + BASELINE;
    assert!(
        f.hwm <= allowed,
        "peak RSS {} MiB over {} MiB (1.2 × --max-memory + {} MiB); {}",
        f.hwm >> 20,
        allowed >> 20,
        BASELINE >> 20,
        f.report(max_memory),
    );
    assert!(node.alive(), "the node lives");
}
