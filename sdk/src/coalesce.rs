//! Coalescing: concurrent single-key operations bound for the same node are
//! sent together as one `Batch` RPC, the way twemproxy pipelines many client
//! connections into one server connection. One unary RPC costs both sides
//! far more (HTTP/2 stream, headers, task wake-ups) than one more operation
//! in a batch.
//!
//! No batching timer: a per-node task takes the first queued operation,
//! waits for a free in-flight slot (at most `max_in_flight` batches per
//! node), then drains whatever else is already queued, up to `max_batch`
//! operations or `max_batch_bytes`. An idle client therefore sends each
//! operation at once (as a plain unary RPC when it is alone), and a busy one
//! sends bigger batches exactly when the node is the bottleneck.
//!
//! Identical GETs queued together (many callers reading one hot key) are
//! sent once and share the answer, unless a write to that key comes between
//! them in the batch.
//!
//! Operations in a batch run in order on the node and fail independently;
//! a transport failure fails every operation of the batch with its status.
//! A node budgets each answer to its message limit: reads it did not run
//! because the answer was full are sent again in the next batch, so large
//! values read by many callers at once never fail each other.
//!
//! Each operation carries its attempt's deadline, and the coalescer keeps
//! it, so callers need no timer of their own: an operation whose deadline
//! passed while it was queued is failed instead of sent, and a batch in
//! flight is bounded by the latest deadline among its operations (one timer
//! per batch, not per operation). A queued operation therefore gets its
//! answer by the later of its own deadline and the latest deadline among the
//! operations queued before it: with one attempt timeout for all, no later
//! than its own deadline. (Attempts cut short by a nearer request deadline
//! add a timer of their own: see `View::attempt`.)
//!
//! Trace contexts (see [`crate::trace`]): each operation keeps its caller's;
//! a lone operation travels with it, and a batch carries the context of its
//! first traced operation only (one message has one `traceparent`), so the
//! other callers' traces do not show that RPC. No context costs nothing: an
//! empty pointer in the queued operation.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use distcache_proto::budget::is_answer_full;
use distcache_proto::trace::TraceContext;
use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use crate::config::CoalesceConfig;
use crate::conn::{Conn, op_bytes, result_of};
use crate::deadline::{by_deadline, timed_out};

/// One queued operation.
#[derive(Debug)]
pub(crate) struct Pending {
    op: Op,
    deadline: Instant,
    reply: oneshot::Sender<Result<Out, Status>>,
    trace: Option<Arc<TraceContext>>,
}

/// Queues `op` (under the caller's `trace`, if any) at once and returns the
/// wait for its result, which comes by `deadline` (or by the deadline of the
/// batch in flight ahead of it; see the module docs). Not an `async fn`: the
/// operation is handed over here, so the returned future holds only the
/// answer's receiver.
pub(crate) fn submit(
    tx: &mpsc::Sender<Pending>,
    op: Op,
    deadline: Instant,
    trace: Option<Arc<TraceContext>>,
) -> impl Future<Output = Result<Out, Status>> + use<> {
    let (reply, rx) = oneshot::channel();
    let queued = match tx.try_send(Pending {
        op,
        deadline,
        reply,
        trace,
    }) {
        Ok(()) => None,
        Err(TrySendError::Closed(_)) => Some(Err(stopped())),
        // A full queue (the node is far behind): wait for room, within the
        // deadline. Boxed, so that the common case's future stays small.
        Err(TrySendError::Full(p)) => {
            let tx = tx.clone();
            Some(Ok(Box::pin(async move {
                match tokio::time::timeout_at(deadline, tx.send(p)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(stopped()),
                    Err(_) => Err(timed_out()),
                }
            })))
        }
    };
    async move {
        match queued {
            None => {}
            Some(Err(s)) => return Err(s),
            Some(Ok(wait)) => wait.await?,
        }
        rx.await.map_err(|_| stopped())?
    }
}

