//! Per-request costs of the security stack: verifying a token (what the auth
//! layer does on every call) and taking from a rate-limit bucket.
//!
//! `cargo bench -p distcache-serve --bench security`

#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use distcache_serve::security::bucket::{KeyedLimiter, Rate};
use distcache_serve::security::{Claims, KeySet, Role};

fn tokens(c: &mut Criterion) {
    let keys =
        KeySet::parse("k1:0123456789abcdef0123456789abcdef\nk2:fedcba9876543210fedcba9876543210")
            .expect("keys");
    let claims = Claims {
        sub: "service-a".into(),
        role: Role::User,
        iat: 1_700_000_000,
        exp: 1_700_003_600,
    };
    let token = keys.sign(&claims).expect("sign");
    c.bench_function("token_sign", |b| b.iter(|| keys.sign(black_box(&claims))));
    c.bench_function("token_verify_ok", |b| {
        b.iter(|| keys.verify(black_box(&token), 1_700_000_100, 5))
    });
    let mut bad = token.clone().into_bytes();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).expect("ascii");
    c.bench_function("token_verify_bad_signature", |b| {
        b.iter(|| keys.verify(black_box(&bad), 1_700_000_100, 5))
    });
}

fn buckets(c: &mut Criterion) {
    let rate = Rate {
        per_sec: 1e9,
        burst: 1e9,
    };
    let limiter = KeyedLimiter::new(rate, 100_000, Duration::from_secs(60));
    let now = Instant::now();
    for i in 0..10_000u32 {
        let _ = limiter.take(&i, now);
    }
    let mut i = 0u32;
    c.bench_function("bucket_take_known_client_of_10k", |b| {
        b.iter(|| {
            i = (i + 1) % 10_000;
            limiter.take(black_box(&i), now)
        })
    });
}

fn churn(c: &mut Criterion) {
    // Every request from a new client, with the limiter full of busy ones.
    let rate = Rate {
        per_sec: 1.0,
        burst: 10.0,
    };
    let limiter = KeyedLimiter::new(rate, 100_000, Duration::from_secs(60));
    let now = Instant::now();
    let mut i = 0u64;
    c.bench_function("bucket_take_new_client_at_capacity_100k", |b| {
        b.iter(|| {
            i += 1;
            limiter.take(black_box(&i), now)
        })
    });
}

criterion_group!(benches, tokens, buckets, churn);
criterion_main!(benches);
