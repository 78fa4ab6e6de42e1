//! The transport to one node: a small pool of lazily connected HTTP/2
//! channels, the request metadata every call carries (token, `grpc-timeout`)
//! and the node's shared `Pipeline` stream, with a fallback to `Batch` calls
//! for nodes that do not serve it. It knows nothing of health, coalescing or
//! replicas (see `node.rs`, `coalesce.rs`, `replica/`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use distcache_proto::status::REPLICATED;
use distcache_proto::trace::TraceContext;
use distcache_proto::v1::cache_service_client::CacheServiceClient;
use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::config::{ClientConfig, TokenSlot};
use crate::error::ConfigError;
use crate::pipe::Pipe;

/// The channels of one node, its `Pipeline` stream, and what every request
/// to it carries.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    channels: Arc<[Channel]>,
    next: Arc<AtomicUsize>,
    /// The client's token, shared by all its connections (it can change).
    auth: TokenSlot,
    /// Send [`REPLICATED`]: hold this client to the nodes' fences (it
    /// replicates, so a fenced node's state must not answer its reads).
    replicated: bool,
    pipe: Arc<Mutex<Option<Arc<Pipe>>>>,
    /// When the node answered `Pipeline` with UNIMPLEMENTED (an older node):
    /// batches then go as `Batch` calls, and `Pipeline` is tried again after
    /// [`PIPE_RETRY`] (the node may have been upgraded since).
    no_pipe_since: Arc<Mutex<Option<std::time::Instant>>>,
}

/// `endpoint` with the TLS settings of `config` for an `https://` URL:
/// its CA bundle and, for nodes requiring client certificates, its
/// identity. rustls parses the PEM here, so a malformed certificate or key
/// fails `build` rather than the first call.
#[cfg(feature = "tls")]
fn tls(endpoint: Endpoint, url: &str, config: &ClientConfig) -> Result<Endpoint, ConfigError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let Some(ca) = config
        .tls_ca
        .as_ref()
        .filter(|_| url.starts_with("https://"))
    else {
        return Ok(endpoint);
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(id) = &config.tls_identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    endpoint.tls_config(tls).map_err(|e| {
        // tonic's Display is "transport error"; the cause is in its source.
        let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
        ConfigError::Tls(cause)
    })
}

/// Without the `tls` feature there is nothing to set: `ClientConfig::validate`
/// already refused `https://` nodes and TLS settings.
#[cfg(not(feature = "tls"))]
fn tls(endpoint: Endpoint, _url: &str, _config: &ClientConfig) -> Result<Endpoint, ConfigError> {
    Ok(endpoint)
}

/// How long a node that answered `Pipeline` with UNIMPLEMENTED gets `Batch`
/// calls before `Pipeline` is tried again.
const PIPE_RETRY: Duration = Duration::from_secs(60);

/// Batches with more key and value bytes than this go as their own `Batch`
/// call, never on the shared stream: a message over the node's size limit
/// ends the whole stream, and with it every batch in flight on it. 1 MiB:
/// the coalescer's and `mset`'s batches stay under it, and a node's limit is
/// above it unless its `--max-value-bytes` was lowered below the default.
pub(crate) const PIPE_MAX_BATCH_BYTES: usize = 1 << 20;

