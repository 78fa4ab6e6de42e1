//! The SDK's plain data types: what a read returns ([`Entry`]), when a
//! write applies ([`Condition`]), what a conditional write did
//! ([`WriteOutcome`]), a client's counters ([`ClientStats`]), and the bound
//! on a client's node list ([`MAX_NODES`]). A leaf:
//! every operation file uses them, they use none of those files.

use std::time::Duration;

use bytes::Bytes;
use distcache_proto::v1 as pb;

/// Most distinct nodes one client may have (a ring of 150 virtual nodes
/// each); a longer list is refused with
/// [`ConfigError::TooManyNodes`](crate::ConfigError::TooManyNodes).
pub const MAX_NODES: usize = 1024;

/// A live entry as read from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// Its version (an HLC value; see the crate docs).
    pub version: u64,
    /// Remaining time to live; `None` when the entry does not expire.
    pub ttl: Option<Duration>,
}

impl Entry {
    /// The entry a node's `Get` answer holds; `None` for a miss.
    pub(crate) fn from_pb(r: pb::GetResponse) -> Option<Self> {
        r.found.then(|| Entry {
            value: r.value,
            version: r.version,
            ttl: (r.ttl_ms > 0).then(|| Duration::from_millis(r.ttl_ms)),
        })
    }
}

/// When a [`Client::set_with`](crate::Client::set_with) writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Condition {
    /// Whatever the key holds.
    #[default]
    Always,
    /// Only if the key holds no live value (Redis `NX`).
    IfAbsent,
    /// Only if the key holds a live value (Redis `XX`).
    IfPresent,
}

/// The outcome of a write that may be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Whether the write happened.
    pub applied: bool,
    /// The key's version afterwards (the new version when applied; the
    /// version that prevailed otherwise, 0 when the key holds nothing).
    pub version: u64,
}

/// Counters of one client (all clones share them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// RPC attempts sent to nodes.
    pub attempts: u64,
    /// Reads the near cache answered ([`ClientBuilder::near_cache`](crate::ClientBuilder::near_cache)).
    pub near_hits: u64,
    /// Reads that went to a node although the near cache is on.
    pub near_misses: u64,
    /// Keys the near cache dropped: sent by a node, or written by this client.
    pub near_invalidations: u64,
    /// Answers not kept: their key changed while the read was out, or the
    /// node's subscription ended.
    pub near_refused_fills: u64,
    /// Entries in the near cache now.
    pub near_entries: u64,
    /// Times a request moved on to the next replica.
    pub failovers: u64,
    /// Retry rounds after backoff.
    pub retries: u64,
    /// Retries refused by the retry budget.
    pub budget_exhausted: u64,
    /// Stale replicas repaired by reads.
    pub read_repairs: u64,
    /// Membership changes applied by [`Client::set_nodes`](crate::Client::set_nodes).
    pub membership_changes: u64,
    /// Catch-ups finished: a fenced node (restarted, stalled, lost for a
    /// while, newly joined) got what it missed and serves reads again.
    pub catch_ups: u64,
    /// Entries copied to fenced nodes by catch-ups.
    pub catch_up_entries: u64,
    /// Catch-ups that stopped short (a peer could not be scanned): the
    /// node stays fenced and the next health probe tries again.
    pub catch_up_failures: u64,
    /// Nodes fenced in this client's view now (no reads go to them).
    pub fenced_nodes: u64,
    /// Membership changes whose move finished (the new ring serves alone).
    pub moves: u64,
    /// Entries copied to new owners by moves (an entry copied to two
    /// nodes counts twice).
    pub rebalance_entries: u64,
    /// Entries old owners dropped once a move finished (what they no
    /// longer own), as the nodes counted them.
    pub rebalance_forgotten: u64,
    /// Values [`Client::get_or_load`](crate::Client::get_or_load) loaded
    /// but could not cache (returned to the callers uncached).
    pub load_cache_failures: u64,
}

/// A membership change being carried out (see
/// [`Client::moving`](crate::Client::moving)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MoveStatus {
    /// What it is doing now.
    pub phase: crate::topology::MovePhase,
    /// The nodes of the rings being left (a change during a move keeps
    /// the rings the earlier one was leaving).
    pub from: Vec<String>,
    /// The nodes of the new ring.
    pub to: Vec<String>,
    /// Time since the change.
    pub elapsed: std::time::Duration,
    /// Unix milliseconds of the change.
    pub started_unix_ms: u64,
    /// Old owners scanned in the current pass, of [`sources`](Self::sources).
    pub sources_done: u64,
    /// Old owners the current pass scans.
    pub sources: u64,
    /// Entries scanned in every pass so far.
    pub scanned: u64,
    /// Entries copied to a new owner in every pass so far.
    pub copied: u64,
    /// Key and value bytes copied in every pass so far.
    pub copied_bytes: u64,
    /// Copy passes started (more than one when one fell short).
    pub passes: u64,
    /// A rough estimate of the time left (the rest of the copy at the pace
    /// of the old owners scanned so far, then the drain); `None` while
    /// draining (at most a grace left) or before the first old owner of a
    /// pass was scanned.
    pub eta: Option<std::time::Duration>,
}
