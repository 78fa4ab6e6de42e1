//! Registers (`r:*` keys: SET, GET, DEL): stale, deleted and lost reads.
//!
//! **The rule.** Call a write *W* (a SET, or a DEL, which writes "absent";
//! the initial state is a DEL that completed at instant 0) and its
//! *effective completion* `c(W)`: its completion instant if acknowledged,
//! +∞ if it failed or timed out (in doubt, it may land arbitrarily late).
//! A read *R* that returned what *W* wrote is **stale** if some acknowledged
//! write *W′* ≠ *W* has `c(W) < invoke(W′)` and `complete(W′) < invoke(R)`:
//! then every linearization orders W < W′ < R, so R cannot see W. A read
//! of "absent" is stale if *every* write of "absent" (initial state or any
//! DEL, in doubt included, invoked before R completed) is stale in this
//! sense. The violation is [`Check::DeletedRead`] when the overtaking W′ is
//! a DEL (of the overtakers, the one that completed first), [`Check::LostWrite`]
//! when R is the final read at `All` after healing, else
//! [`Check::StaleRead`].
//!
//! This is a necessary condition of linearizability per key, checked
//! without a search in O(log writes) per (read, candidate write); it is what "a read that starts after
//! a write's acknowledgement never returns an older value" means for a
//! register.

use super::{Check, Violation};
use crate::history::{Call, Op};

/// A write: what it stored, when it started and its effective completion.
struct Write<'a> {
    value: Option<&'a str>,
    invoke: u64,
    eff: u64,
}

/// The acknowledged writes sorted by invocation, with, for each position,
/// the one completing first among it and all later-invoked ones: "is there
/// an acknowledged write invoked after `t` that completed before `u`?" is
/// then a binary search.
struct Overtakers<'a> {
    invokes: Vec<u64>,
    /// `(complete, value)` of the first-completing write from here on.
    suffix_min: Vec<(u64, Option<&'a str>)>,
}

impl<'a> Overtakers<'a> {
    fn new(mut acked: Vec<(u64, u64, Option<&'a str>)>) -> Self {
        acked.sort_by_key(|w| w.0);
        let mut suffix_min = vec![(u64::MAX, None); acked.len()];
        let mut best = (u64::MAX, None);
        for (i, w) in acked.iter().enumerate().rev() {
            if w.1 < best.0 {
                best = (w.1, w.2);
            }
            suffix_min[i] = best;
        }
        Overtakers {
            invokes: acked.iter().map(|w| w.0).collect(),
            suffix_min,
        }
    }

    /// The first-completing acknowledged write invoked after `after` and
    /// completed before `before`, if any.
    fn find(&self, after: u64, before: u64) -> Option<Option<&'a str>> {
        let i = self.invokes.partition_point(|t| *t <= after);
        let (c, v) = *self.suffix_min.get(i)?;
        (c < before).then_some(v)
    }
}

