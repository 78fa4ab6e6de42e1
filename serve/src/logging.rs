//! Logging: the `[log]` config section ([`LogConfig`]) and [`init`], which
//! sets up tracing from it: level or filter, text or JSON lines, standard
//! error or an appended file, and, in a binary built with the `otel`
//! feature, span export over OTLP/gRPC (see `otel.rs`). The node and the
//! proxy log the same way.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Deserialize;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// trace, debug, info, warn or error, or a tracing filter directive.
    pub level: String,
    /// Append logs to this file instead of standard error.
    pub file: Option<PathBuf>,
    /// Line format.
    pub format: LogFormat,
    /// OTLP/gRPC collector to export spans to (e.g.
    /// `http://localhost:4317`); only in a binary built with the `otel`
    /// feature (otherwise a warning says it is ignored). None: no export.
    pub otlp_endpoint: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            file: None,
            format: LogFormat::Text,
            otlp_endpoint: None,
        }
    }
}

/// Installs the global subscriber for the process `service` (its OTLP
/// `service.name`). Fails if the filter is invalid, the log file cannot be
/// opened or the OTLP exporter cannot be made.
pub fn init(
    log: &LogConfig,
    service: &'static str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_new(&log.level)?;
    let writer = match &log.file {
        Some(path) => BoxMakeWriter::new(Mutex::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        )),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    // A line per span as it closes (with its fields and busy/idle times):
    // the request spans are `debug`, so this shows a line per RPC at debug
    // level, each with its `trace_id` when the caller sent one.
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_span_events(FmtSpan::CLOSE);
    let lines = match log.format {
        LogFormat::Text => lines
            .with_ansi(log.file.is_none() && std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    // The level filters the log lines only: the exporter has its own.
    let registry = tracing_subscriber::registry().with(lines.with_filter(filter));
    #[cfg(feature = "otel")]
    {
        let export = match &log.otlp_endpoint {
            Some(endpoint) => Some(crate::otel::layer(service, endpoint)?),
            None => None,
        };
        registry.with(export).try_init()?;
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = service;
        registry.try_init()?;
        if let Some(endpoint) = &log.otlp_endpoint {
            tracing::warn!(
                %endpoint,
                "built without the otel feature: spans are not exported"
            );
        }
    }
    Ok(())
}

/// Exports the spans still buffered, if spans are exported: call once at
/// exit, after the server stopped.
pub fn flush() {
    #[cfg(feature = "otel")]
    crate::otel::flush();
}
