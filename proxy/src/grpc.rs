//! `distcache.v1.CacheService` on the proxy: the same service a node serves,
//! answered through the SDK, so a client can point at a node or at the proxy
//! interchangeably.
//!
//! Differences from a node, by design: versions are stamped by the proxy's
//! SDK (a request's non-zero `version` is refused: replicated writes are for
//! nodes), `Delete` and `IncrBy` answer `version = 0` (the SDK does not return
//! the tombstone's or counter's version), and `HealthCheck` describes the
//! cluster (SERVING while any node is healthy; keys are the DBSIZE estimate).
//!
//! Tracing: a request's W3C `traceparent` (and `tracestate`) metadata, or a
//! `Pipeline` message's `traceparent` field (else the stream's metadata),
//! is handed to the SDK ([`distcache::Client::with_trace_context`]), so the
//! nodes' spans for the request carry the caller's trace id. An invalid
//! one is ignored (the request is served untraced).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use distcache::proto::{
    self as pb, cache_service_server::CacheService, operation, operation_result,
};
use distcache::{Bytes, Client, Condition, Error, TraceContext};
use distcache_proto::budget::{self, AnswerBudget};
use distcache_serve::pipeline::{PipelineStream, error_result, serve_pipeline};
use distcache_serve::security::Principal;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::backend::Backend;

/// The largest message the proxy's gRPC front end reads or writes: a
/// `Batch` or `Pipeline` answer is budgeted to it while it is built.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The one place SDK errors become gRPC statuses.
pub fn to_status(e: &Error) -> Status {
    let code = match e {
        Error::InvalidArgument(_) | Error::Config(_) => Code::InvalidArgument,
        Error::NotAnInteger(_) | Error::Overflow(_) => Code::FailedPrecondition,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::ResourceExhausted { .. } => Code::ResourceExhausted,
        Error::Timeout(_) => Code::DeadlineExceeded,
        // Applied, so not UNAVAILABLE (which clients retry): INTERNAL, whose
        // message says what happened.
        Error::NotReplicated { .. } => Code::Internal,
        Error::Rpc(s) => s.code(),
        _ => Code::Unavailable,
    };
    Status::new(code, e.to_string())
}

fn ttl(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn no_version(v: u64) -> Result<(), Status> {
    if v == 0 {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "the proxy stamps versions itself; send version = 0 (replicated writes go to nodes)",
        ))
    }
}

/// The proxy's CacheService.
#[derive(Debug, Clone)]
pub struct ProxyService {
    backend: Arc<Backend>,
    stop: Option<watch::Receiver<bool>>,
}

impl ProxyService {
    /// A service over `backend`.
    pub fn new(backend: Arc<Backend>) -> Self {
        Self {
            backend,
            stop: None,
        }
    }

