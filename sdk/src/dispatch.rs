//! How one logical operation becomes RPCs on replicas: single attempts with
//! health accounting, failover along the preference list, parallel fan-out
//! that returns after W acknowledgements, quorum reads that pick the newest
//! version and repair stale replicas, and primary-run operations (CAS,
//! counters, conditional sets) whose result is then propagated.
//!
//! Every operation runs on a [`View`]: the shared state plus the one
//! [`Topology`] snapshot loaded when the operation started, so node indexes
//! mean the same thing in every task, retry and repair it spawns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use bytes::Bytes;
use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use futures_util::FutureExt;
use futures_util::future::{Either, ready};
use smallvec::SmallVec;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Status;

use crate::config::{ClientConfig, Consistency};
use crate::deadline::attempt_deadline;
use crate::error::{Error, Failure, Result, classify, is_transient};
use crate::hlc::Hlc;
use crate::node::Node;
use crate::retry::Retrier;
use crate::topology::{Membership, Topology};

/// Counters of the dispatch layer.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) attempts: AtomicU64,
    pub(crate) failovers: AtomicU64,
    pub(crate) read_repairs: AtomicU64,
}

/// Everything a client shares between its clones and background tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) members: Membership,
    pub(crate) clock: Hlc,
    pub(crate) retry: Retrier,
    pub(crate) stats: Stats,
    pub(crate) prober: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
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

