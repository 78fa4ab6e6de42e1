//! Every deadline helper of the SDK, in one place. A request has one
//! deadline (its timeout from the moment it starts); each attempt inside it
//! has its own, the nearer of the attempt timeout and the request's; every
//! RPC is bounded by its attempt's deadline and sends the time left to the
//! node as `grpc-timeout`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;

use crate::error::{Error, Result};

/// The deadline of a request of timeout `total` started `now`.
pub(crate) fn request_deadline(now: Instant, total: Duration) -> Instant {
    now + total
}

/// The deadline of an attempt started `now` within a request that ends at
/// `deadline`, and whether the attempt was cut short by it (then it needs a
/// timer of its own; see `replica::attempt`). `None` once `deadline` passed.
pub(crate) fn attempt_deadline(
    now: Instant,
    attempt_timeout: Duration,
    deadline: Instant,
) -> Option<(Instant, bool)> {
    if deadline <= now {
        return None;
    }
    let full = now.checked_add(attempt_timeout);
    let until = full.map_or(deadline, |t| t.min(deadline));
    Some((until, full.is_none_or(|t| t > deadline)))
}

/// The status of an attempt that ran out of time.
pub(crate) fn timed_out() -> Status {
    Status::deadline_exceeded("attempt timed out")
}

/// Fails `f` with DEADLINE_EXCEEDED if it has not answered by `deadline`.
/// Every RPC is bounded so: a node that stops answering (hung, paused) must
/// not hold an in-flight slot, and so every later batch, forever.
pub(crate) async fn bounded<T>(
    deadline: Instant,
    f: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout_at(deadline, f)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// Starts `rpc` with the time left until `deadline` (which it sends to the
/// node as the call's gRPC timeout) and [`bounded`]s it by that deadline.
pub(crate) async fn by_deadline<T, Fut>(
    deadline: Instant,
    rpc: impl FnOnce(std::time::Duration) -> Fut,
) -> Result<T, Status>
where
    Fut: Future<Output = Result<T, Status>>,
{
    let left = deadline.saturating_duration_since(Instant::now());
    bounded(deadline, rpc(left)).await
}

/// Runs `work` until `sleep` (the request's deadline) fires, then gives up
/// with [`Error::Timeout`]. Both are pinned in place by the caller, so the
/// (large) operation future is never moved into a wrapper.
pub(crate) async fn within<T>(
    mut work: Pin<&mut impl Future<Output = Result<T>>>,
    mut sleep: Pin<&mut tokio::time::Sleep>,
    total: Duration,
) -> Result<T> {
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = work.as_mut().poll(cx) {
            return std::task::Poll::Ready(r);
        }
        sleep.as_mut().poll(cx).map(|()| Err(Error::Timeout(total)))
    })
    .await
}
