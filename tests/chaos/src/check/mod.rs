//! The checks over a recorded history, pure and synchronous.
//!
//! Every check treats an operation that failed or timed out as *in doubt*:
//! it may have taken effect at any instant after its invocation, or never.
//! Only acknowledged operations constrain what later reads may return.
//!
//! | check | keys | rule |
//! |---|---|---|
//! | [`Check::StaleRead`] | `r:*` | see [`register`]: a read may not return a write that an acknowledged SET definitely followed before the read began |
//! | [`Check::DeletedRead`] | `r:*` | the same rule where the later acknowledged write is a DEL |
//! | [`Check::LostWrite`] | `r:*` | the same rule for the final read at `All` after healing |
//! | [`Check::Phantom`] | `r:*`, `l:*` | a read returned a value no client wrote |
//! | [`Check::Counter`] | `c:*` | final value ∈ [acknowledged INCRs, acknowledged + in-doubt] |
//! | [`Check::CounterDuplicate`] | `c:*` | two acknowledged INCRs answered the same value |
//! | [`Check::NotLinearizable`] | `l:*` | SET NX / CAS / DEL / GET admit no linearization ([`linear`]) |

pub mod counter;
pub mod linear;
pub mod register;

use std::collections::BTreeMap;

use crate::history::{Family, Op, by_key};

/// A property the checker verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// An acknowledged write missing from the final read at `All`.
    LostWrite,
    /// A read older than an acknowledged write that completed before it began.
    StaleRead,
    /// A read returned a value although a DEL of it was acknowledged before.
    DeletedRead,
    /// A read returned a value nobody wrote.
    Phantom,
    /// A counter's final value outside [acked, acked + in doubt].
    Counter,
    /// Two acknowledged increments returned the same value.
    CounterDuplicate,
    /// A lock key's history has no linearization.
    NotLinearizable,
}

impl Check {
    /// Every check, in report order.
    pub const ALL: [Check; 7] = [
        Check::LostWrite,
        Check::StaleRead,
        Check::DeletedRead,
        Check::Phantom,
        Check::Counter,
        Check::CounterDuplicate,
        Check::NotLinearizable,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Check::LostWrite => "lost-write",
            Check::StaleRead => "stale-read",
            Check::DeletedRead => "deleted-read",
            Check::Phantom => "phantom-read",
            Check::Counter => "counter",
            Check::CounterDuplicate => "counter-duplicate",
            Check::NotLinearizable => "not-linearizable",
        }
    }
}

/// One violation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub check: Check,
    /// The key.
    pub key: String,
    /// Which path the offending read or operation took.
    pub via: &'static str,
    /// What was seen, for a human.
    pub detail: String,
}

/// The result of checking a whole history.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Operations checked.
    pub ops: usize,
    /// Every violation.
    pub violations: Vec<Violation>,
    /// Lock keys whose search hit its budget (neither proved nor refuted).
    pub inconclusive: Vec<String>,
}

impl Report {
    /// Violations counted per check (every check present, zeros included).
    pub fn counts(&self) -> BTreeMap<Check, usize> {
        let mut m: BTreeMap<Check, usize> = Check::ALL.iter().map(|c| (*c, 0)).collect();
        for v in &self.violations {
            *m.entry(v.check).or_default() += 1;
        }
        m
    }

    /// Violations of one check.
    pub fn count(&self, check: Check) -> usize {
        self.violations.iter().filter(|v| v.check == check).count()
    }
}

/// Runs every check over `ops`.
pub fn check(ops: &[Op]) -> Report {
    let mut report = Report {
        ops: ops.len(),
        ..Report::default()
    };
    for (key, key_ops) in by_key(ops) {
        match Family::of(key) {
            Some(Family::Register) => report.violations.extend(register::check(&key_ops)),
            Some(Family::Counter) => report.violations.extend(counter::check(&key_ops)),
            Some(Family::Lock) => match linear::check(&key_ops, linear::DEFAULT_BUDGET) {
                linear::Verdict::Linearizable => {}
                linear::Verdict::Violation(v) => report.violations.push(v),
                linear::Verdict::Inconclusive => report.inconclusive.push(key.to_owned()),
            },
            None => {}
        }
    }
    report
}
