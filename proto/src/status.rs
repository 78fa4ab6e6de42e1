//! The two conversions between a per-operation error on the wire
//! ([`OperationError`], inside a `Batch` or `Pipeline` answer) and a
//! `tonic::Status`: a batched operation fails exactly as its unary RPC
//! would, so every layer above handles one error type.
//!
//! A fenced node's refusal (see `FenceState` in the proto) is an
//! `UNAVAILABLE` status marked with the [`FENCED`] metadata key; in a batch,
//! `OperationError.fenced`. Both forms convert into each other here.

use tonic::{Code, Status};

use crate::v1::OperationError;

/// Metadata key marking a status as a fenced node's refusal: the node ran
/// nothing and is alive; another replica may serve the operation.
pub const FENCED: &str = "distcache-fenced";

/// Metadata key a client sends to be held to the fence: a node refuses
/// its reads and node-stamped operations while fenced. Replicating
/// clients (the SDK with more than one replica) send it.
pub const REPLICATED: &str = "distcache-replicated";

/// The status a batched operation's error stands for.
pub fn to_status(e: OperationError) -> Status {
    let mut s = Status::new(Code::from(e.code), e.message);
    if e.fenced {
        s.metadata_mut()
            .insert(FENCED, tonic::metadata::MetadataValue::from_static("1"));
    }
    s
}

/// The wire form of `s` as one operation's error.
pub fn from_status(s: &Status) -> OperationError {
    OperationError {
        code: s.code() as i32,
        message: s.message().to_owned(),
        answer_full: false,
        fenced: is_fenced(s),
    }
}

/// A fenced node's refusal of an operation, with `reason`.
pub fn fenced(reason: &str) -> Status {
    let mut s = Status::unavailable(format!("node is fenced (catching up): {reason}"));
    s.metadata_mut()
        .insert(FENCED, tonic::metadata::MetadataValue::from_static("1"));
    s
}

/// Whether `s` is a fenced node's refusal.
pub fn is_fenced(s: &Status) -> bool {
    s.metadata().contains_key(FENCED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_survives_the_round_trip_through_the_wire_form() {
        let s = to_status(from_status(&Status::resource_exhausted("full")));
        assert_eq!((s.code(), s.message()), (Code::ResourceExhausted, "full"));
        assert!(!is_fenced(&s));
    }

    #[test]
    fn a_fenced_refusal_keeps_its_mark_through_the_wire_form() {
        let wire = from_status(&fenced("started empty"));
        assert!(wire.fenced);
        let s = to_status(wire);
        assert!(is_fenced(&s));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("started empty"));
    }
}