    /// Ends `Pipeline` streams (after answering what they have read) once
    /// `stop` turns true.
    pub fn with_shutdown(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// With tokens on, the auth layer let any role through to `Batch` and
    /// `Pipeline`; a batch's contents decide, as on a node.
    fn may_batch(
        &self,
        principal: Option<&Principal>,
        ops: &[pb::Operation],
    ) -> Result<(), Status> {
        if let Some(p) = principal
            && !p.may_run_batch(ops)
        {
            self.backend.metrics.security.permission_denied();
            return Err(Status::permission_denied(format!(
                "role {} may not run a batch with writes",
                p.role.name()
            )));
        }
        Ok(())
    }

    /// A batch's operations, in order, as on a node (later operations may
    /// depend on earlier ones), with the node's bounds: at most
    /// [`budget::MAX_OPERATIONS`], and an answer budgeted to
    /// [`MAX_MESSAGE_BYTES`] (once full, the remaining reads are not run and
    /// answer `answer_full`).
    async fn run_batch(
        &self,
        c: &Client,
        operations: Vec<pb::Operation>,
    ) -> Result<Vec<pb::OperationResult>, Status> {
        if operations.len() > budget::MAX_OPERATIONS {
            return Err(Status::invalid_argument(format!(
                "a batch of {} operations exceeds the limit of {}",
                operations.len(),
                budget::MAX_OPERATIONS
            )));
        }
        let mut answer = AnswerBudget::new(MAX_MESSAGE_BYTES, &operations);
        let mut results = Vec::with_capacity(operations.len());
        for op in operations {
            results.push(if !budget::is_read(&op) {
                self.one(c, op).await
            } else if answer.may_read() {
                answer.admit(self.one(c, op).await)
            } else {
                budget::answer_full()
            });
        }
        Ok(results)
    }

    async fn get(&self, c: &Client, r: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        let e = c.get(&r.key).await.map_err(|e| to_status(&e))?;
        Ok(
            e.map_or_else(pb::GetResponse::default, |e| pb::GetResponse {
                found: true,
                value: e.value,
                version: e.version,
                ttl_ms: e.ttl.map_or(0, |t| (t.as_millis() as u64).max(1)),
                tombstone_version: 0,
            }),
        )
    }

    async fn set(&self, c: &Client, r: pb::SetRequest) -> Result<pb::SetResponse, Status> {
        no_version(r.version)?;
        let condition = match pb::SetCondition::try_from(r.condition) {
            Ok(pb::SetCondition::Always) => Condition::Always,
            Ok(pb::SetCondition::IfAbsent) => Condition::IfAbsent,
            Ok(pb::SetCondition::IfPresent) => Condition::IfPresent,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown set condition {}",
                    r.condition
                )));
            }
        };
        let mut ttl_value = ttl(r.ttl_ms);
        if r.keep_ttl {
            ttl_value = c
                .get(&r.key)
                .await
                .map_err(|e| to_status(&e))?
                .and_then(|e| e.ttl);
        }
        let w = c
            .set_with(&r.key, &r.value, ttl_value, condition)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(pb::SetResponse {
            applied: w.applied,
            version: w.version,
        })
    }

    async fn delete(&self, c: &Client, r: pb::DeleteRequest) -> Result<pb::DeleteResponse, Status> {
        no_version(r.version)?;
        if r.return_value {
            let taken = c.get_del(&r.key).await.map_err(|e| to_status(&e))?;
            return Ok(pb::DeleteResponse {
                deleted: taken.is_some(),
                version: 0,
                value: taken.unwrap_or_default(),
            });
        }
        let deleted = c.delete(&r.key).await.map_err(|e| to_status(&e))?;
        Ok(pb::DeleteResponse {
            deleted,
            version: 0,
            value: Bytes::new(),
        })
    }

    async fn cas(
        &self,
        c: &Client,
        r: pb::CompareAndSwapRequest,
    ) -> Result<pb::CompareAndSwapResponse, Status> {
        let w = c
            .compare_and_swap(&r.key, r.expected_version, &r.value, ttl(r.ttl_ms))
            .await
            .map_err(|e| to_status(&e))?;
        Ok(pb::CompareAndSwapResponse {
            swapped: w.applied,
            version: w.version,
        })
    }

    async fn incr_by(
        &self,
        c: &Client,
        r: pb::IncrByRequest,
    ) -> Result<pb::IncrByResponse, Status> {
        let value = c
            .incr_by(&r.key, r.delta)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(pb::IncrByResponse { value, version: 0 })
    }

    async fn expire(&self, c: &Client, r: pb::ExpireRequest) -> Result<pb::ExpireResponse, Status> {
        no_version(r.version)?;
        let applied = c
            .expire(&r.key, ttl(r.ttl_ms))
            .await
            .map_err(|e| to_status(&e))?;
        Ok(pb::ExpireResponse {
            applied,
            version: 0,
        })
    }

    async fn one(&self, c: &Client, op: pb::Operation) -> pb::OperationResult {
        use operation::Op as In;
        use operation_result::Result as Out;
        let result = match op.op {
            Some(In::Get(r)) => self.get(c, r).await.map(Out::Get),
            Some(In::Set(r)) => self.set(c, r).await.map(Out::Set),
            Some(In::Delete(r)) => self.delete(c, r).await.map(Out::Delete),
            Some(In::CompareAndSwap(r)) => self.cas(c, r).await.map(Out::CompareAndSwap),
            Some(In::IncrBy(r)) => self.incr_by(c, r).await.map(Out::IncrBy),
            Some(In::Expire(r)) => self.expire(c, r).await.map(Out::Expire),
            None => Err(Status::invalid_argument("empty batch operation")),
        };
        match result {
            Ok(out) => pb::OperationResult { result: Some(out) },
            Err(s) => error_result(&s),
        }
    }

    /// The SDK handle for a request with metadata `m`: under the W3C trace
    /// context it carries, if valid (a clone of the client, two words), else
    /// the proxy's client itself.
    fn client(&self, m: &tonic::metadata::MetadataMap) -> Cow<'_, Client> {
        self.client_in(TraceContext::from_metadata(m))
    }

    fn client_in(&self, ctx: Option<TraceContext>) -> Cow<'_, Client> {
        match ctx {
            Some(ctx) => Cow::Owned(self.backend.client.with_trace_context(ctx)),
            None => Cow::Borrowed(&self.backend.client),
        }
    }

    /// Times and counts one RPC.
    async fn serve<T>(
        &self,
        name: &'static str,
        f: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let r = f.await;
        self.backend
            .metrics
            .record("grpc", name, r.is_ok(), start.elapsed());
        r.map(Response::new)
    }
}