/// Checks one register key's operations.
pub fn check(ops: &[&Op]) -> Vec<Violation> {
    use std::collections::HashMap;
    // The initial state: "absent", written at instant 0. It is no client's
    // write, so it never overtakes anything.
    let mut writes: HashMap<Option<&str>, Vec<Write>> = HashMap::new();
    writes.entry(None).or_default().push(Write {
        value: None,
        invoke: 0,
        eff: 0,
    });
    let mut acked = Vec::new();
    for op in ops {
        let value = match &op.call {
            Call::Set(v) => Some(v.as_str()),
            Call::Del => None,
            _ => continue,
        };
        if op.acked() {
            acked.push((op.invoke, op.complete, value));
        }
        writes.entry(value).or_default().push(Write {
            value,
            invoke: op.invoke,
            eff: op.effective_complete(),
        });
    }
    let overtakers = Overtakers::new(acked);
    let mut out = Vec::new();
    for r in ops {
        let Some(seen) = r.read_value() else { continue };
        let seen = seen.as_deref();
        let candidates: Vec<&Write> = writes
            .get(&seen)
            .into_iter()
            .flatten()
            .filter(|w| w.invoke < r.complete)
            .collect();
        if candidates.is_empty() {
            out.push(Violation {
                check: Check::Phantom,
                key: r.key.clone(),
                via: r.via,
                detail: format!("read {seen:?}, which no write of this key stored"),
            });
            continue;
        }
        // A read is explained by any candidate that no acknowledged write
        // definitely overtook before the read began.
        let mut overtaker = None;
        let explained = candidates.iter().any(|w| {
            debug_assert_eq!(w.value, seen);
            overtaker = overtakers.find(w.eff, r.invoke);
            overtaker.is_none()
        });
        if explained {
            continue;
        }
        let by_del = overtaker.is_some_and(|v| v.is_none());
        let check = if r.final_read {
            Check::LostWrite
        } else if by_del {
            Check::DeletedRead
        } else {
            Check::StaleRead
        };
        out.push(Violation {
            check,
            key: r.key.clone(),
            via: r.via,
            detail: format!(
                "read {seen:?} at {}µs although {} was acknowledged after it was written and before the read",
                r.invoke,
                match overtaker.flatten() {
                    Some(v) => format!("SET {v:?}"),
                    None => "a DEL".to_owned(),
                }
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outcome, Ret};

    fn op(call: Call, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op::at("r:1", call, invoke, complete, outcome)
    }
    fn set(v: &str, i: u64, c: u64) -> Op {
        op(Call::Set(v.into()), i, c, Outcome::Ok(Ret::Done))
    }
    fn del(i: u64, c: u64) -> Op {
        op(Call::Del, i, c, Outcome::Ok(Ret::Done))
    }
    fn get(v: Option<&str>, i: u64, c: u64) -> Op {
        op(
            Call::Get,
            i,
            c,
            Outcome::Ok(Ret::Value(v.map(str::to_owned))),
        )
    }
    fn run(ops: &[Op]) -> Vec<Check> {
        let refs: Vec<&Op> = ops.iter().collect();
        check(&refs).into_iter().map(|v| v.check).collect()
    }

    #[test]
    fn a_read_of_the_latest_acknowledged_write_is_fine() {
        assert!(run(&[set("a", 1, 2), set("b", 3, 4), get(Some("b"), 5, 6)]).is_empty());
    }

    #[test]
    fn a_read_of_an_overtaken_write_is_stale() {
        assert_eq!(
            run(&[set("a", 1, 2), set("b", 3, 4), get(Some("a"), 5, 6)]),
            [Check::StaleRead]
        );
    }

    #[test]
    fn concurrent_writes_may_be_read_in_either_order() {
        // b overlaps a: a may be linearized after b.
        assert!(run(&[set("a", 1, 4), set("b", 2, 3), get(Some("a"), 5, 6)]).is_empty());
        // The read overlaps b's acknowledgement: it may precede b.
        assert!(run(&[set("a", 1, 2), set("b", 3, 6), get(Some("a"), 5, 7)]).is_empty());
    }

    #[test]
    fn a_write_in_doubt_may_land_late_and_is_never_stale() {
        let unknown = op(Call::Set("a".into()), 1, 2, Outcome::Unknown);
        assert!(run(&[unknown, set("b", 3, 4), get(Some("a"), 5, 6)]).is_empty());
    }

    #[test]
    fn a_failed_write_does_not_overtake() {
        let failed = op(Call::Set("b".into()), 3, 4, Outcome::Failed);
        assert!(run(&[set("a", 1, 2), failed, get(Some("a"), 5, 6)]).is_empty());
    }

    #[test]
    fn reading_a_value_after_its_acknowledged_delete_is_a_deleted_read() {
        assert_eq!(
            run(&[set("a", 1, 2), del(3, 4), get(Some("a"), 5, 6)]),
            [Check::DeletedRead]
        );
    }

    #[test]
    fn a_later_write_recreates_a_deleted_key() {
        assert!(
            run(&[
                set("a", 1, 2),
                del(3, 4),
                set("b", 5, 6),
                get(Some("b"), 7, 8)
            ])
            .is_empty()
        );
    }

    #[test]
    fn a_miss_after_an_acknowledged_set_is_stale_unless_a_delete_explains_it() {
        assert_eq!(run(&[set("a", 1, 2), get(None, 3, 4)]), [Check::StaleRead]);
        assert!(run(&[get(None, 1, 2)]).is_empty());
        assert!(run(&[set("a", 1, 2), del(3, 4), get(None, 5, 6)]).is_empty());
        // A DEL in doubt may have landed after the SET.
        let unknown = op(Call::Del, 3, 4, Outcome::Unknown);
        assert!(run(&[set("a", 1, 2), unknown, get(None, 5, 6)]).is_empty());
        // A DEL that definitely preceded the SET does not.
        assert_eq!(
            run(&[del(1, 2), set("a", 3, 4), get(None, 5, 6)]),
            [Check::StaleRead]
        );
    }

    #[test]
    fn a_stale_final_read_is_a_lost_write() {
        let mut last = get(Some("a"), 10, 11);
        last.final_read = true;
        assert_eq!(
            run(&[set("a", 1, 2), set("b", 3, 4), last]),
            [Check::LostWrite]
        );
    }

    #[test]
    fn a_value_nobody_wrote_is_a_phantom() {
        assert_eq!(run(&[get(Some("z"), 1, 2)]), [Check::Phantom]);
    }
}
