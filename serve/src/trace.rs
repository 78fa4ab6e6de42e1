//! Request spans of the gRPC servers (node and proxy): the W3C trace
//! context a request carries (`traceparent` / `tracestate` headers, or a
//! `Pipeline` message's `traceparent` field) recorded on the span that
//! serves it, as the fields `trace_id` and `parent_id`, so that a server's
//! debug logs can be joined to the caller's trace. With the `otel` feature
//! the span's OpenTelemetry parent is set from it too, so exported spans
//! join the caller's trace.
//!
//! The spans themselves are made by each server (so that they carry its
//! target, `distcache_node` or `distcache_proxy`, for `RUST_LOG`); this
//! module only fills them in, and only when they are enabled: a request
//! whose span is off costs no header lookup.
//!
//! Not here: starting a trace (a request without a valid context gets
//! none), sampling, the exporter (see [`crate::logging`]).

use distcache_proto::trace::{TRACEPARENT, TRACESTATE, TraceContext};
use tonic::codegen::http;
use tracing::Span;
use tracing::field::display;

/// The valid trace context of a request's headers, if any.
pub fn from_headers(h: &http::HeaderMap) -> Option<TraceContext> {
    TraceContext::from_values(
        h.get(TRACEPARENT)?.to_str().ok()?,
        h.get(TRACESTATE).and_then(|v| v.to_str().ok()),
    )
}

/// Whether `path` (a gRPC request's) is a probe: the standard health
/// service, `CacheService/HealthCheck` or reflection. Probes get no span:
/// every client's prober sends one per node twice a second, which would
/// drown the requests in the debug log and in an exporter's traces.
pub fn is_probe(path: &str) -> bool {
    path.starts_with("/grpc.health.")
        || path.starts_with("/grpc.reflection.")
        || path.ends_with("/HealthCheck")
}

/// Records `ctx` on `span`, which declares the fields `trace_id` and
/// `parent_id` (as `tracing::field::Empty`).
pub fn record(span: &Span, ctx: &TraceContext) {
    span.record("trace_id", display(ctx.trace_id_hex()));
    span.record("parent_id", display(ctx.parent_id_hex()));
    #[cfg(feature = "otel")]
    crate::otel::set_parent(span, ctx);
}

/// `span` (a server's per-request span, see [`record`]) with the trace
/// context of `headers` recorded on it when the span is enabled and the
/// headers carry a valid one. For `tonic::transport::Server::trace_fn`.
pub fn follow(span: Span, headers: &http::HeaderMap) -> Span {
    if !span.is_disabled()
        && let Some(ctx) = from_headers(headers)
    {
        record(&span, &ctx);
    }
    span
}

/// `span` (a `Pipeline` message's span) with the message's `traceparent`
/// recorded on it when it is enabled and the value valid (empty: none).
pub fn follow_message(span: Span, traceparent: &str) -> Span {
    if !span.is_disabled()
        && !traceparent.is_empty()
        && let Some(ctx) = TraceContext::from_values(traceparent, None)
    {
        record(&span, &ctx);
    }
    span
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_told_from_requests_by_their_path() {
        assert!(is_probe("/grpc.health.v1.Health/Check"));
        assert!(is_probe("/distcache.v1.CacheService/HealthCheck"));
        assert!(is_probe(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_probe("/distcache.v1.CacheService/Get"));
        assert!(!is_probe("/distcache.v1.CacheService/Pipeline"));
    }

    #[test]
    fn headers_with_a_valid_traceparent_give_its_context_and_others_none() {
        let mut h = http::HeaderMap::new();
        assert!(from_headers(&h).is_none());
        h.insert(TRACEPARENT, "00-abc".parse().unwrap());
        assert!(from_headers(&h).is_none());
        h.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        h.insert(TRACESTATE, "rojo=00f067aa0ba902b7".parse().unwrap());
        let ctx = from_headers(&h).unwrap();
        assert_eq!(
            ctx.trace_id_hex().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(ctx.state.as_deref(), Some("rojo=00f067aa0ba902b7"));
    }
}
