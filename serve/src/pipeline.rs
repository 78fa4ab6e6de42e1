//! Serving one `Pipeline` stream, for the node and the proxy alike: the
//! stream's messages in, each message's operations run by the caller's
//! `run`, answers out tagged with the message's id.
//!
//! This module knows nothing of what an operation does; it owns the stream's
//! rules: how many messages run at once ([`PIPELINE_DEPTH`]), that a stream
//! ends at shutdown after answering what it read, and that it ends with
//! UNAUTHENTICATED once the caller's token has run out.

use std::future::Future;
use std::pin::Pin;

use distcache_proto::v1::{self as pb, operation_result};
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::{Status, Streaming};

use crate::security::Principal;
use crate::security::auth::unix_now;
use crate::shutdown::stopped_if;

/// Batches of one `Pipeline` stream that may be in progress at once (a batch
/// of writes waits for the WAL while later batches of reads go ahead).
pub const PIPELINE_DEPTH: usize = 64;

/// The answer stream of a `Pipeline` call.
pub type PipelineStream = Pin<Box<dyn Stream<Item = Result<pb::PipelineResponse, Status>> + Send>>;

/// One operation's result carrying `s` (a batch or pipeline answer).
pub fn error_result(s: &Status) -> pb::OperationResult {
    pb::OperationResult {
        result: Some(operation_result::Result::Error(
            distcache_proto::status::from_status(s),
        )),
    }
}

/// Serves one `Pipeline` stream: reads messages until the stream ends or
/// `stop` turns true (answering what was read), ends the stream with
/// UNAUTHENTICATED once `principal`'s token has run out (or its key was
/// retired by a reload), runs up to
/// [`PIPELINE_DEPTH`] messages at once with `run` (a message's operations
/// and its `traceparent`, empty for none, to their results) and answers
/// each with its id.
pub fn serve_pipeline<F, Fut>(
    inbound: Streaming<pb::PipelineRequest>,
    principal: Option<Principal>,
    stop: Option<watch::Receiver<bool>>,
    run: F,
) -> PipelineStream
where
    F: Fn(Vec<pb::Operation>, String) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<pb::OperationResult>> + Send + 'static,
{
    let answers = inbound
        .take_until(stopped_if(stop))
        .map(move |msg| {
            let expired = principal.as_ref().is_some_and(|p| p.expired(unix_now()));
            let work = msg.map(|m| (m.id, run(m.operations, m.traceparent)));
            async move {
                // A broken or undecodable stream ends with its status.
                let (id, work) = work?;
                // A stream lives as long as its connection; its token does
                // not, nor does a key that a reload retired.
                if expired {
                    return Err(Status::unauthenticated(
                        "token expired, or its key was retired",
                    ));
                }
                Ok(pb::PipelineResponse {
                    id,
                    results: work.await,
                })
            }
        })
        .buffer_unordered(PIPELINE_DEPTH);
    Box::pin(answers)
}
