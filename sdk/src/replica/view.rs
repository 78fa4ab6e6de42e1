//! The state every replicated operation runs on: what a client shares
//! between its clones and background tasks ([`Inner`]), the one topology
//! snapshot an operation started with ([`View`]), and the two questions
//! about a key's replicas every operation asks first.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use distcache_proto::v1::operation_result::Result as Out;
use smallvec::SmallVec;
use tokio::time::Instant;
use tonic::Status;

use crate::config::ClientConfig;
use crate::error::Error;
use crate::hlc::Hlc;
use crate::retry::Retrier;
use crate::topology::{Membership, Topology};

/// Counters of the replication layer.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) attempts: AtomicU64,
    pub(crate) failovers: AtomicU64,
    pub(crate) read_repairs: AtomicU64,
    /// Rounds of health checks done by the prober.
    pub(crate) probe_rounds: AtomicU64,
    /// Catch-ups finished (a fenced node lifted).
    pub(crate) catch_ups: AtomicU64,
    /// Entries copied by catch-ups.
    pub(crate) catch_up_entries: AtomicU64,
    /// Catch-ups that stopped short (the node stays fenced).
    pub(crate) catch_up_failures: AtomicU64,
    /// Moves finished, entries they copied, and entries old owners dropped.
    pub(crate) moves: AtomicU64,
    pub(crate) rebalance_entries: AtomicU64,
    pub(crate) rebalance_forgotten: AtomicU64,
    /// `get_or_load` values that could not be cached.
    pub(crate) load_cache_failures: AtomicU64,
}

/// Everything a client shares between its clones and background tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) members: Membership,
    pub(crate) clock: Hlc,
    /// Random, per client: names this client's copy claims (`claim.rs`).
    pub(crate) client_id: u64,
    pub(crate) retry: Retrier,
    pub(crate) stats: Stats,
    pub(crate) prober: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// `get_or_load`'s loads in flight (`load.rs`).
    pub(crate) flights: crate::load::Flights,
    /// The near cache, when configured (`near.rs`), and its subscription
    /// tasks (aborted with the client).
    pub(crate) near: Option<Arc<crate::near::NearCache>>,
    pub(crate) near_tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.near_tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        if let Ok(mut p) = self.prober.lock()
            && let Some(h) = p.take()
        {
            h.abort();
        }
    }
}

impl Inner {
    /// The view an operation starting now runs on.
    pub(crate) fn view(self: &Arc<Self>) -> View {
        View {
            inner: self.clone(),
            topo: self.members.load(),
        }
    }
}

/// The shared state and one topology snapshot: what an operation, and every
/// task it spawns, runs on. Cheap to clone (two `Arc`s).
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) inner: Arc<Inner>,
    pub(crate) topo: Arc<Topology>,
}

impl std::ops::Deref for View {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

pub(crate) fn mismatched() -> Error {
    Error::Rpc(Box::new(Status::internal(
        "node answered with the wrong response type",
    )))
}

/// A list of node indexes: a key's replicas or the ones an operation goes
/// to. Inline up to four (no allocation per operation).
pub(crate) type Nodes = SmallVec<[usize; 4]>;

/// The answers a fan-out gathered, by node index. Inline for one (a write
/// at consistency One, the common case, allocates nothing for it).
pub(crate) type Acks = SmallVec<[(usize, Out); 1]>;

impl View {
    /// The key's preference list (N distinct nodes).
    pub(crate) fn replicas(&self, key: &[u8]) -> Nodes {
        let mut out = Nodes::new();
        self.topo.ring.fill(key, self.config.replicas, &mut out);
        out
    }

    /// The nodes a write of the key goes to: its replicas; during a move,
    /// its owners in the ring the move started from first (the first
    /// readable one is the replica a write waits for, and a client that
    /// has not seen the change reads there), then its replicas, then its
    /// owners in the other rings being left (see `rebalance.rs`).
    pub(crate) fn write_set(&self, key: &[u8]) -> Nodes {
        self.write_set_of(key, self.replicas(key))
    }

