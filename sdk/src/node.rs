//! One node as the client sees it: its transport (see `conn.rs`), the
//! optional coalescer (see [`crate::coalesce`]) and the node's health.
//!
//! Health is passive and active. Every attempt reports its outcome: after
//! `failure_threshold` consecutive transport failures the node is marked
//! unhealthy and callers skip it; the background prober (see
//! `Client::from_config`) calls `HealthCheck` on every node and re-admits a
//! node as soon as it answers `SERVING`. Health never changes the ring.
//!
//! Fencing (see `replica/catchup.rs`): a node this client lost and got back
//! may lack writes made meanwhile; so may one that says it is fenced (it
//! restarted or stalled). A node added to the membership is fenced until the
//! prober heard from it; what it lacks for the keys it gains is what the
//! move copies to it (see `replica/rebalance.rs`). Such a node is
//! *fenced* here too: it takes writes but serves no reads and runs no
//! conditional operation until a catch-up copied what it missed.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use distcache_proto::v1::{
    self as pb, HealthCheckRequest, ServingStatus, operation::Op, operation_result::Result as Out,
};
use futures_util::future::Either;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

use crate::coalesce::{self, Pending};
use crate::config::ClientConfig;
use crate::conn::Conn;
use crate::deadline::by_deadline;
use crate::error::ConfigError;

/// A node's pool, coalescer and health.
#[derive(Debug)]
pub(crate) struct Node {
    /// Its ring identity: an id given as `ID=URL`, else the URL.
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) conn: Conn,
    coalescer: Option<mpsc::Sender<Pending>>,
    healthy: AtomicBool,
    failures: AtomicU32,
    threshold: u32,
    /// Fenced in this client's view: no reads, no conditional operations.
    fenced: AtomicBool,
    /// The node must be told to fence itself (this client lost it), since
    /// [`Node::lost_since_ms`]; cleared once the `Fence` RPC succeeded.
    needs_fence: AtomicBool,
    /// A catch-up task of this client runs for the node.
    pub(crate) catching_up: AtomicBool,
    /// Unix ms of the last answer `SERVING` (the prober's); 0 before one.
    last_ok_ms: AtomicU64,
    /// Unix ms from which the node may lack writes, when `needs_fence`.
    lost_since_ms: AtomicU64,
    /// Peers its last catch-up skipped (they were down), with the `since`
    /// it used: when one serves again, the node is fenced again and
    /// catches up from it too (see `replica/catchup.rs`).
    skipped: std::sync::Mutex<Vec<(String, u64)>>,
    /// This client's near-cache subscription id on the node (its
    /// `Invalidations` stream's); 0 while there is none.
    tracking: AtomicU64,
    /// A subscription task runs for the node (see `near.rs`).
    pub(crate) subscribed: AtomicBool,
}

impl Node {
    /// Must run inside a tokio runtime when coalescing is on (it spawns the
    /// node's coalescer task, which ends when the node is dropped).
    pub(crate) fn new(name: &str, url: &str, config: &ClientConfig) -> Result<Self, ConfigError> {
        let conn = Conn::new(url, config)?;
        let coalescer = (config.coalesce.max_batch > 1)
            .then(|| coalesce::spawn(conn.clone(), config.coalesce.clone()));
        Ok(Self {
            name: name.to_owned(),
            url: url.to_owned(),
            conn,
            coalescer,
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            threshold: config.failure_threshold,
            fenced: AtomicBool::new(false),
            needs_fence: AtomicBool::new(false),
            catching_up: AtomicBool::new(false),
            last_ok_ms: AtomicU64::new(0),
            lost_since_ms: AtomicU64::new(0),
            skipped: std::sync::Mutex::new(Vec::new()),
            tracking: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
        })
    }

    /// This client's near-cache subscription id on the node; 0: none.
    pub(crate) fn tracking(&self) -> u64 {
        self.tracking.load(Ordering::Acquire)
    }

