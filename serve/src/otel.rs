//! The `otel` feature: the server's spans exported over OTLP/gRPC
//! (opentelemetry-otlp's tonic exporter, batched), as a `tracing` layer
//! beside the log output. A request span whose request carried a W3C trace
//! context gets it as its OpenTelemetry parent ([`set_parent`]), so the
//! exported span joins the caller's trace; a span without one starts a
//! trace of its own.
//!
//! What is exported is the distcache crates' spans at `debug` and above
//! (the per-RPC and per-command spans, the SDK's per-operation spans),
//! whatever the log level: the exporter has its own filter, so the log
//! output stays as `[log] level` says.
//!
//! The exporter runs on a small runtime of its own (one thread), so it can
//! be set up before the server's runtime exists and keeps exporting while
//! that runtime shuts down; [`flush`] sends what is still buffered.
//!
//! Not here: metrics or logs over OTLP, sampling (every span is exported;
//! the sampled flag of incoming contexts is passed on, not obeyed).

use std::str::FromStr;
use std::sync::OnceLock;

use distcache_proto::trace::TraceContext;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The exporter's runtime and provider, for the life of the process.
static EXPORT: OnceLock<(tokio::runtime::Runtime, SdkTracerProvider)> = OnceLock::new();

/// The span targets exported, and their level.
fn exported() -> Targets {
    Targets::new()
        .with_target("distcache", tracing::Level::DEBUG)
        .with_target("distcache_node", tracing::Level::DEBUG)
        .with_target("distcache_proxy", tracing::Level::DEBUG)
        .with_target("distcache_serve", tracing::Level::DEBUG)
}

/// The exporting layer for `service` (the `service.name` resource) sending
/// to `endpoint` (an OTLP/gRPC collector, e.g. `http://localhost:4317`).
pub(crate) fn layer<S>(
    service: &'static str,
    endpoint: &str,
) -> Result<impl Layer<S>, Box<dyn std::error::Error + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()?;
    // tonic's channel needs a runtime when it is made.
    let exporter = {
        let _in = rt.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let tracer = provider.tracer(service);
    let _ = EXPORT.set((rt, provider));
    Ok(tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(exported()))
}

/// Makes `ctx` (a request's incoming trace context) the OpenTelemetry
/// parent of `span`. Nothing happens without the exporting layer.
pub(crate) fn set_parent(span: &Span, ctx: &TraceContext) {
    let state = ctx
        .state
        .as_deref()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let remote = SpanContext::new(
        TraceId::from_bytes(ctx.trace_id),
        SpanId::from_bytes(ctx.parent_id),
        TraceFlags::new(ctx.flags),
        true,
        state,
    );
    let parent = opentelemetry::Context::new().with_remote_span_context(remote);
    // Fails only when no exporting layer is installed: nothing to join.
    let _ = span.set_parent(parent);
}

/// Sends the spans still buffered (at exit).
pub(crate) fn flush() {
    if let Some((_, provider)) = EXPORT.get()
        && let Err(e) = provider.force_flush()
    {
        tracing::warn!(error = %e, "could not export the last spans");
    }
}
