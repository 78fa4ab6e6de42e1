//! The SDK's one public error type, and the one classifier of failed
//! attempts.
//!
//! A miss is not an error (`get` returns `Ok(None)`), and neither is a
//! compare-and-swap mismatch (`CasOutcome::swapped == false`). Errors a node
//! reports keep its message; transport failures are folded into
//! [`Error::Unavailable`] once failover and retries are exhausted.
//!
//! Two functions decide everything about a node's status: [`classify`]
//! (retry, fail over, or give up) and [`Error::from_status`] (which
//! variant a caller sees). Nothing else in the workspace inspects a status
//! code or message to decide what a failure means.

use std::time::Duration;

use tonic::Code;

use crate::types::MAX_NODES;

/// The result type of every SDK call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is invalid (raised by `build`).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// Too few replicas of the key answered to meet the consistency level.
    #[error("not enough replicas answered: needed {needed}, got {acked}")]
    Unavailable {
        /// Acknowledgements the consistency level required.
        needed: usize,
        /// Acknowledgements received.
        acked: usize,
    },
    /// A conditional operation (CAS, SET NX/XX, a counter) was applied on
    /// one replica, but fewer replicas than the consistency level hold its
    /// result. Unlike [`Error::Unavailable`] it did take effect: do not
    /// retry it blindly (an increment would count twice).
    #[error(
        "applied on one replica (version {version}) but not replicated: \
         needed {needed} replicas, {acked} hold it"
    )]
    NotReplicated {
        /// The version the operation wrote.
        version: u64,
        /// Replicas the consistency level required.
        needed: usize,
        /// Replicas known to hold it (the one that applied it included).
        acked: usize,
    },
    /// The per-request deadline passed.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// A node rejected the input (key, value or TTL out of its limits).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A counter operation found a value that is not a decimal integer.
    #[error("not an integer or out of range: {0}")]
    NotAnInteger(String),
    /// A counter operation's result would overflow a 64-bit integer.
    #[error("not an integer or out of range: {0}")]
    Overflow(String),
    /// The token is missing, expired or forged.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token's role may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A node refused for lack of a resource: memory, its rate limits, or
    /// its bound on requests served at once.
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// Which resource.
        kind: Exhausted,
        /// The node's message.
        message: String,
    },
    /// A node answered with an unexpected gRPC status.
    #[error("node error: {0}")]
    Rpc(Box<tonic::Status>),
    /// The loader of a [`Client::get_or_load`](crate::Client::get_or_load)
    /// failed: its own error (downcast it to its type), or a
    /// [`LoadAborted`](crate::LoadAborted) when it panicked. Every caller
    /// that waited on that load gets the same error; nothing was cached.
    #[error("loader failed: {0}")]
    Load(std::sync::Arc<dyn std::error::Error + Send + Sync>),
}

/// The resource behind an [`Error::ResourceExhausted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exhausted {
    /// The entry is larger than the node's whole memory bound: eviction
    /// cannot make room (Redis's `OOM`).
    Memory,
    /// A rate limit refused the request.
    RateLimited {
        /// When the node said how long until a retry can pass.
        retry_after: Option<Duration>,
    },
    /// The node was serving its maximum of requests at once.
    Overloaded,
    /// A multi-key read's answer would exceed this client's
    /// `max_answer_bytes` (the client's own bound, not a node's).
    Answer,
}

/// Metadata key on a rate-limited answer: milliseconds until a retry can
/// pass (the node's `RETRY_AFTER_MS`).
const RETRY_AFTER_MS: &str = "retry-after-ms";

/// What a failed attempt calls for, from its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection failed or the node is going away (refused, reset,
    /// shutting down): the node did not run the operation to an answer
    /// anyone saw, so any operation may move on to the next replica, and the
    /// node counts a failure.
    FailOver,
    /// The attempt timed out or was cancelled: the node may be alive and may
    /// have applied it. Idempotent operations may try again (here or on the
    /// next replica); others must not move on. The node counts a failure.
    Retry,
    /// An answer about the request itself (bad input, refusal, CAS state):
    /// another attempt would get the same; the node is alive.
    Fatal,
    /// The node is fenced (catching up): it ran nothing and is alive, so
    /// any operation may move on to the next replica, and the node counts
    /// no failure (it is fenced in the client's view instead).
    Fenced,
}

/// The one classifier of failed attempts.
pub(crate) fn classify(status: &tonic::Status) -> Failure {
    if distcache_proto::status::is_fenced(status) {
        return Failure::Fenced;
    }
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Aborted => Failure::FailOver,
        Code::DeadlineExceeded | Code::Cancelled => Failure::Retry,
        _ => Failure::Fatal,
    }
}

