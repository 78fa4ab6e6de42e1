//! The near cache ([`ClientBuilder::near_cache`](crate::ClientBuilder::near_cache)):
//! a bounded in-process copy of values this client read, kept correct by
//! the nodes' invalidations (the node side is `Invalidations` and
//! `GetRequest.tracking_id`, see `node/src/tracking.rs`).
//!
//! - **Filling.** A `One` read that missed here asks the node to track the
//!   key for this client's subscription on that node, and the answer is
//!   kept with the node, its subscription id and the topology it was read
//!   under. A key absent on the node is kept as absent too.
//! - **Invalidating.** Each node's stream (one task per node, see
//!   [`subscription`]) removes the keys it sends; this client's own writes
//!   remove theirs once answered (whatever the answer: a failed write may
//!   have applied).
//! - **The race of a read with its own invalidation.** The stream is not
//!   ordered with the read's answer: an invalidation can arrive first. Every
//!   invalidation bumps a sequence number and is remembered with it; a fill
//!   is refused when an invalidation of its key came since its read began
//!   (or when that is no longer known: the memory of recent invalidations
//!   is bounded, and dropping it refuses every older fill).
//! - **When the nodes cannot tell.** An entry is used only while the node
//!   it came from is readable (healthy, not fenced) in this client's view,
//!   still has the subscription it was read under (a stream that ended, a
//!   node that restarted, a `flush`: the subscription is gone, and with it
//!   every entry read through it), and while the topology is the one it was
//!   read under (a membership change moves keys to owners that never
//!   tracked them). TTLs run here as on the node.
//!
//! Reads at `Quorum`/`All` do not use it: they ask the replicas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use distcache_proto::v1 as pb;
use tokio::time::Instant;

use crate::node::Node;
use crate::replica::{Inner, View};
use crate::types::Entry;

/// Invalidations remembered for reads in flight; past it the memory is
/// dropped and every fill that began before is refused.
const RECENT: usize = 16 * 1024;

/// Bytes charged per entry beyond its key and value.
const ENTRY_OVERHEAD: u64 = 96;

/// One cached read.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// `None`: the key was absent on the node.
    value: Option<Bytes>,
    version: u64,
    expires_at: Option<Instant>,
    node: Arc<Node>,
    tracking_id: u64,
    /// Identity of the topology it was read under.
    topology: u64,
}

#[derive(Debug, Clone, Copy)]
struct Weigh;

impl quick_cache::Weighter<Bytes, Cached> for Weigh {
    fn weight(&self, key: &Bytes, val: &Cached) -> u64 {
        key.len() as u64 + val.value.as_ref().map_or(0, |v| v.len() as u64) + ENTRY_OVERHEAD
    }
}

#[derive(Debug, Default)]
struct Recent {
    /// Key → the sequence number of its latest invalidation.
    keys: HashMap<Bytes, u64>,
    /// Fills whose read began before this sequence number are refused
    /// (what happened before it is no longer remembered).
    forgotten_before: u64,
}

/// Counts for [`ClientStats`](crate::ClientStats).
#[derive(Debug, Default)]
pub(crate) struct NearStats {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) refused_fills: AtomicU64,
}

/// A client's near cache.
#[derive(Debug)]
pub(crate) struct NearCache {
    cache: quick_cache::sync::Cache<Bytes, Cached, Weigh>,
    /// Bumped by every invalidation and flush.
    seq: AtomicU64,
    /// Guards the check-and-insert of fills against invalidations.
    recent: Mutex<Recent>,
    pub(crate) stats: NearStats,
}

/// What a read that may fill the cache remembers from before it was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    seq: u64,
}

