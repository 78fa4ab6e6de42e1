//! The rate-limit layer: a token bucket per client and one global bucket.
//!
//! The client is the token's subject when the auth layer in front of this one
//! found a [`Principal`], else the peer's IP address (all connections from one
//! address share a bucket). The per-client bucket is checked first, so a
//! client over its own limit does not drain the global one. Refused requests
//! get [`RateLimited`] (`RESOURCE_EXHAUSTED` on the wire). `grpc.health.v1`
//! is never limited, so probes keep working under load.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::codegen::http::Request;
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::Layer;

use super::auth::Principal;
use super::bucket::{Bucket, KeyedLimiter, Rate};
use super::counters::SecurityCounters;
use tower::BoxError;

/// Which bucket ran dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The caller's own bucket.
    Client,
    /// The node-wide bucket.
    Global,
}

impl Scope {
    /// The `scope` label on the rate-limited counter.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Global => "global",
        }
    }
}

/// A request over a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded ({}); retry in {} ms", .scope.name(), .retry_after.as_millis())]
pub struct RateLimited {
    /// Which limit.
    pub scope: Scope,
    /// When a token will be available.
    pub retry_after: Duration,
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A token's subject.
    Subject(Arc<str>),
    /// A peer address, for requests without a token.
    Peer(IpAddr),
    /// Neither is known (not over TCP).
    Unknown,
}

impl ClientKey {
    /// The key of a request.
    pub fn of<B>(req: &Request<B>) -> Self {
        let ext = req.extensions();
        if let Some(p) = ext.get::<Principal>() {
            return ClientKey::Subject(p.subject.clone());
        }
        let addr = ext
            .get::<TcpConnectInfo>()
            .or_else(|| {
                ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                    .map(|t| t.get_ref())
            })
            .and_then(TcpConnectInfo::remote_addr);
        addr.map_or(ClientKey::Unknown, |a| ClientKey::Peer(a.ip()))
    }
}

/// The limiter state shared by every connection.
#[derive(Debug)]
pub struct Limiter {
    per_client: Option<KeyedLimiter<ClientKey>>,
    global: Option<(Rate, Mutex<Bucket>)>,
}

impl Limiter {
    /// Limits of `client` and `global` (either may be off), tracking at most
    /// `max_clients` clients and forgetting those idle for `idle`.
    pub fn new(
        client: Option<Rate>,
        global: Option<Rate>,
        max_clients: usize,
        idle: Duration,
    ) -> Self {
        let now = Instant::now().into_std();
        Self {
            per_client: client.map(|r| KeyedLimiter::new(r, max_clients, idle)),
            global: global.map(|r| (r, Mutex::new(Bucket::full(r, now)))),
        }
    }

    /// Takes a token for `key` at `now`.
    pub fn check(&self, key: &ClientKey, now: Instant) -> Result<(), RateLimited> {
        self.check_n(key, now, 1)
    }

    /// Takes `n` tokens for `key` at `now` (see [`super::bucket::Bucket::take_n`]).
    pub fn check_n(&self, key: &ClientKey, now: Instant, n: u32) -> Result<(), RateLimited> {
        let now = now.into_std();
        if let Some(l) = &self.per_client {
            l.take_n(key, now, n).map_err(|retry_after| RateLimited {
                scope: Scope::Client,
                retry_after,
            })?;
        }
        if let Some((rate, bucket)) = &self.global {
            bucket
                .lock()
                .take_n(*rate, now, n)
                .map_err(|retry_after| RateLimited {
                    scope: Scope::Global,
                    retry_after,
                })?;
        }
        Ok(())
    }
}

/// A caller's buckets, handed to a streaming RPC (in the request's
/// extensions) so that each message of the stream is charged like a request:
/// the layer itself only sees the stream open.
#[derive(Debug, Clone)]
pub struct RateCharge {
    limiter: Arc<Limiter>,
    key: ClientKey,
    counters: SecurityCounters,
}

impl RateCharge {
    /// Takes one token, counting a refusal.
    pub fn take(&self) -> Result<(), RateLimited> {
        self.take_n(1)
    }

    /// Takes a token per operation of a message of `n` (at least one).
    pub fn take_n(&self, n: usize) -> Result<(), RateLimited> {
        let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        self.limiter
            .check_n(&self.key, Instant::now(), n)
            .inspect_err(|e| self.counters.rate_limited(e.scope.name()))
    }
}

/// Adds [`RateLimit`] to a service; `None` turns rate limiting off.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<Limiter>>,
    counters: SecurityCounters,
}

