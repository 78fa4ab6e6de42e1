//! Writes: a versioned write to every replica of the key, acknowledged
//! once the consistency level's replicas hold it (and the first healthy
//! replica answered, so a client reads its own writes); primary-run
//! operations (CAS, counters, conditional sets) on one replica, and the
//! propagation of their result to the others.

use std::sync::atomic::Ordering;
use std::time::Duration;

use distcache_proto::v1::{operation::Op, operation_result::Result as Out};
use tokio::time::Instant;

use super::attempt::may_fail_over;
use super::fanout::{gather, task_failed};
use super::view::{Acks, Nodes, View};
use crate::config::Consistency;
use crate::error::{Error, Failure, Result, classify};

/// Times a versioned write is stamped again and resent after a replica
/// answered that it holds a newer version.
const MAX_RESTAMPS: usize = 3;

/// The newest version a replica answered it holds instead of `op`'s, when
/// the write must be stamped again: when `first`, the replica that decides
/// conditional operations and serves `One` reads, answered that it holds a
/// newer version, or (if it did not answer) when any replica did.
///
/// When `first` holds the write and another replica holds something newer,
/// that newer write is ordered after this one (on `first` it came later:
/// typically a lock decided on `first` after this delete, whose copy
/// reached the other replica before this delete did). The write took
/// effect; stamping it again would apply it a second time, over what was
/// decided in between.
fn superseded(op: &Op, acks: &Acks, first: Option<usize>) -> Option<u64> {
    let ours = version_of(op);
    let newer = |out: &Out| match out {
        Out::Set(r) if !r.applied => Some(r.version),
        Out::Delete(r) if r.version > ours => Some(r.version),
        _ => None,
    };
    if let Some((_, out)) = acks.iter().find(|(i, _)| Some(*i) == first)
        && newer(out).is_none()
    {
        return None;
    }
    acks.iter().filter_map(|(_, out)| newer(out)).max()
}

/// The version a replicated set or delete carries.
fn version_of(op: &Op) -> u64 {
    match op {
        Op::Set(r) => r.version,
        Op::Delete(r) => r.version,
        _ => 0,
    }
}

/// `op` with `version` instead of its own.
fn restamp(op: &mut Op, version: u64) {
    match op {
        Op::Set(r) => r.version = version,
        Op::Delete(r) => r.version = version,
        _ => {}
    }
}

