//! The short fault-injection runs of `cargo test` (issue 14): real
//! `distcache-node` and `distcache-proxy` processes on loopback, one seed, a
//! small key space, well under two minutes together. `scripts/chaos.sh`
//! runs the same thing for as long as asked.
//!
//! They assert what today's main keeps; the lists below name what is left
//! out and why, so that each fix of issue 14 can switch its part on:
//!
//! - Without faults every check holds but lock linearizability, which is
//!   reported, not asserted (see [`HOLD_WITHOUT_FAULTS`]). (Until 2026-12-04 stale reads and
//!   lock keys with no linearization showed up in most runs: a quorum read
//!   took a write landing between its two requests for a newer delete and
//!   repaired it away, and a delete was stamped again over a lock decided
//!   after it. Both are fixed, with deterministic tests in `node` and
//!   `sdk_acks`. In CI on 2026-12-04 one lock key still had none: a Quorum
//!   read found a release that had reached the second replica only, and the
//!   CAS after it was refused by the first; reads now wait for their
//!   repairs, `sdk_acks`: `a_quorum_read_is_not_followed_by_an_older_state`.)
//! - Under kills, restarts (from the WAL and empty) and pauses, fencing and
//!   catch-up hold [`Check::LostWrite`] and [`Check::Phantom`], and keep
//!   stale and deleted reads to the rare ones seen without faults (2 minutes
//!   of these faults: none; without fencing: about one a second): asserted
//!   as at most [`MAX_STALE_UNDER_FAULTS`]. Left out: the counter checks (a
//!   catch-up that skipped a peer that was down lifts the fence without
//!   what only that peer decided; see `docs/consistency.md`) and membership
//!   changes (conditional operations switch primaries at a different moment
//!   in each client).
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

/// Checks that hold without faults on today's main: all but lock
/// linearizability. On 2026-12-04 at `6402e66`, one CI-like run out of about
/// ten without faults and without a single failover had one lock key with
/// no linearization: a `SET NX` through the quorum proxy answered applied
/// while another client's lock was held. Not diagnosed yet (issue 14); it is
/// reported (below) rather than asserted until it is.
const HOLD_WITHOUT_FAULTS: [Check; 6] = [
    Check::LostWrite,
    Check::StaleRead,
    Check::DeletedRead,
    Check::Phantom,
    Check::Counter,
    Check::CounterDuplicate,
];

/// Fault kinds of the asserted fault run: all but membership changes.
const FAULTS: [Fault; 3] = [Fault::KillRestartWal, Fault::KillRestartEmpty, Fault::Pause];

/// Checks that hold under [`FAULTS`] on today's main.
const HOLD_UNDER_FAULTS: [Check; 2] = [Check::LostWrite, Check::Phantom];

/// Stale plus deleted reads allowed in the 40 s fault run: the rare ones
/// seen without faults (4 in a minute), far below what a returning node
/// that is not fenced causes (about 40 in 40 s).
const MAX_STALE_UNDER_FAULTS: usize = 8;

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
fn without_faults_every_check_holds() {
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
    // A machine loaded enough that a client lost a node (a health probe or
    // a request past its timeout: a failover) ran with a fault after all,
    // one the nemesis did not inject: then only what holds under faults is
    // asserted. (In CI on 2026-12-04, and once under a parallel build, one
    // lock key had no linearization in such a run.)
    if out.failovers() == 0 {
        assert_hold(&out, &HOLD_WITHOUT_FAULTS);
    } else {
        eprintln!(
            "a client lost a node without faults ({} failovers: the machine is loaded); \
             asserting only {:?}",
            out.failovers(),
            HOLD_UNDER_FAULTS
        );
        assert_hold(&out, &HOLD_UNDER_FAULTS);
    }
}

#[test]
fn under_kills_pauses_and_restarts_no_write_is_lost_and_returning_nodes_serve_nothing_stale() {
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
    let stale = out
        .report
        .violations
        .iter()
        .filter(|v| matches!(v.check, Check::StaleRead | Check::DeletedRead))
        .count();
    assert!(
        stale <= MAX_STALE_UNDER_FAULTS,
        "{stale} stale or deleted reads under faults"
    );
}
