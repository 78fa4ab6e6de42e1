//! A distcache storage node: a complete single-node cache served over gRPC.
//!
//! The store ([`store`]) is a synchronous sharded LRU with TTLs, versions,
//! tombstones, compare-and-swap and counters; [`service`] adapts it to
//! `distcache.v1.CacheService`; [`admin`] serves `/metrics`, `/metrics.json`
//! and `/healthz`; [`server::run`] ties them together on listeners the caller
//! bound, so tests start nodes in-process on `127.0.0.1:0`.
//!
//! This crate does not distribute keys: the SDK (`distcache`) places keys on
//! nodes and replicates them. With `--data-dir`, [`wal`] makes writes durable
//! (write-ahead log with group commit, snapshots, crash recovery); without it
//! the node is memory-only. [`security`] holds TLS, bearer tokens with roles,
//! and rate limits.
//!
//! ```text
//!                 ┌──────────── tokio runtime ─────────────┐
//!   gRPC :7001 ──►│ tonic: health, reflection, CacheNode ──┼─► Store (256 × Mutex<Shard>)
//!   HTTP :9101 ──►│ admin: /metrics /metrics.json /healthz │      ▲
//!                 │ sweeper task (every 100 ms) ───────────┼──────┘ reclaims expired entries
//!                 │ writes ─► Wal::append ─► channel ──────┼─► WAL writer thread (group
//!                 │ snapshotter task (interval/growth) ────┼─►  commit, fsync, rotation)
//!                 │ shutdown: serving=false → NOT_SERVING  │
//!                 │   → stop tasks → drain within grace    │
//!                 │   → flush + fsync WAL (one place)      │
//!                 └────────────────────────────────────────┘
//! ```
//!
//! No shard lock is ever held across an `.await`: every store call is
//! synchronous and short.

pub mod admin;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod security;
pub mod server;
pub mod service;
pub mod store;
pub mod units;
pub mod wal;

pub use config::NodeConfig;
pub use server::{Listeners, NodeError, run};
