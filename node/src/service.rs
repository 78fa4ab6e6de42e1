//! `distcache.v1.CacheService` over the store: a thin adapter that checks
//! limits, calls the store, counts the outcome, and turns errors into a
//! `tonic::Status` in exactly one function ([`to_status`]).
//!
//! With a write-ahead log, each write that applied is recorded in a
//! [`Records`] while the store call runs (synchronously, under the shard lock
//! only for the store call itself); the request then awaits
//! [`Wal::append`] with no lock held, and answers once the log has it (after
//! the fsync with `--wal-fsync always`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use distcache_proto::budget::{self, AnswerBudget};
use distcache_proto::v1::{
    self as pb, cache_service_server::CacheService, operation, operation_result,
};
use distcache_serve::admin::PROMETHEUS_CONTENT_TYPE;
use distcache_serve::pipeline::{PipelineStream, error_result, serve_pipeline};
use distcache_serve::security::{Principal, RateCharge};
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::limits::LimitError;
use crate::metrics::{Op, Outcome};
use crate::state::{Shared, WAL_FAILED};
use crate::store::{Condition, Lookup, SetOptions, StoreError};
use crate::tracking::InvalidationStream;
use crate::wal::{Records, WalError};

/// Why one operation failed.
#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown set condition {0}")]
    BadCondition(i32),
    #[error("empty batch operation")]
    EmptyOperation,
    #[error("role {0} may only batch get operations")]
    BatchDenied(&'static str),
    #[error("a batch of {0} operations exceeds the limit of {max}", max = budget::MAX_OPERATIONS)]
    BatchTooLong(usize),
    #[error("a scan of {0} hash ranges exceeds the limit of {max}", max = distcache_proto::ring::MAX_SCAN_RANGES)]
    TooManyRanges(usize),
    #[error("a forget must name at least one hash range")]
    NoRanges,
    #[error(transparent)]
    Wal(#[from] WalError),
    /// Fenced (see `fence.rs`): refused to a replicating client.
    #[error("{0}")]
    Fenced(String),
    /// A read asked to be tracked for a subscriber this node does not have.
    #[error(
        "tracking_id {0} has no Invalidations stream on this node (it ended, or the node restarted)"
    )]
    NotSubscribed(u64),
}

/// The one place errors become gRPC statuses.
fn to_status(e: &OpError) -> Status {
    let code = match e {
        OpError::Fenced(reason) => return distcache_proto::status::fenced(reason),
        OpError::Limit(_)
        | OpError::BadCondition(_)
        | OpError::EmptyOperation
        | OpError::BatchTooLong(_)
        | OpError::TooManyRanges(_)
        | OpError::NoRanges => Code::InvalidArgument,
        OpError::Store(StoreError::EmptyKey) => Code::InvalidArgument,
        OpError::BatchDenied(_) => Code::PermissionDenied,
        OpError::Store(StoreError::TooLarge { .. }) => Code::ResourceExhausted,
        OpError::Store(StoreError::NotAnInteger | StoreError::Overflow) => Code::FailedPrecondition,
        OpError::NotSubscribed(_) => Code::FailedPrecondition,
        OpError::Wal(_) => Code::Unavailable,
    };
    Status::new(code, e.to_string())
}

fn error_outcome(e: &OpError) -> Outcome {
    match to_status(e).code() {
        Code::InvalidArgument => Outcome::InvalidArgument,
        _ => Outcome::Error,
    }
}

fn applied(yes: bool) -> Outcome {
    if yes {
        Outcome::Ok
    } else {
        Outcome::NotApplied
    }
}

/// Whether `op` reads the node's state to answer or decide, so a fenced
/// node must not run it for a replicating client: a get, CAS, a counter,
/// or a node-stamped (version 0) or conditional set, delete or expire.
/// Replicated writes (they carry their version) always run.
fn decides(op: &operation::Op) -> bool {
    use operation::Op as In;
    match op {
        In::Get(_) | In::CompareAndSwap(_) | In::IncrBy(_) => true,
        In::Set(r) => set_decides(r),
        In::Delete(r) => r.version == 0,
        In::Expire(r) => r.version == 0,
    }
}

