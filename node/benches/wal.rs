//! Durability benchmarks.
//!
//! - `set_grpc_64_clients/{memory,everysec,always}`: SET throughput of an
//!   in-process node over loopback gRPC, 64 concurrent clients (one HTTP/2
//!   connection each), 16-byte keys, 100-byte values; the same run for a
//!   memory-only node and the two fsync policies, so they compare directly.
//!   Then the three again, all running, in alternating rounds (printed as
//!   medians and ratios; fairer on a machine shared with other work).
//! - `recovery_1m/{wal_replay,snapshot_load}`: start-up of a node whose data
//!   directory holds 1M records of 100-byte values, first as WAL segments
//!   only, then as one snapshot.
//!
//! Run: `cargo bench -p distcache-node --bench wal`.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use distcache_node::config::NodeConfig;
use distcache_node::store::{Store, StoreConfig, Written};
use distcache_node::wal::{FsyncPolicy, Records, RecoveryMode, Wal, WalOptions};
use distcache_node::{Listeners, run};
use distcache_proto::v1 as pb;
use distcache_serve::units::HumanDuration;
use pb::cache_service_client::CacheServiceClient;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tonic::transport::Channel;

const CLIENTS: usize = 64;
const RECORDS: u64 = 1_000_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

async fn start(fsync: Option<FsyncPolicy>) -> Running {
    let mut config = NodeConfig::default();
    config.server.shutdown_grace = HumanDuration(Duration::from_secs(1));
    let dir = fsync.map(|_| tempfile::tempdir().expect("tempdir"));
    if let (Some(d), Some(f)) = (&dir, fsync) {
        config.wal.data_dir = Some(d.path().to_owned());
        config.wal.fsync = f;
    }
    let listeners = Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        admin: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    };
    let addr = listeners.grpc.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run(listeners, config, async {
            let _ = rx.await;
        })
        .await
        .expect("node runs");
    });
    Running {
        addr,
        stop: Some(tx),
        task,
        _dir: dir,
    }
}

