//! The distcache client SDK: a replicated, consistent-hashed view of many
//! distcache nodes.
//!
//! - **Placement**: a [`ring::Ring`] of 150 virtual nodes per node (xxh3-64,
//!   fixed seed) gives each key a preference list of N distinct nodes; every
//!   SDK instance with the same node list agrees on it.
//! - **Replication**: writes are stamped with a hybrid-logical-clock version
//!   (wall-clock milliseconds, a logical counter and a writer id) and sent to
//!   every healthy replica in parallel; a node applies only newer versions,
//!   so replicas converge whatever the arrival order. Deletes leave versioned
//!   tombstones. Compare-and-swap, counters and conditional sets run on the
//!   first healthy replica, whose result is copied to the others.
//! - **Consistency**: [`Consistency::One`], [`Consistency::Quorum`] or
//!   [`Consistency::All`] for reads and writes, per client and per request.
//!   Quorum and All reads return the newest version (a newer tombstone wins
//!   over an older value) once the stale replicas they asked were repaired,
//!   so a read is never followed by an older state on those replicas. Reads
//!   see the latest write when R + W > N (for example Quorum + Quorum). A
//!   write returns after W acknowledgements *and* the answer of the first
//!   healthy replica, the one `One` reads go to, so a client reads its own
//!   writes even at `One`/`One`; the other replicas finish in the background.
//! - **Failure handling**: a few lazily connected HTTP/2 channels per node;
//!   nodes that fail repeatedly or fail a health check are skipped until a
//!   probe re-admits them (the ring does not change); idempotent operations
//!   are retried with exponential backoff and jitter within a per-request
//!   deadline and a client-wide retry budget.
//!
//! - **Coalescing**: concurrent operations bound for the same node travel
//!   together in one `Batch` RPC (see [`CoalesceConfig`]); an idle client
//!   still sends each operation at once.
//!
//! - **Security**: a bearer token sent as `authorization` metadata on every
//!   request; `https://` nodes verified against a PEM CA bundle (rustls
//!   with the ring provider), and a client certificate for nodes that
//!   require one (mTLS): [`ClientBuilder::tls_ca`] and
//!   [`ClientBuilder::tls_identity`].
//!
//! - **Tracing**: [`Client::with_trace_context`] makes every RPC of an
//!   operation to a node carry a W3C `traceparent` of the caller's trace
//!   (a new span id per RPC), which the nodes record on their request
//!   spans. A batch that coalesces several callers' operations carries the
//!   first traced operation's context only. With no context set, an RPC
//!   costs one task-local lookup more and sends no header. The SDK itself
//!   opens a `debug` span per operation (target `distcache`, field `op`,
//!   and `trace_id` when traced).
//!
//! - **Membership**: [`Client::set_nodes`] replaces the node list of a live
//!   client (for configuration reloads and service discovery); operations
//!   already running finish on the membership they started with.
//!
//! Not here: hinted handoff (a replica that missed writes while down is
//! caught up from its peers or repaired by reads, not replayed from the
//! writer), TLS without a CA bundle given (no system roots).
//!
//! # Features
//!
//! - `tls` (default): `https://` nodes, [`ClientBuilder::tls_ca`] and
//!   [`ClientBuilder::tls_identity`] (tonic's rustls with ring). Without it
//!   those methods do not exist, and `build` refuses `https://` nodes and a
//!   [`ClientConfig`] with TLS settings with [`ConfigError::Tls`].
//! - `cli`: the `distcache` command-line client (binary only).
//!
//! # Layout
//!
//! Top-down; a module uses only those below it.
//!
//! - `client.rs`: [`Client`] and [`ClientBuilder`], the typed operations;
//!   `multi.rs`: `mget`/`mset`.
//! - `replica/`: how one operation becomes RPCs on its replicas (view, read,
//!   write, fan-out, attempt; its `mod.rs` draws the whole).
//! - `topology.rs`: the membership (ring + nodes) a live client swaps.
//! - `node.rs`: one node's health and coalescer; `coalesce.rs`: many callers'
//!   operations in one message; `conn.rs`: the transport to one node;
//!   `pipe.rs`: its shared `Pipeline` stream.
//! - `trace.rs`: the caller's trace context while its operation runs.
//! - `retry.rs` (backoff and budget), `deadline.rs` (every deadline helper),
//!   `hlc.rs` (the version clock), [`ring`] (placement, a pure core).
//! - [`cli_words`]: the command-line word rule the CLI and the proxy share.
//! - `error.rs` ([`Error`] and the one failure classifier), `config.rs`
//!   (plain data), `types.rs` ([`Entry`], [`Condition`], [`WriteOutcome`],
//!   [`ClientStats`]): leaves.
//!
//! ```no_run
//! # async fn demo() -> Result<(), distcache::Error> {
//! use std::time::Duration;
//! use distcache::{Client, Consistency};
//!
//! let cache = Client::builder()
//!     .nodes(["http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003"])
//!     .replicas(2)
//!     .read_consistency(Consistency::Quorum)
//!     .write_consistency(Consistency::Quorum)
//!     .build()
//!     .await?;
//! let v1 = cache.set("user:123", br#"{"name":"Alice"}"#, Some(Duration::from_secs(60))).await?;
//! let entry = cache.get("user:123").await?.expect("just written");
//! assert_eq!(entry.version, v1);
//! let swap = cache.compare_and_swap("user:123", v1, br#"{"name":"Bob"}"#, None).await?;
//! assert!(swap.applied);
//! assert_eq!(cache.incr_by("visits", 3).await?, 3);
//! cache.delete("user:123").await?;
//! # Ok(()) }
//! ```

// On top of the workspace's lints; `.ci/run` builds the docs with
// warnings denied.
#![warn(missing_docs)]

pub mod cli_words;
mod client;
mod coalesce;
mod config;
mod conn;
mod deadline;
mod error;
mod hlc;
mod load;
mod multi;
mod near;
mod node;
mod pipe;
mod replica;
mod retry;
pub mod ring;
mod topology;
mod trace;
mod types;

/// The byte buffer `Entry::value`, `get_bytes` and `set_with_bytes` use.
pub use bytes::Bytes;
pub use client::{Client, ClientBuilder};
pub use config::{
    ClientConfig, CoalesceConfig, Consistency, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FAILURE_THRESHOLD, DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_POOL_SIZE,
    DEFAULT_PROBE_INTERVAL, DEFAULT_REBALANCE_BYTES_PER_SEC, DEFAULT_REBALANCE_GRACE,
    DEFAULT_REBALANCE_KEYS_PER_SEC, DEFAULT_REPLICAS, DEFAULT_TIMEOUT, MAX_NODES, MAX_TIMEOUT,
    RebalanceConfig, RetryConfig, TlsIdentity,
};
pub use error::{ConfigError, Error, Exhausted, Result};
pub use load::LoadAborted;
pub use topology::{MembershipChange, MovePhase};
pub use types::{ClientStats, Condition, Entry, MoveStatus, WriteOutcome};

/// A W3C trace context (`traceparent`, `tracestate`) for
/// [`Client::with_trace_context`]; parse one with [`TraceContext::parse`]
/// or take it from gRPC metadata with [`TraceContext::from_metadata`].
pub use distcache_proto::trace::{TraceContext, TraceParseError};

/// The generated `distcache.v1` wire types, for talking to one node directly.
pub use distcache_proto::v1 as proto;
