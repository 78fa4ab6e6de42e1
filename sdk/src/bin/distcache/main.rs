//! `distcache`: the command-line client.
//!
//! One-shot commands (`distcache --nodes … get KEY`), a REPL when no command
//! is given (one command per line from stdin, one redis-cli style answer per
//! line, so scripts can pipe commands in), and `bench`, a load generator.

mod bench;
mod commands;
mod input;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use distcache::{Client, Consistency};

use crate::commands::{Command, Line};
use crate::input::Input;

/// Talk to a distcache cluster (or a sidecar proxy: one URL).
#[derive(Debug, Parser)]
#[command(
    name = "distcache",
    version,
    about = "Talk to a distcache cluster (or to a sidecar proxy: one URL)"
)]
struct Args {
    /// Node URLs, comma separated (`http://host:port`).
    #[arg(
        long,
        env = "DISTCACHE_NODES",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001"
    )]
    nodes: Vec<String>,
    /// Replicas per key.
    #[arg(long, env = "DISTCACHE_REPLICAS", default_value_t = distcache::DEFAULT_REPLICAS)]
    replicas: usize,
    /// Read consistency: one, quorum, all.
    #[arg(long, default_value = "one")]
    read_consistency: Consistency,
    /// Write consistency: one, quorum, all.
    #[arg(long, default_value = "one")]
    write_consistency: Consistency,
    /// Bearer token.
    #[arg(
        long,
        env = "DISTCACHE_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// PEM CA bundle for https:// nodes.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for nodes that require one (mTLS);
    /// needs --tls-key and --tls-ca. (No environment variable: the node's
    /// DISTCACHE_TLS_CERT is its server certificate.)
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The REPL's history file on a terminal [default: $DISTCACHE_HISTFILE,
    /// else ~/.distcache_history; empty: none].
    #[arg(long, value_name = "FILE")]
    history_file: Option<PathBuf>,
    /// Most operations coalesced into one Batch RPC per node (1: no coalescing).
    #[arg(long, default_value_t = distcache::CoalesceConfig::default().max_batch)]
    max_batch: usize,
    /// Per-request deadline in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

/// A file's bytes, or an error naming it.
fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))
}

async fn connect(args: &Args) -> Result<Client, Box<dyn std::error::Error>> {
    let mut b = Client::builder()
        .nodes(args.nodes.clone())
        .replicas(args.replicas)
        .read_consistency(args.read_consistency)
        .write_consistency(args.write_consistency)
        .timeout(Duration::from_millis(args.timeout_ms))
        .coalesce(distcache::CoalesceConfig {
            max_batch: args.max_batch,
            ..distcache::CoalesceConfig::default()
        });
    if let Some(t) = &args.token {
        b = b.token(t.clone());
    }
    if let Some(f) = &args.token_file {
        b = b.token(std::fs::read_to_string(f)?.trim().to_owned());
    }
    if let Some(f) = &args.tls_ca {
        b = b.tls_ca(read(f, "CA")?);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        b = b.tls_identity(read(cert, "certificate")?, read(key, "key")?);
    }
    Ok(b.build().await?)
}

async fn repl(client: &Client, history: Option<PathBuf>) -> std::io::Result<()> {
    let mut input = Input::open(history);
    let result = async {
        while let Some(line) = input.next_line() {
            let line = line?;
            let words = match distcache::cli_words::split(line.as_bytes()) {
                Ok(w) => w,
                Err(e) => {
                    println!("(error) {e}");
                    continue;
                }
            };
            // Keys and values are text here; `\xHH` may spell other bytes.
            let words: Vec<String> = words
                .iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            let Some(first) = words.first() else { continue };
            if matches!(first.to_ascii_lowercase().as_str(), "quit" | "exit") {
                break;
            }
            let argv = std::iter::once("distcache".to_owned()).chain(words);
            let answer = match Line::try_parse_from(argv) {
                Ok(Line {
                    command: Command::Bench(_),
                }) => "(error) run bench from the shell".to_owned(),
                Ok(l) => commands::run(client, l.command).await,
                Err(e) => format!(
                    "(error) {}",
                    e.to_string().lines().next().unwrap_or("bad command")
                ),
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{answer}")?;
            out.flush()?;
        }
        Ok(())
    }
    .await;
    input.close();
    result
}

/// Why the nodes did not answer, on standard error: each failing node's
/// health check error, which names a refused TLS handshake (a missing or
/// untrusted client certificate) where the operation could only say that
/// too few replicas answered.
async fn explain_unreachable(client: &Client) {
    for (url, answer) in client.health_checks().await {
        if let Err(e) = answer {
            eprintln!("distcache: {url}: {e}");
        }
    }
}

/// Where the REPL keeps its history on a terminal: `--history-file`, else
/// `$DISTCACHE_HISTFILE` (redis-cli's `REDISCLI_HISTFILE`), else
/// `~/.distcache_history`; an empty value keeps none. (clap's `env` would
/// refuse the empty value.)
fn history_file(args: &Args) -> Option<PathBuf> {
    let path = match &args.history_file {
        Some(p) => p.clone(),
        None => match std::env::var_os("DISTCACHE_HISTFILE") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".distcache_history"),
        },
    };
    (!path.as_os_str().is_empty()).then_some(path)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let client = match connect(&args).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("distcache: {e}");
            return ExitCode::from(2);
        }
    };
    match args.command {
        None => match repl(&client, history_file(&args)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("distcache: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Bench(opts)) => match bench::run(&client, opts).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("distcache bench: {e}");
                ExitCode::FAILURE
            }
        },
        Some(cmd) => match commands::exec(&client, cmd).await {
            Ok(answer) => {
                println!("{answer}");
                if answer.starts_with("(error)") {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                println!("(error) {e}");
                if e.is_retryable() {
                    explain_unreachable(&client).await;
                }
                ExitCode::FAILURE
            }
        },
    }
}
