//! Front-end security: TLS on the gRPC and RESP listeners and bearer tokens
//! checked the node's way, built from `distcache_serve::security` (the same
//! PEM loading, rustls settings, key file format, verifier and role table).
//!
//! gRPC gets tonic's server TLS and the node's auth layer in front of every
//! service (`grpc.health.v1` open, reflection for any valid token). RESP gets
//! a rustls acceptor, run per connection with a handshake deadline, and
//! Redis-style `AUTH` ([`crate::resp::auth`]). Upstream security (the token
//! the proxy presents to nodes, the CA it trusts) is the SDK's, set in `main`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use distcache_serve::security::config::{AuthConfig, TlsConfig, auth_warnings};
use distcache_serve::security::{
    AuthLayer, BoxError, InFlightLayer, SecurityCounters, SecurityError, Verifier, tls, to_status,
};
use tokio_rustls::TlsAcceptor;
use tonic::Status;
use tonic::transport::ServerTlsConfig;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::util::MapErrLayer;

/// TLS and token settings for the front ends; the default is all off.
#[derive(Clone, Default)]
pub struct FrontSecurity {
    /// TLS for the gRPC listener.
    pub grpc_tls: Option<ServerTlsConfig>,
    /// TLS for the RESP listener.
    pub resp_tls: Option<TlsAcceptor>,
    /// Longest a RESP client's TLS handshake may take before it is dropped.
    pub handshake_timeout: Duration,
    /// Checks tokens; `None` leaves both front ends open.
    pub verifier: Option<Arc<Verifier>>,
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
        for warning in auth_warnings(auth, &keys) {
            tracing::warn!("{warning}");
        }
        let verifier = (!keys.is_empty()).then(|| {
            Arc::new(Verifier {
                keys,
                leeway: auth.leeway.0,
            })
        });
        let security = Self {
            grpc_tls: tls::server_config(tls)?,
            resp_tls: tls::acceptor(tls)?,
            handshake_timeout: tls.handshake_timeout.0,
            verifier,
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
