//! The caller's W3C trace context while one of its operations runs, so that
//! every RPC the operation makes to a node carries a `traceparent` of that
//! trace (a new span id per RPC, see [`distcache_proto::trace`]).
//!
//! The context is set per handle ([`Client::with_trace_context`]) and lives
//! in a tokio task-local for the operation's duration, so the layers between
//! the call and the wire (replicas, failover, retries) need no extra
//! parameter. Tasks an operation spawns (the other replicas of a write,
//! retries that outlive the caller, `mget`'s per-node batches) take it along
//! through [`carry`]. Background work that belongs to no operation (health
//! probes, catch-ups, moves) carries none.
//!
//! With no context set the cost is one task-local lookup per RPC, which
//! finds nothing: no allocation, no header.
//!
//! Coalescing (see [`crate::coalesce`]): each queued operation keeps its
//! context; a message that joins several callers' operations carries the
//! first traced operation's context only, so the others' traces do not see
//! that node RPC (their own spans in the SDK still do).
//!
//! [`Client::with_trace_context`]: crate::Client::with_trace_context

use std::future::Future;
use std::sync::Arc;

use distcache_proto::trace::{TraceContext, new_span_id};
use futures_util::future::Either;

tokio::task_local! {
    static CURRENT: Arc<TraceContext>;
}

/// The trace context of the operation running in this task, if any.
pub(crate) fn current() -> Option<Arc<TraceContext>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// `fut` with `ctx` as its trace context (as it is, without one).
pub(crate) fn scoped<F: Future>(
    ctx: Option<Arc<TraceContext>>,
    fut: F,
) -> impl Future<Output = F::Output> {
    match ctx {
        Some(c) => Either::Left(CURRENT.scope(c, fut)),
        None => Either::Right(fut),
    }
}

/// `fut`, to be spawned, with the trace context of the caller's operation.
pub(crate) fn carry<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    scoped(current(), fut)
}

/// The context a node sees for one RPC under `ctx`: same trace, a new
/// span id for the RPC.
pub(crate) fn for_rpc(ctx: &TraceContext) -> TraceContext {
    let rpc = ctx.child(new_span_id());
    // The SDK exports no spans: this event is where the id the node records
    // as its `parent_id` shows up on the caller's side.
    tracing::debug!(
        trace_id = %rpc.trace_id_hex(),
        span_id = %rpc.parent_id_hex(),
        "node RPC under the caller's trace"
    );
    rpc
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_context_is_seen_inside_its_scope_and_by_what_it_spawns_with_carry() {
        let ctx = Arc::new(
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap(),
        );
        assert!(current().is_none());
        let seen = scoped(Some(ctx.clone()), async {
            let inside = current();
            let carried = tokio::spawn(carry(async { current() })).await.unwrap();
            let lost = tokio::spawn(async { current() }).await.unwrap();
            (inside, carried, lost)
        })
        .await;
        assert_eq!(seen.0.as_deref(), Some(&*ctx));
        assert_eq!(seen.1.as_deref(), Some(&*ctx));
        assert!(seen.2.is_none());
        assert!(scoped(None, async { current() }).await.is_none());
    }

    #[test]
    fn an_rpc_gets_the_trace_with_a_new_parent() {
        let ctx =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let rpc = for_rpc(&ctx);
        assert_eq!(rpc.trace_id, ctx.trace_id);
        assert_ne!(rpc.parent_id, ctx.parent_id);
    }
}
