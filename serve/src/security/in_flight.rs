//! The in-flight layer: at most `max` requests are being served at once,
//! node-wide. A request beyond that is refused at once with [`Overloaded`]
//! (`RESOURCE_EXHAUSTED`) rather than queued, so overload shows up as errors a
//! client can back off from instead of as growing latency and memory.
//! `grpc.health.v1` is exempt, so probes still answer under load.
//!
//! Together with `--max-connections` and HTTP/2's `max_concurrent_streams`
//! this bounds the work a node holds for its clients.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::codegen::http::Request;
use tonic::codegen::{BoxFuture, Service};
use tower::Layer;

use super::counters::SecurityCounters;
use tower::BoxError;

/// A request refused because the node is serving its maximum already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node overloaded: {max} requests already in flight")]
pub struct Overloaded {
    /// The bound.
    pub max: usize,
}

/// Adds [`InFlight`] to a service.
#[derive(Debug, Clone)]
pub struct InFlightLayer {
    slots: Arc<Semaphore>,
    max: usize,
    counters: SecurityCounters,
}

impl InFlightLayer {
    /// At most `max` requests in flight across every connection.
    pub fn new(max: usize, counters: SecurityCounters) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            counters,
        }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;
    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            layer: self.clone(),
        }
    }
}

/// The in-flight middleware.
#[derive(Debug, Clone)]
pub struct InFlight<S> {
    inner: S,
    layer: InFlightLayer,
}

impl<S, B> Service<Request<B>> for InFlight<S>
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let permit = if super::roles::is_health(req.uri().path()) {
            None
        } else {
            match self.layer.slots.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.layer.counters.shed();
                    let e = Overloaded {
                        max: self.layer.max,
                    };
                    return Box::pin(async move { Err(e.into()) });
                }
            }
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await.map_err(Into::into);
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_test::mock;

    fn req(path: &str) -> Request<()> {
        Request::builder()
            .uri(format!("http://node{path}"))
            .body(())
            .expect("request")
    }

    #[tokio::test]
    async fn beyond_max_in_flight_is_refused_until_one_finishes() {
        let layer = InFlightLayer::new(2, SecurityCounters::default());
        let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, (), _>(layer);
        handle.allow(10);
        let get = "/distcache.v1.CacheService/Get";
        let mut call = |path: &str| {
            assert!(matches!(svc.poll_ready(), Poll::Ready(Ok(()))));
            svc.call(req(path))
        };
        let first = call(get);
        let second = call(get);
        let e = call(get).await.expect_err("third is over the bound");
        assert_eq!(e.downcast_ref::<Overloaded>(), Some(&Overloaded { max: 2 }));
        // Health is exempt even now.
        let health = call("/grpc.health.v1.Health/Check");
        for _ in 0..3 {
            let (_, send) = handle.next_request().await.expect("request");
            send.send_response(());
        }
        first.await.expect("first");
        second.await.expect("second");
        health.await.expect("health");
        let (fourth, answer) = (call(get), async {
            let (_, send) = handle.next_request().await.expect("request");
            send.send_response(());
        });
        let (r, ()) = tokio::join!(fourth, answer);
        r.expect("a slot is free again");
    }
}
