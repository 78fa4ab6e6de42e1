//! Logging: the `[log]` config section ([`LogConfig`]) and [`init`], which
//! sets up tracing from it: level or filter, text or JSON lines, standard
//! error or an appended file. The node and the proxy log the same way.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            file: None,
            format: LogFormat::Text,
        }
    }
}

/// Installs the global subscriber. Fails if the filter is invalid or the log
/// file cannot be opened.
pub fn init(log: &LogConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_new(&log.level)?;
    let writer = match &log.file {
        Some(path) => BoxMakeWriter::new(Mutex::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        )),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match log.format {
        LogFormat::Text => builder
            .with_ansi(log.file.is_none() && std::io::stderr().is_terminal())
            .try_init()?,
        LogFormat::Json => builder.json().try_init()?,
    }
    Ok(())
}
