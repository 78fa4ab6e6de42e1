//! The node's tracing spans, at `debug` level under the target
//! `distcache_node::spans` (so `RUST_LOG=distcache_node=debug` turns them
//! on): one per RPC (`rpc`, made by the server's `trace_fn`, so every layer
//! and the handler run inside it) and one per `Pipeline` message
//! (`pipeline_message`; a stream's messages are served outside its `rpc`
//! span). Each records the caller's W3C trace context, when the request
//! carries a valid one, as `trace_id` and `parent_id` (see
//! [`distcache_serve::trace`]); `rpc` also records the operation's key
//! length (`key_len`, never the key) or a batch's size (`ops`). Probes
//! (health checks, reflection) get no span.
//!
//! Off (the default `info` level), a request costs one disabled-span check
//! and no header lookup.

use tonic::codegen::http;
use tracing::Span;
use tracing::field::Empty;

/// The span of one RPC (for `Server::trace_fn`).
pub(crate) fn rpc(req: &http::Request<()>) -> Span {
    let path = req.uri().path();
    if distcache_serve::trace::is_probe(path) {
        return Span::none();
    }
    let span = tracing::debug_span!(
        "rpc",
        method = path.rsplit('/').next().unwrap_or(path),
        trace_id = Empty,
        parent_id = Empty,
        key_len = Empty,
        ops = Empty,
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
    );
    distcache_serve::trace::follow(span, req.headers())
}

/// The span of one `Pipeline` message of `ops` operations.
pub(crate) fn message(ops: usize, traceparent: &str) -> Span {
    let span = tracing::debug_span!(
        "pipeline_message",
        ops,
        trace_id = Empty,
        parent_id = Empty,
        otel.kind = "server",
    );
    distcache_serve::trace::follow_message(span, traceparent)
}

/// Records the key length of the RPC being served on its span.
pub(crate) fn key_len(len: usize) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        Span::current().record("key_len", len);
    }
}

/// Records the number of operations of the `Batch` being served.
pub(crate) fn ops(n: usize) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        Span::current().record("ops", n);
    }
}
