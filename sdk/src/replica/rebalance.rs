//! Moves: what a membership change does before the new ring is used alone.
//!
//! A change ([`crate::Client::set_nodes`]) installs a topology that keeps
//! the rings it replaces (`topology.rs`, [`crate::topology::Move`]). From
//! that moment, in this client:
//!
//! ```text
//! writes         ─► the key's old owners (the ring the move started from)
//!                   and its new ones; a write waits for the old primary
//!                   and the new one
//! reads, CAS,    ─► the key's owners in the ring the move started from
//! INCR, NX…         (they hold every acknowledged write), until the copy
//!                   is done; then its owners in the new ring
//! ```
//!
//! and a task (`rebalance` below) carries the move out:
//!
//! ```text
//! 1. wait the grace (RebalanceConfig::grace): every other client sees the
//!    change meanwhile, and from then on writes to old and new owners too
//! 2. for each old owner, healthy when the pass began, unless another
//!    client claimed it (`claim.rs`: then wait for its copy): Scan(since 0, the
//!    ring arcs whose owners change and of which it is the first healthy
//!    old owner) page by page ─► a versioned Set / Delete to each new
//!    owner that was not an old owner (paced: keys/s and bytes/s); a pass
//!    that leaves arcs whose old owners are all down falls short
//! 3. a pass that fell short (a scan or a batch failed) runs again after a
//!    pause (1 s, doubling to 30 s); the move goes on meanwhile
//! 4. draining: reads and primary-run operations use the new ring; writes
//!    still reach the old owners for another grace, for the clients that
//!    have not finished their copy (they still read there)
//! 5. the new ring alone: the nodes only old rings named are let go
//! 6. with `RebalanceConfig::forget_moved` (off by default), after
//!    another grace, unless the membership changed meanwhile or the
//!    move replaced another (other clients may base theirs on any ring it
//!    left), every node of the ring left is told to forget (`Forget`,
//!    through its WAL) the arcs it owns in the new ring no more, for
//!    entries older than the move's start: its new owners hold them,
//!    and a copy kept there would come back stale if the arc ever moved
//!    back after its tombstones expired. A node down then keeps them (a
//!    warning); entries written during the move stay too (the bound
//!    keeps a write from a client already on a newer ring).
//! ```
//!
//! Two clients that see a change at moments further apart than the grace
//! can read stale values; closer than that, they cannot. Primary-run
//! operations on a moved key move from its old primary to its new one
//! when each client's copy is done, so for about the time between two
//! clients' copies ending (about the time between their seeing the
//! change) two of them may decide on different nodes: the one window left.
//!
//! "Old" is the ring the last finished move (or the first membership)
//! left: a change during a move keeps every ring still being left in the
//! write set, and copies from the oldest, the one whose owners hold
//! everything. So an add-then-remove flip copies nothing back from the
//! node that came and went, and a node that comes back after leaving gets
//! the keys it owns again copied to it, newest first winning.
//!
//! Two clients carrying out the same move (two proxies) copy each old
//! owner once between them: a claim on the old owner names who copies it
//! (`claim.rs`). Should both copy (a claim that could not be read, a
//! client that saw the change a grace later), versioned writes are
//! idempotent: the same entries twice, and no more harm.
//!
//! A node named by an id (`ID=URL`) that comes back at another address is
//! not a change of ring: the move goes on, and each pass copies with the
//! move's current topology (its nodes at their current addresses).
//!
//! Forgetting is safe against a client that saw a newer change sooner:
//! it copies into a node only after its own grace, longer than this
//! client's discovery interval, so after this client's forget (which
//! this client would have skipped for arcs the newer ring gives back,
//! had it seen that ring); and what it writes there meanwhile is newer
//! than the bound.

use std::sync::atomic::Ordering;
use std::time::Duration;

use distcache_proto::v1 as pb;

use std::collections::HashMap;

use super::catchup::{CatchUpError, Pacer};
use super::claim::Claim;
use super::view::{Nodes, View};
use crate::topology::{Move, MovePhase};

/// First pause after a pass fell short; doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// How often a waiting move checks whether a newer change replaced it.
const POLL: Duration = Duration::from_millis(50);
/// Least time a node is given to forget what it no longer owns.
const FORGET_TIMEOUT: Duration = Duration::from_secs(30);

impl View {
    /// Starts carrying out the move of this view's topology, in a task.
    pub(crate) fn spawn_rebalance(&self) {
        if self.topo.moving.is_some() {
            let view = self.clone();
            tokio::spawn(async move { view.rebalance().await });
        }
    }