/// The `tracking_id` of a read in `op` (0 for anything else).
fn tracking_of(op: &pb::Operation) -> u64 {
    match &op.op {
        Some(Op::Get(r)) => r.tracking_id,
        _ => 0,
    }
}

/// The key an operation may change.
fn written_key(op: &Op) -> &Bytes {
    match op {
        Op::Get(r) => &r.key,
        Op::Set(r) => &r.key,
        Op::Delete(r) => &r.key,
        Op::CompareAndSwap(r) => &r.key,
        Op::IncrBy(r) => &r.key,
        Op::Expire(r) => &r.key,
    }
}

/// The reads of a batch so far, by key (to the position of their
/// operation), that a later read of the same key may share. A few are
/// looked up by a scan, like the usual small batch; past [`SCAN_READS`] a
/// map takes over, so a batch of thousands costs no more per read.
#[derive(Default)]
struct Reads {
    few: Vec<(Bytes, usize)>,
    many: HashMap<Bytes, usize, BuildHasherDefault<KeyHasher>>,
}

/// xxh3 for the batch's key map: the standard library's SipHash cost the
/// proxy about 380 instructions per GET at `redis-benchmark -P 16`
/// (`scripts/proxy-instructions.sh`), where a batch holds dozens of reads.
/// Keys come from this process's callers, so flooding the map with
/// collisions is no attack.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(5) ^ n as u64;
    }
}

/// Reads looked up by scanning (key lengths differ, or the first bytes do,
/// so a scan step is a comparison or two).
const SCAN_READS: usize = 8;

impl Reads {
    fn find(&self, key: &Bytes) -> Option<usize> {
        if self.many.is_empty() {
            self.few.iter().find(|(k, _)| k == key).map(|(_, i)| *i)
        } else {
            self.many.get(key).copied()
        }
    }

    fn insert(&mut self, key: Bytes, slot: usize) {
        if self.many.is_empty() && self.few.len() < SCAN_READS {
            self.few.push((key, slot));
            return;
        }
        self.many.extend(self.few.drain(..));
        self.many.insert(key, slot);
    }

    /// A write to `key`: later reads of it see the write, not a read before.
    fn remove(&mut self, key: &Bytes) {
        if self.many.is_empty() {
            self.few.retain(|(k, _)| k != key);
        } else {
            self.many.remove(key);
        }
    }
}

fn stopped() -> Status {
    Status::unavailable("client is shutting down")
}

/// `p`, unless its deadline has passed at `now`: then it is failed with
/// DEADLINE_EXCEEDED instead of sent.
fn unexpired(p: Pending, now: Instant) -> Option<Pending> {
    if p.deadline > now {
        return Some(p);
    }
    let _ = p.reply.send(Err(timed_out()));
    None
}

/// Starts the coalescer of one node; it stops when every sender is dropped.
pub(crate) fn spawn(conn: Conn, config: CoalesceConfig) -> mpsc::Sender<Pending> {
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    tokio::spawn(run(rx, conn, config));
    tx
}

