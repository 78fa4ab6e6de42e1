//! A linearizability checker for one lock key (`l:*`: SET NX, CAS, DEL,
//! GET, and SET), after Wing & Gong (1993) with Lowe's memoization (2017),
//! the algorithm Porcupine and Knossos use. No maintained Rust crate does
//! this (crates.io has none; Porcupine is Go), so it is small and here.
//!
//! The model is a register holding `Option<value>`. The search linearizes
//! one operation at a time: a pending operation may go next if it was
//! invoked before the earliest completion among the operations not yet
//! linearized; each (set of linearized operations, register state) is
//! explored once. The history is linearizable when every acknowledged
//! operation is placed. Operations in doubt (failed or timed out) have no
//! completion: they may be placed at any point after their invocation, with
//! any result the model allows, or never; in-doubt reads carry no
//! information and are dropped.
//!
//! What it is not: a general model library. The search is exponential in
//! the number of concurrent operations in the worst case, so it stops after
//! a budget of explored states and says [`Verdict::Inconclusive`].

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::{Check, Violation};
use crate::history::{Call, NEVER, Op, Outcome, Ret};

/// Explored states after which a search gives up.
pub const DEFAULT_BUDGET: usize = 200_000;

/// Memory the explored states of one search may take: the budget shrinks
/// for long histories (each state holds a bit per operation).
pub const MEMORY_BUDGET_BYTES: usize = 64 << 20;

/// The answer for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some linearization explains every acknowledged answer.
    Linearizable,
    /// None does.
    Violation(Violation),
    /// The budget ran out first.
    Inconclusive,
}

/// A value, interned; `None` is "absent".
type State = Option<u32>;

#[derive(Debug)]
enum Step {
    Read(State),
    Set(State),
    Nx {
        value: u32,
        applied: Option<bool>,
    },
    Cas {
        expected: State,
        new: u32,
        applied: Option<bool>,
    },
    Del,
}

#[derive(Debug)]
struct Entry {
    invoke: u64,
    complete: u64,
    step: Step,
}

/// The states an operation may lead to from `s` (empty: impossible here).
fn next(s: State, e: &Entry) -> Option<State> {
    let in_doubt = e.complete == NEVER;
    match e.step {
        Step::Read(v) => (s == v).then_some(s),
        Step::Set(v) => Some(v),
        // In doubt, a no-op transition is pointless to explore: skipping
        // the operation reaches the same state with fewer constraints.
        Step::Nx { value, applied } => match (s.is_none(), applied) {
            (true, Some(true) | None) => Some(Some(value)),
            (false, Some(false)) => Some(s),
            _ => None,
        },
        Step::Cas {
            expected,
            new,
            applied,
        } => match (s == expected, applied) {
            (true, Some(true) | None) => Some(Some(new)),
            (false, Some(false)) => Some(s),
            _ => None,
        },
        Step::Del => (!in_doubt || s.is_some()).then_some(None),
    }
}

fn intern<'a>(table: &mut HashMap<&'a str, u32>, v: &'a str) -> u32 {
    let n = table.len() as u32;
    *table.entry(v).or_insert(n)
}

fn entries<'a>(ops: &[&'a Op], table: &mut HashMap<&'a str, u32>) -> Vec<Entry> {
    let mut out = Vec::new();
    for op in ops {
        let applied = match &op.outcome {
            Outcome::Ok(Ret::Applied(b)) => Some(*b),
            _ => None,
        };
        let step = match (&op.call, &op.outcome) {
            (Call::Get, Outcome::Ok(Ret::Value(v))) => {
                Step::Read(v.as_deref().map(|v| intern(table, v)))
            }
            (Call::Get, _) | (Call::Incr, _) => continue,
            (Call::Set(v), _) => Step::Set(Some(intern(table, v))),
            (Call::Del, _) => Step::Del,
            (Call::SetNx(v), _) => Step::Nx {
                value: intern(table, v),
                applied,
            },
            (Call::Cas { expected, new }, _) => Step::Cas {
                expected: expected.as_deref().map(|v| intern(table, v)),
                new: intern(table, new),
                applied,
            },
        };
        out.push(Entry {
            invoke: op.invoke,
            complete: op.effective_complete(),
            step,
        });
    }
    out.sort_by_key(|e| e.invoke);
    out
}

