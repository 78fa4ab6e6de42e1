//! Membership: the ring and the nodes a client routes to, replaced whole
//! when the node list changes (see [`crate::Client::set_nodes`]).
//!
//! Every operation loads the current [`Topology`] once, when it starts, and
//! uses only that snapshot for everything it does (preference lists,
//! fan-out tasks, retries, read repair), so node indexes stay consistent and
//! an operation that started before a change finishes on the old membership.
//! Nodes in both the old and the new list keep their connections, coalescer
//! and health; a removed node is dropped (channels closed, coalescer
//! stopped) when the last operation holding an old snapshot ends.
//!
//! A change starts a *move* (see `replica/rebalance.rs`): until the keys
//! whose owners changed have been copied to their new owners and a grace
//! has passed, the topology keeps the rings it replaces ([`Move::from`])
//! and the nodes only they name (after the ring's own, so ring indexes are
//! node indexes): writes go to the old and the new owners of a key, and
//! reads and primary-run operations go to its owners in the ring the move
//! started from until the copy is done. A change during a move keeps every
//! ring still being left, so an add-then-remove flip moves nothing back
//! from a node that missed writes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{ClientConfig, parse_node};
use crate::error::ConfigError;
use crate::node::Node;
use crate::ring::Ring;
use crate::types::MAX_NODES;

/// What a call to [`crate::Client::set_nodes`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipChange {
    /// Nodes that joined, by ring name (the normalised URL
    /// `http://host:port`, or the id of an `ID=URL` entry), in the order
    /// given.
    pub added: Vec<String>,
    /// Nodes that left, in the order the client knew them.
    pub removed: Vec<String>,
    /// Nodes named by an id (`ID=URL`) now listed at another URL, as
    /// `ID=URL`: reconnected there, with their place on the ring kept.
    pub readdressed: Vec<String>,
}

impl MembershipChange {
    /// True when the new list held the same nodes at the same addresses
    /// as the old one.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.readdressed.is_empty()
    }

    /// True when the ring changed (nodes joined or left): a move started.
    pub fn moves_data(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }
}

/// One membership: the ring, and the nodes in the ring's index order.
#[derive(Debug)]
pub(crate) struct Topology {
    pub(crate) ring: Arc<Ring>,
    /// `nodes[i]` is `ring.node(i)`; during a move, the nodes only the
    /// rings being left name follow.
    pub(crate) nodes: Vec<Arc<Node>>,
    /// The move this membership is in, if any.
    pub(crate) moving: Option<Arc<Move>>,
    /// Unique per topology made in this process: what a near-cache entry
    /// was read under (see `near.rs`).
    pub(crate) generation: u64,
}

/// A new [`Topology::generation`].
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A ring being left, and the node index of each of its ring indexes.
#[derive(Debug)]
pub(crate) struct Leaving {
    pub(crate) ring: Arc<Ring>,
    pub(crate) index: Vec<usize>,
}

/// Where a move is (see `replica/rebalance.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MovePhase {
    /// Waiting for every other client to see the change (the grace): until
    /// then some still write only to the old owners.
    Grace = 0,
    /// Copying the moved keys from their old owners to their new ones.
    Copying = 1,
    /// A copy pass fell short (an old owner could not be read or a new one
    /// written); another pass starts after a pause.
    Retrying = 2,
    /// The copy is done: reads and primary-run operations use the new
    /// ring, and writes still reach the old owners too for another grace,
    /// for the clients still copying (they read there).
    Draining = 3,
}

/// A membership change being carried out: the rings being left, and the
/// progress of the copy.
#[derive(Debug)]
pub(crate) struct Move {
    /// The rings being left, oldest first, each node set once: every one
    /// still takes writes.
    pub(crate) from: Vec<Leaving>,
    /// The one of them whose owners hold everything (the ring the move
    /// started from; see `replica/rebalance.rs`): reads and decisions go
    /// there until the copy is done, and the copy reads from it.
    base: usize,
    /// The node URLs of every ring being left, for `/ring`.
    pub(crate) from_nodes: Vec<String>,
    pub(crate) started: Instant,
    pub(crate) started_unix_ms: u64,
    pub(crate) phase: AtomicU8,
    /// Sources (old owners) scanned in the current pass, and in all.
    pub(crate) sources_done: AtomicU64,
    pub(crate) sources: AtomicU64,
    /// Entries scanned, and copied (entries × new owners), in every pass.
    pub(crate) scanned: AtomicU64,
    pub(crate) copied: AtomicU64,
    pub(crate) copied_bytes: AtomicU64,
    pub(crate) passes: AtomicU64,
    /// Milliseconds after `started` at which the current pass began.
    pub(crate) pass_started_ms: AtomicU64,
}

