//! Front-end security: TLS on the gRPC and RESP listeners and bearer tokens
//! checked the node's way, built from `distcache_serve::security` (the same
//! PEM loading, rustls settings, key file format, verifier and role table).
//!
//! gRPC gets the node's TLS accept stream and auth layer in front of every
//! service (`grpc.health.v1` open, reflection for any valid token). RESP gets
//! a rustls acceptor, run per connection with a handshake deadline, and
//! Redis-style `AUTH` ([`crate::resp::auth`]). Upstream security (the token
//! the proxy presents to nodes, the CA it trusts) is the SDK's, set in `main`.
//!
//! On SIGHUP [`ProxyReloader`] re-reads the front ends' certificates, key,
//! client CA and secret file, and the `--token-file` the proxy presents to
//! nodes, all or nothing. The `--tls-ca` for nodes is only compared: the
//! SDK's channels keep the CA they were built with, so a change is logged
//! as needing a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use distcache_serve::security::config::{AuthConfig, TlsConfig, auth_warnings, check_secrets};
use distcache_serve::security::live_tls::ALPN_H2;
use distcache_serve::security::{
    AuthLayer, BoxError, InFlightLayer, LiveTls, Reloader, SecurityCounters, SecurityError,
    Verifier, to_status,
};
use tonic::Status;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::util::MapErrLayer;

/// TLS and token settings for the front ends; the default is all off.
#[derive(Clone, Default)]
pub struct FrontSecurity {
    /// TLS for the gRPC listener (ALPN `h2`).
    pub grpc_tls: Option<Arc<LiveTls>>,
    /// TLS for the RESP listener (no ALPN).
    pub resp_tls: Option<Arc<LiveTls>>,
    /// Longest a RESP client's TLS handshake may take before it is dropped.
    pub handshake_timeout: Duration,
    /// Checks tokens; `None` leaves both front ends open.
    pub verifier: Option<Arc<Verifier>>,
    /// Re-reads the certificates into both listeners and the secrets into
    /// `verifier`.
    pub reloader: Reloader,
}

impl fmt::Debug for FrontSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontSecurity")
            .field("tls", &self.resp_tls.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("verifier", &self.verifier)
            .finish()
    }
}

impl FrontSecurity {
    /// Loads the certificates in `tls` (already checked by
    /// `TlsConfig::validate`) and the secrets in `auth`, logging warnings
    /// about weak settings. A bad file fails here, naming itself.
    pub fn load(tls: &TlsConfig, auth: &AuthConfig) -> Result<Self, SecurityError> {
        let keys = auth.load_keys().map_err(SecurityError::Auth)?;
        check_secrets(auth, &keys).map_err(SecurityError::Auth)?;
        for warning in auth_warnings(auth, &keys) {
            tracing::warn!("{warning}");
        }
        let verifier = (!keys.is_empty()).then(|| Arc::new(Verifier::new(keys, auth.leeway.0)));
        let grpc_tls = LiveTls::load(tls, &[ALPN_H2])?;
        let resp_tls = LiveTls::load(tls, &[])?;
        let reloader = Reloader::new(
            tls.clone(),
            auth.clone(),
            grpc_tls.iter().chain(&resp_tls).cloned().collect(),
            verifier.as_ref().map(|v| v.keys().clone()),
        );
        let security = Self {
            grpc_tls,
            resp_tls,
            handshake_timeout: tls.handshake_timeout.0,
            verifier,
            reloader,
        };
        tracing::info!(
            tls = security.resp_tls.is_some(),
            mtls = tls.client_ca.is_some(),
            auth = security.verifier.is_some(),
            "front-end security"
        );
        Ok(security)
    }

    /// The layer the gRPC server wraps every service in: the node's auth
    /// layer (a pass-through without a verifier), its errors turned into
    /// statuses by the node's [`to_status`].
    pub fn grpc_layer(&self, max_in_flight: usize, counters: SecurityCounters) -> GrpcAuthLayer {
        ServiceBuilder::new()
            .layer(MapErrLayer::new(to_status as fn(BoxError) -> Status))
            .layer(InFlightLayer::new(max_in_flight, counters.clone()))
            .layer(AuthLayer::new(self.verifier.clone(), counters))
            .into_inner()
    }
}

/// What [`FrontSecurity::grpc_layer`] returns.
pub type GrpcAuthLayer =
    Stack<AuthLayer, Stack<InFlightLayer, Stack<MapErrLayer<fn(BoxError) -> Status>, Identity>>>;

/// Reads the token the proxy presents to nodes from `path` (`--token-file`):
/// the file's text without surrounding white space, refused when empty or
/// not sendable as a header value.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    if tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).is_err() {
        return Err(format!(
            "token file {} holds characters not allowed in a header",
            path.display()
        ));
    }
    Ok(token)
}

/// What the proxy re-reads on SIGHUP besides its membership source.
#[derive(Debug)]
pub struct ProxyReloader {
    /// The front ends' certificates and secrets.
    pub front: Reloader,
    /// `--token-file`: the token presented to nodes.
    pub token_file: Option<PathBuf>,
    /// `--tls-ca` and the content read at start-up.
    pub tls_ca: Option<(PathBuf, Vec<u8>)>,
    /// The SDK client whose token is replaced.
    pub client: distcache::Client,
}

impl ProxyReloader {
    /// Re-reads everything and puts it in force, or, if anything is
    /// unusable, nothing (the error says what and why).
    pub fn reload(&self) -> Result<String, String> {
        let front = self.front.prepare().map_err(|e| e.to_string())?;
        let token = match &self.token_file {
            Some(path) => Some(read_token_file(path)?),
            None => None,
        };
        let mut what = front.apply();
        if let Some(t) = token {
            self.client
                .set_token(Some(&t))
                .map_err(|e| format!("token file: {e}"))?;
            what.push_str(", token for nodes");
        }
        if let Some((path, started_with)) = &self.tls_ca {
            match std::fs::read(path) {
                Ok(now) if now != *started_with => tracing::warn!(
                    path = %path.display(),
                    "the CA for nodes changed; it is read at start-up only: restart the proxy to use it"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the CA for nodes (the one read at start-up stays in use)")
                }
            }
        }
        Ok(what)
    }
}
