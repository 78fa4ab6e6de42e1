//! One node as the client sees it: its transport (see `conn.rs`), the
//! optional coalescer (see [`crate::coalesce`]) and the node's health.
//!
//! Health is passive and active. Every attempt reports its outcome: after
//! `failure_threshold` consecutive transport failures the node is marked
//! unhealthy and callers skip it; the background prober (see
//! `Client::from_config`) calls `HealthCheck` on every node and re-admits a
//! node as soon as it answers `SERVING`. Health never changes the ring.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
    pub(crate) url: String,
    pub(crate) conn: Conn,
    coalescer: Option<mpsc::Sender<Pending>>,
    healthy: AtomicBool,
    failures: AtomicU32,
    threshold: u32,
}

impl Node {
    /// Must run inside a tokio runtime when coalescing is on (it spawns the
    /// node's coalescer task, which ends when the node is dropped).
    pub(crate) fn new(url: &str, config: &ClientConfig) -> Result<Self, ConfigError> {
        let conn = Conn::new(url, config)?;
        let coalescer = (config.coalesce.max_batch > 1)
            .then(|| coalesce::spawn(conn.clone(), config.coalesce.clone()));
        Ok(Self {
            url: url.to_owned(),
            conn,
            coalescer,
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            threshold: config.failure_threshold,
        })
    }

    /// Runs one operation, through the coalescer when there is one, and
    /// answers by `deadline` (the coalescer keeps deadlines itself, so the
    /// common path sets no timer). Not an `async fn`, so that it adds no
    /// layer (and no copy of `op`) to the caller's future.
    pub(crate) fn call(
        &self,
        op: Op,
        deadline: Instant,
    ) -> impl Future<Output = Result<Out, Status>> + '_ {
        match &self.coalescer {
            Some(tx) => Either::Left(coalesce::submit(tx, op, deadline)),
            // Boxed: a tonic call's future is kilobytes, and every caller's
            // future would otherwise carry it (and copy it when moved).
            None => Either::Right(Box::pin(by_deadline(deadline, |t| self.conn.unary(op, t)))),
        }
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!(node = %self.url, "node re-admitted");
        }
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
        match tokio::time::timeout(timeout, self.conn.stub().health_check(req)).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("health check timed out")),
        }
    }

    /// One active health check: re-admits on `SERVING`, else marks unhealthy.
    pub(crate) async fn probe(&self, timeout: Duration) {
        match self.health_check(timeout).await {
            Ok(r) if r.status == ServingStatus::Serving as i32 => self.record_success(),
            _ => self.mark_unhealthy(),
        }
    }
}