#[tonic::async_trait]
impl CacheService for ProxyService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let c = self.client(req.metadata());
        self.serve("get", ProxyService::get(self, &c, req.into_inner()))
            .await
    }

    async fn set(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        let c = self.client(req.metadata());
        self.serve("set", ProxyService::set(self, &c, req.into_inner()))
            .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.client(req.metadata());
        self.serve("delete", ProxyService::delete(self, &c, req.into_inner()))
            .await
    }

    async fn compare_and_swap(
        &self,
        req: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let c = self.client(req.metadata());
        self.serve("compare_and_swap", self.cas(&c, req.into_inner()))
            .await
    }

    async fn incr_by(
        &self,
        req: Request<pb::IncrByRequest>,
    ) -> Result<Response<pb::IncrByResponse>, Status> {
        let c = self.client(req.metadata());
        self.serve("incr_by", ProxyService::incr_by(self, &c, req.into_inner()))
            .await
    }

    async fn expire(
        &self,
        req: Request<pb::ExpireRequest>,
    ) -> Result<Response<pb::ExpireResponse>, Status> {
        let c = self.client(req.metadata());
        self.serve("expire", ProxyService::expire(self, &c, req.into_inner()))
            .await
    }

    async fn batch(
        &self,
        req: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let principal = req.extensions().get::<Principal>().cloned();
        let c = self.client(req.metadata());
        self.serve("batch", async {
            let ops = req.into_inner().operations;
            self.may_batch(principal.as_ref(), &ops)?;
            let results = self.run_batch(&c, ops).await?;
            Ok(pb::BatchResponse { results })
        })
        .await
    }

    type PipelineStream = PipelineStream;

    type InvalidationsStream = tonic::codegen::BoxStream<pb::Invalidation>;

    /// A node's stream: the proxy spreads keys over many nodes and has no
    /// tracking table of its own yet, so it answers UNIMPLEMENTED, saying
    /// where invalidations come from.
    async fn invalidations(
        &self,
        _req: Request<pb::InvalidationsRequest>,
    ) -> Result<Response<Self::InvalidationsStream>, Status> {
        Err(Status::unimplemented(
            "Invalidations is a node RPC: subscribe on each node (the SDK's near cache does); \
             the proxy does not relay it",
        ))
    }

    async fn pipeline(
        &self,
        req: Request<Streaming<pb::PipelineRequest>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        let service = self.clone();
        let principal = req.extensions().get::<Principal>().cloned();
        let p = principal.clone();
        // The stream's trace context, unless a message carries its own.
        let stream_trace = TraceContext::from_metadata(req.metadata());
        let answers = serve_pipeline(
            req.into_inner(),
            principal,
            self.stop.clone(),
            move |ops, tp| {
                let (service, principal) = (service.clone(), p.clone());
                let trace = match tp.as_str() {
                    "" => stream_trace.clone(),
                    tp => TraceContext::from_values(tp, None).or_else(|| stream_trace.clone()),
                };
                async move {
                    let start = Instant::now();
                    let n = ops.len();
                    let allowed = service.may_batch(principal.as_ref(), &ops);
                    let c = service.client_in(trace);
                    let results = match allowed {
                        Ok(()) => service.run_batch(&c, ops).await,
                        Err(s) => Err(s),
                    }
                    .unwrap_or_else(|s| vec![error_result(&s); n]);
                    let ok = results
                        .iter()
                        .all(|r| !matches!(r.result, Some(operation_result::Result::Error(_))));
                    let m = &service.backend.metrics;
                    m.record("grpc", "pipeline", ok, start.elapsed());
                    results
                }
            },
        );
        Ok(Response::new(answers))
    }

    async fn health_check(
        &self,
        _req: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let b = &self.backend;
        let status = if b.any_healthy() {
            pb::ServingStatus::Serving
        } else {
            pb::ServingStatus::NotServing
        };
        Ok(Response::new(pb::HealthCheckResponse {
            status: status as i32,
            node_id: "distcache-proxy".into(),
            uptime_seconds: b.uptime_secs(),
            keys: b.dbsize().await,
            memory_bytes: 0,
            max_memory_bytes: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            ..pb::HealthCheckResponse::default()
        }))
    }

    async fn scan(
        &self,
        _req: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        Err(Status::unimplemented(
            "Scan is a node's RPC (a replica's catch-up); ask the nodes",
        ))
    }

    async fn fence(
        &self,
        _req: Request<pb::FenceRequest>,
    ) -> Result<Response<pb::FenceResponse>, Status> {
        Err(Status::unimplemented(
            "Fence is a node's RPC (a replica's catch-up); ask the nodes",
        ))
    }

    async fn forget(
        &self,
        _req: Request<pb::ForgetRequest>,
    ) -> Result<Response<pb::ForgetResponse>, Status> {
        Err(Status::unimplemented(
            "Forget is a node's RPC (the end of a membership change); ask the nodes",
        ))
    }

    async fn get_metrics(
        &self,
        req: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let json = req.into_inner().format == pb::MetricsFormat::Json as i32;
        let (body, content_type) = if json {
            (
                crate::admin::metrics_json(&self.backend).await,
                "application/json",
            )
        } else {
            (
                self.backend.metrics.prometheus(),
                crate::admin::PROMETHEUS_CONTENT_TYPE,
            )
        };
        Ok(Response::new(pb::GetMetricsResponse {
            body,
            content_type: content_type.into(),
        }))
    }
}