/// Which resource a `RESOURCE_EXHAUSTED` status names. The wire carries no
/// reason code for it, so this reads what the node sends: the retry-after
/// metadata of a rate limit (absent on a batched operation's error), else
/// the node's messages (its memory bound names `max-memory`, its rate
/// limiter starts with `rate limit`).
fn exhausted(status: &tonic::Status) -> Exhausted {
    let retry_after = status
        .metadata()
        .get(RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let msg = status.message();
    if retry_after.is_some() || msg.starts_with("rate limit") {
        Exhausted::RateLimited { retry_after }
    } else if msg.contains("max-memory") {
        Exhausted::Memory
    } else {
        Exhausted::Overloaded
    }
}

/// Why a configuration is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No node URL was given.
    #[error("no nodes configured")]
    NoNodes,
    /// A node URL does not parse.
    #[error("invalid node URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `replicas` is zero.
    #[error("replicas must be at least 1")]
    ZeroReplicas,
    /// More distinct node URLs than [`MAX_NODES`](crate::MAX_NODES).
    #[error("more than {} distinct nodes", MAX_NODES)]
    TooManyNodes,
    /// The token cannot be sent as an HTTP header value.
    #[error("token contains characters not allowed in a header")]
    BadToken,
    /// The TLS CA bundle was given but cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Whether a failed attempt says something about the node's health (so
/// failover and retry make sense) rather than about the request.
pub(crate) fn is_transient(status: &tonic::Status) -> bool {
    classify(status) != Failure::Fatal
}

impl Error {
    /// The one place a node's status becomes an SDK error.
    pub(crate) fn from_status(status: tonic::Status) -> Self {
        let msg = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(msg),
            // The node's two counter refusals; its message tells them apart
            // (see `exhausted` for why the message).
            Code::FailedPrecondition if msg.contains("overflow") => Error::Overflow(msg),
            Code::FailedPrecondition => Error::NotAnInteger(msg),
            Code::Unauthenticated => Error::Unauthenticated(msg),
            Code::PermissionDenied => Error::PermissionDenied(msg),
            Code::ResourceExhausted => Error::ResourceExhausted {
                kind: exhausted(&status),
                message: msg,
            },
            _ => Error::Rpc(Box::new(status)),
        }
    }

    /// True for errors another attempt might not see (timeouts, too few
    /// replicas); false for errors about the request itself.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout(_))
            || matches!(self, Error::Rpc(s) if is_transient(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn every_code_is_classified_once() {
        for (code, want) in [
            (Code::Unavailable, Failure::FailOver),
            (Code::Unknown, Failure::FailOver),
            (Code::Aborted, Failure::FailOver),
            (Code::DeadlineExceeded, Failure::Retry),
            (Code::Cancelled, Failure::Retry),
            (Code::InvalidArgument, Failure::Fatal),
            (Code::ResourceExhausted, Failure::Fatal),
            (Code::FailedPrecondition, Failure::Fatal),
            (Code::PermissionDenied, Failure::Fatal),
        ] {
            assert_eq!(classify(&Status::new(code, "x")), want, "{code:?}");
        }
        let fenced = distcache_proto::status::fenced("started empty");
        assert_eq!(classify(&fenced), Failure::Fenced);
        assert!(is_transient(&fenced));
    }

    #[test]
    fn a_node_refusal_becomes_a_structured_variant() {
        let e = |s: Status| Error::from_status(s);
        assert!(matches!(
            e(Status::failed_precondition(
                "increment or decrement would overflow"
            )),
            Error::Overflow(_)
        ));
        assert!(matches!(
            e(Status::failed_precondition(
                "value is not an integer or out of range"
            )),
            Error::NotAnInteger(_)
        ));
        let memory = Status::resource_exhausted("entry of 9 bytes exceeds max-memory of 8 bytes");
        assert!(matches!(
            e(memory),
            Error::ResourceExhausted {
                kind: Exhausted::Memory,
                ..
            }
        ));
        let mut limited = Status::resource_exhausted("rate limit exceeded (global); retry in 3 ms");
        limited.metadata_mut().insert(RETRY_AFTER_MS, 3u64.into());
        assert!(matches!(
            e(limited),
            Error::ResourceExhausted {
                kind: Exhausted::RateLimited { retry_after: Some(d) },
                ..
            } if d == Duration::from_millis(3)
        ));
        assert!(matches!(
            e(Status::resource_exhausted(
                "node is serving its maximum of 1 requests"
            )),
            Error::ResourceExhausted {
                kind: Exhausted::Overloaded,
                ..
            }
        ));
    }
}