impl Move {
    fn new(from: Vec<Leaving>, base: usize) -> Self {
        let mut from_nodes: Vec<String> = Vec::new();
        for l in &from {
            for n in l.ring.nodes() {
                if !from_nodes.contains(n) {
                    from_nodes.push(n.clone());
                }
            }
        }
        Self {
            base: base.min(from.len().saturating_sub(1)),
            from,
            from_nodes,
            started: Instant::now(),
            started_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            phase: AtomicU8::new(MovePhase::Grace as u8),
            sources_done: AtomicU64::new(0),
            sources: AtomicU64::new(0),
            scanned: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            copied_bytes: AtomicU64::new(0),
            passes: AtomicU64::new(0),
            pass_started_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn phase(&self) -> MovePhase {
        match self.phase.load(Ordering::Relaxed) {
            0 => MovePhase::Grace,
            1 => MovePhase::Copying,
            2 => MovePhase::Retrying,
            _ => MovePhase::Draining,
        }
    }

    /// The ring whose owners hold everything (see [`Move::base`]'s field).
    pub(crate) fn base(&self) -> &Leaving {
        &self.from[self.base]
    }

    /// How long the move should still take: the rest of the current
    /// pass at the pace of its finished sources, then the drain's grace;
    /// `None` before a source of the current pass finished.
    pub(crate) fn eta(&self, grace: std::time::Duration) -> Option<std::time::Duration> {
        let elapsed = self.started.elapsed();
        match self.phase() {
            MovePhase::Grace => Some(grace.saturating_sub(elapsed) + grace),
            MovePhase::Draining => None,
            MovePhase::Copying | MovePhase::Retrying => {
                let (done, all) = (
                    self.sources_done.load(Ordering::Relaxed),
                    self.sources.load(Ordering::Relaxed),
                );
                if done == 0 {
                    return None;
                }
                let began =
                    std::time::Duration::from_millis(self.pass_started_ms.load(Ordering::Relaxed));
                let per = elapsed.saturating_sub(began) / u32::try_from(done).unwrap_or(u32::MAX);
                Some(per * u32::try_from(all.saturating_sub(done)).unwrap_or(u32::MAX) + grace)
            }
        }
    }

    /// True once the copy is done (reads use the new ring).
    pub(crate) fn draining(&self) -> bool {
        self.phase() == MovePhase::Draining
    }

    pub(crate) fn set_phase(&self, p: MovePhase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    /// The key's owners in the oldest ring being left (the one whose
    /// owners hold everything: see `replica/rebalance.rs`), node indexes
    /// in its preference order.
    pub(crate) fn base_owners(&self, key: &[u8], n: usize) -> smallvec::SmallVec<[usize; 4]> {
        self.base_owners_at(crate::ring::key_hash(key), n)
    }

    /// [`Move::base_owners`] of the keys whose ring hash is `hash`.
    pub(crate) fn base_owners_at(&self, hash: u64, n: usize) -> smallvec::SmallVec<[usize; 4]> {
        let mut out = smallvec::SmallVec::new();
        let base = self.base();
        base.ring.fill_at(hash, n, &mut out);
        for i in out.iter_mut() {
            *i = base.index[*i];
        }
        out
    }

    /// The arcs of the ring whose owners a move to `new` changes, by the
    /// node that copies them (the first of their old owners `healthy`
    /// accepts): what each old owner's scan is limited to, so that only the
    /// moved keys cross the network. Between two consecutive points of the
    /// old and the new ring together, both rings name the same owners for
    /// every hash. Also counts the arcs no old owner can copy (all down).
    pub(crate) fn moved_arcs(
        &self,
        new: &Ring,
        n: usize,
        healthy: impl Fn(usize) -> bool,
    ) -> (HashMap<usize, Vec<distcache_proto::v1::HashRange>>, usize) {
        let mut out: HashMap<usize, Vec<distcache_proto::v1::HashRange>> = HashMap::new();
        let mut uncovered = 0;
        let base = self.base();
        let mut points: Vec<u64> = base
            .ring
            .points()
            .iter()
            .chain(new.points())
            .copied()
            .collect();
        points.sort_unstable();
        points.dedup();
        let Some(&last) = points.last() else {
            return (out, 0);
        };
        let mut owners: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
        for (i, &end) in points.iter().enumerate() {
            let start = if i == 0 { last } else { points[i - 1] };
            let old = self.base_owners_at(end, n);
            owners.clear();
            new.fill_at(end, n, &mut owners);
            if owners.iter().all(|i| old.contains(i)) {
                continue;
            }
            let Some(&src) = old.iter().find(|&&i| healthy(i)) else {
                uncovered += 1;
                continue;
            };
            let arcs = out.entry(src).or_default();
            match arcs.last_mut() {
                Some(r) if r.end == start => r.end = end,
                _ => arcs.push(distcache_proto::v1::HashRange { start, end }),
            }
        }
        (out, uncovered)
    }

    /// Appends the key's owners in every ring being left (node indexes,
    /// each once) to `out`.
    pub(crate) fn old_owners<V>(&self, key: &[u8], n: usize, out: &mut V)
    where
        V: AsRef<[usize]> + Extend<usize>,
    {
        let mut ring_idx: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
        for l in &self.from {
            ring_idx.clear();
            l.ring.fill(key, n, &mut ring_idx);
            for &i in &ring_idx {
                let idx = l.index[i];
                if !out.as_ref().contains(&idx) {
                    out.extend([idx]);
                }
            }
        }
    }
}

impl Topology {
    /// Builds the topology of `members` (ring name, URL), reusing the nodes
    /// of `old` still listed at the same URL; with an `old` one, a move
    /// from it (and from every ring it was still leaving).
    pub(crate) fn build(
        members: &[(String, String)],
        config: &ClientConfig,
        old: Option<&Topology>,
    ) -> Result<Self, ConfigError> {
        let ring = Ring::new(members.iter().map(|(name, _)| name.clone()), config.vnodes);
        let url_of: HashMap<&str, &str> = members
            .iter()
            .map(|(n, u)| (n.as_str(), u.as_str()))
            .collect();
        let keep: HashMap<&str, &Arc<Node>> = old
            .map(|o| o.nodes.iter().map(|n| (n.name.as_str(), n)).collect())
            .unwrap_or_default();
        let get = |name: &str, url: &str| match keep.get(name) {
            Some(&node) if node.url == url => Ok(node.clone()),
            // The first membership is trusted as it is (the client's first
            // probe round settles it before `build` returns).
            _ if old.is_some() => Node::new(name, url, config).map(|n| Arc::new(n.joined())),
            _ => Node::new(name, url, config).map(Arc::new),
        };
        // Built from the ring's list so node indexes and ring indexes agree.
        let mut nodes = ring
            .nodes()
            .iter()
            .map(|name| get(name, url_of.get(name.as_str()).copied().unwrap_or(name)))
            .collect::<Result<Vec<_>, _>>()?;
        let moving = match old {
            None => None,
            Some(old) => {
                // A change during a move keeps every ring still written to.
                // The base stays the earlier move's, unless that one had
                // copied everything (draining): then its new ring holds
                // everything, and other clients may already read only it.
                let mut rings: Vec<Arc<Ring>> = old
                    .moving
                    .as_ref()
                    .map(|m| m.from.iter().map(|l| l.ring.clone()).collect())
                    .unwrap_or_default();
                let same = |a: &Ring, b: &Ring| {
                    let mut x = a.nodes().to_vec();
                    let mut y = b.nodes().to_vec();
                    x.sort();
                    y.sort();
                    x == y
                };
                let at = match rings.iter().position(|r| same(r, &old.ring)) {
                    Some(at) => at,
                    None => {
                        rings.push(old.ring.clone());
                        rings.len() - 1
                    }
                };
                let base = match &old.moving {
                    Some(m) if !m.draining() => m.base,
                    _ => at,
                };
                let mut from = Vec::with_capacity(rings.len());
                for r in rings {
                    let mut index = Vec::with_capacity(r.len());
                    for name in r.nodes() {
                        let at = match nodes.iter().position(|n| &n.name == name) {
                            Some(at) => at,
                            None => {
                                // Only the old rings name it: its node as it was.
                                let node = match old.nodes.iter().find(|n| &n.name == name) {
                                    Some(n) => n.clone(),
                                    None => get(name, name)?,
                                };
                                nodes.push(node);
                                nodes.len() - 1
                            }
                        };
                        index.push(at);
                    }
                    from.push(Leaving { ring: r, index });
                }
                Some(Arc::new(Move::new(from, base)))
            }
        };
        Ok(Self {
            ring: Arc::new(ring),
            nodes,
            moving,
            generation: next_generation(),
        })
    }

    /// This topology with new addresses for some of its nodes (same ring,
    /// same move): a node that came back elsewhere under its id. Its node
    /// is new (connections to the new address), fenced until probed.
    fn readdressed(
        &self,
        moved: &HashMap<&str, &str>,
        config: &ClientConfig,
    ) -> Result<Self, ConfigError> {
        let nodes = self
            .nodes
            .iter()
            .map(|n| match moved.get(n.name.as_str()) {
                // It may have missed writes while it moved: owed a fence
                // from its last answer at the old address.
                Some(url) => Node::new(&n.name, url, config).map(|new| {
                    let new = new.joined();
                    new.owe_fence(n.last_ok());
                    Arc::new(new)
                }),
                None => Ok(n.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            ring: self.ring.clone(),
            nodes,
            moving: self.moving.clone(),
            generation: next_generation(),
        })
    }

    /// This topology once its move is done: the ring's nodes only.
    fn settled(&self) -> Self {
        Self {
            ring: self.ring.clone(),
            nodes: self.nodes[..self.ring.len()].to_vec(),
            moving: None,
            generation: next_generation(),
        }
    }
}

/// What each node of the rings `old` owns there and in none of the rings
/// `now`, as ring arcs by node name, adjacent arcs merged: what a finished
/// move lets its old owners forget (`replica/rebalance.rs`).
pub(crate) fn lost_arcs(
    old: &[&Ring],
    now: &[&Ring],
    n: usize,
) -> HashMap<String, Vec<distcache_proto::v1::HashRange>> {
    let mut out: HashMap<String, Vec<distcache_proto::v1::HashRange>> = HashMap::new();
    let mut points: Vec<u64> = old
        .iter()
        .chain(now)
        .flat_map(|r| r.points().iter().copied())
        .collect();
    points.sort_unstable();
    points.dedup();
    let Some(&last) = points.last() else {
        return out;
    };
    let mut idx: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
    let mut kept: HashSet<&str> = HashSet::new();
    for (i, &end) in points.iter().enumerate() {
        let start = if i == 0 { last } else { points[i - 1] };
        kept.clear();
        for r in now {
            idx.clear();
            r.fill_at(end, n, &mut idx);
            kept.extend(idx.iter().map(|&j| r.node(j)));
        }
        let mut lost: HashSet<&str> = HashSet::new();
        for r in old {
            idx.clear();
            r.fill_at(end, n, &mut idx);
            lost.extend(idx.iter().map(|&j| r.node(j)).filter(|x| !kept.contains(x)));
        }
        for name in lost {
            let arcs = out.entry(name.to_owned()).or_default();
            match arcs.last_mut() {
                Some(r) if r.end == start => r.end = end,
                _ => arcs.push(distcache_proto::v1::HashRange { start, end }),
            }
        }
    }
    out
}

/// The current topology of a client and the means to replace it.
#[derive(Debug)]
pub(crate) struct Membership {
    /// Read once per operation (a read lock and an `Arc` clone); written
    /// only by `set`. Never held across an `.await`.
    current: RwLock<Arc<Topology>>,
    /// Serialises changes, so each one diffs against what it replaces.
    changing: Mutex<()>,
    /// Changes applied since the client was built.
    pub(crate) changes: AtomicU64,
}

impl Membership {
    pub(crate) fn new(topology: Topology) -> Self {
        Self {
            current: RwLock::new(Arc::new(topology)),
            changing: Mutex::new(()),
            changes: AtomicU64::new(0),
        }
    }

    /// The topology operations starting now use.
    pub(crate) fn load(&self) -> Arc<Topology> {
        // Nothing panics while holding the lock; a poisoned one still holds
        // a whole topology.
        match self.current.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the membership with `nodes` (URLs or `ID=URL` entries)
    /// when they name a different set of nodes, or give a node another
    /// address. An empty or invalid list changes nothing.
    pub(crate) fn set(
        &self,
        nodes: impl IntoIterator<Item = impl AsRef<str>>,
        config: &ClientConfig,
    ) -> Result<MembershipChange, ConfigError> {
        let wanted = parse_members(nodes, config)?;
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.load();
        let before: HashSet<&str> = old.ring.nodes().iter().map(String::as_str).collect();
        let after: HashSet<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
        let change = MembershipChange {
            added: wanted
                .iter()
                .filter(|(n, _)| !before.contains(n.as_str()))
                .map(|(n, _)| n.clone())
                .collect(),
            removed: old
                .ring
                .nodes()
                .iter()
                .filter(|n| !after.contains(n.as_str()))
                .cloned()
                .collect(),
            readdressed: wanted
                .iter()
                .filter(|(n, u)| {
                    old.nodes[..old.ring.len()]
                        .iter()
                        .any(|o| &o.name == n && &o.url != u)
                })
                .map(|(n, u)| format!("{n}={u}"))
                .collect(),
        };
        let next = if !change.added.is_empty() || !change.removed.is_empty() {
            Topology::build(&wanted, config, Some(&old))?
        } else if !change.readdressed.is_empty() {
            // The ring ignores list order and addresses: the same ring.
            let moved: HashMap<&str, &str> = wanted
                .iter()
                .filter(|(n, u)| old.nodes.iter().any(|o| &o.name == n && &o.url != u))
                .map(|(n, u)| (n.as_str(), u.as_str()))
                .collect();
            old.readdressed(&moved, config)?
        } else {
            return Ok(change);
        };
        match self.current.write() {
            Ok(mut t) => *t = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        if !change.added.is_empty() || !change.removed.is_empty() {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(added = ?change.added, removed = ?change.removed, readdressed = ?change.readdressed, "membership changed");
        Ok(change)
    }

    /// Ends the move of `topo`, if the current membership is still in it
    /// (a later change carries the move on; a new address for a node does
    /// not): operations starting now use the new ring alone. True when it
    /// ended it.
    pub(crate) fn settle(&self, topo: &Arc<Topology>) -> bool {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let mut current = match self.current.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !same_move(&current, topo) {
            return false;
        }
        *current = Arc::new(current.settled());
        true
    }

    /// True when the current membership is no longer in `topo`'s move.
    pub(crate) fn superseded(&self, topo: &Arc<Topology>) -> bool {
        !same_move(&self.load(), topo)
    }
}

/// Whether two topologies are in the same move.
pub(crate) fn same_move(a: &Topology, b: &Topology) -> bool {
    match (&a.moving, &b.moving) {
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

/// The (ring name, URL) of each entry of `nodes`, each name once (the
/// same name at two URLs is refused), at most [`MAX_NODES`], at least one.
pub(crate) fn parse_members(
    nodes: impl IntoIterator<Item = impl AsRef<str>>,
    config: &ClientConfig,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut wanted: Vec<(String, String)> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut named: HashMap<String, String> = HashMap::new();
    for spec in nodes {
        let (name, url) = parse_node(spec.as_ref(), config.tls_ca.is_some())?;
        match seen.get(&name) {
            Some(u) if *u == url => continue,
            Some(u) => {
                return Err(ConfigError::BadUrl {
                    url: spec.as_ref().to_owned(),
                    reason: format!("node {name} is also listed at {u}"),
                });
            }
            None => {}
        }
        // One server under two names would hold both replicas of a key.
        if let Some(other) = named.insert(url.clone(), name.clone()) {
            return Err(ConfigError::BadUrl {
                url: spec.as_ref().to_owned(),
                reason: format!("{url} is also listed as node {other}"),
            });
        }
        if wanted.len() == MAX_NODES {
            return Err(ConfigError::TooManyNodes);
        }
        seen.insert(name.clone(), url.clone());
        wanted.push((name, url));
    }
    if wanted.is_empty() {
        return Err(ConfigError::NoNodes);
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    // Building nodes needs a runtime (lazy channels, coalescer tasks).
    fn config() -> ClientConfig {
        ClientConfig::default()
    }

    fn membership(urls: &[&str]) -> Membership {
        let members = parse_members(urls, &config()).expect("members");
        Membership::new(Topology::build(&members, &config(), None).expect("topology"))
    }

    #[tokio::test]
    async fn a_change_reports_the_difference_and_keeps_surviving_nodes() {
        let m = membership(&["http://a:1", "http://b:1"]);
        let before = m.load();
        let c = m
            .set(["b:1", "http://c:1/", "http://c:1"], &config())
            .expect("set");
        assert_eq!(c.added, ["http://c:1"]);
        assert_eq!(c.removed, ["http://a:1"]);
        let after = m.load();
        assert_eq!(after.ring.nodes(), ["http://b:1", "http://c:1"]);
        for (i, n) in after.nodes[..after.ring.len()].iter().enumerate() {
            assert_eq!(n.url, after.ring.node(i), "indexes agree");
        }
        // The removed node stays, after the ring's, while the move lasts.
        assert_eq!(after.nodes.len(), 3);
        assert_eq!(after.nodes[2].url, "http://a:1");
        assert!(Arc::ptr_eq(&before.nodes[0], &after.nodes[2]));
        let b_before = &before.nodes[1];
        assert!(Arc::ptr_eq(b_before, &after.nodes[0]), "b kept its node");
        assert_eq!(m.changes.load(Ordering::Relaxed), 1);
        // The old snapshot is untouched.
        assert_eq!(before.ring.nodes(), ["http://a:1", "http://b:1"]);
    }

    #[tokio::test]
    async fn a_change_during_a_move_keeps_the_ring_it_started_from() {
        let m = membership(&["http://a:1", "http://b:1", "http://c:1"]);
        let first = m.load();
        m.set(
            ["http://a:1", "http://b:1", "http://c:1", "http://d:1"],
            &config(),
        )
        .expect("add");
        let adding = m.load();
        // d flaps out again before the move ended.
        m.set(["http://a:1", "http://b:1", "http://c:1"], &config())
            .expect("remove");
        let flapped = m.load();
        let mv = flapped.moving.as_ref().expect("moving");
        assert_eq!(mv.from.len(), 2);
        assert_eq!(mv.base().ring.nodes(), first.ring.nodes(), "the base");
        assert_eq!(flapped.nodes.len(), 4, "d is still written to");
        for i in 0..500 {
            let key = format!("k{i}");
            // The base ring decides: the first membership's owners.
            let base: Vec<&str> = mv
                .base_owners(key.as_bytes(), 2)
                .iter()
                .map(|&n| flapped.nodes[n].url.as_str())
                .collect();
            let want: Vec<&str> = first
                .ring
                .preference_list(key.as_bytes(), 2)
                .into_iter()
                .map(|n| first.ring.node(n))
                .collect();
            assert_eq!(base, want);
        }
        // Ending a replaced move changes nothing; ending the current one
        // leaves the ring's nodes alone.
        assert!(!m.settle(&adding));
        assert!(m.settle(&flapped));
        let done = m.load();
        assert!(done.moving.is_none());
        assert_eq!(done.nodes.len(), 3);
        assert!(Arc::ptr_eq(&done.ring, &flapped.ring));
    }

    #[tokio::test]
    async fn the_moved_arcs_hold_exactly_the_keys_a_new_owner_gains() {
        for (from, to) in [
            (
                &["http://a:1", "http://b:1", "http://c:1"][..],
                &["http://a:1", "http://b:1", "http://c:1", "http://d:1"][..],
            ),
            (
                &["http://a:1", "http://b:1", "http://c:1", "http://d:1"][..],
                &["http://a:1", "http://c:1", "http://d:1"][..],
            ),
        ] {
            let m = membership(from);
            m.set(to, &config()).expect("change");
            let topo = m.load();
            let mv = topo.moving.as_ref().expect("moving");
            // b is down: its arcs go to the next old owner.
            let down = topo.nodes.iter().position(|n| n.url == "http://b:1");
            let healthy = |i: usize| Some(i) != down;
            let (arcs, uncovered) = mv.moved_arcs(&topo.ring, 2, healthy);
            assert_eq!(uncovered, 0, "one of two old owners is up");
            let sets: HashMap<usize, distcache_proto::ring::Ranges> = arcs
                .iter()
                .map(|(&src, r)| (src, distcache_proto::ring::Ranges::new(r).expect("some")))
                .collect();
            let mut moved = 0;
            for i in 0..20_000 {
                let key = format!("key:{i}");
                let h = crate::ring::key_hash(key.as_bytes());
                let old = mv.base_owners(key.as_bytes(), 2);
                let mut new: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
                topo.ring.fill(key.as_bytes(), 2, &mut new);
                let gains = new.iter().any(|i| !old.contains(i));
                let copier = old.iter().copied().find(|&i| healthy(i));
                for (&src, set) in &sets {
                    assert_eq!(
                        set.contains(h),
                        gains && copier == Some(src),
                        "{key}: gains {gains}, copied by {copier:?}, arc of {src}"
                    );
                }
                moved += usize::from(gains);
            }
            assert!((2_000..15_000).contains(&moved), "{moved} keys moved");
        }
    }

    #[tokio::test]
    async fn the_same_set_in_another_order_is_no_change() {
        let m = membership(&["http://a:1", "http://b:1"]);
        let before = m.load();
        let c = m.set(["http://b:1", "http://a:1"], &config()).expect("set");
        assert!(c.is_empty());
        assert!(Arc::ptr_eq(&before, &m.load()));
        assert_eq!(m.changes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn lists_of_more_than_max_nodes_are_refused_and_duplicates_are_one() {
        let m = membership(&["http://a:1"]);
        let many: Vec<String> = (0..=MAX_NODES).map(|i| format!("http://n{i}:1")).collect();
        assert!(matches!(
            m.set(&many, &config()),
            Err(ConfigError::TooManyNodes)
        ));
        // 20,000 spellings of a few nodes: de-duplicated in linear time.
        let dup: Vec<String> = (0..20_000)
            .map(|i| format!("http://n{}:1", i % 3))
            .collect();
        assert_eq!(m.set(&dup, &config()).expect("three").added.len(), 3);
        assert_eq!(m.load().ring.nodes().len(), 3);
    }

    #[test]
    fn one_server_under_two_names_is_refused() {
        for list in [
            &["a=http://x:1", "b=http://x:1"][..],
            &["http://x:1", "a=http://x:1"][..],
        ] {
            assert!(
                matches!(
                    parse_members(list, &config()),
                    Err(ConfigError::BadUrl { .. })
                ),
                "{list:?}"
            );
        }
        assert!(parse_members(["a=http://x:1", "a=http://x:1"], &config()).is_ok());
    }

    #[tokio::test]
    async fn empty_or_invalid_lists_keep_the_old_membership() {
        let m = membership(&["http://a:1"]);
        let none: [&str; 0] = [];
        assert!(matches!(m.set(none, &config()), Err(ConfigError::NoNodes)));
        assert!(matches!(
            m.set(["http://[::1"], &config()),
            Err(ConfigError::BadUrl { .. })
        ));
        assert!(matches!(
            m.set(["https://b:1"], &config()),
            Err(ConfigError::Tls(_))
        ));
        assert_eq!(m.load().ring.nodes(), ["http://a:1"]);
        assert_eq!(m.changes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn lost_arcs_are_what_an_old_owner_owns_in_no_current_ring() {
        let old = Ring::new(["a", "b", "c"], 150);
        let new = Ring::new(["a", "b", "c", "d"], 150);
        let smaller = Ring::new(["a", "b"], 150);
        for (now, n) in [(vec![&new], 2), (vec![&smaller], 1), (vec![&new, &old], 2)] {
            let lost = lost_arcs(&[&old], &now, n);
            let ranges: HashMap<&str, distcache_proto::ring::Ranges> = lost
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str(),
                        distcache_proto::ring::Ranges::new(v).expect("some"),
                    )
                })
                .collect();
            for i in 0..3000 {
                let key = format!("key-{i}");
                let h = crate::ring::key_hash(key.as_bytes());
                let owners = |r: &Ring| -> Vec<String> {
                    r.preference_list(key.as_bytes(), n)
                        .into_iter()
                        .map(|j| r.node(j).to_owned())
                        .collect()
                };
                let kept: Vec<String> = now.iter().flat_map(|r| owners(r)).collect();
                for name in ["a", "b", "c", "d"] {
                    let want =
                        owners(&old).iter().any(|o| o == name) && !kept.iter().any(|o| o == name);
                    let got = ranges.get(name).is_some_and(|r| r.contains(h));
                    assert_eq!(got, want, "{key} {name} n={n}");
                }
            }
        }
        assert!(lost_arcs(&[&old], &[&old], 2).is_empty(), "nothing moved");
    }
}
