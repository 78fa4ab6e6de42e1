//! `distcache bench`: a closed-loop load generator over the SDK with a
//! progress line and an HDR-histogram latency report.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use distcache::Client;
use hdrhistogram::Histogram;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Zipfian (s = 0.99): a few hot keys.
    Zipf,
}

/// `bench` options.
#[derive(Debug, Args)]
pub(crate) struct BenchOpts {
    /// Total operations.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Concurrent requests in flight.
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// Fraction of operations that are gets (the rest are sets).
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Key distribution.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    /// Do not write every key before measuring.
    #[arg(long)]
    no_preload: bool,
}

/// xorshift64*: plenty for picking keys, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws key indexes.
enum Picker {
    Uniform(u64),
    /// Cumulative probabilities of a Zipf distribution.
    Zipf(Vec<f64>),
}

impl Picker {
    fn new(keys: u64, d: Distribution) -> Self {
        match d {
            Distribution::Uniform => Picker::Uniform(keys.max(1)),
            Distribution::Zipf => {
                let mut cdf = Vec::with_capacity(keys as usize);
                let mut sum = 0.0;
                for i in 1..=keys.max(1) {
                    sum += 1.0 / (i as f64).powf(0.99);
                    cdf.push(sum);
                }
                cdf.iter_mut().for_each(|c| *c /= sum);
                Picker::Zipf(cdf)
            }
        }
    }
    fn pick(&self, rng: &mut Rng) -> u64 {
        match self {
            Picker::Uniform(n) => rng.next() % n,
            Picker::Zipf(cdf) => {
                let u = rng.unit();
                cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as u64
            }
        }
    }
}

#[derive(Debug)]
struct Report {
    gets: Histogram<u64>,
    sets: Histogram<u64>,
    errors: u64,
    hits: u64,
}

fn histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    // Microseconds, 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
}

fn key(i: u64) -> String {
    format!("bench:{i:010}")
}

pub(crate) async fn run(client: &Client, o: BenchOpts) -> Result<(), Box<dyn std::error::Error>> {
    let value = vec![b'x'; o.value_size];
    if !o.no_preload {
        let started = Instant::now();
        let mut i = 0;
        while i < o.keys {
            let end = (i + 500).min(o.keys);
            let items: Vec<(String, &[u8])> = (i..end).map(|k| (key(k), &value[..])).collect();
            client.mset(&items, None).await?;
            i = end;
        }
        eprintln!("preloaded {} keys in {:.2?}", o.keys, started.elapsed());
    }
    let picker = Arc::new(Picker::new(o.keys, o.distribution));
    let next = Arc::new(AtomicU64::new(0));
    let value = bytes::Bytes::from(value);
    let started = Instant::now();
    let progress = (std::io::stderr().is_terminal()).then(|| {
        let next = next.clone();
        let total = o.ops;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = next.load(Ordering::Relaxed).min(total);
                let width = 40;
                let filled = (done * width / total.max(1)) as usize;
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprint!(
                    "\r[{}{}] {:>3}% {:>9.0} ops/s",
                    "=".repeat(filled),
                    " ".repeat(width as usize - filled),
                    done * 100 / total.max(1),
                    rate
                );
            }
        })
    });
    let mut workers = Vec::with_capacity(o.concurrency);
    for w in 0..o.concurrency.max(1) {
        let (client, picker, next, value) =
            (client.clone(), picker.clone(), next.clone(), value.clone());
        let (ops, ratio) = (o.ops, o.get_ratio);
        workers.push(tokio::spawn(async move {
            let mut rng =
                Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
            let mut r = Report {
                gets: histogram()?,
                sets: histogram()?,
                errors: 0,
                hits: 0,
            };
            while next.fetch_add(1, Ordering::Relaxed) < ops {
                let k = key(picker.pick(&mut rng));
                let t = Instant::now();
                if rng.unit() < ratio {
                    match client.get(&k).await {
                        Ok(hit) => r.hits += u64::from(hit.is_some()),
                        Err(_) => r.errors += 1,
                    }
                    r.gets.saturating_record(t.elapsed().as_micros() as u64);
                } else {
                    if client.set(&k, &value, None).await.is_err() {
                        r.errors += 1;
                    }
                    r.sets.saturating_record(t.elapsed().as_micros() as u64);
                }
            }
            Ok::<_, hdrhistogram::CreationError>(r)
        }));
    }
    let mut all = Report {
        gets: histogram()?,
        sets: histogram()?,
        errors: 0,
        hits: 0,
    };
    for w in workers {
        let r = w.await??;
        all.gets.add(&r.gets)?;
        all.sets.add(&r.sets)?;
        all.errors += r.errors;
        all.hits += r.hits;
    }
    let elapsed = started.elapsed();
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let total = all.gets.len() + all.sets.len();
    println!(
        "{} ops in {:.2?} with concurrency {}: {:.0} ops/s, {} errors, get hit ratio {:.3}",
        total,
        elapsed,
        o.concurrency,
        total as f64 / elapsed.as_secs_f64(),
        all.errors,
        all.hits as f64 / all.gets.len().max(1) as f64
    );
    let mut both = all.gets.clone();
    both.add(&all.sets)?;
    println!("latency µs      count      p50      p95      p99     p999      max");
    for (name, h) in [("get", &all.gets), ("set", &all.sets), ("all", &both)] {
        if h.is_empty() {
            continue;
        }
        println!(
            "{name:<10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
            h.len(),
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.95),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
    Ok(())
}