impl View {
    /// Writes `op` (which carries its version) to the key's replicas and
    /// returns once `consistency` is met: once that many replicas answered
    /// that they hold this write. When the first target holds a newer
    /// version (a writer with a faster clock, or a concurrent write), the
    /// clock moves past that version and the write is stamped again and
    /// resent (at most [`MAX_RESTAMPS`] times), so OK never means "applied
    /// nowhere"; a newer version on another replica only is a later write
    /// (see [`superseded`]). The acknowledgements returned carry the final
    /// version.
    pub(crate) async fn write(
        &self,
        key: &[u8],
        mut op: Op,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<Acks> {
        for round in 0..=MAX_RESTAMPS {
            let (acks, first) = self
                .write_once(key, op.clone(), consistency, deadline)
                .await?;
            let Some(newer) = superseded(&op, &acks, first) else {
                return Ok(acks);
            };
            if round == MAX_RESTAMPS {
                break;
            }
            self.clock.observe(newer);
            restamp(&mut op, self.clock.next().max(newer.saturating_add(1)));
        }
        Err(Error::Unavailable {
            needed: consistency.required(self.replicas(key).len()),
            acked: 0,
        })
    }

    /// One round of [`View::write`]: `op` as stamped. Also returns the
    /// first target (see [`superseded`]).
    async fn write_once(
        &self,
        key: &[u8],
        op: Op,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<(Acks, Option<usize>)> {
        let replicas = self.replicas(key);
        let need = consistency.required(replicas.len());
        let targets = self.targets(&self.write_set_of(key, replicas), need);
        let first = targets.first().copied();
        if let [idx] = targets[..] {
            return Ok((self.write_one(idx, op, deadline).await?, first));
        }
        // Wait for the first healthy replica, the one `One` reads go to, so a
        // client reads its own writes; the others may finish later. Its
        // first attempt runs inline only when the coalescer sends it: a
        // queued operation is sent even if the caller gives up, a unary RPC
        // in flight is cancelled with it, and another replica's copy may
        // already be written. (With one target there is nothing to be
        // inconsistent with, so `write_one` always runs it inline.)
        let inline = self.config.coalesce.max_batch > 1;
        let mut wait: Nodes = targets.first().copied().into_iter().collect();
        // During a move the first target is the old primary (where a client
        // that has not seen the change reads); the new primary is waited
        // for too, where a client that finished the move reads.
        if let Some(new) = self.new_primary_among(key, &targets)
            && !wait.contains(&new)
        {
            wait.push(new);
        }
        let fan = std::pin::pin!(self.fan_out(&targets, &op, deadline, true, inline));
        Ok((gather(fan, targets.len(), need, &wait).await?, first))
    }

    /// During a move, the first readable replica of the key in the new
    /// ring among `targets`: where a client that finished the move reads.
    fn new_primary_among(&self, key: &[u8], targets: &[usize]) -> Option<usize> {
        self.topo.moving.as_ref()?;
        // In the new ring's order (targets are in the old ring's first).
        self.replicas(key)
            .into_iter()
            .find(|&i| targets.contains(&i) && self.topo.nodes[i].is_readable())
    }

    /// [`View::write`] with a single target (one replica, the common case):
    /// what a one-target fan-out does, the first attempt inline and the
    /// retries in a task, without its bookkeeping.
    async fn write_one(&self, idx: usize, op: Op, deadline: Instant) -> Result<Acks> {
        let r = match self.first_attempt(idx, op, deadline, true).await {
            Ok(r) => r,
            Err(op) => self
                .retry_task(idx, op, deadline)
                .await
                .map_or_else(task_failed, |(_, r)| r),
        };
        match r {
            Ok(out) => Ok(smallvec::smallvec![(idx, out)]),
            Err(e) if e.is_retryable() => Err(Error::Unavailable {
                needed: 1,
                acked: 0,
            }),
            Err(e) => Err(e),
        }
    }

    /// Runs a non-idempotent `op` on the first healthy replica, failing over
    /// only on connection failures (see [`may_fail_over`]); never retried.
    /// When fewer replicas are healthy than `consistency` needs, it fails
    /// before anything is applied: an operation that would then fail to
    /// replicate must not take effect anyway (a "failed" INCR that counted).
    pub(crate) async fn on_primary(
        &self,
        key: &[u8],
        op: Op,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<(usize, Out)> {
        let replicas = self.deciders(key);
        let needed = consistency.required(replicas.len());
        let healthy = replicas
            .iter()
            .filter(|&&i| self.topo.nodes[i].is_healthy())
            .count();
        // (With one replica needed, trying is what failover is for: health
        // may be stale.)
        if needed > 1 && healthy < needed {
            return Err(Error::Unavailable {
                needed,
                acked: healthy,
            });
        }
        // The first healthy replica decides, as every client would choose:
        // a node fenced on its side refuses (it may hold a stale counter, a
        // lock since taken, an old version for CAS) and the next one is
        // asked, so all clients move to the same replica while it is
        // fenced, and back once it is lifted. Only this client's own
        // reasons are decided here: a node it owes a fence (it lost it) is
        // skipped until the fence is delivered, one whose connection failed
        // is not tried again. When every candidate refused, it waits for a
        // catch-up (nothing has been applied yet).
        let mut failed = Nodes::new();
        let mut tries = 0;
        let mut pause = Duration::from_millis(2);
        loop {
            let node = |i: usize| &self.topo.nodes[i];
            let candidates: Nodes = replicas
                .iter()
                .copied()
                .filter(|&i| node(i).is_healthy() && node(i).owed_fence().is_none())
                .filter(|i| !failed.contains(i))
                .collect();
            let owed = replicas
                .iter()
                .any(|&i| node(i).is_healthy() && node(i).owed_fence().is_some());
            let mut refused = false;
            for idx in candidates {
                if tries > 0 {
                    self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                }
                tries += 1;
                match self.call(idx, op.clone(), deadline).await {
                    Ok(out) => return Ok((idx, out)),
                    Err(s) if classify(&s) == Failure::Fenced => refused = true,
                    Err(s) if may_fail_over(&s) => failed.push(idx),
                    Err(s) => return Err(Error::from_status(s)),
                }
            }
            if !(refused || owed) || Instant::now() + pause >= deadline {
                return Err(Error::Unavailable {
                    needed: 1,
                    acked: 0,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Copies the result of a primary-run operation to the other replicas:
    /// `op` is a versioned set (value + version) or, for GETDEL, a versioned
    /// delete. Waits for as many of them as `consistency` needs beyond the
    /// primary; a shortfall is [`Error::NotReplicated`] (the primary applied
    /// it), never the "not applied" of [`Error::Unavailable`].
    pub(crate) async fn propagate(
        &self,
        key: &[u8],
        primary: usize,
        op: Op,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<()> {
        let version = version_of(&op);
        self.clock.observe(version);
        let replicas = self.replicas(key);
        let need = consistency.required(replicas.len()).saturating_sub(1);
        let others: Nodes = self
            .write_set_of(key, replicas)
            .into_iter()
            .filter(|&i| i != primary)
            .collect();
        let targets = self.targets(&others, need);
        // Spawned, all of them: gather returns after `need` answers from any
        // of them, and the rest must still be written.
        let fan = std::pin::pin!(self.fan_out(&targets, &op, deadline, true, false));
        // During a move, the new primary too (see `write_once`).
        let wait: Nodes = self.new_primary_among(key, &targets).into_iter().collect();
        if need == 0 && wait.is_empty() {
            return Ok(());
        }
        gather(fan, targets.len(), need, &wait)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                Error::Unavailable { needed, acked }
                | Error::NotReplicated { needed, acked, .. } => Error::NotReplicated {
                    version,
                    needed: needed + 1,
                    acked: acked + 1,
                },
                other => other,
            })
    }
}
