//! Ring lookup cost at 10 nodes × 150 vnodes (goal: well under 100 ns/key).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use distcache::ring::{DEFAULT_VNODES, Ring};

fn bench(c: &mut Criterion) {
    let nodes: Vec<String> = (0..10).map(|i| format!("http://10.0.0.{i}:7001")).collect();
    let ring = Ring::new(nodes, DEFAULT_VNODES);
    // Seeded, fixed inputs: 4096 distinct keys of a realistic shape.
    let keys: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| format!("user:{:08}", i.wrapping_mul(2_654_435_761)).into_bytes())
        .collect();
    let mut g = c.benchmark_group("ring_10_nodes");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("primary", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(ring.primary(black_box(&keys[i])))
        })
    });
    let mut out = Vec::with_capacity(3);
    g.bench_function("preference_list_3", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            ring.preference_list_into(black_box(&keys[i]), 3, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
    c.bench_function("ring_build_10x150", |b| {
        b.iter(|| {
            black_box(Ring::new(
                black_box(&ring.nodes().to_vec()).clone(),
                DEFAULT_VNODES,
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
