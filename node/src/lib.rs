//! A distcache storage node: a complete single-node cache served over gRPC.
//!
//! The store ([`store`]) is a synchronous sharded LRU with TTLs, versions,
//! tombstones, compare-and-swap and counters; `service.rs` adapts it to
//! `distcache.v1.CacheService`; `admin.rs` serves `/metrics`, `/metrics.json`
//! and the probes `/livez` and `/readyz` (from before recovery on); [`run`] ties them together on listeners the caller bound,
//! so tests start nodes in-process on `127.0.0.1:0`.
//!
//! This crate does not distribute keys: the SDK (`distcache`) places keys on
//! nodes and replicates them. With `--data-dir`, [`wal`] makes writes durable
//! (write-ahead log with group commit, snapshots, crash recovery); without it
//! the node is memory-only. TLS, bearer tokens with roles and rate limits are
//! `distcache_serve::security`, shared with the proxy.
//!
//! # Layout
//!
//! Top-down; a module uses only those below it. Public: what the proxy's
//! `--dev` and the tests need ([`run`], [`Listeners`], [`NodeConfig`],
//! [`cli`], [`store`], [`wal`], [`clock`]).
//!
//! - `server.rs`: [`run`] = assemble (store, metrics, security, WAL) + serve
//!   (tasks, gRPC, drain, WAL close).
//! - `service.rs`: `CacheService` over the store: limits, store call, WAL
//!   records, metrics, `to_status`.
//! - `admin.rs`: the admin routes over `distcache_serve::admin`.
//! - `catchup.rs`: `Scan` and `Fence`, a returning replica's catch-up.
//! - `fence.rs`: the fence (start-up, stalls, clients) and its metrics.
//! - `sweeper.rs`: the background task reclaiming expired entries.
//! - `state.rs`: `Shared`, the handle every part holds.
//! - `metrics.rs`: the registry, operation counts, latency, store figures.
//! - `spans.rs`: the tracing span of each RPC and `Pipeline` message, with
//!   the caller's W3C trace context.
//! - [`cli`] → [`config`]: flags over the TOML file; `config.rs` composes
//!   the sections and validates them once.
//! - [`wal`]: durability (its `[wal]`/`[snapshot]` sections in `wal/config.rs`).
//! - `limits.rs`: input limits and their `[limits]` section.
//! - [`store`]: the pure core (its `[store]` section in `store/config.rs`).
//! - [`clock`]: wall-clock time behind a trait.
//!
//! ```text
//!                 ┌──────────── tokio runtime ─────────────┐
//!   gRPC :7001 ──►│ tonic: health, reflection, CacheNode ──┼─► Store (256 × Mutex<Shard>)
//!   HTTP :9101 ──►│ admin: /metrics /livez /readyz (first) │      ▲
//!                 │ sweeper task (every 100 ms) ───────────┼──────┘ reclaims expired entries
//!                 │ writes ─► Wal::append ─► channel ──────┼─► WAL writer thread (group
//!                 │ snapshotter task (interval/growth) ────┼─►  commit, fsync, rotation)
//!                 │ shutdown: unready, NOT_SERVING, serve  │
//!                 │   for --drain-delay → serving=false    │
//!                 │   → stop tasks → drain within grace    │
//!                 │   → flush + fsync WAL (one place)      │
//!                 └────────────────────────────────────────┘
//! ```
//!
//! No shard lock is ever held across an `.await`: every store call is
//! synchronous and short.

mod admin;
mod catchup;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
mod fence;
mod limits;
mod metrics;
mod server;
mod service;
mod spans;
mod state;
pub mod store;
mod sweeper;
mod tracking;
pub mod wal;

pub use config::NodeConfig;
pub use server::{Listeners, NodeError, run, run_reloading};
