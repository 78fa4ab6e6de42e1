//! The store alone against moka and quick_cache, measured in the same run:
//! 90% get / 10% set over 1M keys with a seeded Zipf(0.99) key choice and
//! 100-byte values, at 2 and 8 threads. Throughput is operations per second
//! over all threads. No eviction happens: every cache has room for every key.
//!
//! `cargo bench -p distcache-node --bench store`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distcache_node::store::{SetOptions, Store, StoreConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

const KEYS: usize = 1_000_000;
const OPS_PER_THREAD: usize = 50_000;
const VALUE: [u8; 100] = [b'v'; 100];

trait Cache: Send + Sync {
    fn get(&self, key: &[u8]) -> bool;
    fn set(&self, key: &[u8], value: &Bytes);
}

impl Cache for Store {
    fn get(&self, key: &[u8]) -> bool {
        Store::get(self, key).is_some()
    }
    fn set(&self, key: &[u8], value: &Bytes) {
        Store::set(self, key, value, SetOptions::default()).unwrap();
    }
}

struct Moka(moka::sync::Cache<Vec<u8>, Bytes>);
impl Cache for Moka {
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).is_some()
    }
    fn set(&self, key: &[u8], value: &Bytes) {
        self.0.insert(key.to_vec(), value.clone());
    }
}

struct Quick(quick_cache::sync::Cache<Vec<u8>, Bytes>);
impl Cache for Quick {
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).is_some()
    }
    fn set(&self, key: &[u8], value: &Bytes) {
        self.0.insert(key.to_vec(), value.clone());
    }
}

/// One thread's seeded operations: (key index, is_set).
fn workload(thread: usize) -> Vec<(u32, bool)> {
    let mut rng = StdRng::seed_from_u64(0xd15c_ac4e + thread as u64);
    let zipf = Zipf::new(KEYS as f64, 0.99).unwrap();
    (0..OPS_PER_THREAD)
        .map(|_| {
            // Zipf ranks start at 1; scatter ranks over the key space so hot
            // keys do not share a shard by construction.
            let rank = zipf.sample(&mut rng) as u64 - 1;
            let idx = (rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS as u64) as u32;
            (idx, rng.random_ratio(1, 10))
        })
        .collect()
}

fn run(cache: &Arc<dyn Cache>, keys: &Arc<Vec<Vec<u8>>>, plans: &[Vec<(u32, bool)>]) -> Duration {
    let value = Bytes::from_static(&VALUE);
    let start = Instant::now();
    std::thread::scope(|s| {
        for plan in plans {
            let (cache, keys, value) = (cache.clone(), keys.clone(), value.clone());
            s.spawn(move || {
                let mut hits = 0usize;
                for &(k, is_set) in plan {
                    let key = &keys[k as usize];
                    if is_set {
                        cache.set(key, &value);
                    } else {
                        hits += usize::from(cache.get(key));
                    }
                }
                std::hint::black_box(hits);
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("key:{i:08}").into_bytes())
            .collect(),
    );
    let value = Bytes::from_static(&VALUE);
    let caches: Vec<(&str, Arc<dyn Cache>)> = vec![
        (
            "distcache",
            Arc::new(Store::new(StoreConfig {
                max_memory: 1 << 30,
                ..StoreConfig::default()
            })),
        ),
        (
            "moka",
            Arc::new(Moka(moka::sync::Cache::new(2 * KEYS as u64))),
        ),
        (
            "quick_cache",
            Arc::new(Quick(quick_cache::sync::Cache::new(2 * KEYS))),
        ),
    ];
    let mut group = c.benchmark_group("store_90get_10set_zipf");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, cache) in &caches {
        for k in keys.iter() {
            cache.set(k, &value);
        }
        for threads in [2usize, 8] {
            let plans: Vec<_> = (0..threads).map(workload).collect();
            group.throughput(Throughput::Elements((threads * OPS_PER_THREAD) as u64));
            group.bench_with_input(BenchmarkId::new(*name, threads), &threads, |b, _| {
                b.iter_custom(|iters| (0..iters).map(|_| run(cache, &keys, &plans)).sum());
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
