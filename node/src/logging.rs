//! Sets up tracing from the `[log]` config: level or filter, text or JSON
//! lines, standard error or an appended file.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::{LogConfig, LogFormat};

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
