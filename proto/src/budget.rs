//! The size budget of one `Batch` or `Pipeline` answer, shared by every
//! server that answers them (node and proxy) and read by every client.
//!
//! A request is small and its answer may not be: 60,000 gets of one 1 MiB
//! value fit in a 540 KB request and ask for a 63 GB answer. So an answer is
//! budgeted while it is built, never after. Writes always run: their results
//! are small, and room for them is set aside when the budget is made. Reads
//! share what is left: [`AnswerBudget::admit`] takes a read's encoded result
//! or refuses it, and once one is refused, that read and every later read of
//! the message answer [`answer_full`] (they were not run), which a client
//! sends again in another message. The first read of a message is always
//! run, so a client that resends makes progress; if its result alone does
//! not fit, it gets a plain RESOURCE_EXHAUSTED error ([`too_large`]).
//!
//! What this does not bound: how many answers are in flight at once (that is
//! the servers' concurrency limits), and the request itself (tonic's decoding
//! limit).
//!
//! ```
//! use distcache_proto::budget::{AnswerBudget, is_answer_full};
//! use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
//!
//! let get = pb::Operation { op: Some(Op::Get(pb::GetRequest { key: "k".into(), ..Default::default() })) };
//! let ops = vec![get.clone(), get.clone(), get];
//! let value = pb::OperationResult {
//!     result: Some(Out::Get(pb::GetResponse { found: true, value: vec![0; 6000].into(), ..Default::default() })),
//! };
//! let mut answer = AnswerBudget::new(16 * 1024, &ops);
//! let sent: Vec<_> = ops.iter().map(|_| match answer.may_read() {
//!     true => answer.admit(value.clone()),
//!     false => distcache_proto::budget::answer_full(),
//! }).collect();
//! assert!(!is_answer_full(&sent[0]) && !is_answer_full(&sent[1]));
//! assert!(is_answer_full(&sent[2]));
//! ```

use prost::Message;

use crate::v1::{self as pb, operation::Op, operation_result::Result as Out};

/// Operations one `Batch` or `Pipeline` message may carry; a message with
/// more is refused as a whole (INVALID_ARGUMENT).
pub const MAX_OPERATIONS: usize = 10_000;

/// Room kept in every answer for what is not an operation result (the
/// message's own fields, the gRPC frame).
const MESSAGE_OVERHEAD: usize = 1024;

/// Room set aside for the result of each operation that is not a read: a
/// write's answer is two small fields, an error's a code and a short message.
const WRITE_RESULT: usize = 256;

/// `google.rpc.Code::RESOURCE_EXHAUSTED`.
const RESOURCE_EXHAUSTED: i32 = 8;

/// Whether `op` only reads (its answer may be refused by the budget).
pub fn is_read(op: &pb::Operation) -> bool {
    matches!(op.op, Some(Op::Get(_)))
}

/// The bytes left for reads in one answer.
#[derive(Debug, Clone)]
pub struct AnswerBudget {
    max: usize,
    left: usize,
    /// Whether a read has been offered yet (the first always runs).
    read_any: bool,
    full: bool,
}

impl AnswerBudget {
    /// A budget for the answer to `ops`, which must fit in
    /// `max_message_bytes` (the server's encoding limit).
    pub fn new(max_message_bytes: usize, ops: &[pb::Operation]) -> Self {
        let writes = ops.iter().filter(|o| !is_read(o)).count();
        Self {
            max: max_message_bytes,
            left: max_message_bytes
                .saturating_sub(MESSAGE_OVERHEAD)
                .saturating_sub(writes.saturating_mul(WRITE_RESULT)),
            read_any: false,
            full: false,
        }
    }

    /// Whether the next read may run: false once the answer is full (then
    /// answer it [`answer_full`] without running it).
    pub fn may_read(&self) -> bool {
        !self.full
    }

    /// Offers the result of a read that ran; returns what to answer: the
    /// result itself, [`answer_full`] (no room left; no later read runs
    /// either), or [`too_large`] (the message's first read, too large alone).
    pub fn admit(&mut self, result: pb::OperationResult) -> pb::OperationResult {
        let len = encoded_len_in_list(&result);
        let first = !std::mem::replace(&mut self.read_any, true);
        if !self.full && len <= self.left {
            self.left -= len;
            result
        } else if first {
            too_large(len, self.max)
        } else {
            self.full = true;
            answer_full()
        }
    }
}

