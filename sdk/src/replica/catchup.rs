//! Catch-up: what makes a returning replica safe to read again.
//!
//! A node may lack writes its peers hold: it restarted (empty, or from a
//! log that ends where it stopped), it stalled, or this client lost it for
//! a while. Such a node is *fenced* (on the node
//! itself, see `node/src/fence.rs`, and in this client's view, see
//! `node.rs`): it takes writes, but no read and no conditional operation
//! goes to it. The catch-up, run by the client's prober for each fenced
//! node it can reach, then:
//!
//! ```text
//! 1. Fence(since) the node, if this client lost it (it cannot know);
//!    the node answers its incarnation and fence (epoch, since_ms)
//! 2. for every other node: Scan(since_ms << 16) page by page ─► keep the
//!    entries this node replicates ─► versioned Set / Delete in a Batch
//!    to the node (they never overwrite anything newer)
//! 3. Fence(UNFENCE, incarnation, epoch): lifted only if no new fence was
//!    raised meanwhile (else: again, from the wider window), and not
//!    before the node's fence hold (`--fence-hold`, 1 s): every client
//!    that lost the node must see it back, and fence it from when it lost
//!    it, first; the node answers how long to wait, and the same epoch is
//!    tried again then
//! ```
//!
//! Writes made while it runs reach the node directly (fenced nodes are
//! write targets), so when every peer has been scanned the node holds
//! everything its peers held. A healthy peer that cannot be scanned keeps
//! the node fenced (logged; the next probe tries again): reads of its keys
//! go to the other replicas, or fail, but are never stale. A peer this
//! client holds for down is skipped (what it holds cannot be had, and
//! waiting for it would keep every replica it shares keys with fenced for
//! as long as it is down); the node remembers it, and once that peer
//! serves again, the node is fenced again and catches up from it too, so
//! it converges. Until then it may miss writes only the down peer took
//! (at write consistency `One`; see `docs/consistency.md`).
//!
//! Not here: dropping what a node holds and its peers no longer do (a
//! delete whose tombstone expired while it was away longer than the
//! tombstone TTL): see the limits in `docs/consistency.md`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use tonic::Status;

use super::view::{Nodes, View};

/// How far back of the moment this client lost a node its catch-up looks
/// (the node's own margin; see `node/src/fence.rs`).
const MARGIN_MS: u64 = 35_000;

/// Entries per scan page (and per batch copying them).
const PAGE: u32 = 1_000;

/// Rounds of scan-and-lift before giving up until the next probe (a new
/// fence raised during a round means another round).
const MAX_ROUNDS: usize = 3;

/// Waits for a node's fence hold (`--fence-hold`) per round, and the
/// longest of each: a hold longer than that keeps the node fenced until
/// the next probe's catch-up.
const MAX_HOLD_WAITS: usize = 4;
const MAX_HOLD_WAIT_MS: u64 = 5_000;

/// Why a catch-up stopped short.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CatchUpError {
    #[error("{rpc} on {node}: {status}")]
    Rpc {
        rpc: &'static str,
        node: String,
        status: Status,
    },
    #[error("fenced again during every one of {0} rounds")]
    Unsettled(usize),
    #[error("every old owner of {0} moved arcs of the ring is down")]
    OwnersDown(usize),
}

/// What a finished catch-up did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CaughtUp {
    pub(crate) entries: u64,
    pub(crate) elapsed: Duration,
}

