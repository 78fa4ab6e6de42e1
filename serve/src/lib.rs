//! What every distcache server process shares: the storage node
//! (`distcache-node`) and the sidecar proxy (`distcache-proxy`) are both
//! built from these parts, and neither imports the other for them.
//!
//! This crate holds no cache logic and no client: it does not store keys,
//! place them on nodes, or speak RESP. It is the process around a service.
//!
//! # Layout
//!
//! Top-down, each module using only those below it:
//!
//! - [`pipeline`]: serving one `Pipeline` stream (depth, shutdown, token
//!   expiry), over a caller's `run` for a message's operations.
//! - [`trace`]: a request's W3C trace context recorded on the span that
//!   serves it.
//! - [`admin`]: the admin HTTP loop (GET/HEAD only) and [`admin::reply`].
//! - [`security`]: the security stack drawn in request order (bounded
//!   accept, TLS, in-flight bound, tokens and roles, rate limits), its
//!   config sections, its TLS flags and its counters.
//! - [`cli`]: argv parsing for `--check-config` (exit 1 on a bad flag).
//! - [`logging`]: the `[log]` section ([`logging::LogConfig`]) and tracing
//!   set-up.
//! - [`mod@runtime`]: the tokio runtime and gRPC reflection builders.
//! - [`metrics`]: constant gauge/counter writers for scrape-time collectors.
//! - [`units`]: sizes (`64MiB`) and durations (`30s`) for flags and TOML.
//! - [`shutdown`]: the signal and the stop flag every task watches.
//! - [`reload`]: SIGHUP, heard once and handed to whatever re-reads files,
//!   and the reload counter.
//! - [`fds`]: the file-descriptor limit, raised at start-up, and connection
//!   bounds lowered to fit it.

pub mod admin;
pub mod cli;
pub mod fds;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod metrics;
#[cfg(feature = "otel")]
mod otel;
pub mod pipeline;
pub mod reload;
pub mod runtime;
pub mod security;
pub mod shutdown;
pub mod trace;
pub mod units;

pub use logging::{LogConfig, LogFormat};
pub use runtime::{reflection, runtime};
pub use shutdown::{shutdown_signal, stopped, stopped_if};