/// Searches for a linearization of one key's operations.
pub fn check(ops: &[&Op], budget: usize) -> Verdict {
    let Some(first) = ops.first() else {
        return Verdict::Linearizable;
    };
    let mut table = HashMap::new();
    let es = entries(ops, &mut table);
    let definite = es.iter().filter(|e| e.complete != NEVER).count();
    let words = es.len().div_ceil(64);
    let budget = budget.min(MEMORY_BUDGET_BYTES / (words * 8 + 64).max(1));
    let mut seen: HashSet<(Rc<[u64]>, State)> = HashSet::new();
    // (linearized set, register state, acknowledged ops placed, first index
    // not linearized): the last saves rescanning the placed prefix.
    let mut stack: Vec<(Rc<[u64]>, State, usize, usize)> =
        vec![(vec![0u64; words].into(), None, 0, 0)];
    let mut best: (usize, State, Rc<[u64]>) = (0, None, Rc::from(Vec::new()));
    while let Some((lin, state, placed, lo)) = stack.pop() {
        if placed == definite {
            return Verdict::Linearizable;
        }
        if placed > best.0 || best.2.is_empty() {
            best = (placed, state, lin.clone());
        }
        if seen.len() > budget {
            return Verdict::Inconclusive;
        }
        let is_lin = |i: usize| lin[i / 64] & (1 << (i % 64)) != 0;
        // The window: pending operations invoked before the earliest
        // pending completion. Entries are sorted by invocation, so the
        // scan stops at the first one invoked after that completion.
        let mut min_complete = NEVER;
        let mut window = Vec::new();
        for (i, e) in es.iter().enumerate().skip(lo) {
            if e.invoke >= min_complete {
                break;
            }
            if is_lin(i) {
                continue;
            }
            min_complete = min_complete.min(e.complete);
            window.push(i);
        }
        for i in window {
            let e = &es[i];
            if e.invoke >= min_complete {
                continue;
            }
            let Some(s) = next(state, e) else { continue };
            let mut l = lin.to_vec();
            l[i / 64] |= 1 << (i % 64);
            let l: Rc<[u64]> = l.into();
            if seen.insert((l.clone(), s)) {
                let p = placed + usize::from(e.complete != NEVER);
                let mut lo = lo;
                while lo < es.len() && l[lo / 64] & (1 << (lo % 64)) != 0 {
                    lo += 1;
                }
                stack.push((l, s, p, lo));
            }
        }
    }
    // Describe the deepest point reached: the state there and the pending
    // acknowledged operation that completes first, which nothing could
    // place.
    let (placed, state, lin) = best;
    let name = |s: State| {
        s.and_then(|i| {
            table
                .iter()
                .find(|(_, v)| **v == i)
                .map(|(k, _)| (*k).to_owned())
        })
    };
    let stuck = (0..es.len())
        .filter(|i| lin.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) == 0))
        .filter(|i| es[*i].complete != NEVER)
        .min_by_key(|i| es[*i].complete)
        .map(|i| {
            ops.iter()
                .find(|o| o.invoke == es[i].invoke && o.effective_complete() == es[i].complete)
        });
    let stuck = match stuck.flatten() {
        Some(o) => format!(
            "{:?} -> {:?} by client {} via {} [{}µs, {}µs]",
            o.call, o.outcome, o.client, o.via, o.invoke, o.complete
        ),
        None => "?".to_owned(),
    };
    Verdict::Violation(Violation {
        check: Check::NotLinearizable,
        key: first.key.clone(),
        via: "lock",
        detail: format!(
            "no linearization of {} operations ({definite} acknowledged); at best {placed} placed, the register then holding {:?}, and {stuck} could not follow",
            es.len(),
            name(state)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: Call, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op::at("l:1", call, invoke, complete, outcome)
    }
    fn nx(v: &str, i: u64, c: u64, applied: bool) -> Op {
        op(
            Call::SetNx(v.into()),
            i,
            c,
            Outcome::Ok(Ret::Applied(applied)),
        )
    }
    fn cas(exp: Option<&str>, new: &str, i: u64, c: u64, applied: bool) -> Op {
        let call = Call::Cas {
            expected: exp.map(str::to_owned),
            new: new.into(),
        };
        op(call, i, c, Outcome::Ok(Ret::Applied(applied)))
    }
    fn get(v: Option<&str>, i: u64, c: u64) -> Op {
        op(
            Call::Get,
            i,
            c,
            Outcome::Ok(Ret::Value(v.map(str::to_owned))),
        )
    }
    fn del(i: u64, c: u64) -> Op {
        op(Call::Del, i, c, Outcome::Ok(Ret::Done))
    }
    fn run(ops: &[Op]) -> Verdict {
        let refs: Vec<&Op> = ops.iter().collect();
        check(&refs, DEFAULT_BUDGET)
    }
    fn ok(ops: &[Op]) -> bool {
        run(ops) == Verdict::Linearizable
    }

    #[test]
    fn two_concurrent_set_nx_one_wins() {
        assert!(ok(&[nx("a", 1, 4, true), nx("b", 2, 3, false)]));
        assert!(ok(&[
            nx("a", 1, 4, false),
            nx("b", 2, 3, true),
            get(Some("b"), 5, 6)
        ]));
    }

    #[test]
    fn two_set_nx_both_winning_is_not_linearizable() {
        assert!(!ok(&[nx("a", 1, 2, true), nx("b", 3, 4, true)]));
        // Even when concurrent.
        assert!(!ok(&[nx("a", 1, 4, true), nx("b", 2, 3, true)]));
    }

    #[test]
    fn a_delete_releases_the_lock() {
        assert!(ok(&[nx("a", 1, 2, true), del(3, 4), nx("b", 5, 6, true)]));
        // Concurrent with the delete: either order explains the answers.
        assert!(ok(&[nx("a", 1, 2, true), del(3, 6), nx("b", 4, 5, true)]));
    }

    #[test]
    fn two_cas_from_the_same_value_cannot_both_succeed() {
        let base = nx("a", 1, 2, true);
        assert!(!ok(&[
            base.clone(),
            cas(Some("a"), "b", 3, 4, true),
            cas(Some("a"), "c", 5, 6, true)
        ]));
        assert!(!ok(&[
            base.clone(),
            cas(Some("a"), "b", 3, 6, true),
            cas(Some("a"), "c", 4, 5, true)
        ]));
        assert!(ok(&[
            base,
            cas(Some("a"), "b", 3, 6, true),
            cas(Some("a"), "c", 4, 5, false)
        ]));
    }

    #[test]
    fn a_read_must_see_the_latest_cas() {
        let h = [nx("a", 1, 2, true), cas(Some("a"), "b", 3, 4, true)];
        let mut stale = h.to_vec();
        stale.push(get(Some("a"), 5, 6));
        assert!(!ok(&stale));
        let mut fresh = h.to_vec();
        fresh.push(get(Some("b"), 5, 6));
        assert!(ok(&fresh));
    }

    #[test]
    fn an_operation_in_doubt_may_have_applied_or_not() {
        let lost = op(Call::SetNx("a".into()), 1, 2, Outcome::Unknown);
        // It applied: the later SET NX fails and a read sees it.
        assert!(ok(&[
            lost.clone(),
            nx("b", 3, 4, false),
            get(Some("a"), 5, 6)
        ]));
        // It did not apply.
        assert!(ok(&[lost.clone(), nx("b", 3, 4, true)]));
        // But it cannot apply before its invocation.
        assert!(!ok(&[get(Some("a"), 0, 1), lost]));
    }

    #[test]
    fn a_cas_failing_on_the_value_it_expected_is_not_linearizable() {
        assert!(!ok(&[
            nx("a", 1, 2, true),
            cas(Some("a"), "b", 3, 4, false)
        ]));
    }

    #[test]
    fn a_long_sequential_history_is_checked_quickly() {
        let mut h = Vec::new();
        for i in 0..2_000u64 {
            let t = i * 10;
            h.push(nx(&format!("v{i}"), t, t + 2, true));
            h.push(del(t + 3, t + 5));
        }
        assert!(ok(&h));
        h.push(get(Some("v3"), 100_000, 100_001));
        assert!(matches!(run(&h), Verdict::Violation(_)));
    }
}