impl RateLimitLayer {
    /// A layer applying `limiter` (or nothing, when `None`).
    pub fn new(limiter: Option<Arc<Limiter>>, counters: SecurityCounters) -> Self {
        Self { limiter, counters }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            counters: self.counters.clone(),
        }
    }
}

/// The rate-limit middleware.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Option<Arc<Limiter>>,
    counters: SecurityCounters,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response, BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(limiter) = &self.limiter
            && !super::roles::is_health(req.uri().path())
        {
            let key = ClientKey::of(&req);
            if let Err(e) = limiter.check(&key, Instant::now()) {
                self.counters.rate_limited(e.scope.name());
                return Box::pin(async move { Err(e.into()) });
            }
            // Streams and batches are charged by what they carry: the
            // service takes the rest with this handle.
            if super::roles::is_stream(req.uri().path()) || super::roles::is_batch(req.uri().path())
            {
                req.extensions_mut().insert(RateCharge {
                    limiter: limiter.clone(),
                    key,
                    counters: self.counters.clone(),
                });
            }
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_test::mock;

    fn rate(per_sec: f64, burst: f64) -> Option<Rate> {
        Some(Rate { per_sec, burst })
    }

    fn req(path: &str, subject: Option<&str>) -> Request<()> {
        let mut r = Request::builder()
            .uri(format!("http://node{path}"))
            .body(())
            .expect("request");
        if let Some(s) = subject {
            r.extensions_mut().insert(Principal {
                subject: s.into(),
                role: super::super::token::Role::User,
                valid_until: 0,
                signed_by: None,
            });
        }
        r
    }

    /// Sends one request through the layer; the mock answers if reached.
    async fn send(layer: &RateLimitLayer, r: Request<()>) -> Result<(), BoxError> {
        let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, (), _>(layer.clone());
        handle.allow(1);
        assert!(matches!(svc.poll_ready(), Poll::Ready(Ok(()))));
        let fut = svc.call(r);
        tokio::spawn(async move {
            if let Some((_, send)) = handle.next_request().await {
                send.send_response(());
            }
        });
        fut.await
    }

    fn scope(e: BoxError) -> Scope {
        e.downcast::<RateLimited>().expect("RateLimited").scope
    }

    #[tokio::test(start_paused = true)]
    async fn per_client_limit_isolates_and_refills() {
        let limiter = Limiter::new(rate(10.0, 2.0), None, 1000, Duration::from_secs(60));
        let layer = RateLimitLayer::new(Some(Arc::new(limiter)), SecurityCounters::default());
        let get = "/distcache.v1.CacheService/Get";
        send(&layer, req(get, Some("alice"))).await.expect("1");
        send(&layer, req(get, Some("alice"))).await.expect("2");
        let e = send(&layer, req(get, Some("alice")))
            .await
            .expect_err("over");
        assert_eq!(scope(e), Scope::Client);
        send(&layer, req(get, Some("bob")))
            .await
            .expect("bob is unaffected");
        send(&layer, req("/grpc.health.v1.Health/Check", Some("alice")))
            .await
            .expect("health is never limited");
        tokio::time::advance(Duration::from_millis(100)).await;
        send(&layer, req(get, Some("alice")))
            .await
            .expect("refilled");
    }

    #[tokio::test(start_paused = true)]
    async fn global_limit_applies_to_everyone() {
        let limiter = Limiter::new(
            rate(1000.0, 1000.0),
            rate(1.0, 3.0),
            1000,
            Duration::from_secs(60),
        );
        let layer = RateLimitLayer::new(Some(Arc::new(limiter)), SecurityCounters::default());
        let get = "/distcache.v1.CacheService/Get";
        for who in ["a", "b", "c"] {
            send(&layer, req(get, Some(who)))
                .await
                .expect("within global burst");
        }
        let e = send(&layer, req(get, Some("d"))).await.expect_err("global");
        assert_eq!(scope(e), Scope::Global);
        tokio::time::advance(Duration::from_secs(1)).await;
        send(&layer, req(get, Some("d"))).await.expect("refilled");
        let off = RateLimitLayer::new(None, SecurityCounters::default());
        for _ in 0..10 {
            send(&off, req(get, None)).await.expect("no limit");
        }
    }

    #[test]
    fn key_falls_back_to_peer_ip() {
        assert_eq!(ClientKey::of(&req("/x", None)), ClientKey::Unknown);
        assert_eq!(
            ClientKey::of(&req("/x", Some("al"))),
            ClientKey::Subject("al".into())
        );
    }
}
