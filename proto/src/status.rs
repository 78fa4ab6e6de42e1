//! The two conversions between a per-operation error on the wire
//! ([`OperationError`], inside a `Batch` or `Pipeline` answer) and a
//! `tonic::Status`: a batched operation fails exactly as its unary RPC
//! would, so every layer above handles one error type.

use tonic::{Code, Status};

use crate::v1::OperationError;

/// The status a batched operation's error stands for.
pub fn to_status(e: OperationError) -> Status {
    Status::new(Code::from(e.code), e.message)
}

/// The wire form of `s` as one operation's error.
pub fn from_status(s: &Status) -> OperationError {
    OperationError {
        code: s.code() as i32,
        message: s.message().to_owned(),
        answer_full: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_survives_the_round_trip_through_the_wire_form() {
        let s = to_status(from_status(&Status::resource_exhausted("full")));
        assert_eq!((s.code(), s.message()), (Code::ResourceExhausted, "full"));
    }
}
