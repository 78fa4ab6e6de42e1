//! The node's security stack, in the order a request meets it:
//!
//! ```text
//! bounded accept (connections.rs) → TLS / mTLS (tls.rs, rustls + ring)
//!   → auth layer (auth.rs: bearer token → Principal, role vs RPC)
//!   → rate-limit layer (rate_limit.rs: per-client and global token buckets)
//!   → CacheService (input limits in limits.rs; batch contents vs role)
//! ```
//!
//! Each layer has its own error type; [`to_status`] is the one place they
//! become a `tonic::Status`. Tokens ([`token`]) and buckets ([`bucket`]) are
//! pure code without tokio or tonic. The standard `grpc.health.v1` service
//! is never authenticated nor rate limited, so probes keep working.

pub mod auth;
pub mod bucket;
pub mod config;
pub mod connections;
pub mod rate_limit;
pub mod roles;
pub mod tls;
pub mod token;
pub mod token_tool;

use tonic::{Code, Status};

pub use auth::{AuthError, AuthLayer, Principal, Verifier};
pub use rate_limit::{Limiter, RateLimitLayer, RateLimited};
pub use token::{Claims, KeySet, Role, TokenError};

/// Metadata key on a rate-limited answer: milliseconds until a retry can pass.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// The error type flowing through the security layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one place security errors become gRPC statuses. Errors that are not
/// ours pass through tonic's own conversion.
pub fn to_status(e: BoxError) -> Status {
    if let Some(e) = e.downcast_ref::<AuthError>() {
        let code = match e {
            AuthError::Denied { .. } => Code::PermissionDenied,
            AuthError::Missing | AuthError::Token(_) => Code::Unauthenticated,
        };
        return Status::new(code, e.to_string());
    }
    if let Some(e) = e.downcast_ref::<RateLimited>() {
        let mut s = Status::resource_exhausted(e.to_string());
        // For clients to back off by: whole milliseconds until a token is free.
        let ms = u64::try_from(e.retry_after.as_millis()).unwrap_or(u64::MAX);
        s.metadata_mut().insert(RETRY_AFTER_MS, ms.into());
        return s;
    }
    match e.downcast::<Status>() {
        Ok(s) => *s,
        Err(e) => Status::from_error(e),
    }
}

/// Adds [`to_status`] on top of the security layers, so tonic sees a
/// `Status` it can send instead of an error that would end the connection.
pub fn status_layer() -> tower::util::MapErrLayer<fn(BoxError) -> Status> {
    tower::util::MapErrLayer::new(to_status as fn(BoxError) -> Status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_codes() {
        let c = |e: BoxError| to_status(e).code();
        assert_eq!(c(Box::new(AuthError::Missing)), Code::Unauthenticated);
        assert_eq!(
            c(Box::new(AuthError::Token(TokenError::Expired))),
            Code::Unauthenticated
        );
        let denied = AuthError::Denied {
            role: "readonly",
            rpc: "/x".into(),
        };
        assert_eq!(c(Box::new(denied)), Code::PermissionDenied);
        let limited = RateLimited {
            scope: rate_limit::Scope::Global,
            retry_after: std::time::Duration::from_millis(3),
        };
        let s = to_status(Box::new(limited));
        assert_eq!(s.code(), Code::ResourceExhausted);
        let after = s
            .metadata()
            .get(RETRY_AFTER_MS)
            .and_then(|v| v.to_str().ok());
        assert_eq!(after, Some("3"));
        assert_eq!(c(Box::new(Status::aborted("x"))), Code::Aborted);
    }
}