impl Conn {
    /// The pool of lazily connected channels to `url`, with the token, CA
    /// and client certificate of `config`. Nothing connects until the first
    /// call.
    pub(crate) fn new(url: &str, config: &ClientConfig) -> Result<Self, ConfigError> {
        let bad = |e: tonic::transport::Error| ConfigError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(bad)?;
        let endpoint = tls(endpoint, url, config)?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.keepalive)
            .keep_alive_timeout(config.keepalive)
            .keep_alive_while_idle(true);
        // Several channels, because one HTTP/2 connection serialises its
        // frames through one socket; each connects on first use.
        let channels: Arc<[Channel]> = (0..config.pool_size)
            .map(|_| endpoint.connect_lazy())
            .collect();
        let auth = config.token_slot.clone();
        Ok(Conn {
            channels,
            next: Arc::new(AtomicUsize::new(0)),
            auth,
            replicated: config.replicas > 1,
            pipe: Arc::new(Mutex::new(None)),
            no_pipe_since: Arc::new(Mutex::new(None)),
        })
    }

    /// A stub over the next channel of the pool (cheap: a channel clone).
    pub(crate) fn stub(&self) -> CacheServiceClient<Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        CacheServiceClient::new(self.channels[i].clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Wraps `msg` with the token and a `grpc-timeout` of `timeout`.
    pub(crate) fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout);
        self.headers(req.metadata_mut());
        req
    }

    /// [`Conn::request`] with a `traceparent` of `trace` (and its
    /// `tracestate`) for this RPC, when there is one.
    fn traced<T>(
        &self,
        msg: T,
        timeout: Duration,
        trace: Option<&TraceContext>,
    ) -> tonic::Request<T> {
        let mut req = self.request(msg, timeout);
        if let Some(ctx) = trace {
            crate::trace::for_rpc(ctx).insert_into(req.metadata_mut());
        }
        req
    }

    /// The token and, when replicating, the [`REPLICATED`] header.
    pub(crate) fn headers(&self, m: &mut tonic::metadata::MetadataMap) {
        if let Some(auth) = self.auth.get() {
            m.insert("authorization", auth);
        }
        if self.replicated {
            m.insert(REPLICATED, MetadataValue::from_static("1"));
        }
    }

    /// One operation as its own unary RPC, under `trace` if given.
    pub(crate) async fn unary(
        &self,
        op: Op,
        t: Duration,
        trace: Option<&TraceContext>,
    ) -> Result<Out, Status> {
        let mut stub = self.stub();
        Ok(match op {
            Op::Get(r) => Out::Get(stub.get(self.traced(r, t, trace)).await?.into_inner()),
            Op::Set(r) => Out::Set(stub.set(self.traced(r, t, trace)).await?.into_inner()),
            Op::Delete(r) => Out::Delete(stub.delete(self.traced(r, t, trace)).await?.into_inner()),
            Op::CompareAndSwap(r) => Out::CompareAndSwap(
                stub.compare_and_swap(self.traced(r, t, trace))
                    .await?
                    .into_inner(),
            ),
            Op::IncrBy(r) => {
                Out::IncrBy(stub.incr_by(self.traced(r, t, trace)).await?.into_inner())
            }
            Op::Expire(r) => Out::Expire(stub.expire(self.traced(r, t, trace)).await?.into_inner()),
        })
    }

    /// The node's open `Pipeline` stream, opened (within `t`) if there is
    /// none; `None` when the node does not serve `Pipeline`.
    async fn pipe(&self, t: Duration) -> Result<Option<Arc<Pipe>>, Status> {
        {
            let mut since = self
                .no_pipe_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match *since {
                Some(s) if s.elapsed() < PIPE_RETRY => return Ok(None),
                Some(_) => *since = None,
                None => {}
            }
        }
        let slot = || self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = slot().as_ref().filter(|p| p.is_open()) {
            return Ok(Some(p.clone()));
        }
        // Boxed: opening is rare, and its future is large.
        let opened = Box::pin(tokio::time::timeout(
            t,
            Pipe::open(self.stub(), |m| self.headers(m)),
        ))
        .await
        .map_err(|_| Status::deadline_exceeded("opening the pipeline stream timed out"))?;
        match opened {
            Ok(p) => {
                let mut slot = slot();
                // Two batches may have raced to open one: keep the first.
                match slot.as_ref().filter(|q| q.is_open()) {
                    Some(q) => Ok(Some(q.clone())),
                    None => {
                        *slot = Some(p.clone());
                        Ok(Some(p))
                    }
                }
            }
            Err(s) if s.code() == Code::Unimplemented => {
                tracing::info!("node does not serve Pipeline; sending Batch calls");
                *self
                    .no_pipe_since
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
                Ok(None)
            }
            Err(s) => Err(s),
        }
    }

    /// Many operations in one batch: a `Pipeline` message, or a `Batch` RPC
    /// when the node has no `Pipeline`; under `trace` if given (the
    /// message's `traceparent` field, or the RPC's metadata).
    pub(crate) async fn batch(
        &self,
        operations: Vec<pb::Operation>,
        t: Duration,
        trace: Option<&TraceContext>,
    ) -> Result<Vec<pb::OperationResult>, Status> {
        let bytes: usize = operations
            .iter()
            .filter_map(|o| o.op.as_ref())
            .map(op_bytes)
            .sum();
        if bytes <= PIPE_MAX_BATCH_BYTES
            && let Some(pipe) = self.pipe(t).await?
        {
            return pipe.call(operations, traceparent(trace)).await;
        }
        let req = self.traced(pb::BatchRequest { operations }, t, trace);
        let mut stub = self.stub();
        Ok(Box::pin(stub.batch(req)).await?.into_inner().results)
    }

    /// One operation: a one-operation `Pipeline` message, or its own unary
    /// RPC when the node has no `Pipeline`; under `trace` if given.
    pub(crate) async fn one(
        &self,
        op: Op,
        t: Duration,
        trace: Option<&TraceContext>,
    ) -> Result<Out, Status> {
        let Some(pipe) = self.pipe(t).await? else {
            return Box::pin(self.unary(op, t, trace)).await;
        };
        let results = pipe
            .call(vec![pb::Operation { op: Some(op) }], traceparent(trace))
            .await?;
        match <[pb::OperationResult; 1]>::try_from(results) {
            Ok([r]) => result_of(r),
            Err(_) => Err(Status::internal(
                "batch answered the wrong number of results",
            )),
        }
    }
}

/// A `Pipeline` message's `traceparent` for one message under `trace`
/// (empty, which allocates nothing, without one).
fn traceparent(trace: Option<&TraceContext>) -> String {
    trace.map_or_else(String::new, |c| crate::trace::for_rpc(c).to_string())
}

/// The key and value bytes `op` carries (what batches are sized by).
pub(crate) fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Get(r) => r.key.len(),
        Op::Set(r) => r.key.len() + r.value.len(),
        Op::Delete(r) => r.key.len(),
        Op::CompareAndSwap(r) => r.key.len() + r.value.len(),
        Op::IncrBy(r) => r.key.len(),
        Op::Expire(r) => r.key.len(),
    }
}

/// One operation's outcome from its batch result.
pub(crate) fn result_of(r: pb::OperationResult) -> Result<Out, Status> {
    match r.result {
        Some(Out::Error(e)) => Err(distcache_proto::status::to_status(e)),
        Some(out) => Ok(out),
        None => Err(Status::internal("empty batch result")),
    }
}