    pub(crate) fn set_tracking(&self, id: u64) {
        self.tracking.store(id, Ordering::Release);
    }

    /// Opens the node's `Invalidations` stream (no deadline: it lives as
    /// long as the subscription), with this client's token.
    pub(crate) async fn invalidations(&self) -> Result<tonic::Streaming<pb::Invalidation>, Status> {
        let mut req = tonic::Request::new(pb::InvalidationsRequest {});
        self.conn.headers(req.metadata_mut());
        Ok(self.conn.stub().invalidations(req).await?.into_inner())
    }

    /// A node that joined a running client's membership: fenced here until
    /// the prober heard from it and, if it says it is fenced (it just
    /// started), caught it up; so no read is sent to a node that would
    /// refuse it. What it lacks for the keys it gains is what the move
    /// copies to it (see `replica/rebalance.rs`).
    pub(crate) fn joined(self) -> Self {
        self.fenced.store(true, Ordering::Relaxed);
        self
    }

    /// Runs one operation, through the coalescer when there is one, and
    /// answers by `deadline` (the coalescer keeps deadlines itself, so the
    /// common path sets no timer). Not an `async fn`, so that it adds no
    /// layer (and no copy of `op`) to the caller's future. Carries the
    /// trace context of the caller's operation, if it has one (see
    /// [`crate::trace`]).
    pub(crate) fn call(
        &self,
        op: Op,
        deadline: Instant,
    ) -> impl Future<Output = Result<Out, Status>> + '_ {
        let trace = crate::trace::current();
        match &self.coalescer {
            Some(tx) => Either::Left(coalesce::submit(tx, op, deadline, trace)),
            // Boxed: a tonic call's future is kilobytes, and every caller's
            // future would otherwise carry it (and copy it when moved).
            None => Either::Right(Box::pin(async move {
                by_deadline(deadline, |t| self.conn.unary(op, t, trace.as_deref())).await
            })),
        }
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether reads and conditional operations may go to the node: it is
    /// healthy and not fenced.
    pub(crate) fn is_readable(&self) -> bool {
        self.is_healthy() && !self.fenced.load(Ordering::Acquire)
    }

    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Whether a catch-up should start for the node: it is fenced here and
    /// reachable, and none runs.
    pub(crate) fn wants_catch_up(&self) -> bool {
        self.is_fenced() && self.is_healthy() && !self.catching_up.load(Ordering::Acquire)
    }