/// The node's coalescer task: takes queued operations in batches and keeps
/// up to `max_in_flight` of them on the wire.
async fn run(mut rx: mpsc::Receiver<Pending>, conn: Conn, config: CoalesceConfig) {
    // Batches in flight are polled by this task itself rather than spawned:
    // no hand-off to another task (or worker) between queueing and sending.
    let max_in_flight = config.max_in_flight.max(1);
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            // While every slot is busy this branch is off, and more
            // operations queue up behind the next batch.
            first = rx.recv(), if in_flight.len() < max_in_flight => {
                let Some(first) = first else { break };
                let now = Instant::now();
                let mut bytes = 0;
                // Sized for what is queued now: no regrowth while draining.
                let mut batch = Vec::with_capacity((rx.len() + 1).min(config.max_batch.max(1)));
                let mut next = Some(first);
                while let Some(p) = next.take() {
                    if let Some(p) = unexpired(p, now) {
                        bytes += op_bytes(&p.op);
                        batch.push(p);
                    }
                    if batch.len() < config.max_batch && bytes < config.max_batch_bytes {
                        next = rx.try_recv().ok();
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let conn = conn.clone();
                in_flight.push(async move { send(&conn, batch).await });
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Sends `batch` and answers every operation of it: a lone operation as a
/// single-operation message, more as a batch, again and again while the node
/// leaves reads unrun (their deadlines permitting).
async fn send(conn: &Conn, mut batch: Vec<Pending>) {
    loop {
        if batch.len() == 1
            && let Some(p) = batch.pop()
        {
            let _ = p
                .reply
                .send(by_deadline(p.deadline, |t| conn.one(p.op, t, p.trace.as_deref())).await);
            return;
        }
        let not_run = send_batch(conn, batch).await;
        let now = Instant::now();
        batch = not_run
            .into_iter()
            .filter_map(|p| unexpired(p, now))
            .collect();
        if batch.is_empty() {
            return;
        }
    }
}

/// Sends `batch` as one message and answers its operations; returns the
/// reads the node did not run because its answer was full (see
/// `distcache_proto::budget`), to be sent again. A message's first read
/// always runs, so every round answers at least one.
async fn send_batch(conn: &Conn, batch: Vec<Pending>) -> Vec<Pending> {
    let deadline = batch
        .iter()
        .map(|p| p.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    // One message, one trace context: the first traced operation's.
    let trace = batch.iter().find_map(|p| p.trace.clone());
    // What answering needs once the operation is gone: the reply, which
    // result answers it (a GET of a key already read earlier in the batch,
    // with no write to it in between, is answered by that read's result and
    // not sent twice: many callers reading one hot key cost one read), and
    // for a read its request, deadline and trace (a read may have to be
    // sent again).
    let mut replies = Vec::with_capacity(batch.len());
    let mut ops = Vec::with_capacity(batch.len());
    let mut reads = Reads::default();
    let mut shared = false;
    for p in batch {
        let (slot, again) = match &p.op {
            Op::Get(r) => {
                let again = Some((r.clone(), p.deadline, p.trace.clone()));
                // (Shared only by reads tracked alike: see `tracking_id`.)
                if let Some(slot) = reads.find(&r.key)
                    && tracking_of(&ops[slot]) == r.tracking_id
                {
                    shared = true;
                    replies.push((p.reply, again, slot));
                    continue;
                }
                reads.insert(r.key.clone(), ops.len());
                (ops.len(), again)
            }
            write => {
                reads.remove(written_key(write));
                (ops.len(), None)
            }
        };
        replies.push((p.reply, again, slot));
        ops.push(pb::Operation { op: Some(p.op) });
    }
    let sent = ops.len();
    let mut not_run = Vec::new();
    match by_deadline(deadline, |t| conn.batch(ops, t, trace.as_deref())).await {
        Ok(results) if results.len() == sent => {
            let mut results: Vec<Option<pb::OperationResult>> =
                results.into_iter().map(Some).collect();
            // Each result is moved to the last reply it answers, cloned
            // (a reference count on the value) for the others.
            let mut last = vec![usize::MAX; if shared { sent } else { 0 }];
            if shared {
                for (i, (_, _, slot)) in replies.iter().enumerate() {
                    last[*slot] = i;
                }
            }
            for (i, (reply, again, slot)) in replies.into_iter().enumerate() {
                let r = if !shared || last[slot] == i {
                    results[slot].take()
                } else {
                    results[slot].clone()
                };
                let Some(r) = r else {
                    let _ = reply.send(Err(Status::internal("batch result answered twice")));
                    continue;
                };
                match again {
                    Some((get, deadline, trace)) if is_answer_full(&r) => not_run.push(Pending {
                        op: Op::Get(get),
                        deadline,
                        reply,
                        trace,
                    }),
                    _ => {
                        let _ = reply.send(result_of(r));
                    }
                }
            }
        }
        Ok(_) => {
            for (reply, _, _) in replies {
                let _ = reply.send(Err(Status::internal(
                    "batch answered the wrong number of results",
                )));
            }
        }
        Err(status) => {
            for (reply, _, _) in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
    not_run
}