impl View {
    /// Starts the catch-up of node `idx` in a task, unless one runs.
    pub(crate) fn spawn_catch_up(&self, idx: usize) {
        let node = &self.topo.nodes[idx];
        if node.catching_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let view = self.clone();
        tokio::spawn(async move {
            let node = view.topo.nodes[idx].clone();
            match view.catch_up(idx).await {
                Ok(done) => {
                    view.stats.catch_ups.fetch_add(1, Ordering::Relaxed);
                    view.stats
                        .catch_up_entries
                        .fetch_add(done.entries, Ordering::Relaxed);
                    tracing::info!(
                        node = %node.url,
                        entries = done.entries,
                        ms = done.elapsed.as_millis() as u64,
                        "catch-up done"
                    );
                }
                Err(e) => {
                    view.stats.catch_up_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %node.url, error = %e, "catch-up failed; the node stays fenced");
                }
            }
            node.catching_up.store(false, Ordering::Release);
        });
    }

    /// Catches node `idx` up (see the module docs).
    async fn catch_up(&self, idx: usize) -> Result<CaughtUp, CatchUpError> {
        let started = Instant::now();
        let node = &self.topo.nodes[idx];
        let timeout = self.config.timeout;
        let mut entries = 0;
        for _ in 0..MAX_ROUNDS {
            let req = match node.owed_fence() {
                Some(lost) => pb::FenceRequest {
                    action: pb::FenceAction::Fence as i32,
                    since_ms: lost.saturating_sub(MARGIN_MS),
                    reason: "lost by a client for a while".into(),
                    ..Default::default()
                },
                // Read the fence: a lift with epoch 0 never applies.
                None => pb::FenceRequest {
                    action: pb::FenceAction::Unfence as i32,
                    ..Default::default()
                },
            };
            let answer = node
                .fence(req, timeout)
                .await
                .map_err(failed("Fence", &node.url))?;
            node.fence_sent();
            let fence = answer.fence.unwrap_or_default();
            if !fence.fenced {
                node.unfence();
                return Ok(CaughtUp {
                    entries,
                    elapsed: started.elapsed(),
                });
            }
            let mut skipped = Vec::new();
            // A node that joins in a move lacks nothing the move's copy,
            // still to come, does not give it (it owned no key before): no
            // scan. Once the copy started, a fenced node (restarted, lost)
            // is caught up as any other.
            let joining = self.topo.moving.as_ref().is_some_and(|m| {
                m.phase() == crate::topology::MovePhase::Grace && !m.base().index.contains(&idx)
            });
            if self.config.replicas > 1 && !joining {
                let since_version = fence.since_ms << 16;
                for peer in (0..self.topo.nodes.len()).filter(|&p| p != idx) {
                    let p = &self.topo.nodes[peer];
                    if !p.is_healthy() {
                        tracing::warn!(node = %node.url, peer = %p.url, "catch-up skips a peer that is down; it will catch up from it once it is back");
                        skipped.push((p.url.clone(), fence.since_ms));
                        continue;
                    }
                    entries += self.copy_from(peer, idx, since_version).await?;
                }
            }
            let lift = pb::FenceRequest {
                action: pb::FenceAction::Unfence as i32,
                incarnation: answer.incarnation,
                epoch: fence.epoch,
                ..Default::default()
            };
            // Too early for the node's hold (clients that lost it may not
            // have seen it back yet): wait, and lift with the same epoch;
            // a fence one of them raised meanwhile makes it stale, and the
            // next round copies from its wider window.
            let mut waits = 0;
            let lifted = loop {
                let answer = node
                    .fence(lift.clone(), timeout)
                    .await
                    .map_err(failed("Fence", &node.url))?;
                if answer.lifted || answer.retry_after_ms == 0 || waits == MAX_HOLD_WAITS {
                    break answer;
                }
                waits += 1;
                let wait = Duration::from_millis(answer.retry_after_ms.min(MAX_HOLD_WAIT_MS));
                tokio::time::sleep(wait).await;
            };
            if lifted.lifted {
                node.set_skipped(skipped);
                node.unfence();
                return Ok(CaughtUp {
                    entries,
                    elapsed: started.elapsed(),
                });
            }
        }
        Err(CatchUpError::Unsettled(MAX_ROUNDS))
    }

    /// Copies to node `to` every entry of node `from` written since
    /// `since_version` that `to` replicates; returns how many.
    async fn copy_from(
        &self,
        from: usize,
        to: usize,
        since_version: u64,
    ) -> Result<u64, CatchUpError> {
        let route = |e: &pb::ScanEntry, out: &mut Nodes| {
            if self.write_set(&e.key).contains(&to) {
                out.push(to);
            }
        };
        Ok(self
            .copy(from, since_version, Vec::new(), route, None)
            .await?
            .copied)
    }

    /// Scans node `from` for entries written since `since_version` (in
    /// `ranges` of the ring, when not empty), page by page, and writes each
    /// to the nodes `route` names (versioned writes: they never overwrite
    /// anything newer), a batch per node and page, paced by `pace` when
    /// given.
    pub(super) async fn copy(
        &self,
        from: usize,
        since_version: u64,
        ranges: Vec<pb::HashRange>,
        mut route: impl FnMut(&pb::ScanEntry, &mut Nodes),
        mut pace: Option<&mut Pacer>,
    ) -> Result<Copied, CatchUpError> {
        let src = &self.topo.nodes[from];
        let timeout = self.config.timeout;
        let mut cursor = 0;
        let mut done = Copied::default();
        let mut to = Nodes::new();
        loop {
            let req = pb::ScanRequest {
                since_version,
                cursor,
                max_entries: PAGE,
                ranges: ranges.clone(),
            };
            let page = src
                .scan(req, timeout)
                .await
                .map_err(failed("Scan", &src.url))?;
            let answered = Instant::now();
            done.scanned += page.entries.len() as u64;
            let copied_before = done.copied;
            let mut batches: Vec<(usize, Vec<pb::Operation>)> = Vec::new();
            let mut bytes = 0u64;
            for e in page.entries {
                to.clear();
                route(&e, &mut to);
                let len = (e.key.len() + e.value.len()) as u64;
                for &t in &to {
                    let at = match batches.iter().position(|(n, _)| *n == t) {
                        Some(at) => at,
                        None => {
                            batches.push((t, Vec::new()));
                            batches.len() - 1
                        }
                    };
                    batches[at].1.push(copy_op(e.clone()));
                    bytes += len;
                }
            }
            for (t, mut ops) in batches {
                // TTLs are what was left when the page was read: a later
                // batch counts the time since, so a copy expires when the
                // original does.
                age(&mut ops, answered.elapsed());
                let dst = &self.topo.nodes[t];
                let n = ops.len() as u64;
                let results = dst
                    .conn
                    .batch(ops, timeout, None)
                    .await
                    .map_err(failed("Batch", &dst.url))?;
                if let Some(e) = results.into_iter().find_map(|r| match r.result {
                    Some(Out::Error(e)) => Some(e),
                    _ => None,
                }) {
                    return Err(failed("Batch", &dst.url)(
                        distcache_proto::status::to_status(e),
                    ));
                }
                done.copied += n;
            }
            done.bytes += bytes;
            if let Some(p) = pace.as_deref_mut() {
                p.wait(done.copied - copied_before, bytes).await;
            }
            if page.done {
                return Ok(done);
            }
            cursor = page.next_cursor;
        }
    }
}

