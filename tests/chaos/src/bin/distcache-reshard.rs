//! `distcache-reshard [--keys N] [--workers N] [--phase SECONDS] [--grace SECONDS]
//! [--keys-per-sec N] [--bytes-per-sec N]`: the resharding measurement
//! (`distcache_chaos::reshard`, run by `scripts/reshard.sh`): hit rate,
//! stale and resurrected reads, throughput, move time and bytes copied,
//! for 3 → 4 → 3 nodes under load. Exits 1 if any read was stale or
//! resurrected a delete.

use std::process::ExitCode;
use std::time::Duration;

use distcache::RebalanceConfig;
use distcache_chaos::cluster::Bins;
use distcache_chaos::reshard::{self, Config};

fn parse(args: &[String]) -> Result<Config, String> {
    let mut c = Config {
        keys: 1_000_000,
        workers: 32,
        phase: Duration::from_secs(10),
        rebalance: RebalanceConfig {
            grace: Duration::from_secs(2),
            ..RebalanceConfig::default()
        },
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--keys" => c.keys = num(v)? as usize,
            "--workers" => c.workers = (num(v)? as usize).max(1),
            "--phase" => c.phase = Duration::from_secs(num(v)?),
            "--grace" => c.rebalance.grace = Duration::from_secs(num(v)?),
            "--keys-per-sec" => c.rebalance.keys_per_sec = num(v)?,
            "--bytes-per-sec" => c.rebalance.bytes_per_sec = num(v)?,
            "--forget" => c.rebalance.forget_moved = num(v)? != 0,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(c)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("distcache-reshard: {e}");
            return ExitCode::from(2);
        }
    };
    let bins = match Bins::locate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("distcache-reshard: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("distcache-reshard-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("distcache-reshard: {e}");
        return ExitCode::from(2);
    }
    let result = reshard::run(&config, &bins, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let phases = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("distcache-reshard: {e}");
            return ExitCode::FAILURE;
        }
    };
    let steady = phases.first().map_or(1.0, reshard::Phase::ops_per_sec);
    println!(
        "{} keys of 100 B, {} workers on two clients (the second sees each change 1 s later), grace {:?}, copy limit {} keys/s and {} B/s per client",
        config.keys,
        config.workers,
        config.rebalance.grace,
        config.rebalance.keys_per_sec,
        config.rebalance.bytes_per_sec
    );
    println!(
        "{:<16} {:>7} {:>9} {:>8} {:>9} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6} {:>9} {:>10} {:>9}",
        "phase",
        "seconds",
        "ops",
        "ops/s",
        "vs steady",
        "hit rate",
        "misses",
        "stale",
        "resurr",
        "concur",
        "errors",
        "copied",
        "MB copied",
        "catch-ups"
    );
    let mut bad = false;
    for p in &phases {
        bad |= p.stale > 0 || p.resurrected > 0;
        println!(
            "{:<16} {:>7.1} {:>9} {:>8.0} {:>8.2}x {:>8.4}% {:>7} {:>6} {:>6} {:>6} {:>6} {:>9} {:>10.1} {:>9}",
            p.name,
            p.seconds,
            p.ops,
            p.ops_per_sec(),
            p.ops_per_sec() / steady,
            p.hit_rate() * 100.0,
            p.misses,
            p.stale,
            p.resurrected,
            p.concurrent,
            p.errors,
            p.copied,
            p.copied_bytes as f64 / 1e6,
            p.catch_ups
        );
    }
    if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
