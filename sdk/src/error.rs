//! The SDK's one public error type.
//!
//! A miss is not an error (`get` returns `Ok(None)`), and neither is a
//! compare-and-swap mismatch (`CasOutcome::swapped == false`). Errors a node
//! reports keep its message; transport failures are folded into
//! [`Error::Unavailable`] once failover and retries are exhausted.

use std::time::Duration;

use tonic::Code;

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
    /// The per-request deadline passed.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// A node rejected the input (key, value or TTL out of its limits).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A counter operation found a value that is not a decimal integer, or
    /// the result would overflow.
    #[error("not an integer or out of range: {0}")]
    NotAnInteger(String),
    /// The token is missing, expired or forged.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token's role may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A node is out of memory that eviction cannot free, or rate-limited us.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A node answered with an unexpected gRPC status.
    #[error("node error: {0}")]
    Rpc(Box<tonic::Status>),
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
    #[error("more than {} distinct nodes", crate::MAX_NODES)]
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
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

impl Error {
    /// The one place a node's status becomes an SDK error.
    pub(crate) fn from_status(status: tonic::Status) -> Self {
        let msg = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(msg),
            Code::FailedPrecondition => Error::NotAnInteger(msg),
            Code::Unauthenticated => Error::Unauthenticated(msg),
            Code::PermissionDenied => Error::PermissionDenied(msg),
            Code::ResourceExhausted => Error::ResourceExhausted(msg),
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