impl NearCache {
    /// A cache of at most `max_bytes` of keys and values (plus a fixed
    /// overhead per entry).
    pub(crate) fn new(max_bytes: u64) -> Self {
        let estimated_items = usize::try_from(max_bytes / 256)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            cache: quick_cache::sync::Cache::with_weighter(estimated_items, max_bytes, Weigh),
            seq: AtomicU64::new(1),
            recent: Mutex::default(),
            stats: NearStats::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached read of `key`, if still good under `topology`: `Some(None)`
    /// is a key known absent.
    pub(crate) fn hit(&self, key: &[u8], topology: u64) -> Option<Option<Entry>> {
        let c = self.cache.get(key)?;
        let good = c.topology == topology
            && c.node.is_readable()
            && c.node.tracking() == c.tracking_id
            && c.expires_at.is_none_or(|at| at > Instant::now());
        if !good {
            self.cache.remove(key);
            return None;
        }
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        let ttl = c
            .expires_at
            .map(|at| at.saturating_duration_since(Instant::now()));
        Some(c.value.map(|value| Entry {
            value,
            version: c.version,
            ttl,
        }))
    }

    /// Taken before a read that may fill the cache is sent.
    pub(crate) fn ticket(&self) -> Ticket {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        Ticket {
            seq: self.seq.load(Ordering::Acquire),
        }
    }

    /// Keeps the answer `r` of a read of `key` that `node` tracked under
    /// `tracking_id`, unless the key was invalidated since `ticket` (or the
    /// subscription is gone).
    pub(crate) fn fill(
        &self,
        key: Bytes,
        r: &pb::GetResponse,
        node: Arc<Node>,
        tracking_id: u64,
        topology: u64,
        ticket: Ticket,
    ) {
        let recent = self.recent();
        let invalidated = ticket.seq < recent.forgotten_before
            || recent.keys.get(&key).is_some_and(|&at| at > ticket.seq);
        if invalidated || tracking_id == 0 || node.tracking() != tracking_id {
            self.stats.refused_fills.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let expires_at =
            (r.found && r.ttl_ms > 0).then(|| Instant::now() + Duration::from_millis(r.ttl_ms));
        let cached = Cached {
            value: r.found.then(|| r.value.clone()),
            version: r.version,
            expires_at,
            node,
            tracking_id,
            topology,
        };
        // Under the lock: an invalidation cannot slip in between the check
        // and the insert.
        self.cache.insert(key, cached);
        drop(recent);
    }

    /// `key` may have changed.
    pub(crate) fn invalidate(&self, key: &[u8]) {
        let mut recent = self.recent();
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        if recent.keys.len() >= RECENT {
            recent.keys.clear();
            recent.forgotten_before = seq;
        }
        recent.keys.insert(Bytes::copy_from_slice(key), seq);
        self.cache.remove(key);
        drop(recent);
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Entries held now.
    pub(crate) fn len(&self) -> usize {
        self.cache.len()
    }
}

/// Keeps `node`'s `Invalidations` stream open for as long as the client
/// exists and the node is in its membership: sets the node's subscription
/// id from the stream's first message, invalidates what the stream sends,
/// and on its end (a `flush`, an error, the node restarting) drops the id,
/// which voids every entry read through it, then subscribes again with
/// backoff.
pub(crate) async fn subscription(weak: Weak<Inner>, node: Arc<Node>) {
    let mut pause = Duration::from_millis(50);
    // Whether the client still exists and lists the node.
    let wanted = || {
        weak.upgrade().is_some_and(|inner| {
            inner
                .members
                .load()
                .nodes
                .iter()
                .any(|n| Arc::ptr_eq(n, &node))
        })
    };
    loop {
        if !wanted() {
            break;
        }
        if let Ok(mut stream) = node.invalidations().await {
            if let Ok(Some(hello)) = stream.message().await
                && hello.subscriber_id != 0
            {
                node.set_tracking(hello.subscriber_id);
                pause = Duration::from_millis(50);
                loop {
                    // A quiet stream is looked at every second: a node that
                    // left the membership is not kept connected by it.
                    let m = match tokio::time::timeout(Duration::from_secs(1), stream.message())
                        .await
                    {
                        Err(_) if wanted() => continue,
                        Ok(Ok(Some(m))) => m,
                        _ => break,
                    };
                    let Some(inner) = weak.upgrade() else { break };
                    let Some(near) = &inner.near else { break };
                    for k in &m.keys {
                        near.invalidate(k);
                    }
                    if m.flush {
                        break;
                    }
                }
            }
            node.set_tracking(0);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
    node.set_tracking(0);
    node.subscribed.store(false, Ordering::Release);
}

impl View {
    /// A `One` read through the near cache: its copy while good, else a
    /// read the answering node tracks, kept unless the key changed meanwhile.
    pub(crate) async fn read_near(
        &self,
        near: &NearCache,
        key: &Bytes,
        deadline: Instant,
    ) -> crate::Result<Option<Entry>> {
        let topology = self.topo.generation;
        if let Some(hit) = near.hit(key, topology) {
            return Ok(hit);
        }
        let ticket = near.ticket();
        let (r, idx, tracking_id) = self.read_one_tracked(key, deadline, true).await?;
        if tracking_id != 0 {
            let node = self.topo.nodes[idx].clone();
            near.fill(key.clone(), &r, node, tracking_id, topology, ticket);
        }
        Ok(Entry::from_pb(r))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::ClientConfig;

    fn node() -> Arc<Node> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let config = ClientConfig {
            coalesce: crate::config::CoalesceConfig {
                max_batch: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let n = Arc::new(Node::new("n", "http://127.0.0.1:1", &config).unwrap());
        n.set_tracking(7);
        n
    }

    fn found(v: &str) -> pb::GetResponse {
        pb::GetResponse {
            found: true,
            value: Bytes::copy_from_slice(v.as_bytes()),
            version: 1,
            ..Default::default()
        }
    }

    #[test]
    fn an_invalidation_that_overtakes_its_read_keeps_the_answer_out() {
        let near = NearCache::new(1 << 20);
        let n = node();
        let k = Bytes::from_static(b"k");
        // Read begins, the key changes, the (old) answer arrives: refused.
        let t = near.ticket();
        near.invalidate(b"k");
        near.fill(k.clone(), &found("old"), n.clone(), 7, 1, t);
        assert!(near.hit(b"k", 1).is_none());
        assert_eq!(near.stats.refused_fills.load(Ordering::Relaxed), 1);
        // Another key's invalidation does not refuse it.
        let t = near.ticket();
        near.invalidate(b"other");
        near.fill(k.clone(), &found("new"), n.clone(), 7, 1, t);
        let hit = near.hit(b"k", 1).expect("cached").expect("present");
        assert_eq!(&hit.value[..], b"new");
        // And invalidation removes it.
        near.invalidate(b"k");
        assert!(near.hit(b"k", 1).is_none());
    }

    #[test]
    fn entries_need_their_subscription_topology_and_a_readable_node() {
        let near = NearCache::new(1 << 20);
        let n = node();
        let k = Bytes::from_static(b"k");
        let fill = |near: &NearCache| {
            let t = near.ticket();
            near.fill(k.clone(), &found("v"), n.clone(), 7, 1, t);
        };
        fill(&near);
        assert!(near.hit(b"k", 2).is_none(), "another topology");
        fill(&near);
        n.set_tracking(8);
        assert!(near.hit(b"k", 1).is_none(), "another subscription");
        n.set_tracking(7);
        fill(&near);
        n.mark_unhealthy();
        assert!(near.hit(b"k", 1).is_none(), "an unhealthy node");
        // Forgetting old invalidations refuses fills that began before.
        let t = near.ticket();
        for i in 0..=RECENT {
            near.invalidate(format!("k{i}").as_bytes());
        }
        near.fill(Bytes::from_static(b"x"), &found("v"), n.clone(), 7, 1, t);
        assert_eq!(near.len(), 0);
    }
}
