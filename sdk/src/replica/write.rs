//! Writes: a versioned write to every replica of the key, acknowledged
//! once the consistency level's replicas hold it (and the first healthy
//! replica answered, so a client reads its own writes); primary-run
//! operations (CAS, counters, conditional sets) on one replica, and the
//! propagation of their result to the others.

use std::sync::atomic::Ordering;

use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use tokio::time::Instant;

use super::attempt::may_fail_over;
use super::fanout::{gather, task_failed};
use super::view::{Acks, Nodes, View};
use crate::config::Consistency;
use crate::error::{Error, Result};

impl View {
    /// Writes `op` (which carries its version) to the key's replicas and
    /// returns once `consistency` is met.
    pub(crate) async fn write(
        &self,
        key: &[u8],
        op: Op,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<Acks> {
        let replicas = self.replicas(key);
        let need = consistency.required(replicas.len());
        let targets = self.targets(&replicas, need);
        if let [idx] = targets[..] {
            return self.write_one(idx, op, deadline).await;
        }
        // Wait for the first healthy replica, the one `One` reads go to, so a
        // client reads its own writes; the others may finish later. Its
        // first attempt runs inline only when the coalescer sends it: a
        // queued operation is sent even if the caller gives up, a unary RPC
        // in flight is cancelled with it, and another replica's copy may
        // already be written. (With one target there is nothing to be
        // inconsistent with, so `write_one` always runs it inline.)
        let inline = self.config.coalesce.max_batch > 1;
        let fan = std::pin::pin!(self.fan_out(&targets, &op, deadline, true, inline));
        gather(fan, targets.len(), need, targets.first().copied()).await
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
    pub(crate) async fn on_primary(
        &self,
        key: &[u8],
        op: Op,
        deadline: Instant,
    ) -> Result<(usize, Out)> {
        let replicas = self.replicas(key);
        for (n, idx) in self.targets(&replicas, 1).into_iter().enumerate() {
            if n > 0 {
                self.stats.failovers.fetch_add(1, Ordering::Relaxed);
            }
            match self.call(idx, op.clone(), deadline).await {
                Ok(out) => return Ok((idx, out)),
                Err(s) if may_fail_over(&s) => continue,
                Err(s) => return Err(Error::from_status(s)),
            }
        }
        Err(Error::Unavailable {
            needed: 1,
            acked: 0,
        })
    }

    /// Copies the result of a primary-run operation (value + version) to the
    /// other replicas with a versioned set; waits for as many of them as
    /// `consistency` needs beyond the primary.
    pub(crate) async fn propagate(
        &self,
        key: &[u8],
        primary: usize,
        set: pb::SetRequest,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<()> {
        self.clock.observe(set.version);
        let replicas = self.replicas(key);
        let need = consistency.required(replicas.len()).saturating_sub(1);
        let others: Nodes = replicas.into_iter().filter(|&i| i != primary).collect();
        let targets = self.targets(&others, need);
        // Spawned, all of them: gather returns after `need` answers from any
        // of them, and the rest must still be written.
        let fan = std::pin::pin!(self.fan_out(&targets, &Op::Set(set), deadline, true, false));
        if need == 0 {
            return Ok(());
        }
        gather(fan, targets.len(), need, None).await.map(|_| ())
    }
}