    /// [`View::write_set`] from the key's `replicas`, already looked up
    /// (outside a move, they are the write set: no second ring lookup).
    pub(crate) fn write_set_of(&self, key: &[u8], replicas: Nodes) -> Nodes {
        let Some(m) = &self.topo.moving else {
            return replicas;
        };
        let n = self.config.replicas;
        let mut out = m.base_owners(key, n);
        for i in replicas {
            if !out.contains(&i) {
                out.push(i);
            }
        }
        m.old_owners(key, n, &mut out);
        out
    }

    /// The replicas a read goes to and a primary-run operation (CAS,
    /// counters, conditional sets) runs on, the first healthy one deciding:
    /// the key's replicas; during a move, until its copy is done, its owners
    /// in the ring the move started from. Those hold every acknowledged
    /// write: a client that has not seen the change writes there, and one
    /// that has writes there too. So every client reads and decides on the
    /// same node whatever change it has seen (a change during a move, a
    /// flap, keeps the ring it started from).
    pub(crate) fn deciders(&self, key: &[u8]) -> Nodes {
        match &self.topo.moving {
            Some(m) if !m.draining() => m.base_owners(key, self.config.replicas),
            _ => self.replicas(key),
        }
    }

    /// Replicas worth sending a write to: the healthy ones, readable ones
    /// first (so the first target is the replica `One` reads from, and a
    /// client reads its own writes), then fenced ones (they take writes
    /// while catching up), or, when fewer than `need` are healthy, every
    /// replica (health may be stale).
    pub(crate) fn targets(&self, replicas: &[usize], need: usize) -> Nodes {
        let node = |i: usize| &self.topo.nodes[i];
        let mut out: Nodes = replicas
            .iter()
            .copied()
            .filter(|&i| node(i).is_readable())
            .collect();
        out.extend(
            replicas
                .iter()
                .copied()
                .filter(|&i| node(i).is_healthy() && node(i).is_fenced()),
        );
        if out.len() < need.max(1) {
            for &i in replicas {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        out
    }

    /// Replicas a read or a conditional operation may go to: healthy and
    /// not fenced, in ring order. Never a fenced or unhealthy one, even
    /// when too few are left: its answer may be stale (a value since
    /// overwritten, a deleted key, a counter behind), and an error is
    /// better than a stale answer.
    pub(crate) fn readable(&self, replicas: &[usize]) -> Nodes {
        // One copy has nothing to be stale against (its writes failed while
        // it was down): try it even when held for down, health may be stale.
        if let [only] = replicas
            && !self.topo.nodes[*only].is_fenced()
        {
            return smallvec::smallvec![*only];
        }
        replicas
            .iter()
            .copied()
            .filter(|&i| self.topo.nodes[i].is_readable())
            .collect()
    }

    /// [`View::readable`] less `exclude`, once at least `need` replicas
    /// are, waiting (to `deadline` at the latest) while fenced replicas
    /// that are catching up could make up the shortfall: a node that just
    /// started, or returned, serves again within its catch-up, and an
    /// operation that waits for it has applied nothing yet. Returns what is
    /// readable then.
    pub(crate) async fn await_readable(
        &self,
        replicas: &[usize],
        need: usize,
        exclude: &[usize],
        deadline: Instant,
    ) -> Nodes {
        let mut pause = Duration::from_millis(2);
        loop {
            let mut ready = self.readable(replicas);
            ready.retain(|i| !exclude.contains(i));
            let coming = replicas
                .iter()
                .filter(|&&i| {
                    let n = &self.topo.nodes[i];
                    n.is_healthy() && n.is_fenced()
                })
                .count();
            if ready.len() >= need.max(1) || ready.len() + coming < need.max(1) {
                return ready;
            }
            let now = Instant::now();
            if now + pause >= deadline {
                return ready;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
