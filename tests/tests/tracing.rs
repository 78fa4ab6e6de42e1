//! W3C trace context end to end: a `traceparent` sent to the proxy's gRPC
//! port, or set on an SDK handle, reaches the nodes with the same trace id.
//! Nodes and proxy run in-process; a capture layer installed as the global
//! subscriber records the `trace_id` and `parent_id` fields of every
//! distcache span, which is what a node's debug log would print.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::{Mutex, Once};
use std::time::Duration;

use distcache::{CoalesceConfig, TraceContext};
use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient};
use distcache_tests::proxy::frontend;
use distcache_tests::{TestNode, TestProxy, eventually, test_config};
use tonic::Request;
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber, field::Field};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span that had a trace context recorded on it.
#[derive(Debug, Clone, Default)]
struct Seen {
    target: String,
    name: String,
    method: String,
    trace_id: String,
    parent_id: String,
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

/// Records the fields of distcache's spans in each span's extensions, and a
/// [`Seen`] in [`SEEN`] when a span that had a `trace_id` closes.
struct Capture;

#[derive(Default)]
struct Fields(Seen);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.record_debug(f, &format_args!("{v}"));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        let v = format!("{v:?}");
        match f.name() {
            "method" => self.0.method = v,
            "trace_id" => self.0.trace_id = v,
            "parent_id" => self.0.parent_id = v,
            _ => {}
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        f.0.target = attrs.metadata().target().to_owned();
        f.0.name = attrs.metadata().name().to_owned();
        ctx.span(id).expect("span").extensions_mut().insert(f);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("span");
        let mut ext = span.extensions_mut();
        if let Some(f) = ext.get_mut::<Fields>() {
            values.record(f);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).expect("span");
        if let Some(f) = span.extensions().get::<Fields>()
            && !f.0.trace_id.is_empty()
        {
            SEEN.lock().unwrap().push(f.0.clone());
        }
    }
}

fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let only_ours = Targets::new()
            .with_target("distcache", Level::DEBUG)
            .with_target("distcache_node", Level::DEBUG)
            .with_target("distcache_proxy", Level::DEBUG);
        let subscriber = tracing_subscriber::registry().with(Capture.with_filter(only_ours));
        tracing::subscriber::set_global_default(subscriber).expect("global subscriber");
    });
}

/// The spans seen so far under `trace_id` whose target starts with `target`.
fn seen(trace_id: &str, target: &str) -> Vec<Seen> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == trace_id && s.target.starts_with(target))
        .cloned()
        .collect()
}

/// A traceparent of a fresh trace, different in every test.
fn traceparent(tag: u8) -> (String, String) {
    let trace_id = format!("{:02x}{}", tag, "4bf92f3577b34da6a3ce929d0e0e47");
    (format!("00-{trace_id}-00f067aa0ba902b7-01"), trace_id)
}