/// Whether a non-idempotent operation may move on to the next replica after
/// failing with `s`: yes when the connection failed (refused, reset, broken
/// pipe, node shutting down): the node is gone, and even if it ran the
/// operation before dying, no other replica saw that result, so running it
/// on the next replica yields the same value. No after a timeout: the node
/// may be alive and have applied it.
fn may_fail_over(s: &Status) -> bool {
    classify(s) == Failure::FailOver
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

    /// Replicas worth sending to: the healthy ones in ring order, or, when
    /// fewer than `need` are healthy, every replica (health may be stale).
    pub(crate) fn targets(&self, replicas: &[usize], need: usize) -> Nodes {
        let mut out: Nodes = replicas
            .iter()
            .copied()
            .filter(|&i| self.topo.nodes[i].is_healthy())
            .collect();
        if out.len() < need.max(1) {
            for &i in replicas {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        out
    }

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
        self.attempt(idx, deadline, |node, until| {
            crate::deadline::by_deadline(until, |t| node.conn.batch(operations, t))
        })
    }

    /// Starts one RPC on node `idx`, which must answer by the attempt's
    /// deadline (the attempt timeout, cut to `deadline`) it is given; counts
    /// it, and reports the outcome to the node's health. Not an `async fn`:
    /// the returned future is the RPC's own plus the accounting, with no
    /// copy of the arguments.
    fn attempt<'a, T, F, Fut>(
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
        Either::Right(rpc.inspect(move |res| self.account(node, res)))
    }

    fn account<T>(&self, node: &Node, res: &Result<T, Status>) {
        match res {
            Err(s) if is_transient(s) => node.record_failure(),
            // Any answer, even a refusal, shows the node is alive.
            _ => node.record_success(),
        }
    }

    /// Reads from the first healthy replica, failing over to the next ones,
    /// with retries across rounds.
    pub(crate) async fn read_one(&self, key: &Bytes, deadline: Instant) -> Result<pb::GetResponse> {
        let replicas = self.replicas(key);
        self.retry
            .run(deadline, || async {
                for (n, idx) in self.targets(&replicas, 1).into_iter().enumerate() {
                    if n > 0 {
                        self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                    }
                    let op = Op::Get(pb::GetRequest { key: key.clone() });
                    match self.call(idx, op, deadline).await {
                        Ok(Out::Get(r)) => {
                            self.clock.observe(r.version);
                            return Ok(r);
                        }
                        Ok(_) => return Err(mismatched()),
                        Err(s) if is_transient(&s) => continue,
                        Err(s) => return Err(Error::from_status(s)),
                    }
                }
                Err(Error::Unavailable {
                    needed: 1,
                    acked: 0,
                })
            })
            .await
    }

    /// One replica's part of a fan-out: an attempt, with retries (until the
    /// node is marked unhealthy: then the caller counts it as failed and
    /// other replicas serve) when `retry`.
    async fn replica_call(
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
    async fn first_attempt(
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

    /// Sends `op` to each of `targets`. With `inline_first`, the first
    /// target's attempt is run by whoever awaits the [`Fan`] (no task, the
    /// common case of one replica costs no spawn); every other target gets
    /// its own task, which outlives the caller, so writes still reach every
    /// replica after the caller returned on W acknowledgements. Only pass
    /// `inline_first` when the caller waits for the first target's answer.
    pub(crate) fn fan_out(
        &self,
        targets: &[usize],
        op: &Op,
        deadline: Instant,
        retry: bool,
        inline_first: bool,
    ) -> Fan<impl Future<Output = FirstTry> + Send + '_> {
        let first_idx = if inline_first {
            targets.first().copied()
        } else {
            None
        };
        let spawned = &targets[usize::from(first_idx.is_some())..];
        // Not boxed: the first target's first attempt lives inside the
        // caller's future, so the common single-replica write allocates
        // nothing here. Once started, the attempt is in the node's coalescer
        // queue and is sent even if the caller gives up; retries after a
        // failure run in a task of their own for the same reason.
        let first = first_idx.map(|idx| {
            let op = op.clone();
            async move {
                match self.first_attempt(idx, op, deadline, retry).await {
                    Ok(r) => FirstTry::Done((idx, r)),
                    Err(op) => FirstTry::Retrying(self.retry_task(idx, op, deadline)),
                }
            }
        });
        // A task's result waits in the task itself until the caller polls its
        // handle; a dropped handle detaches the task, which still finishes.
        // Each task makes its first attempt itself and boxes the retry loop
        // (large, and rarely needed): a small task is a cheap allocation.
        let tasks = spawned
            .iter()
            .map(|&idx| {
                let (view, op) = (self.clone(), op.clone());
                tokio::spawn(async move {
                    let r = match view.first_attempt(idx, op, deadline, retry).await {
                        Ok(r) => r,
                        Err(op) => Box::pin(view.replica_call(idx, op, deadline, true)).await,
                    };
                    (idx, r)
                })
            })
            .collect();
        Fan { first, tasks }
    }

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

    /// The retries of `op` on node `idx` after its first attempt failed, in
    /// a task of their own: they go on if the caller gives up.
    fn retry_task(
        &self,
        idx: usize,
        op: Op,
        deadline: Instant,
    ) -> JoinHandle<(usize, Result<Out>)> {
        let view = self.clone();
        tokio::spawn(async move { (idx, view.replica_call(idx, op, deadline, true).await) })
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

    /// Asks enough replicas, returns the newest state (a value, or nothing
    /// when the newest state is a tombstone), and repairs stale replicas in
    /// the background.
    pub(crate) async fn read_quorum(
        &self,
        key: &Bytes,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<pb::GetResponse> {
        let replicas = self.replicas(key);
        let need = consistency.required(replicas.len());
        self.retry
            .run(deadline, || async {
                let targets = self.targets(&replicas, need);
                let op = Op::Get(pb::GetRequest { key: key.clone() });
                // Scoped: an answer still out is dropped before resolving.
                let answers = {
                    let fan = std::pin::pin!(self.fan_out(&targets, &op, deadline, false, true));
                    gather(fan, targets.len(), need, None).await?
                };
                self.resolve(key, answers, deadline).await
            })
            .await
    }

    async fn resolve(
        &self,
        key: &Bytes,
        answers: Acks,
        deadline: Instant,
    ) -> Result<pb::GetResponse> {
        let mut gets = Vec::with_capacity(answers.len());
        for (idx, out) in answers {
            match out {
                Out::Get(r) => gets.push((idx, r)),
                _ => return Err(mismatched()),
            }
        }
        let Some(newest) = gets
            .iter()
            .filter(|(_, r)| r.found)
            .max_by_key(|(_, r)| r.version)
            .map(|(_, r)| r.clone())
        else {
            return Ok(pb::GetResponse::default());
        };
        self.clock.observe(newest.version);
        // Each replica's stored version: a miss may hide a tombstone that is
        // newer than the value another replica still holds.
        let mut held: Vec<(usize, u64)> = Vec::with_capacity(gets.len());
        for (idx, r) in &gets {
            let v = if r.found {
                r.version
            } else {
                self.stored_version(*idx, key, deadline).await
            };
            held.push((*idx, v));
        }
        let tombstone = held
            .iter()
            .zip(&gets)
            .filter(|(_, (_, r))| !r.found)
            .map(|((_, v), _)| *v)
            .max()
            .unwrap_or(0);
        let (result, repair_to, repair) = if tombstone > newest.version {
            let op = Op::Delete(pb::DeleteRequest {
                key: key.clone(),
                version: tombstone,
            });
            (pb::GetResponse::default(), tombstone, op)
        } else {
            let op = Op::Set(pb::SetRequest {
                key: key.clone(),
                value: newest.value.clone(),
                ttl_ms: newest.ttl_ms,
                condition: pb::SetCondition::Always as i32,
                version: newest.version,
                keep_ttl: false,
            });
            (newest, 0, op)
        };
        let target_version = if repair_to > 0 {
            repair_to
        } else {
            result.version
        };
        let stale: Vec<usize> = held
            .iter()
            .filter(|(_, v)| *v < target_version)
            .map(|(i, _)| *i)
            .collect();
        if !stale.is_empty() {
            self.stats
                .read_repairs
                .fetch_add(stale.len() as u64, Ordering::Relaxed);
            tracing::debug!(replicas = stale.len(), "read repair");
            // Repairs are versioned, so they never overwrite anything newer.
            drop(self.fan_out(&stale, &repair, deadline, true, false));
        }
        Ok(result)
    }

    /// The version node `idx` holds for `key`, tombstones included (0 when
    /// nothing or unknown). `Expire` with a replicated version of 1 never
    /// applies (every stored version is larger) and answers with the stored
    /// version, so it is a read-only probe until `Get` reports tombstones.
    async fn stored_version(&self, idx: usize, key: &Bytes, deadline: Instant) -> u64 {
        let op = Op::Expire(pb::ExpireRequest {
            key: key.clone(),
            ttl_ms: 0,
            version: 1,
        });
        match self.call(idx, op, deadline).await {
            Ok(Out::Expire(r)) => r.version,
            _ => 0,
        }
    }
}

/// What the first target's inline attempt gave: its answer, or, after a
/// failure worth retrying, the task that goes on retrying it.
pub(crate) enum FirstTry {
    Done((usize, Result<Out>)),
    Retrying(JoinHandle<(usize, Result<Out>)>),
}

pin_project_lite::pin_project! {
    /// A fan-out in progress (see [`View::fan_out`]): the first target's
    /// attempt, polled by the caller itself, and the other targets' tasks.
    /// Pinned by the caller and [`gather`]ed through the pin, so the first
    /// attempt's future is stored once, in the caller's own future.
    pub(crate) struct Fan<F> {
        #[pin]
        first: Option<F>,
        tasks: Vec<JoinHandle<(usize, Result<Out>)>>,
    }
}

/// A replica task that panicked (or was cancelled) counts as a failed replica.
fn task_failed(_: tokio::task::JoinError) -> Result<Out> {
    Err(Error::Unavailable {
        needed: 1,
        acked: 0,
    })
}

/// The next answer of a fan-out, from the inline call or any task; `None`
/// when all have answered.
async fn next_answer<F: Future<Output = FirstTry>>(
    fan: &mut Pin<&mut Fan<F>>,
) -> Option<(usize, Result<Out>)> {
    if fan.first.is_none() && fan.tasks.is_empty() {
        return None;
    }
    std::future::poll_fn(|cx| {
        let this = fan.as_mut().project();
        let (mut first, tasks) = (this.first, this.tasks);
        if let Some(f) = first.as_mut().as_pin_mut()
            && let Poll::Ready(r) = f.poll(cx)
        {
            first.set(None);
            match r {
                FirstTry::Done(r) => return Poll::Ready(Some(r)),
                // Polled with the other tasks just below.
                FirstTry::Retrying(task) => tasks.push(task),
            }
        }
        for i in 0..tasks.len() {
            if let Poll::Ready(r) = Pin::new(&mut tasks[i]).poll(cx) {
                tasks.swap_remove(i);
                return Poll::Ready(Some(r.unwrap_or_else(|e| (usize::MAX, task_failed(e)))));
            }
        }
        Poll::Pending
    })
    .await
}

/// Collects fan-out results until `need` succeeded and `wait_for` (if any)
/// answered, or until so many failed that `need` cannot be reached. A
/// permanent error (bad input) is returned at once.
pub(crate) async fn gather<F: Future<Output = FirstTry>>(
    mut fan: Pin<&mut Fan<F>>,
    total: usize,
    need: usize,
    mut wait_for: Option<usize>,
) -> Result<Acks> {
    let mut oks = Acks::with_capacity(need);
    let mut failed = 0;
    while (oks.len() < need || wait_for.is_some()) && total - failed >= need {
        let next = next_answer(&mut fan).await;
        if let Some((idx, _)) = &next
            && wait_for == Some(*idx)
        {
            wait_for = None;
        }
        match next {
            Some((idx, Ok(out))) => oks.push((idx, out)),
            Some((_, Err(e))) if e.is_retryable() => failed += 1,
            Some((_, Err(e))) => return Err(e),
            None => break,
        }
    }
    if oks.len() >= need {
        Ok(oks)
    } else {
        Err(Error::Unavailable {
            needed: need,
            acked: oks.len(),
        })
    }
}