fn set_decides(r: &pb::SetRequest) -> bool {
    r.version == 0 || r.condition != pb::SetCondition::Always as i32
}

/// Whether the caller asked to be held to the fence (the SDK replicating).
fn strict<T>(req: &Request<T>) -> bool {
    req.metadata()
        .contains_key(distcache_proto::status::REPLICATED)
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct CacheNode {
    shared: Arc<Shared>,
    stop: Option<watch::Receiver<bool>>,
}

impl CacheNode {
    /// A service over `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, stop: None }
    }

    /// Ends `Pipeline` streams (after answering what they have read) once
    /// `stop` turns true, so a graceful shutdown is not held up by them.
    pub(crate) fn with_shutdown(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Refuses a replicated version too far ahead of this node's clock (a
    /// node-stamped write, version 0, needs no clock reading).
    fn check_version(&self, version: u64) -> Result<(), OpError> {
        if version == 0 {
            return Ok(());
        }
        let now = self.shared.store.clock().now_ms();
        Ok(self.shared.limits.version(version, now)?)
    }

    /// Refuses an operation that `decides` (see [`decides`]) to a
    /// replicating client (`strict`) while the node is fenced.
    fn gate(&self, strict: bool, decides: bool) -> Result<(), OpError> {
        if strict && decides && self.shared.fence.check(crate::clock::now_ms) {
            return Err(OpError::Fenced(self.shared.fence.state().reason));
        }
        Ok(())
    }

    fn get_one(&self, r: pb::GetRequest) -> Result<(pb::GetResponse, Outcome), OpError> {
        self.shared.limits.key(&r.key)?;
        // Registered before the read: a change from here on is sent.
        if r.tracking_id != 0 && !self.shared.tracker.track(&r.key, r.tracking_id) {
            return Err(OpError::NotSubscribed(r.tracking_id));
        }
        Ok(match self.shared.store.lookup(&r.key) {
            Lookup::Live(v) => (
                pb::GetResponse {
                    found: true,
                    value: v.value,
                    version: v.version,
                    ttl_ms: v.ttl_ms,
                    tombstone_version: 0,
                },
                Outcome::Ok,
            ),
            Lookup::Tombstone(version) => (
                pb::GetResponse {
                    tombstone_version: version,
                    ..Default::default()
                },
                Outcome::Miss,
            ),
            Lookup::Absent => (pb::GetResponse::default(), Outcome::Miss),
        })
    }

    fn set_one(
        &self,
        r: pb::SetRequest,
        log: &mut Records,
    ) -> Result<(pb::SetResponse, Outcome), OpError> {
        self.shared.limits.write(&r.key, &r.value, r.ttl_ms)?;
        self.check_version(r.version)?;
        let condition = match pb::SetCondition::try_from(r.condition) {
            Ok(pb::SetCondition::Always) => Condition::Always,
            Ok(pb::SetCondition::IfAbsent) => Condition::IfAbsent,
            Ok(pb::SetCondition::IfPresent) => Condition::IfPresent,
            Err(_) => return Err(OpError::BadCondition(r.condition)),
        };
        let w = self.shared.store.set(
            &r.key,
            &r.value,
            SetOptions {
                ttl_ms: r.ttl_ms,
                condition,
                version: r.version,
                keep_ttl: r.keep_ttl,
            },
        )?;
        log.put(&r.key, &r.value, &w);
        let resp = pb::SetResponse {
            applied: w.applied,
            version: w.version,
        };
        Ok((resp, applied(w.applied)))
    }

    fn delete_one(
        &self,
        r: pb::DeleteRequest,
        log: &mut Records,
    ) -> Result<(pb::DeleteResponse, Outcome), OpError> {
        self.shared.limits.key(&r.key)?;
        self.check_version(r.version)?;
        let (old, w) = self.shared.store.take(&r.key, r.version)?;
        log.tombstone(&r.key, &w);
        let deleted = old.is_some();
        let resp = pb::DeleteResponse {
            deleted,
            version: w.version,
            value: old.filter(|_| r.return_value).unwrap_or_default(),
        };
        Ok((resp, applied(w.applied)))
    }

    fn cas_one(
        &self,
        r: pb::CompareAndSwapRequest,
        log: &mut Records,
    ) -> Result<(pb::CompareAndSwapResponse, Outcome), OpError> {
        self.shared.limits.write(&r.key, &r.value, r.ttl_ms)?;
        let w =
            self.shared
                .store
                .compare_and_swap(&r.key, r.expected_version, &r.value, r.ttl_ms)?;
        log.put(&r.key, &r.value, &w);
        let resp = pb::CompareAndSwapResponse {
            swapped: w.applied,
            version: w.version,
        };
        Ok((resp, applied(w.applied)))
    }

    fn incr_by_one(
        &self,
        r: pb::IncrByRequest,
        log: &mut Records,
    ) -> Result<(pb::IncrByResponse, Outcome), OpError> {
        self.shared.limits.key(&r.key)?;
        let (value, w) = self.shared.store.incr_by(&r.key, r.delta)?;
        if log.is_recording() {
            log.put(&r.key, value.to_string().as_bytes(), &w);
        }
        let resp = pb::IncrByResponse {
            value,
            version: w.version,
        };
        Ok((resp, Outcome::Ok))
    }

    fn expire_one(
        &self,
        r: pb::ExpireRequest,
        log: &mut Records,
    ) -> Result<(pb::ExpireResponse, Outcome), OpError> {
        self.shared.limits.key(&r.key)?;
        self.shared.limits.ttl(r.ttl_ms)?;
        self.check_version(r.version)?;
        let (w, value) = self
            .shared
            .store
            .expire_with_value(&r.key, r.ttl_ms, r.version)?;
        if let Some(value) = value {
            log.put(&r.key, &value, &w);
        }
        let resp = pb::ExpireResponse {
            applied: w.applied,
            version: w.version,
        };
        Ok((resp, applied(w.applied)))
    }

    fn batch_one(&self, op: pb::Operation, strict: bool, log: &mut Records) -> pb::OperationResult {
        use operation::Op as In;
        use operation_result::Result as Out;
        if let Some(o) = &op.op
            && let Err(e) = self.gate(strict, decides(o))
        {
            self.shared.metrics.count(Op::Batch, error_outcome(&e));
            return pb::OperationResult {
                result: Some(Out::Error(distcache_proto::status::from_status(
                    &to_status(&e),
                ))),
            };
        }
        let (kind, result) = match op.op {
            Some(In::Get(r)) => (Op::Get, self.get_one(r).map(|(v, o)| (Out::Get(v), o))),
            Some(In::Set(r)) => (Op::Set, self.set_one(r, log).map(|(v, o)| (Out::Set(v), o))),
            Some(In::Delete(r)) => (
                Op::Delete,
                self.delete_one(r, log).map(|(v, o)| (Out::Delete(v), o)),
            ),
            Some(In::CompareAndSwap(r)) => (
                Op::Cas,
                self.cas_one(r, log)
                    .map(|(v, o)| (Out::CompareAndSwap(v), o)),
            ),
            Some(In::IncrBy(r)) => (
                Op::IncrBy,
                self.incr_by_one(r, log).map(|(v, o)| (Out::IncrBy(v), o)),
            ),
            Some(In::Expire(r)) => (
                Op::Expire,
                self.expire_one(r, log).map(|(v, o)| (Out::Expire(v), o)),
            ),
            None => (Op::Batch, Err(OpError::EmptyOperation)),
        };
        let result = match result {
            Ok((out, outcome)) => {
                self.shared.metrics.count(kind, outcome);
                out
            }
            Err(e) => {
                self.shared.metrics.count(kind, error_outcome(&e));
                Out::Error(distcache_proto::status::from_status(&to_status(&e)))
            }
        };
        pb::OperationResult {
            result: Some(result),
        }
    }

    /// Runs a batch (of a `Batch` call or one `Pipeline` message): checks the
    /// caller's role against its contents, runs each operation, logs the
    /// writes and answers once the log has them.
    async fn run_batch(
        &self,
        principal: Option<&Principal>,
        strict: bool,
        ops: Vec<pb::Operation>,
    ) -> Result<Vec<pb::OperationResult>, Status> {
        self.serve_msg(Op::Batch, |log| {
            if let Some(p) = principal
                && !p.may_run_batch(&ops)
            {
                self.shared.metrics.security.permission_denied();
                return Err(OpError::BatchDenied(p.role.name()));
            }
            if ops.len() > budget::MAX_OPERATIONS {
                return Err(OpError::BatchTooLong(ops.len()));
            }
            let mut answer = AnswerBudget::new(self.shared.max_message_bytes, &ops);
            let results = ops
                .into_iter()
                .map(|op| {
                    if !budget::is_read(&op) {
                        self.batch_one(op, strict, log)
                    } else if answer.may_read() {
                        answer.admit(self.batch_one(op, strict, log))
                    } else {
                        budget::answer_full()
                    }
                })
                .collect();
            Ok((results, Outcome::Ok))
        })
        .await
    }

    /// Runs one unary RPC: refuses while shutting down, times it, logs its
    /// writes to the WAL (if any) before answering, counts it.
    async fn serve<T>(
        &self,
        op: Op,
        f: impl FnOnce(&mut Records) -> Result<(T, Outcome), OpError>,
    ) -> Result<Response<T>, Status> {
        self.serve_msg(op, f).await.map(Response::new)
    }

    /// [`serve`](Self::serve) without the response wrapper.
    async fn serve_msg<T>(
        &self,
        op: Op,
        f: impl FnOnce(&mut Records) -> Result<(T, Outcome), OpError>,
    ) -> Result<T, Status> {
        if !self.shared.serving.load(Ordering::Relaxed) {
            return Err(Status::unavailable("node is shutting down"));
        }
        if op != Op::Metrics && self.shared.wal_failed() {
            return Err(Status::unavailable(WAL_FAILED));
        }
        let start = Instant::now();
        let mut log = match self.shared.wal {
            Some(_) => Records::new(),
            None => Records::disabled(),
        };
        let mut result = f(&mut log);
        if let (Some(wal), false) = (&self.shared.wal, log.is_empty()) {
            // No lock is held here: the store calls above have returned.
            if let Err(e) = wal.append(log).await {
                result = Err(e.into());
            }
        }
        let metrics = &self.shared.metrics;
        metrics.observe(op, start.elapsed());
        match result {
            Ok((resp, outcome)) => {
                metrics.count(op, outcome);
                Ok(resp)
            }
            Err(e) => {
                metrics.count(op, error_outcome(&e));
                Err(to_status(&e))
            }
        }
    }
}

#[tonic::async_trait]
impl CacheService for CacheNode {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        crate::spans::key_len(req.get_ref().key.len());
        let strict = strict(&req);
        self.serve(Op::Get, |_| {
            self.gate(strict, true)?;
            self.get_one(req.into_inner())
        })
        .await
    }

    async fn set(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        crate::spans::key_len(req.get_ref().key.len());
        let strict = strict(&req);
        self.serve(Op::Set, |log| {
            let r = req.into_inner();
            self.gate(strict, set_decides(&r))?;
            self.set_one(r, log)
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        crate::spans::key_len(req.get_ref().key.len());
        let strict = strict(&req);
        self.serve(Op::Delete, |log| {
            let r = req.into_inner();
            self.gate(strict, r.version == 0)?;
            self.delete_one(r, log)
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        req: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        crate::spans::key_len(req.get_ref().key.len());
        let strict = strict(&req);
        self.serve(Op::Cas, |log| {
            self.gate(strict, true)?;
            self.cas_one(req.into_inner(), log)
        })
        .await
    }

    async fn incr_by(
        &self,
        req: Request<pb::IncrByRequest>,
    ) -> Result<Response<pb::IncrByResponse>, Status> {
        crate::spans::key_len(req.get_ref().key.len());
        let strict = strict(&req);
        self.serve(Op::IncrBy, |log| {
            self.gate(strict, true)?;
            self.incr_by_one(req.into_inner(), log)
        })
        .await
    }

    async fn expire(
        &self,
        req: Request<pb::ExpireRequest>,
    ) -> Result<Response<pb::ExpireResponse>, Status> {
        crate::spans::key_len(req.get_ref().key.len());
        let strict = strict(&req);
        self.serve(Op::Expire, |log| {
            let r = req.into_inner();
            self.gate(strict, r.version == 0)?;
            self.expire_one(r, log)
        })
        .await
    }

    async fn batch(
        &self,
        req: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let principal = req.extensions().get::<Principal>().cloned();
        let charge = req.extensions().get::<RateCharge>().cloned();
        let strict = strict(&req);
        let operations = req.into_inner().operations;
        crate::spans::ops(operations.len());
        // One token per operation: the rate-limit layer took the first.
        if let Some(c) = &charge
            && operations.len() > 1
        {
            c.take_n(operations.len() - 1)
                .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        }
        let results = self
            .run_batch(principal.as_ref(), strict, operations)
            .await?;
        Ok(Response::new(pb::BatchResponse { results }))
    }

    type PipelineStream = PipelineStream;

    type InvalidationsStream = InvalidationStream;

    async fn invalidations(
        &self,
        _req: Request<pb::InvalidationsRequest>,
    ) -> Result<Response<InvalidationStream>, Status> {
        if !self.shared.serving.load(Ordering::Relaxed) {
            return Err(Status::unavailable("node is shutting down"));
        }
        let tracker = self.shared.tracker.clone();
        if !tracker.enabled() {
            return Err(Status::failed_precondition(
                "client-side caching is off on this node (--tracking-table-keys 0)",
            ));
        }
        Ok(Response::new(crate::tracking::stream(
            tracker,
            self.stop.clone(),
        )))
    }

    async fn pipeline(
        &self,
        req: Request<Streaming<pb::PipelineRequest>>,
    ) -> Result<Response<PipelineStream>, Status> {
        if !self.shared.serving.load(Ordering::Relaxed) {
            return Err(Status::unavailable("node is shutting down"));
        }
        let principal = req.extensions().get::<Principal>().cloned();
        let charge = req.extensions().get::<RateCharge>().cloned();
        let strict = strict(&req);
        let node = self.clone();
        let p = principal.clone();
        let answers = serve_pipeline(
            req.into_inner(),
            principal,
            self.stop.clone(),
            move |ops, tp| {
                let (node, principal, charge) = (node.clone(), p.clone(), charge.clone());
                let span = crate::spans::message(ops.len(), &tp);
                let work = async move {
                    let n = ops.len();
                    let allowed = match &charge {
                        // One token per operation of the message.
                        Some(c) => c
                            .take_n(n)
                            .map_err(|e| Status::resource_exhausted(e.to_string())),
                        None => Ok(()),
                    };
                    match allowed {
                        Ok(()) => node.run_batch(principal.as_ref(), strict, ops).await,
                        Err(s) => Err(s),
                    }
                    .unwrap_or_else(|s| vec![error_result(&s); n])
                };
                tracing::Instrument::instrument(work, span)
            },
        );
        Ok(Response::new(answers))
    }

    async fn health_check(
        &self,
        _req: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let s = &self.shared;
        let status = if s.serving.load(Ordering::Relaxed) && !s.wal_failed() {
            pb::ServingStatus::Serving
        } else {
            pb::ServingStatus::NotServing
        };
        // Answers even while shutting down, so callers see NOT_SERVING.
        s.metrics.count(Op::Health, Outcome::Ok);
        Ok(Response::new(pb::HealthCheckResponse {
            status: status as i32,
            node_id: s.node_id.clone(),
            uptime_seconds: s.metrics.uptime().as_secs(),
            keys: s.store.len(),
            memory_bytes: s.store.memory_bytes(),
            max_memory_bytes: s.store.max_memory(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            incarnation: s.fence.incarnation,
            fence: Some(s.fence.state()),
            tombstone_ttl_ms: s.store.tombstone_ttl_ms(),
        }))
    }

    async fn scan(
        &self,
        req: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        self.serve(Op::Scan, |_| {
            Ok((
                crate::catchup::scan(&self.shared, &req.into_inner())
                    .map_err(OpError::TooManyRanges)?,
                Outcome::Ok,
            ))
        })
        .await
    }

    async fn forget(
        &self,
        req: Request<pb::ForgetRequest>,
    ) -> Result<Response<pb::ForgetResponse>, Status> {
        let r = req.into_inner();
        let checked = if r.ranges.is_empty() {
            Err(OpError::NoRanges)
        } else if r.ranges.len() > distcache_proto::ring::MAX_SCAN_RANGES {
            Err(OpError::TooManyRanges(r.ranges.len()))
        } else if self.shared.wal_failed() {
            // Nothing is removed that the log could not record.
            Err(OpError::Wal(WalError::Failed(WAL_FAILED.into())))
        } else {
            Ok(())
        };
        let only = match (checked, distcache_proto::ring::Ranges::new(&r.ranges)) {
            (Ok(()), Some(only)) => only,
            (Err(e), _) => return self.serve(Op::Forget, |_| Err(e)).await,
            (Ok(()), None) => return self.serve(Op::Forget, |_| Err(OpError::NoRanges)).await,
        };
        // Logged before the walk, and a snapshot does not choose what it
        // covers until the walk is done: a restart never brings back what
        // was removed, and a snapshot covering the record holds none of it.
        // (A write of an old version racing the walk may stay in memory and
        // be removed by the replay: a stray copy this node does not own.)
        let _walking = match &self.shared.wal {
            Some(w) => Some(w.forgetting().await),
            None => None,
        };
        self.serve(Op::Forget, |log| {
            log.forget(&r.ranges, r.below_version);
            Ok(((), Outcome::Ok))
        })
        .await?;
        // A walk of every shard: off the request threads. It runs to the end
        // even if the caller gives up.
        let store = self.shared.store.clone();
        let below = r.below_version;
        let removed = tokio::task::spawn_blocking(move || store.forget(&only, below))
            .await
            .map_err(|e| Status::internal(format!("forget failed: {e}")))?;
        Ok(Response::new(pb::ForgetResponse { removed }))
    }

    async fn fence(
        &self,
        req: Request<pb::FenceRequest>,
    ) -> Result<Response<pb::FenceResponse>, Status> {
        self.serve(Op::Fence, |_| {
            Ok((
                crate::catchup::fence(&self.shared, req.into_inner()),
                Outcome::Ok,
            ))
        })
        .await
    }

    async fn get_metrics(
        &self,
        req: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        self.serve(Op::Metrics, |_| {
            let json = req.into_inner().format == pb::MetricsFormat::Json as i32;
            let m = &self.shared.metrics;
            let (body, content_type) = if json {
                (m.json(), "application/json")
            } else {
                (m.prometheus(), PROMETHEUS_CONTENT_TYPE)
            };
            let resp = pb::GetMetricsResponse {
                body,
                content_type: content_type.to_owned(),
            };
            Ok((resp, Outcome::Ok))
        })
        .await
    }
}