    /// Sleeps `d`; false when a newer change replaced this move meanwhile
    /// (its own task carries on).
    async fn wait_unless_superseded(&self, d: Duration) -> bool {
        let until = tokio::time::Instant::now() + d;
        loop {
            if self.members.superseded(&self.topo) {
                return false;
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return true;
            }
            tokio::time::sleep((until - now).min(POLL)).await;
        }
    }

    async fn rebalance(self) {
        let Some(m) = self.topo.moving.clone() else {
            return;
        };
        let grace = self.config.rebalance.grace;
        tracing::info!(
            from = ?m.from_nodes,
            to = ?self.topo.ring.nodes(),
            grace_ms = grace.as_millis() as u64,
            "move started"
        );
        if !self.wait_unless_superseded(grace).await {
            return;
        }
        // Entries older than this were written before any client moved:
        // what old owners may forget once the copy is done.
        let before_move = self.clock.next();
        let rb = &self.config.rebalance;
        let mut pace = Pacer::new(rb.keys_per_sec, rb.bytes_per_sec);
        let mut pause = FIRST_PAUSE;
        loop {
            m.set_phase(MovePhase::Copying);
            m.passes.fetch_add(1, Ordering::Relaxed);
            m.pass_started_ms
                .store(m.started.elapsed().as_millis() as u64, Ordering::Relaxed);
            // The current topology of this move: a node that came back at a
            // new address (same ring, same move) is copied with at the new
            // one.
            let now = self.inner.view();
            if !crate::topology::same_move(&now.topo, &self.topo) {
                return;
            }
            match now.copy_moved(&m, &mut pace).await {
                Ok(()) => break,
                Err(e) => {
                    m.set_phase(MovePhase::Retrying);
                    tracing::warn!(error = %e, retry_in = ?pause, "move: a copy pass fell short; old and new owners both serve meanwhile");
                    if !self.wait_unless_superseded(pause).await {
                        return;
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
        // Reads and decisions move to the new ring; writes still reach the
        // old owners for another grace, where clients still copying read.
        m.set_phase(MovePhase::Draining);
        if !self.wait_unless_superseded(grace).await {
            return;
        }
        if self.members.settle(&self.topo) {
            self.stats.moves.fetch_add(1, Ordering::Relaxed);
            let forgotten = self.forget_moved(&m, before_move).await;
            tracing::info!(
                to = ?self.topo.ring.nodes(),
                scanned = m.scanned.load(Ordering::Relaxed),
                copied = m.copied.load(Ordering::Relaxed),
                bytes = m.copied_bytes.load(Ordering::Relaxed),
                forgotten,
                passes = m.passes.load(Ordering::Relaxed),
                ms = m.started.elapsed().as_millis() as u64,
                "move done"
            );
        }
    }

    /// Step 6: each node of the rings `m` left forgets the arcs it owns in
    /// none of the rings this client uses now, below `below_version`.
    /// Returns the entries the nodes dropped.
    async fn forget_moved(&self, m: &Move, below_version: u64) -> u64 {
        if !self.config.rebalance.forget_moved {
            return 0;
        }
        // A move that replaced another left several rings, and other
        // clients may still base theirs on any of them: keep everything.
        if m.from.len() > 1 {
            tracing::info!("move: it replaced another move; old owners keep what moved away");
            return 0;
        }
        // Another grace, for the clients still copying out of the old
        // owners; and nothing is forgotten once the membership changed
        // again (a newer ring may give an arc back).
        let changes = self.members.changes.load(Ordering::Relaxed);
        let unchanged = || self.members.changes.load(Ordering::Relaxed) == changes;
        tokio::time::sleep(self.config.rebalance.grace).await;
        let mut forgotten = 0;
        if !unchanged() {
            return 0;
        }
        let latest = self.inner.view();
        let now = [&*latest.topo.ring];
        let old: Vec<&crate::ring::Ring> = m.from.iter().map(|l| &*l.ring).collect();
        let lost = crate::topology::lost_arcs(&old, &now, self.config.replicas);
        'nodes: for (name, ranges) in lost {
            // At its current address (it may have moved during the move).
            let Some(node) = latest
                .topo
                .nodes
                .iter()
                .chain(&self.topo.nodes)
                .find(|x| x.name == name)
            else {
                continue;
            };
            for chunk in ranges.chunks(distcache_proto::ring::MAX_SCAN_RANGES) {
                if !unchanged() {
                    break 'nodes;
                }
                let req = pb::ForgetRequest {
                    ranges: chunk.to_vec(),
                    below_version,
                };
                // A walk of the node's whole store: more than a request's
                // timeout, on a big one.
                match node
                    .forget(req, self.config.timeout.max(FORGET_TIMEOUT))
                    .await
                {
                    Ok(r) => forgotten += r.removed,
                    Err(e) => {
                        tracing::warn!(node = %node.url, error = %e, "move: an old owner did not forget what it no longer owns; it keeps it");
                        break;
                    }
                }
            }
        }
        self.stats
            .rebalance_forgotten
            .fetch_add(forgotten, Ordering::Relaxed);
        forgotten
    }

    /// Copies the moved keys old owner `src` is the first healthy owner of
    /// (under this client's claim `key`, see `claim.rs`) to their new owners.
    async fn copy_source(
        &self,
        m: &Move,
        src: usize,
        key: &str,
        ranges: &HashMap<usize, Vec<pb::HashRange>>,
        healthy: &[usize],
        pace: &mut Pacer,
    ) -> Result<(), CatchUpError> {
        let n = self.config.replicas;
        let route = |e: &pb::ScanEntry, out: &mut Nodes| {
            let old = m.base_owners(&e.key, n);
            // Only the first healthy old owner copies a key (and only
            // keys it owns: what it kept from before is not copied).
            if old.iter().find(|i| healthy.contains(i)) != Some(&src) {
                return;
            }
            out.extend(
                self.replicas(&e.key)
                    .into_iter()
                    .filter(|i| !old.contains(i)),
            );
        };
        let ranges = ranges.get(&src).cloned().unwrap_or_default();
        let done = self
            .holding_claim(src, key, self.copy(src, 0, ranges, route, Some(pace)))
            .await?;
        m.scanned.fetch_add(done.scanned, Ordering::Relaxed);
        m.copied.fetch_add(done.copied, Ordering::Relaxed);
        m.copied_bytes.fetch_add(done.bytes, Ordering::Relaxed);
        self.stats
            .rebalance_entries
            .fetch_add(done.copied, Ordering::Relaxed);
        m.sources_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One copy pass: every moved key, from the first old owner that was
    /// healthy when the pass began, to its new owners.
    async fn copy_moved(&self, m: &Move, pace: &mut Pacer) -> Result<(), CatchUpError> {
        let base = m.base();
        let n = self.config.replicas;
        let mut sources: Vec<usize> = Vec::new();
        for &idx in &base.index {
            if !sources.contains(&idx) {
                sources.push(idx);
            }
        }
        let healthy: Vec<usize> = sources
            .iter()
            .copied()
            .filter(|&i| self.topo.nodes[i].is_healthy())
            .collect();
        let (ranges, uncovered) = m.moved_arcs(&self.topo.ring, n, |i| healthy.contains(&i));
        m.sources.store(sources.len() as u64, Ordering::Relaxed);
        m.sources_done.store(0, Ordering::Relaxed);
        let healthy_names: Vec<&str> = healthy
            .iter()
            .map(|&i| self.topo.nodes[i].name.as_str())
            .collect();
        // Sources another client is copying: waited for after the others.
        let mut theirs: Vec<(usize, String)> = Vec::new();
        for &src in &sources {
            if !healthy.contains(&src) {
                tracing::warn!(node = %self.topo.nodes[src].url, "move: an old owner is down; its keys are copied from their other owners");
                m.sources_done.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if ranges.get(&src).is_none_or(Vec::is_empty) {
                // It is the first healthy old owner of no moved key.
                m.sources_done.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let key = super::claim::claim_key(
                m,
                &self.topo.ring,
                n,
                &healthy_names,
                &self.topo.nodes[src].name,
            );
            match self.claim(src, &key, m.started_unix_ms).await {
                Claim::Mine => {
                    self.copy_source(m, src, &key, &ranges, &healthy, pace)
                        .await?
                }
                Claim::Done => {
                    m.sources_done.fetch_add(1, Ordering::Relaxed);
                }
                Claim::Busy => theirs.push((src, key)),
            }
        }
        for (src, key) in theirs {
            match self.wait_claim(src, &key, m.started_unix_ms).await {
                Some(Claim::Mine) => {
                    self.copy_source(m, src, &key, &ranges, &healthy, pace)
                        .await?
                }
                Some(_) => {
                    m.sources_done.fetch_add(1, Ordering::Relaxed);
                }
                // A newer change replaced the move; its own task copies.
                None => return Ok(()),
            }
        }
        // Keys only down nodes hold: the move waits for one of them.
        if uncovered > 0 {
            return Err(CatchUpError::OwnersDown(uncovered));
        }
        Ok(())
    }
}
