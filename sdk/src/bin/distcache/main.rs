//! `distcache`: the command-line client.
//!
//! One-shot commands (`distcache --nodes … get KEY`), a REPL when no command
//! is given (one command per line from stdin, one redis-cli style answer per
//! line, so scripts can pipe commands in), and `bench`, a load generator.

mod bench;
mod commands;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use distcache::{Client, Consistency};

use crate::commands::{Command, Line};

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
    /// Most operations coalesced into one Batch RPC per node (1: no coalescing).
    #[arg(long, default_value_t = distcache::CoalesceConfig::default().max_batch)]
    max_batch: usize,
    /// Per-request deadline in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Option<Command>,
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
        b = b.tls_ca(std::fs::read(f)?);
    }
    Ok(b.build().await?)
}

async fn repl(client: &Client) -> std::io::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut out = std::io::stdout().lock();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            write!(out, "distcache> ")?;
            out.flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let words = match commands::split_words(&line) {
            Ok(w) => w,
            Err(e) => {
                writeln!(out, "(error) {e}")?;
                continue;
            }
        };
        if words.is_empty() {
            continue;
        }
        if matches!(words[0].to_ascii_lowercase().as_str(), "quit" | "exit") {
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
        writeln!(out, "{answer}")?;
    }
    Ok(())
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
        None => match repl(&client).await {
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
        Some(cmd) => {
            let answer = commands::run(&client, cmd).await;
            println!("{answer}");
            if answer.starts_with("(error)") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