/// Bytes `result` takes as one element of a `repeated OperationResult`.
fn encoded_len_in_list(result: &pb::OperationResult) -> usize {
    let len = result.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// The answer of a read that was not run because its message's answer was
/// full.
pub fn answer_full() -> pb::OperationResult {
    pb::OperationResult {
        result: Some(Out::Error(pb::OperationError {
            code: RESOURCE_EXHAUSTED,
            message: "not run: the answer reached the message size limit; send it again".into(),
            answer_full: true,
            fenced: false,
        })),
    }
}

/// The answer of a read whose result alone (`len` bytes) exceeds what a
/// message of `max` bytes can carry.
pub fn too_large(len: usize, max: usize) -> pb::OperationResult {
    pb::OperationResult {
        result: Some(Out::Error(pb::OperationError {
            code: RESOURCE_EXHAUSTED,
            message: format!("answer of {len} bytes exceeds the message size limit ({max})"),
            answer_full: false,
            fenced: false,
        })),
    }
}

/// Whether `result` is [`answer_full`]'s: the read was not run.
pub fn is_answer_full(result: &pb::OperationResult) -> bool {
    matches!(&result.result, Some(Out::Error(e)) if e.answer_full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn value(len: usize) -> pb::OperationResult {
        pb::OperationResult {
            result: Some(Out::Get(pb::GetResponse {
                found: true,
                value: Bytes::from(vec![7; len]),
                version: 1,
                ttl_ms: 0,
                tombstone_version: 0,
            })),
        }
    }

    fn get() -> pb::Operation {
        pb::Operation {
            op: Some(Op::Get(pb::GetRequest {
                key: "k".into(),
                ..Default::default()
            })),
        }
    }

    fn set() -> pb::Operation {
        pb::Operation {
            op: Some(Op::Set(pb::SetRequest {
                key: "k".into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn reads_are_admitted_until_one_does_not_fit_then_none_is() {
        let mut b = AnswerBudget::new(10_000, &[get(), get(), get(), get()]);
        assert!(!is_answer_full(&b.admit(value(4000))));
        assert!(!is_answer_full(&b.admit(value(4000))));
        assert!(is_answer_full(&b.admit(value(4000))));
        // Once full, even a small result is refused, and nothing more runs.
        assert!(!b.may_read());
        assert!(is_answer_full(&b.admit(value(1))));
    }

    #[test]
    fn a_first_read_too_large_alone_is_an_error_and_later_reads_go_on() {
        let mut b = AnswerBudget::new(2000, &[get(), get()]);
        let r = b.admit(value(5000));
        assert!(!is_answer_full(&r));
        assert!(matches!(r.result, Some(Out::Error(e)) if e.code == RESOURCE_EXHAUSTED));
        assert!(b.may_read());
        assert!(matches!(b.admit(value(10)).result, Some(Out::Get(_))));
    }

    #[test]
    fn room_for_the_writes_is_set_aside() {
        let writes: Vec<_> = std::iter::repeat_with(set).take(30).collect();
        let mut with_writes = writes.clone();
        with_writes.push(get());
        with_writes.push(get());
        // 10,000 bytes less overhead and 30 writes leave 1,296 for reads.
        let mut b = AnswerBudget::new(10_000, &with_writes);
        assert!(!is_answer_full(&b.admit(value(1200))));
        assert!(is_answer_full(&b.admit(value(200))));
    }

    #[test]
    fn admitted_results_never_exceed_the_limit_once_encoded() {
        let max = 64 * 1024;
        let ops: Vec<_> = std::iter::repeat_with(get).take(1000).collect();
        let mut b = AnswerBudget::new(max, &ops);
        let mut answer = pb::BatchResponse::default();
        for i in 0..1000 {
            let r = b.admit(value(100 + i * 37 % 3000));
            if is_answer_full(&r) {
                break;
            }
            answer.results.push(r);
        }
        assert!(answer.encoded_len() <= max - MESSAGE_OVERHEAD);
        assert!(answer.results.len() > 10);
    }

    #[test]
    fn the_not_run_answer_says_so_and_nothing_else_does() {
        assert!(is_answer_full(&answer_full()));
        assert!(!is_answer_full(&too_large(5, 1)));
        assert!(!is_answer_full(&value(1)));
    }
}
