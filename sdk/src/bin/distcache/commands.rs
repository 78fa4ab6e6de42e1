//! The commands shared by one-shot use and the REPL, and their redis-cli
//! style answers: `OK`, the value, `(nil)`, `(integer) 3`, `(error) …`.

use std::time::Duration;

use clap::{Parser, Subcommand};
use distcache::{Client, Condition};

use crate::bench::BenchOpts;

/// One REPL line.
#[derive(Debug, Parser)]
#[command(name = "distcache", no_binary_name = false, disable_help_flag = true)]
pub(crate) struct Line {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// A command.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print a key's value.
    Get { key: String },
    /// Write a key.
    Set {
        key: String,
        value: String,
        /// Time to live in seconds.
        #[arg(long)]
        ttl: Option<f64>,
        /// Only if absent.
        #[arg(long, conflicts_with = "xx")]
        nx: bool,
        /// Only if present.
        #[arg(long)]
        xx: bool,
    },
    /// Delete keys; prints how many held a value.
    Del {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print a key's version (for cas).
    Version { key: String },
    /// Replace a value only if the key is at VERSION (0: absent); prints the new version.
    Cas {
        key: String,
        version: u64,
        value: String,
        /// Time to live in seconds.
        #[arg(long)]
        ttl: Option<f64>,
    },
    /// Add DELTA (default 1) to a counter.
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
    /// Print many values.
    Mget {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Write many KEY VALUE pairs.
    Mset {
        #[arg(required = true, num_args = 2..)]
        pairs: Vec<String>,
    },
    /// Remaining time to live in seconds (-1: no expiry, -2: no key).
    Ttl { key: String },
    /// Set a key's time to live in seconds (0: remove its expiry).
    Expire { key: String, seconds: f64 },
    /// Which nodes own a key, in preference order.
    Ring { key: String },
    /// Which nodes this client considers healthy.
    Nodes,
    /// Load generator with a latency report.
    Bench(BenchOpts),
}

fn ttl(secs: Option<f64>) -> Option<Duration> {
    secs.filter(|s| *s > 0.0).map(Duration::from_secs_f64)
}

fn quote(v: &[u8]) -> String {
    format!("\"{}\"", String::from_utf8_lossy(v).escape_debug())
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    let lines: Vec<String> = items
        .into_iter()
        .enumerate()
        .map(|(i, s)| format!("{}) {s}", i + 1))
        .collect();
    if lines.is_empty() {
        "(empty array)".to_owned()
    } else {
        lines.join("\n")
    }
}

/// Runs `cmd` and renders its answer.
pub(crate) async fn run(c: &Client, cmd: Command) -> String {
    match exec(c, cmd).await {
        Ok(s) => s,
        Err(e) => format!("(error) {e}"),
    }
}

/// Runs `cmd`: its rendered answer, or the error it failed with.
pub(crate) async fn exec(c: &Client, cmd: Command) -> Result<String, distcache::Error> {
    const NIL: &str = "(nil)";
    Ok(match cmd {
        Command::Get { key } => match c.get(&key).await? {
            Some(e) => quote(&e.value),
            None => NIL.to_owned(),
        },
        Command::Set {
            key,
            value,
            ttl: t,
            nx,
            xx,
        } => {
            let cond = if nx {
                Condition::IfAbsent
            } else if xx {
                Condition::IfPresent
            } else {
                Condition::Always
            };
            if c.set_with(&key, &value, ttl(t), cond).await?.applied {
                "OK".to_owned()
            } else {
                NIL.to_owned()
            }
        }
        Command::Del { keys } => {
            let mut n = 0;
            for k in keys {
                n += i32::from(c.delete(&k).await?);
            }
            format!("(integer) {n}")
        }
        Command::Version { key } => match c.get(&key).await? {
            Some(e) => format!("(integer) {}", e.version),
            None => NIL.to_owned(),
        },
        Command::Cas {
            key,
            version,
            value,
            ttl: t,
        } => {
            let r = c.compare_and_swap(&key, version, &value, ttl(t)).await?;
            if r.applied {
                format!("(integer) {}", r.version)
            } else {
                NIL.to_owned()
            }
        }
        Command::Incr { key, delta } => format!("(integer) {}", c.incr_by(&key, delta).await?),
        Command::Mget { keys } => list(c.mget(&keys).await?.into_iter().map(|e| match e {
            Some(e) => quote(&e.value),
            None => NIL.to_owned(),
        })),
        Command::Mset { pairs } => {
            if pairs.len() % 2 != 0 {
                return Ok("(error) mset needs KEY VALUE pairs".to_owned());
            }
            let items: Vec<(&String, &String)> = pairs.chunks(2).map(|p| (&p[0], &p[1])).collect();
            c.mset(&items, None).await?;
            "OK".to_owned()
        }
        Command::Ttl { key } => match c.get(&key).await? {
            None => "(integer) -2".to_owned(),
            Some(e) => match e.ttl {
                None => "(integer) -1".to_owned(),
                Some(t) => format!("(integer) {}", t.as_secs_f64().round() as u64),
            },
        },
        Command::Expire { key, seconds } => {
            let applied = c.expire(&key, ttl(Some(seconds))).await?;
            format!("(integer) {}", i32::from(applied))
        }
        Command::Ring { key } => list(c.owners(&key)),
        Command::Nodes => list(
            c.health()
                .into_iter()
                .map(|(u, h)| format!("{u} {}", if h { "healthy" } else { "unhealthy" })),
        ),
        Command::Bench(_) => "(error) bench is not a REPL command".to_owned(),
    })
}
