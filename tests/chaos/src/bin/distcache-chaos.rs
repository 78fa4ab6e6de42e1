//! `distcache-chaos [SECONDS] [--seed N] [--faults a,b,…] [--keys N] [--dump FILE]`: one
//! checked fault-injection run against real processes; prints operations
//! checked, faults by kind, violations by check, and exits 1 on any
//! violation; `--dump` writes the history, one operation a line. Fault kinds: kill-restart-wal, kill-restart-empty, pause,
//! remove-readd (default: all; `--faults none` for none).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use distcache_chaos::check::Check;
use distcache_chaos::cluster::Bins;
use distcache_chaos::driver::{self, Config, Fault};

fn parse(args: &[String]) -> Result<(Config, Option<String>), String> {
    let mut c = Config::default();
    let mut dump = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--seed" => c.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--dump" => dump = Some(val()?.clone()),
            "--keys" => c.keys = val()?.parse().map_err(|e| format!("--keys: {e}"))?,
            "--faults" => {
                let v = val()?;
                c.faults = if v == "none" {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|f| Fault::parse(f).ok_or(format!("unknown fault {f}")))
                        .collect::<Result<_, _>>()?
                };
            }
            s => c.duration = Duration::from_secs(s.parse().map_err(|e| format!("seconds: {e}"))?),
        }
    }
    Ok((c, dump))
}

fn main() -> ExitCode {
    // RUST_LOG=distcache=info shows the SDK client's catch-ups and fences.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, dump) = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("distcache-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let bins = match Bins::locate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("distcache-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("distcache-chaos-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("distcache-chaos: {e}");
        return ExitCode::from(2);
    }
    let began = Instant::now();
    let result = driver::run(&config, &bins, &dir);
    let out = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "distcache-chaos: run failed: {e} (logs kept in {})",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = dump {
        let mut lines: Vec<String> = out.history.iter().map(|o| format!("{o:?}")).collect();
        lines.extend(out.fault_log.iter().cloned());
        if let Err(e) = std::fs::write(&path, lines.join("\n")) {
            eprintln!("distcache-chaos: --dump {path}: {e}");
        }
    }
    let r = &out.report;
    println!(
        "seed {} · {} s of faults · run took {:.1} s",
        config.seed,
        config.duration.as_secs(),
        began.elapsed().as_secs_f64()
    );
    println!(
        "operations checked: {} ({} in doubt: failed or timed out)",
        r.ops, out.in_doubt
    );
    println!("faults injected:");
    for f in Fault::ALL {
        println!(
            "  {:<20} {}",
            f.name(),
            out.faults.get(&f).copied().unwrap_or(0)
        );
    }
    println!(
        "heal: all healthy and final reads at All done in {:.2} s",
        out.heal.as_secs_f64()
    );
    let st = &out.sdk_stats;
    println!(
        "sdk client: {} failovers, {} nodes fenced, {} catch-ups ({} failed), {} read repairs",
        st.failovers, st.fenced_nodes, st.catch_ups, st.catch_up_failures, st.read_repairs
    );
    println!("proxies: {} failovers", out.proxy_failovers);
    println!(
        "sdk clock: write versions at most {} ms ahead of the wall clock",
        distcache_chaos::driver::SDK_CLOCK_LEAD_MS.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("violations:");
    let counts = r.counts();
    for c in Check::ALL {
        println!("  {:<20} {}", c.name(), counts[&c]);
    }
    if !r.inconclusive.is_empty() {
        println!(
            "  (linearizability inconclusive on {} key(s): {:?})",
            r.inconclusive.len(),
            r.inconclusive
        );
    }
    let mut by_via: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for v in &r.violations {
        *by_via.entry((v.check.name(), v.via)).or_default() += 1;
    }
    if !by_via.is_empty() {
        println!("violations by path:");
        for ((c, via), n) in &by_via {
            println!("  {c:<20} {via:<16} {n}");
        }
        println!("examples (up to 3 per check):");
        for c in Check::ALL {
            for v in r.violations.iter().filter(|v| v.check == c).take(3) {
                println!("  {} {} via {}: {}", v.check.name(), v.key, v.via, v.detail);
            }
        }
    }
    if r.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
