//! How the proxy's front ends behave: RESP bounds, the connection bounds,
//! front-end security, the login timeout, the gRPC bounds and the shutdown
//! grace. Data only, built by `main` from the flags; a leaf the front ends
//! share.

use std::time::Duration;

use crate::resp::codec::Limits;
use crate::security::FrontSecurity;

/// Default bound on RESP connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default [`FrontendConfig::login_timeout`].
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on gRPC requests served at once (as on a node).
pub const DEFAULT_GRPC_MAX_IN_FLIGHT: usize = 4096;
/// Default bound on concurrent streams per gRPC connection (as on a node).
pub const DEFAULT_GRPC_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Default bound on RESP connections from one IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_000;
/// Default time in-flight requests get to finish once shutdown starts.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How the front ends behave.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Bounds on RESP requests.
    pub resp_limits: Limits,
    /// Most RESP connections open at once.
    pub max_connections: usize,
    /// TLS and tokens on both front ends (default: off).
    pub security: FrontSecurity,
    /// Once shutdown starts, how long the front ends keep accepting and
    /// serving while `/readyz` and gRPC health say the proxy is not ready
    /// (so traffic moves away first); zero: stop accepting at once.
    pub drain_delay: Duration,
    /// Once the front ends stop accepting, how long open connections get to
    /// finish the requests they have sent; then they are closed.
    pub shutdown_grace: Duration,
    /// How long a RESP connection has to send its first request and, when
    /// tokens are required, to log in; then it is closed. Zero: no limit.
    pub login_timeout: Duration,
    /// Most RESP connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Most gRPC connections open at once; more wait in the accept queue.
    pub grpc_max_connections: usize,
    /// Most gRPC requests served at once; more get RESOURCE_EXHAUSTED.
    pub grpc_max_in_flight: usize,
    /// Most concurrent HTTP/2 streams on one gRPC connection.
    pub grpc_max_concurrent_streams: u32,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            resp_limits: Limits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            security: FrontSecurity::default(),
            drain_delay: Duration::ZERO,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            grpc_max_connections: DEFAULT_MAX_CONNECTIONS,
            grpc_max_in_flight: DEFAULT_GRPC_MAX_IN_FLIGHT,
            grpc_max_concurrent_streams: DEFAULT_GRPC_MAX_CONCURRENT_STREAMS,
        }
    }
}