/// What one [`View::copy`] did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Copied {
    /// Entries the source answered.
    pub(super) scanned: u64,
    /// Entries written (an entry sent to two nodes counts twice).
    pub(super) copied: u64,
    /// Key and value bytes written.
    pub(super) bytes: u64,
}

/// Holds copies to a rate: entries and bytes per second since it started,
/// over every copy paced by it.
#[derive(Debug)]
pub(super) struct Pacer {
    started: Instant,
    keys_per_sec: u64,
    bytes_per_sec: u64,
    /// Entries and bytes copied so far.
    keys: u64,
    bytes: u64,
}

impl Pacer {
    pub(super) fn new(keys_per_sec: u64, bytes_per_sec: u64) -> Self {
        Self {
            started: Instant::now(),
            keys_per_sec: keys_per_sec.max(1),
            bytes_per_sec: bytes_per_sec.max(1),
            keys: 0,
            bytes: 0,
        }
    }

    /// Counts `keys` entries and `bytes` more, and sleeps until what was
    /// copied is within the rate.
    async fn wait(&mut self, keys: u64, bytes: u64) {
        self.keys += keys;
        self.bytes += bytes;
        let due = Duration::from_secs_f64(
            (self.keys as f64 / self.keys_per_sec as f64)
                .max(self.bytes as f64 / self.bytes_per_sec as f64),
        );
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// The error of `rpc` to `node` failing with a status.
fn failed(rpc: &'static str, node: &str) -> impl FnOnce(Status) -> CatchUpError {
    let node = node.to_owned();
    move |status| CatchUpError::Rpc { rpc, node, status }
}

/// The versioned write that gives a replica `e` (it applies only if newer
/// than what the replica holds).
/// Takes `by` off the TTL of every copied value in `ops` (a value whose
/// TTL ran out keeps 1 ms: it expires at once, and never becomes a value
/// without expiry).
fn age(ops: &mut [pb::Operation], by: Duration) {
    let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return;
    }
    for op in ops {
        if let Some(Op::Set(s)) = &mut op.op
            && s.ttl_ms > 0
        {
            s.ttl_ms = s.ttl_ms.saturating_sub(ms).max(1);
        }
    }
}

pub(super) fn copy_op(e: pb::ScanEntry) -> pb::Operation {
    let op = if e.tombstone {
        Op::Delete(pb::DeleteRequest {
            key: e.key,
            version: e.version,
            return_value: false,
        })
    } else {
        Op::Set(pb::SetRequest {
            key: e.key,
            value: e.value,
            ttl_ms: e.ttl_ms,
            condition: pb::SetCondition::Always as i32,
            version: e.version,
            keep_ttl: false,
        })
    };
    pb::Operation { op: Some(op) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn copies_age_their_ttl_and_never_lose_it() {
        let entry = |ttl_ms: u64, tombstone: bool| pb::ScanEntry {
            key: "k".into(),
            value: "v".into(),
            version: 7,
            ttl_ms,
            tombstone,
        };
        let mut ops = vec![
            copy_op(entry(5_000, false)),
            copy_op(entry(300, false)),
            copy_op(entry(0, false)),
            copy_op(entry(0, true)),
        ];
        age(&mut ops, Duration::from_millis(1_000));
        let ttl = |op: &pb::Operation| match &op.op {
            Some(Op::Set(s)) => Some(s.ttl_ms),
            _ => None,
        };
        let got: Vec<Option<u64>> = ops.iter().map(ttl).collect();
        assert_eq!(got, [Some(4_000), Some(1), Some(0), None]);
    }
}
