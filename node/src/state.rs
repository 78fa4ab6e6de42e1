//! The node's shared state: one [`Shared`] behind an `Arc`, held by the gRPC
//! service, the admin endpoint and the background tasks (mini-redis's
//! `Db` handle). A leaf: it names what is shared and does nothing with it.
//!
//! No lock lives here: the store locks per shard inside its own calls, the
//! WAL owns its writer thread, and `serving` is a flag read with `Relaxed`
//! ordering (a request that races the flip is still drained).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::fence::Fence;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::wal::Wal;

/// State shared by the gRPC service, the admin endpoint and background tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The storage engine.
    pub(crate) store: Arc<Store>,
    /// Input limits.
    pub(crate) limits: Limits,
    /// Metrics registry and handles.
    pub(crate) metrics: Metrics,
    /// This node's name.
    pub(crate) node_id: String,
    /// False once shutdown began: new requests get `UNAVAILABLE`.
    pub(crate) serving: AtomicBool,
    /// The write-ahead log; `None` for a memory-only node.
    pub(crate) wal: Option<Arc<Wal>>,
    /// Whether the node may lack writes its peers hold (see `fence.rs`).
    pub(crate) fence: Arc<Fence>,
    /// Who read which key, for client-side caching (see `tracking.rs`).
    pub(crate) tracker: Arc<crate::tracking::Tracker>,
    /// The largest answer the node encodes (`--max-message-bytes`): a
    /// `Batch` or `Pipeline` answer is budgeted to it while it is built.
    pub(crate) max_message_bytes: usize,
}

/// What every request but metrics gets once the write-ahead log failed. The
/// store may hold writes the log never took (a write is applied, then
/// logged), which a restart would lose: serving reads of them, or counting
/// a resend as already applied, would acknowledge what is not durable. So
/// the node stops serving (HealthCheck says NOT_SERVING; the SDK fails over
/// and its prober marks the node down) until it is restarted from its log.
pub(crate) const WAL_FAILED: &str =
    "write-ahead log failed: this node serves nothing until it is restarted";

impl Shared {
    /// True once a WAL write or fsync failed (it never recovers: the node
    /// must be restarted from its log).
    pub(crate) fn wal_failed(&self) -> bool {
        self.wal.as_ref().is_some_and(|w| w.stats().has_failed())
    }
}
