//! One `Pipeline` stream to a node: batches go out as messages on a
//! long-lived HTTP/2 stream and answers are matched to callers by id. A batch
//! then costs one DATA frame each way, where a `Batch` call costs a new
//! stream with headers and trailers on both sides (and a task on the node).
//!
//! A reader task owns the answer half. When the stream ends (the node shut
//! down, the connection broke), every caller still waiting gets the reason,
//! the pipe is marked closed, and the next batch opens a new one
//! ([`Conn::batch`](crate::node::Conn)). Callers that give up (their timeout)
//! take their entry out of the waiting table, so it never grows past the
//! batches really in flight, and a batch of theirs not yet sent is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient};
use tokio::sync::{mpsc, oneshot};

use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

type Answer = Result<Vec<pb::OperationResult>, Status>;

#[derive(Debug, Default)]
struct Waiting {
    callers: HashMap<u64, oneshot::Sender<Answer>>,
    /// Set once the stream ended; later callers get it at once.
    closed: Option<Status>,
}

/// An open `Pipeline` stream.
#[derive(Debug)]
pub(crate) struct Pipe {
    requests: mpsc::UnboundedSender<pb::PipelineRequest>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
}

/// Takes a caller's entry out of the table when its future is dropped before
/// the answer came (timeout, cancelled request).
struct Forget<'a> {
    waiting: &'a Mutex<Waiting>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiting).callers.remove(&self.id);
    }
}

fn lock(m: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    // The table stays consistent even if a holder panicked: every critical
    // section is a single map operation.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pipe {
    /// Opens a stream on `stub`, with the metadata `headers` writes (the
    /// token, the replication header). Resolves once the node accepted the
    /// stream.
    pub(crate) async fn open(
        mut stub: CacheServiceClient<Channel>,
        headers: impl FnOnce(&mut tonic::metadata::MetadataMap),
    ) -> Result<Arc<Self>, Status> {
        let (requests, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        // Batches wait here until the stream can take them (HTTP/2 asks for
        // the next message only when its window has room). One whose caller
        // gave up meanwhile (its deadline passed: a node that stalled) is
        // dropped, not sent late: a write the caller was told timed out is
        // not applied minutes later from this queue.
        let outbound =
            futures_util::stream::unfold((rx, waiting.clone()), |(mut rx, waiting)| async move {
                loop {
                    let m: pb::PipelineRequest = rx.recv().await?;
                    if lock(&waiting).callers.contains_key(&m.id) {
                        return Some((m, (rx, waiting)));
                    }
                }
            });
        let mut req = tonic::Request::new(outbound);
        headers(req.metadata_mut());
        let answers = stub.pipeline(req).await?.into_inner();
        tokio::spawn(read(answers, waiting.clone()));
        Ok(Arc::new(Self {
            requests,
            waiting,
            next_id: AtomicU64::new(1),
        }))
    }

    /// False once the stream ended.
    pub(crate) fn is_open(&self) -> bool {
        lock(&self.waiting).closed.is_none() && !self.requests.is_closed()
    }

    /// Sends one batch (with `traceparent`, empty for none) and waits for
    /// its results.
    pub(crate) async fn call(&self, operations: Vec<pb::Operation>, traceparent: String) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut w = lock(&self.waiting);
            if let Some(s) = &w.closed {
                return Err(s.clone());
            }
            w.callers.insert(id, tx);
        }
        let forget = Forget {
            waiting: &self.waiting,
            id,
        };
        if self
            .requests
            .send(pb::PipelineRequest {
                id,
                operations,
                traceparent,
            })
            .is_err()
        {
            return Err(closed());
        }
        let answer = rx.await.unwrap_or_else(|_| Err(closed()));
        std::mem::forget(forget);
        answer
    }
}

fn closed() -> Status {
    Status::unavailable("the node closed the pipeline stream")
}

/// Hands each answer to its caller; when the stream ends, fails everyone
/// still waiting and marks the pipe closed.
async fn read(mut answers: Streaming<pb::PipelineResponse>, waiting: Arc<Mutex<Waiting>>) {
    let reason = loop {
        match answers.message().await {
            Ok(Some(a)) => {
                if let Some(tx) = lock(&waiting).callers.remove(&a.id) {
                    let _ = tx.send(Ok(a.results));
                }
            }
            Ok(None) => break closed(),
            // A refusal is the node's answer; anything else means the
            // connection broke, which callers treat as the node being gone.
            Err(s) => match s.code() {
                Code::Unauthenticated
                | Code::PermissionDenied
                | Code::ResourceExhausted
                | Code::InvalidArgument
                | Code::OutOfRange => break s,
                _ => {
                    break Status::unavailable(format!("pipeline stream broke: {}", s.message()));
                }
            },
        }
    };
    let callers = {
        let mut w = lock(&waiting);
        w.closed = Some(reason.clone());
        std::mem::take(&mut w.callers)
    };
    for (_, tx) in callers {
        let _ = tx.send(Err(reason.clone()));
    }
}