async fn clients(addr: SocketAddr) -> Vec<CacheServiceClient<Channel>> {
    let mut out = Vec::new();
    for _ in 0..CLIENTS {
        loop {
            if let Ok(c) = CacheServiceClient::connect(format!("http://{addr}")).await {
                out.push(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    out
}

/// `iters` SETs spread over the clients; returns the wall time.
async fn set_many(cs: &[CacheServiceClient<Channel>], iters: u64, round: u64) -> Duration {
    let value = Bytes::from(vec![b'v'; 100]);
    let per = iters.div_ceil(CLIENTS as u64);
    let start = Instant::now();
    let tasks: Vec<_> = cs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut c = c.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for n in 0..per {
                    let key = Bytes::from(format!("k{i:03}-{:010}", (round * per + n) % 100_000));
                    c.set(pb::SetRequest {
                        key,
                        value: value.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("set");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
    start.elapsed()
}

fn set_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("set_grpc_64_clients");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (name, policy) in [
        ("memory", None),
        ("everysec", Some(FsyncPolicy::EverySec)),
        ("always", Some(FsyncPolicy::Always)),
    ] {
        let mut node = rt.block_on(start(policy));
        let cs = rt.block_on(clients(node.addr));
        let mut round = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                round += 1;
                rt.block_on(set_many(&cs, iters, round))
            });
        });
        drop(cs);
        if let Some(stop) = node.stop.take() {
            let _ = stop.send(());
        }
        rt.block_on(async { node.task.await.expect("node stops") });
    }
    group.finish();
}

/// All three nodes up at once, measured in alternating rounds, so that load
/// from elsewhere on the machine falls on each mode alike; prints the median
/// throughput of each and the ratios to memory-only.
fn set_throughput_interleaved(_: &mut Criterion) {
    const ROUNDS: usize = 7;
    const SETS: u64 = 20_000;
    let rt = runtime();
    let modes = [
        ("memory", None),
        ("everysec", Some(FsyncPolicy::EverySec)),
        ("always", Some(FsyncPolicy::Always)),
    ];
    let mut nodes = Vec::new();
    for (_, policy) in modes {
        let node = rt.block_on(start(policy));
        let cs = rt.block_on(clients(node.addr));
        nodes.push((node, cs));
    }
    let mut rates = vec![Vec::new(); modes.len()];
    for round in 0..ROUNDS as u64 {
        for (i, (_, cs)) in nodes.iter().enumerate() {
            let took = rt.block_on(set_many(cs, SETS, 1000 + round));
            rates[i].push(SETS as f64 / took.as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut rates[0].clone());
    for (i, (name, _)) in modes.iter().enumerate() {
        let m = median(&mut rates[i]);
        eprintln!(
            "set_grpc_64_clients interleaved/{name}: median {m:.0} SET/s over {ROUNDS} rounds of {SETS} ({:.2}x memory-only)",
            m / base
        );
    }
    for (mut node, cs) in nodes {
        drop(cs);
        if let Some(stop) = node.stop.take() {
            let _ = stop.send(());
        }
        rt.block_on(async { node.task.await.expect("node stops") });
    }
}

fn wal_options(dir: &std::path::Path) -> WalOptions {
    WalOptions {
        dir: dir.to_owned(),
        fsync: FsyncPolicy::No,
        segment_bytes: 100 << 20,
        recovery: RecoveryMode::Strict,
        snapshot_interval: Duration::ZERO,
        snapshot_retain: 1,
        snapshot_on_shutdown: false,
    }
}

fn fresh_store() -> Arc<Store> {
    Arc::new(Store::new(StoreConfig::default()))
}

fn recovery(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = wal_options(dir.path());
    rt.block_on(async {
        let wal = Wal::open(opts.clone(), fresh_store()).await.expect("open");
        let value = vec![b'v'; 100];
        for chunk in 0..RECORDS / 10_000 {
            let mut records = Records::new();
            for i in 0..10_000 {
                let n = chunk * 10_000 + i;
                let w = Written {
                    applied: true,
                    version: n + 1,
                    expires_at: 0,
                };
                records.put(format!("key-{n:012}").as_bytes(), &value, &w);
            }
            wal.append(records).await.expect("append");
        }
        wal.flush().await.expect("flush");
    });

    let mut group = c.benchmark_group("recovery_1m");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    // CPU time too: on a shared machine wall time says more about the
    // neighbours than about the code.
    let cpu = std::cell::Cell::new((0.0f64, 0u64));
    let mut open_timed = |b: &mut criterion::Bencher<'_>| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = fresh_store();
                let (start, cpu0) = (Instant::now(), cpu_seconds());
                let wal = rt
                    .block_on(Wal::open(opts.clone(), store.clone()))
                    .expect("open");
                total += start.elapsed();
                let (sum, n) = cpu.get();
                cpu.set((sum + cpu_seconds() - cpu0, n + 1));
                assert_eq!(store.len(), RECORDS);
                drop(wal);
            }
            total
        });
    };
    let report = |name: &str| {
        let (sum, n) = cpu.replace((0.0, 0));
        let per = sum / n.max(1) as f64;
        eprintln!(
            "recovery_1m/{name}: {per:.3} CPU s per start ({:.0} records per CPU second)",
            RECORDS as f64 / per
        );
    };
    group.bench_function("wal_replay", &mut open_timed);
    report("wal_replay");
    rt.block_on(async {
        let wal = Wal::open(opts.clone(), fresh_store()).await.expect("open");
        wal.snapshot().await.expect("snapshot").expect("written");
    });
    group.bench_function("snapshot_load", &mut open_timed);
    report("snapshot_load");
    group.finish();
}

/// User + system CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (which ends with ')') come state, ppid, ...;
    // utime and stime are the 12th and 13th, in clock ticks (100 per second).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

criterion_group!(
    benches,
    set_throughput,
    set_throughput_interleaved,
    recovery
);
criterion_main!(benches);