async fn nodes(n: usize) -> Vec<TestNode> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TestNode::start(test_config()).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_sent_to_the_proxys_grpc_port_reaches_both_replicas_with_its_trace_id() {
    capture();
    let nodes = nodes(2).await;
    let backend = TestProxy::backend(nodes.iter().map(TestNode::url).collect()).await;
    let proxy = TestProxy::start(backend, frontend()).await;
    let mut c = CacheServiceClient::connect(format!("http://{}", proxy.grpc))
        .await
        .expect("connect");
    let (tp, trace_id) = traceparent(0xa1);
    let mut req = Request::new(pb::SetRequest {
        key: "traced".into(),
        value: "v".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("traceparent", tp.parse().unwrap());
    req.metadata_mut()
        .insert("tracestate", "rojo=00f067aa0ba902b7".parse().unwrap());
    assert!(c.set(req).await.expect("set").into_inner().applied);

    // The proxy's own span joined the caller's: same trace, caller's span.
    eventually(Duration::from_secs(5), || async {
        seen(&trace_id, "distcache_proxy")
            .iter()
            .any(|s| s.method == "Set" && s.parent_id == "00f067aa0ba902b7")
    })
    .await
    .expect("the proxy's span carries the caller's context");
    // Each replica got the write under the trace, each RPC with a span id of
    // its own (the second replica's write may finish after the answer).
    eventually(Duration::from_secs(5), || async {
        seen(&trace_id, "distcache_node").len() >= 2
    })
    .await
    .expect("both replicas' spans carry the trace id");
    let node_spans = seen(&trace_id, "distcache_node");
    let mut parents: Vec<_> = node_spans.iter().map(|s| s.parent_id.clone()).collect();
    parents.sort();
    parents.dedup();
    assert_eq!(parents.len(), node_spans.len(), "{node_spans:?}");
    assert!(!parents.contains(&"00f067aa0ba902b7".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_message_to_the_proxy_carries_its_own_traceparent_else_the_streams() {
    capture();
    let nodes = nodes(1).await;
    let backend = TestProxy::backend(nodes.iter().map(TestNode::url).collect()).await;
    let proxy = TestProxy::start(backend, frontend()).await;
    let mut c = CacheServiceClient::connect(format!("http://{}", proxy.grpc))
        .await
        .expect("connect");
    let (tp, trace_id) = traceparent(0xb2);
    let (stream_tp, stream_trace_id) = traceparent(0xb3);
    let get = pb::Operation {
        op: Some(pb::operation::Op::Get(pb::GetRequest {
            key: "k".into(),
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<pb::PipelineRequest>();
    let mut stream = Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    stream
        .metadata_mut()
        .insert("traceparent", stream_tp.parse().unwrap());
    let mut answers = c.pipeline(stream).await.expect("pipeline").into_inner();
    // One message at a time: two in flight at once could share one batch
    // to the node, which carries only the first one's context.
    let messages = [
        (1, tp),
        // Not a valid traceparent: the stream's context instead.
        (2, "00-nonsense".to_owned()),
    ];
    for (id, traceparent) in messages {
        tx.send(pb::PipelineRequest {
            id,
            operations: vec![get.clone()],
            traceparent,
        })
        .unwrap();
        let a = answers.message().await.expect("answer").expect("open");
        assert_eq!(a.id, id);
        assert!(matches!(
            a.results[0].result,
            Some(pb::operation_result::Result::Get(_))
        ));
    }
    eventually(Duration::from_secs(5), || async {
        !seen(&trace_id, "distcache_node").is_empty()
            && !seen(&stream_trace_id, "distcache_node").is_empty()
    })
    .await
    .expect("the nodes' spans carry the message's and the stream's trace ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_handle_with_a_trace_context_sends_it_on_every_node_rpc_and_others_send_none() {
    capture();
    let nodes = nodes(2).await;
    // Coalescing off: each operation is its own unary RPC, so the context
    // travels as metadata rather than in a Pipeline message.
    let client = distcache::Client::builder()
        .nodes(nodes.iter().map(TestNode::url))
        .replicas(2)
        .coalesce(CoalesceConfig {
            max_batch: 1,
            ..CoalesceConfig::default()
        })
        .timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("client");
    let (tp, trace_id) = traceparent(0xc3);
    let traced = client.with_trace_context(TraceContext::parse(&tp).unwrap());
    traced.set("k", "v", None).await.expect("set");
    traced.get("k").await.expect("get");
    eventually(Duration::from_secs(5), || async {
        let spans = seen(&trace_id, "distcache_node");
        spans.iter().filter(|s| s.method == "Set").count() >= 2
            && spans.iter().any(|s| s.method == "Get")
    })
    .await
    .expect("every replica's Set and the Get carry the trace id");
    // The SDK's own span for the operation has it too.
    assert!(
        seen(&trace_id, "distcache::")
            .iter()
            .any(|s| s.name == "distcache")
    );

    // The handle it came from is untouched: its RPCs carry no context.
    let before = SEEN.lock().unwrap().len();
    client.set("k2", "v", None).await.expect("set");
    let after: Vec<Seen> = SEEN.lock().unwrap()[before..].to_vec();
    assert!(after.iter().all(|s| s.trace_id != trace_id), "{after:?}");
}
