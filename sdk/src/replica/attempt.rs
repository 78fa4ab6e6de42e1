//! One attempt on one replica: an RPC bounded by the attempt's deadline
//! (see `deadline.rs`), counted, and reported to the node's health; the
//! retries of one replica's part of a fan-out; and the one rule for moving
//! a non-idempotent operation on to the next replica ([`may_fail_over`]).

use std::future::Future;
use std::sync::atomic::Ordering;

use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use futures_util::FutureExt;
use futures_util::future::{Either, ready};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Status;

use super::view::View;
use crate::deadline::attempt_deadline;
use crate::error::{Error, Failure, Result, classify, is_transient};
use crate::node::Node;

/// Whether a non-idempotent operation may move on to the next replica after
/// failing with `s`: yes when the connection failed (refused, reset, broken
/// pipe, node shutting down): the node is gone, and even if it ran the
/// operation before dying, no other replica saw that result, so running it
/// on the next replica yields the same value. No after a timeout: the node
/// may be alive and have applied it.
pub(super) fn may_fail_over(s: &Status) -> bool {
    matches!(classify(s), Failure::FailOver | Failure::Fenced)
}

impl View {
    /// One attempt of `op` on node `idx`, bounded by the attempt timeout and
    /// `deadline` (through the node's coalescer, if any: see
    /// [`crate::coalesce`]), reporting the outcome to the node's health.
    pub(crate) fn call(
        &self,
        idx: usize,
        op: Op,
        deadline: Instant,
    ) -> impl Future<Output = Result<Out, Status>> + '_ {
        self.attempt(idx, deadline, |node, until| node.call(op, until))
    }

    /// One `Batch` RPC on node `idx`.
    pub(crate) fn call_batch(
        &self,
        idx: usize,
        operations: Vec<pb::Operation>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<pb::OperationResult>, Status>> + '_ {
        self.attempt(idx, deadline, |node, until| async move {
            let trace = crate::trace::current();
            crate::deadline::by_deadline(until, |t| {
                node.conn.batch(operations, t, trace.as_deref())
            })
            .await
        })
    }

    /// Starts one RPC on node `idx`, which must answer by the attempt's
    /// deadline (the attempt timeout, cut to `deadline`) it is given; counts
    /// it, and reports the outcome to the node's health. Not an `async fn`:
    /// the returned future is the RPC's own plus the accounting, with no
    /// copy of the arguments.
    pub(super) fn attempt<'a, T, F, Fut>(
        &'a self,
        idx: usize,
        deadline: Instant,
        rpc: F,
    ) -> impl Future<Output = Result<T, Status>> + 'a
    where
        F: FnOnce(&'a Node, Instant) -> Fut,
        Fut: Future<Output = Result<T, Status>> + 'a,
        T: 'a,
    {
        let node = &*self.topo.nodes[idx];
        let Some((until, cut_short)) =
            attempt_deadline(Instant::now(), self.config.attempt_timeout, deadline)
        else {
            return Either::Left(ready(Err(Status::deadline_exceeded(
                "request deadline passed",
            ))));
        };
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let rpc = rpc(node, until);
        // An attempt cut short by the request deadline gets a timer of its
        // own: a coalescer batch may run to later callers' deadlines, and the
        // request's own deadline drops this future without accounting it.
        // Full-length attempts (the common case) rely on the coalescer.
        let rpc = if cut_short {
            Either::Left(Box::pin(crate::deadline::bounded(until, rpc)))
        } else {
            Either::Right(rpc)
        };
        Either::Right(rpc.inspect(move |res| self.account(idx, res)))
    }

    fn account<T>(&self, idx: usize, res: &Result<T, Status>) {
        let node = &*self.topo.nodes[idx];
        match res {
            Err(s) if classify(s) == Failure::Fenced => {
                node.mark_fenced();
                // Now, not at the next probe: callers are waiting for it.
                if node.wants_catch_up() {
                    self.spawn_catch_up(idx);
                }
            }
            Err(s) if is_transient(s) => node.record_failure(),
            // Any answer, even a refusal, shows the node is alive.
            _ => node.record_success(),
        }
    }

    /// One replica's part of a fan-out: an attempt, with retries (until the
    /// node is marked unhealthy: then the caller counts it as failed and
    /// other replicas serve) when `retry`.
    pub(super) async fn replica_call(
        &self,
        idx: usize,
        op: Op,
        deadline: Instant,
        retry: bool,
    ) -> Result<Out> {
        let once = || async {
            self.call(idx, op.clone(), deadline)
                .await
                .map_err(Error::from_status)
        };
        if retry {
            let gone = || !self.topo.nodes[idx].is_healthy();
            self.retry.run_unless(deadline, once, gone).await
        } else {
            once().await
        }
    }

    /// One target's first attempt in a fan-out: its result, or, when it
    /// failed in a way worth retrying (and `retry`), `op` back for the retry
    /// loop, which callers run where it costs least.
    pub(super) async fn first_attempt(
        &self,
        idx: usize,
        op: Op,
        deadline: Instant,
        retry: bool,
    ) -> std::result::Result<Result<Out>, Op> {
        match self.call(idx, op.clone(), deadline).await {
            Ok(out) => Ok(Ok(out)),
            Err(s) => {
                let e = Error::from_status(s);
                if retry && e.is_retryable() {
                    Err(op)
                } else {
                    Ok(Err(e))
                }
            }
        }
    }

    /// The retries of `op` on node `idx` after its first attempt failed, in
    /// a task of their own: they go on if the caller gives up.
    pub(super) fn retry_task(
        &self,
        idx: usize,
        op: Op,
        deadline: Instant,
    ) -> JoinHandle<(usize, Result<Out>)> {
        let view = self.clone();
        tokio::spawn(crate::trace::carry(async move {
            (idx, view.replica_call(idx, op, deadline, true).await)
        }))
    }
}
