//! Replication: how one logical operation becomes RPCs on the replicas of
//! its key. One file per concern, drawn in the order an operation meets
//! them:
//!
//! ```text
//! Client op ─► View (view.rs: shared state + one topology snapshot;
//!   │                 the key's replicas, the healthy targets)
//!   ├─ read  (read.rs)  One: first healthy replica, failover on transient
//!   │                   errors, retries across rounds
//!   │                   Quorum/All: fan-out ─► newest state ─► repair stale
//!   ├─ write (write.rs) versioned write to every target, W acks + the first
//!   │                   healthy replica; CAS/counters/conditional sets on
//!   │                   the primary, then propagated with a versioned set
//!   ▼
//! fan-out (fanout.rs)  first target inline, others in tasks that outlive
//!   │                  the caller; `gather` returns after W answers
//!   ▼
//! attempt (attempt.rs) one RPC by the attempt deadline, counted, reported
//!                      to the node's health; per-replica retries
//! ```
//!
//! Every operation runs on a [`View`]: the shared state plus the one
//! [`crate::topology::Topology`] snapshot loaded when the operation started,
//! so node indexes mean the same thing in every task, retry and repair it
//! spawns. What fails over and what retries is decided by
//! [`crate::error::classify`] alone.
//!
//! A replica that may lack writes (restarted, stalled, lost for a while,
//! newly joined) is fenced: write target, never read; `catchup.rs` copies
//! what it missed from its peers and lifts the fence. A membership change
//! is a move (`rebalance.rs`): old and new owners take the writes and
//! answer the reads of the keys that moved until they are copied.
//!
//! Not here: the wire (`conn.rs`), coalescing (`coalesce.rs`), deadlines
//! (`deadline.rs`), multi-key operations (`multi.rs`).

mod attempt;
mod catchup;
mod claim;
mod fanout;
mod read;
mod rebalance;
mod view;
mod write;

pub(crate) use view::{Inner, Stats, View, mismatched};
