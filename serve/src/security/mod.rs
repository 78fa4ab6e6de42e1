//! The security stack of a server process, in the order a request meets it
//! on a node (the proxy's front ends use TLS and the auth layer):
//!
//! ```text
//! bounded accept (connections.rs) → TLS / mTLS (tls.rs, rustls + ring)
//!   → in-flight bound (in_flight.rs: RESOURCE_EXHAUSTED beyond max_in_flight)
//!   → auth layer (auth.rs: bearer token → Principal, role vs RPC)
//!   → rate-limit layer (rate_limit.rs: per-client and global token buckets)
//!   → CacheService (input limits in limits.rs; batch contents vs role)
//! ```
//!
//! Each layer has its own error type; [`to_status`] is the one place they
//! become a `tonic::Status`. Tokens ([`token`]) and buckets ([`bucket`]) are
//! pure code without tokio or tonic. The standard `grpc.health.v1` service
//! is never authenticated nor rate limited, so probes keep working.

pub mod args;
pub mod auth;
pub mod bucket;
pub mod config;
pub mod connections;
pub mod counters;
pub mod in_flight;
pub mod live_keys;
pub mod live_tls;
pub mod rate_limit;
pub mod reloader;
pub mod roles;
pub mod tls;
pub mod token;
pub mod token_tool;

use std::sync::Arc;

use tonic::{Code, Status};

pub use args::TlsArgs;
pub use auth::{AuthError, AuthLayer, Principal, Verifier};
pub use config::{AuthConfig, RateLimitConfig, TlsConfig};
pub use counters::SecurityCounters;
pub use in_flight::{InFlightLayer, Overloaded};
pub use live_keys::{LiveKeys, Signer};
pub use live_tls::LiveTls;
pub use rate_limit::{Limiter, RateCharge, RateLimitLayer, RateLimited};
pub use reloader::Reloader;
pub use token::{Claims, KeySet, Role, TokenError};

/// Metadata key on a rate-limited answer: milliseconds until a retry can pass.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// The error type flowing through the security layers (tower's own).
pub use tower::BoxError;

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
    if let Some(e) = e.downcast_ref::<Overloaded>() {
        return Status::resource_exhausted(e.to_string());
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

/// Why the security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A certificate or key file is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The secrets cannot be loaded (or auth is on without any).
    #[error("invalid auth configuration: {0}")]
    Auth(String),
}

/// The security stack as the gRPC server takes it: TLS for its accept
/// stream, one layer wrapping every service, and what a reload re-reads.
#[derive(Debug)]
pub struct Security {
    /// TLS (ALPN `h2`) for [`live_tls::incoming`], when configured.
    pub tls: Option<Arc<LiveTls>>,
    /// Status conversion, then auth, then rate limits.
    pub layer: SecurityLayer,
    /// Re-reads the certificates and the secret file into `tls` and the
    /// auth layer's keys.
    pub reloader: Reloader,
}

/// The connection bounds the stack enforces or reports (from the server's
/// own section: `[server] max_connections`, `max_in_flight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most connections open at once (enforced by the accept loop,
    /// [`connections::bounded_incoming`]; logged here).
    pub max_connections: usize,
    /// Most requests served at once; more get `RESOURCE_EXHAUSTED`.
    pub max_in_flight: usize,
}

impl Security {
    /// Loads certificates and secrets named in the `[tls]` and `[auth]`
    /// sections (logging warnings about weak settings) and builds the layers
    /// for `[rate_limit]` and `bounds`, counting into `counters`.
    pub fn from_config(
        tls: &TlsConfig,
        auth: &AuthConfig,
        rate_limit: &RateLimitConfig,
        bounds: Bounds,
        counters: &SecurityCounters,
    ) -> Result<Self, SecurityError> {
        let keys = auth.load_keys().map_err(SecurityError::Auth)?;
        config::check_secrets(auth, &keys).map_err(SecurityError::Auth)?;
        let server_tls = LiveTls::load(tls, &[live_tls::ALPN_H2])?;
        for warning in config::auth_warnings(auth, &keys) {
            tracing::warn!("{warning}");
        }
        let verifier = (!keys.is_empty()).then(|| Arc::new(Verifier::new(keys, auth.leeway.0)));
        let reloader = Reloader::new(
            tls.clone(),
            auth.clone(),
            server_tls.iter().cloned().collect(),
            verifier.as_ref().map(|v| v.keys().clone()),
        );
        let rl = rate_limit;
        let limiter = (rl.per_client().is_some() || rl.global().is_some()).then(|| {
            Arc::new(Limiter::new(
                rl.per_client(),
                rl.global(),
                rl.max_clients,
                rl.idle_timeout.0,
            ))
        });
        tracing::info!(
            tls = server_tls.is_some(),
            mtls = tls.client_ca.is_some(),
            auth = verifier.is_some(),
            per_client_rps = rl.per_client_rps,
            global_rps = rl.global_rps,
            max_connections = bounds.max_connections,
            max_in_flight = bounds.max_in_flight,
            "security"
        );
        Ok(Self {
            tls: server_tls,
            reloader,
            layer: SecurityLayer {
                in_flight: InFlightLayer::new(bounds.max_in_flight, counters.clone()),
                auth: AuthLayer::new(verifier, counters.clone()),
                rate_limit: RateLimitLayer::new(limiter, counters.clone()),
            },
        })
    }
}

/// [`to_status`] over [`in_flight::InFlight`] over [`auth::Auth`] over
/// [`rate_limit::RateLimit`].
#[derive(Debug, Clone)]
pub struct SecurityLayer {
    in_flight: InFlightLayer,
    auth: AuthLayer,
    rate_limit: RateLimitLayer,
}

/// The service [`SecurityLayer`] makes.
pub type Secured<S> = tower::util::MapErr<
    in_flight::InFlight<auth::Auth<rate_limit::RateLimit<S>>>,
    fn(BoxError) -> Status,
>;

impl<S> tower::Layer<S> for SecurityLayer {
    type Service = Secured<S>;
    fn layer(&self, inner: S) -> Secured<S> {
        let inner = (self.in_flight).layer(self.auth.layer(self.rate_limit.layer(inner)));
        tower::util::MapErr::new(inner, to_status as fn(BoxError) -> Status)
    }
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
        assert_eq!(c(Box::new(Overloaded { max: 1 })), Code::ResourceExhausted);
        assert_eq!(c(Box::new(Status::aborted("x"))), Code::Aborted);
    }
}
