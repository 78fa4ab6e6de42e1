//! The short fault-injection runs of `cargo test` (issue 14): real
//! `distcache-node` and `distcache-proxy` processes on loopback, one seed, a
//! small key space, well under two minutes together. `scripts/chaos.sh`
//! runs the same thing for as long as asked.
//!
//! They assert what today's main keeps; the lists below name what is left
//! out and why, so that each fix of issue 14 can switch its part on:
//!
//! - Without faults the counter checks, [`Check::LostWrite`] and
//!   [`Check::Phantom`] hold. Left out: [`Check::NotLinearizable`] (every
//!   run: a DEL concurrent with a SET NX/CAS on a lock key is acknowledged
//!   yet has no effect, or a SET NX wins while the lock is held), and
//!   [`Check::StaleRead`] / [`Check::DeletedRead`], which fail rarely (2–3
//!   stale reads in 45,000 operations): at write and read level `one` a
//!   write acknowledged by one replica is not yet on the replica that a
//!   read right after asks, a race that also covers deletes.
//! - Under faults (every kind: kill + restart from the WAL, kill + restart
//!   empty, pause, remove/re-add) only [`Check::LostWrite`] and
//!   [`Check::Phantom`] hold today: stale reads (findings 1, 11), counters
//!   (findings 2, 3, 7) and deleted reads after a membership change (the
//!   proxies and the SDK disagree on owners; README: "No data moves between
//!   nodes") all fail.
//!
//! The binaries come from `target/<profile>/` (see `cluster::Bins`):
//! `cargo test --workspace` builds them; `cargo test -p distcache-chaos`
//! alone needs `cargo build -p distcache-node -p distcache-proxy` first.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Mutex;
use std::time::Duration;

use distcache_chaos::check::Check;
use distcache_chaos::cluster::Bins;
use distcache_chaos::driver::{self, Config, Fault, Outcomes};

/// Checks that hold without faults on today's main.
const HOLD_WITHOUT_FAULTS: [Check; 4] = [
    Check::LostWrite,
    Check::Phantom,
    Check::Counter,
    Check::CounterDuplicate,
];

/// Fault kinds of the asserted fault run.
const FAULTS: [Fault; 4] = Fault::ALL;

/// Checks that hold under [`FAULTS`] on today's main.
const HOLD_UNDER_FAULTS: [Check; 2] = [Check::LostWrite, Check::Phantom];

/// One cluster at a time: two would share two cores with everything else.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(config: Config) -> Outcomes {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bins = Bins::locate().expect("binaries");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = driver::run(&config, &bins, dir.path()).expect("run");
    let r = &out.report;
    eprintln!(
        "{} operations ({} in doubt), faults {:?}, heal {:?}, violations {:?}, inconclusive {:?}",
        r.ops,
        out.in_doubt,
        out.faults,
        out.heal,
        r.counts(),
        r.inconclusive
    );
    for v in r.violations.iter().take(5) {
        eprintln!("  {} {} via {}: {}", v.check.name(), v.key, v.via, v.detail);
    }
    out
}

fn assert_hold(out: &Outcomes, checks: &[Check]) {
    for c in checks {
        let bad: Vec<_> = out
            .report
            .violations
            .iter()
            .filter(|v| v.check == *c)
            .take(3)
            .collect();
        assert!(bad.is_empty(), "{} violated: {bad:#?}", c.name());
    }
}

#[test]
fn without_faults_no_write_is_lost_and_counters_count_every_increment() {
    let out = run(Config {
        duration: Duration::from_secs(15),
        faults: Vec::new(),
        ..Config::default()
    });
    assert!(
        out.report.ops > 1_000,
        "too few operations: {}",
        out.report.ops
    );
    assert_hold(&out, &HOLD_WITHOUT_FAULTS);
}

#[test]
fn under_kills_pauses_restarts_and_membership_changes_no_acknowledged_write_is_lost() {
    let out = run(Config {
        duration: Duration::from_secs(40),
        faults: FAULTS.to_vec(),
        ..Config::default()
    });
    assert!(
        out.report.ops > 1_000,
        "too few operations: {}",
        out.report.ops
    );
    assert!(
        out.faults.values().sum::<usize>() >= 10,
        "too few faults: {:?}",
        out.faults
    );
    assert_hold(&out, &HOLD_UNDER_FAULTS);
}