    /// Records that the node answered. A node re-admitted this way was lost
    /// for a while and may lack writes made meanwhile: it is fenced, and
    /// must be told so ([`Node::take_fence`]).
    pub(crate) fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if !self.healthy.swap(true, Ordering::Relaxed) {
            let since = self.last_ok_ms.load(Ordering::Relaxed);
            self.lost_since_ms.store(since, Ordering::Relaxed);
            self.needs_fence.store(true, Ordering::Release);
            self.fenced.store(true, Ordering::Release);
            tracing::info!(node = %self.url, "node re-admitted, fenced until caught up");
        }
    }

    /// Fences the node in this client's view (it said it is fenced).
    pub(crate) fn mark_fenced(&self) {
        if !self.fenced.swap(true, Ordering::AcqRel) {
            tracing::info!(node = %self.url, "node is fenced, catching it up");
        }
    }

    /// Lifts this client's fence (a catch-up finished, or the node says it
    /// is in sync and this client owes it no fence).
    pub(crate) fn unfence(&self) {
        if self.fenced.swap(false, Ordering::AcqRel) {
            tracing::info!(node = %self.url, "node caught up, serving reads again");
        }
    }

    /// When the node must be told to fence itself: from when it may lack
    /// writes (Unix ms). Stays set until [`Node::fence_sent`].
    pub(crate) fn owed_fence(&self) -> Option<u64> {
        self.needs_fence
            .load(Ordering::Acquire)
            .then(|| self.lost_since_ms.load(Ordering::Relaxed))
    }

    /// Unix ms of the last answer `SERVING` (0 before one).
    pub(crate) fn last_ok(&self) -> u64 {
        self.last_ok_ms.load(Ordering::Relaxed)
    }

    /// Fences the node here and owes it a fence from `since_ms`.
    pub(crate) fn owe_fence(&self, since_ms: u64) {
        self.lost_since_ms.store(since_ms, Ordering::Relaxed);
        self.needs_fence.store(true, Ordering::Release);
        self.fenced.store(true, Ordering::Release);
    }

    /// Records the peers a finished catch-up skipped.
    pub(crate) fn set_skipped(&self, peers: Vec<(String, u64)>) {
        *self.skipped.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    /// If the last catch-up skipped `peer`, forgets it and returns the
    /// `since` that catch-up used.
    pub(crate) fn take_skipped(&self, peer: &str) -> Option<u64> {
        let mut s = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        let pos = s.iter().position(|(url, _)| url == peer)?;
        Some(s.swap_remove(pos).1)
    }

    /// The node took the fence this client owed it.
    pub(crate) fn fence_sent(&self) {
        self.needs_fence.store(false, Ordering::Release);
    }

    pub(crate) fn record_failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold {
            self.mark_unhealthy();
        }
    }

    pub(crate) fn mark_unhealthy(&self) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(node = %self.url, "node marked unhealthy");
        }
    }

    /// The node's `HealthCheck` answer, over this client's connections
    /// (token, TLS), within `timeout`.
    pub(crate) async fn health_check(
        &self,
        timeout: Duration,
    ) -> Result<pb::HealthCheckResponse, Status> {
        let req = self.conn.request(HealthCheckRequest {}, timeout);
        within(timeout, "health check", self.conn.stub().health_check(req)).await
    }

    /// One active health check: re-admits on `SERVING` (fencing the node
    /// here when it says it is fenced, lifting this client's fence when it
    /// says it is not and neither a fence is owed nor a catch-up runs),
    /// else marks it unhealthy.
    pub(crate) async fn probe(&self, timeout: Duration) {
        match self.health_check(timeout).await {
            Ok(r) if r.status == ServingStatus::Serving as i32 => {
                self.record_success();
                self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
                if r.fence.is_some_and(|f| f.fenced) {
                    self.mark_fenced();
                } else if self.owed_fence().is_none() && !self.catching_up.load(Ordering::Acquire) {
                    self.unfence();
                }
            }
            // A refusal (a missing or weak token) shows the node is alive;
            // the operations themselves will get the same refusal.
            Err(s) if !crate::error::is_transient(&s) => self.record_success(),
            _ => self.mark_unhealthy(),
        }
    }

    /// One page of the node's entries written since `since_version`.
    pub(crate) async fn scan(
        &self,
        req: pb::ScanRequest,
        timeout: Duration,
    ) -> Result<pb::ScanResponse, Status> {
        let req = self.conn.request(req, timeout);
        within(timeout, "scan", self.conn.stub().scan(req)).await
    }

    /// Drops hash ranges the node no longer owns (below a version).
    pub(crate) async fn forget(
        &self,
        req: pb::ForgetRequest,
        timeout: Duration,
    ) -> Result<pb::ForgetResponse, Status> {
        let req = self.conn.request(req, timeout);
        within(timeout, "forget", self.conn.stub().forget(req)).await
    }

    /// Raises or lifts the node's fence.
    pub(crate) async fn fence(
        &self,
        req: pb::FenceRequest,
        timeout: Duration,
    ) -> Result<pb::FenceResponse, Status> {
        let req = self.conn.request(req, timeout);
        within(timeout, "fence", self.conn.stub().fence(req)).await
    }
}

/// One unary call's answer within `timeout` (named `what` when it ran out).
async fn within<T>(
    timeout: Duration,
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!("{what} timed out"))),
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
