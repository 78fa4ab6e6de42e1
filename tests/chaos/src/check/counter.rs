//! Counters (`c:*` keys, INCR by 1 from 0): the final value read at `All`
//! after healing must lie in [acknowledged INCRs, acknowledged + in-doubt
//! INCRs] (an INCR that failed or timed out may or may not have applied),
//! and no two acknowledged INCRs may answer the same value (each applies on
//! top of the other, so the answers are distinct).

use std::collections::HashMap;

use super::{Check, Violation};
use crate::history::{Call, Op, Outcome, Ret};

/// Checks one counter key's operations.
pub fn check(ops: &[&Op]) -> Vec<Violation> {
    let mut out = Vec::new();
    let (mut acked, mut doubt) = (0i64, 0i64);
    let mut answers: HashMap<i64, &Op> = HashMap::new();
    for op in ops.iter().filter(|o| o.call == Call::Incr) {
        match &op.outcome {
            Outcome::Ok(Ret::Int(n)) => {
                acked += 1;
                if let Some(first) = answers.insert(*n, op) {
                    out.push(Violation {
                        check: Check::CounterDuplicate,
                        key: op.key.clone(),
                        via: op.via,
                        detail: format!(
                            "INCR answered {n} at {}µs and at {}µs",
                            first.complete, op.complete
                        ),
                    });
                }
            }
            _ => doubt += 1,
        }
    }
    for r in ops.iter().filter(|o| o.final_read) {
        let Some(seen) = r.read_value() else { continue };
        let value = seen.as_deref().map_or(Some(0), |s| s.parse::<i64>().ok());
        let ok = value.is_some_and(|v| v >= acked && v <= acked + doubt);
        if !ok {
            out.push(Violation {
                check: Check::Counter,
                key: r.key.clone(),
                via: r.via,
                detail: format!(
                    "final value {seen:?}, expected {acked}..={} ({acked} acknowledged, {doubt} in doubt)",
                    acked + doubt
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: Call, t: u64, outcome: Outcome, final_read: bool) -> Op {
        Op {
            final_read,
            ..Op::at("c:1", call, t, t + 1, outcome)
        }
    }
    fn incr(t: u64, n: i64) -> Op {
        op(Call::Incr, t, Outcome::Ok(Ret::Int(n)), false)
    }
    fn last(v: &str) -> Op {
        op(
            Call::Get,
            100,
            Outcome::Ok(Ret::Value(Some(v.into()))),
            true,
        )
    }
    fn run(ops: &[Op]) -> Vec<Check> {
        let refs: Vec<&Op> = ops.iter().collect();
        check(&refs).into_iter().map(|v| v.check).collect()
    }

    #[test]
    fn the_final_value_counts_acknowledged_and_at_most_the_in_doubt_increments() {
        let doubt = op(Call::Incr, 5, Outcome::Unknown, false);
        assert!(run(&[incr(1, 1), incr(2, 2), doubt.clone(), last("2")]).is_empty());
        assert!(run(&[incr(1, 1), incr(2, 2), doubt.clone(), last("3")]).is_empty());
        assert_eq!(
            run(&[incr(1, 1), incr(2, 2), doubt.clone(), last("1")]),
            [Check::Counter]
        );
        assert_eq!(
            run(&[incr(1, 1), incr(2, 2), doubt, last("4")]),
            [Check::Counter]
        );
    }

    #[test]
    fn a_missing_counter_after_acknowledged_increments_is_a_violation() {
        let miss = op(Call::Get, 100, Outcome::Ok(Ret::Value(None)), true);
        assert_eq!(run(&[incr(1, 1), miss]), [Check::Counter]);
    }

    #[test]
    fn two_increments_answering_the_same_value_lost_one() {
        assert_eq!(
            run(&[incr(1, 1), incr(3, 1), last("2")]),
            [Check::CounterDuplicate]
        );
    }
}
