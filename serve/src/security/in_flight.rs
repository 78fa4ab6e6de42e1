//! The in-flight layer: at most `max` requests are being served at once,
//! node-wide. A request beyond that is refused at once with [`Overloaded`]
//! (`RESOURCE_EXHAUSTED`) rather than queued, so overload shows up as errors a
//! client can back off from instead of as growing latency and memory.
//! `grpc.health.v1` is exempt, so probes still answer under load.
//!
//! A unary request holds its slot until its answer is sent, not only until
//! it is built: the answer is handed to HTTP/2 in pieces of [`PIECE_BYTES`],
//! each only once the stream has send capacity (hyper asks for the next
//! piece only then), and the slot is freed after the last one. A client that
//! never reads its answers (its flow-control window stays shut) therefore
//! keeps slots, and at most `max` answers are held for such clients, not as
//! many as it cares to ask for. Streaming RPCs (`Pipeline`,
//! `Invalidations`, reflection) free
//! their slot when the stream opens: a `Pipeline` stream bounds what it holds
//! by its own depth, and a long-lived stream must not hold a slot for life.
//!
//! Together with `--max-connections` and HTTP/2's `max_concurrent_streams`
//! this bounds the work a node holds for its clients.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http::{Request, Response};
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

/// The most of an answer handed to HTTP/2 at once (see the module docs).
pub const PIECE_BYTES: usize = 64 * 1024;

/// An answer body that holds its request's in-flight slot until its last
/// piece was taken, and hands large data frames out in [`PIECE_BYTES`]
/// pieces (slices of the same buffer: nothing is copied).
#[derive(Debug)]
pub struct Held<B> {
    body: B,
    rest: Bytes,
    permit: Option<OwnedSemaphorePermit>,
}

impl<B> Held<B> {
    fn new(body: B, permit: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            body,
            rest: Bytes::new(),
            permit,
        }
    }

    fn piece(&mut self) -> Frame<Bytes> {
        let n = self.rest.len().min(PIECE_BYTES);
        Frame::data(self.rest.split_to(n))
    }
}

impl<B> Body for Held<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if !this.rest.is_empty() {
            return Poll::Ready(Some(Ok(this.piece())));
        }
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.len() > PIECE_BYTES => {
                    this.rest = data;
                    Poll::Ready(Some(Ok(this.piece())))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(other) => {
                    // Trailers: the answer's last frame.
                    this.permit = None;
                    Poll::Ready(Some(Ok(other)))
                }
            },
            end => {
                this.permit = None;
                Poll::Ready(end)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower().saturating_add(rest));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

impl<S, B, R> Service<Request<B>> for InFlight<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    R: Send + 'static,
{
    type Response = Response<Held<R>>;
    type Error = BoxError;
    type Future = BoxFuture<Response<Held<R>>, BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let (exempt, streaming) = (
            super::roles::is_health(path),
            super::roles::answers_with_a_stream(path),
        );
        let permit = if exempt {
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
            let response = fut.await.map_err(Into::into)?;
            // Held by the answer's body until its last piece is taken.
            let permit = if streaming { None } else { permit };
            Ok(response.map(|body| Held::new(body, permit)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tower_test::mock;

    type Answer = Response<Full<Bytes>>;

    fn req(path: &str) -> Request<()> {
        Request::builder()
            .uri(format!("http://node{path}"))
            .body(())
            .expect("request")
    }

    fn answer(bytes: usize) -> Answer {
        Response::new(Full::new(Bytes::from(vec![7u8; bytes])))
    }

    #[tokio::test]
    async fn beyond_max_in_flight_is_refused_until_one_finishes() {
        let layer = InFlightLayer::new(2, SecurityCounters::default());
        let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, Answer, _>(layer);
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
            send.send_response(answer(1));
        }
        // Answers sent (their bodies read to the end and dropped).
        for r in [first, second, health] {
            let body = r.await.expect("answer").into_body();
            body.collect().await.expect("body");
        }
        let (fourth, reply) = (call(get), async {
            let (_, send) = handle.next_request().await.expect("request");
            send.send_response(answer(1));
        });
        let (r, ()) = tokio::join!(fourth, reply);
        r.expect("a slot is free again");
    }

    /// An answer built but not yet sent keeps its slot: the slot is freed
    /// once the body's last piece is taken, and a large answer comes out in
    /// pieces. A `Pipeline` stream frees its slot when it opens.
    #[tokio::test]
    async fn a_slot_is_held_until_the_answer_is_sent() {
        let layer = InFlightLayer::new(1, SecurityCounters::default());
        let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, Answer, _>(layer);
        handle.allow(10);
        let mut call = |path: &str| {
            assert!(matches!(svc.poll_ready(), Poll::Ready(Ok(()))));
            svc.call(req(path))
        };
        let batch = "/distcache.v1.CacheService/Batch";
        let (built, reply) = (call(batch), async {
            let (_, send) = handle.next_request().await.expect("request");
            send.send_response(answer(3 * PIECE_BYTES + 1));
        });
        let (built, ()) = tokio::join!(built, reply);
        let mut body = built.expect("answer").into_body();
        let e = call(batch)
            .await
            .expect_err("the unsent answer holds the slot");
        assert!(e.downcast_ref::<Overloaded>().is_some());
        let mut pieces = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.expect("frame").into_data().expect("data");
            pieces.push(data.len());
            if pieces.len() < 4 {
                assert!(call(batch).await.is_err(), "still held after {pieces:?}");
            }
        }
        assert_eq!(pieces, [PIECE_BYTES, PIECE_BYTES, PIECE_BYTES, 1]);
        drop(body);

        // Free again; and a stream does not keep it.
        let (stream, reply) = (call("/distcache.v1.CacheService/Pipeline"), async {
            let (_, send) = handle.next_request().await.expect("request");
            send.send_response(answer(1));
        });
        let (stream, ()) = tokio::join!(stream, reply);
        let _open = stream.expect("stream opens");
        let (next, reply) = (call(batch), async {
            let (_, send) = handle.next_request().await.expect("request");
            send.send_response(answer(1));
        });
        let (next, ()) = tokio::join!(next, reply);
        next.expect("the open stream holds no slot");
    }
}
