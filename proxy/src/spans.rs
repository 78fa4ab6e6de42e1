//! The proxy's tracing spans, at `debug` level under the target
//! `distcache_proxy::spans` (`RUST_LOG=distcache_proxy=debug`): one per
//! gRPC request (`rpc`, made by the server's `trace_fn`, with the caller's
//! W3C trace context as `trace_id` and `parent_id` when it sent a valid
//! `traceparent`, see [`distcache_serve::trace`]) and one per RESP data
//! command (`resp`, with the command's name, key count and key bytes, never
//! the keys); probes (health checks, reflection) get none. RESP has no headers, so its commands start no trace: their
//! SDK calls carry no `traceparent`. Inside either, the SDK opens its own
//! `distcache` span per operation.
//!
//! Off (the default `info` level), a request costs one disabled-span check.

use tonic::codegen::http;
use tracing::Span;
use tracing::field::Empty;

use crate::resp::command::Command;

/// The span of one gRPC request (for `Server::trace_fn`).
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
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
    );
    distcache_serve::trace::follow(span, req.headers())
}

/// The span of one RESP data command named `name`.
pub(crate) fn resp(name: &'static str, cmd: &Command) -> Span {
    let span = tracing::debug_span!(
        "resp",
        cmd = name,
        keys = Empty,
        key_bytes = Empty,
        otel.kind = "server",
    );
    if !span.is_disabled()
        && let Some((keys, pairs)) = cmd.keys()
    {
        let bytes: usize = keys
            .iter()
            .chain(pairs.iter().map(|(k, _)| k))
            .map(|k| k.len())
            .sum();
        span.record("keys", keys.len() + pairs.len());
        span.record("key_bytes", bytes);
    }
    span
}
