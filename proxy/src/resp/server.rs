//! The RESP listener: one task per connection, bounded in number. Each read
//! is parsed into as many requests as it holds (pipelining); a run of
//! requests on distinct keys executes concurrently, anything else in order,
//! and replies are written back in request order with one write per read
//! (earlier when they pass 64 KiB: see [`super::output`]), each in the
//! protocol the connection speaks when it is answered (RESP2, or RESP3 from
//! the `HELLO 3` on: the HELLO's own reply included).
//! A malformed frame gets an error reply and closes that connection only.
//!
//! With TLS, each connection's handshake runs in its own task under a
//! deadline, so a slow or garbage client costs only its own connection. On
//! shutdown the listener closes, each connection finishes the requests it
//! has read, answers them and closes; what is still open after the grace
//! period is dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use distcache_serve::security::auth::unix_now;
use distcache_serve::stopped;
use futures_buffered::join_all;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::auth::{RespAuth, handshake};
use super::codec::{Limits, Protocol, ProtocolError, Reply, RequestParser};
use super::command::{self, Command};
use super::exec;
use super::output::Output;
use super::per_ip::PerIp;
use super::session::{Session, connection_command};
use crate::backend::Backend;
use crate::security::FrontSecurity;

/// The RESP front end's own settings (taken from the proxy's
/// `FrontendConfig` by [`crate::run`]).
#[derive(Debug, Clone)]
pub struct RespConfig {
    /// Bounds on requests.
    pub limits: Limits,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// How long a connection has to send its first request and, when tokens
    /// are required, to log in. Zero: no limit.
    pub login_timeout: Duration,
    /// How long open connections get to finish once shutdown starts.
    pub shutdown_grace: Duration,
    /// TLS and tokens.
    pub security: FrontSecurity,
}

/// Serves RESP on `listener` until `stop` turns true, then drains open
/// connections for up to `config.shutdown_grace`. At most
/// `config.max_connections` connections are open at once; more wait in the
/// kernel's accept queue. An address with `config.max_connections_per_ip`
/// open has further connections closed at once; a connection that sends no
/// request (or, with tokens, does not log in) within `config.login_timeout`
/// is closed.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<Backend>,
    config: RespConfig,
    mut stop: watch::Receiver<bool>,
) {
    let limits = config.limits;
    let login_timeout = config.login_timeout;
    let per_ip = PerIp::new(config.max_connections_per_ip);
    let security = config.security;
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut open = JoinSet::new();
    loop {
        while open.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "RESP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let Some(slot) = per_ip.admit(peer.ip()) else {
            backend.metrics.resp_refused_per_ip.inc();
            tracing::debug!(%peer, "RESP connection refused: too many from this address");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        let stop = stop.clone();
        let id = backend.resp_accepted.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Session {
            id,
            name: None,
            proto: Protocol::Resp2,
            auth: (security.verifier.clone())
                .map(|v| RespAuth::new(v, backend.metrics.security.clone())),
        };
        // The certificate in force now: a reload affects new connections.
        let tls = security.resp_tls.as_ref().map(|t| t.acceptor());
        let handshake_timeout = security.handshake_timeout;
        open.spawn(async move {
            backend.resp_connections.fetch_add(1, Ordering::Relaxed);
            let result = match tls {
                None => connection(stream, &backend, limits, login_timeout, session, stop).await,
                Some(tls) => match handshake(&tls, stream, handshake_timeout, &backend).await {
                    Ok(stream) => {
                        connection(stream, &backend, limits, login_timeout, session, stop).await
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "RESP connection ended with an error");
            }
            backend.resp_connections.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while open.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!(
            open = open.len(),
            "RESP connections still busy after the shutdown grace period; closing them"
        );
        open.shutdown().await;
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    backend: &Backend,
    limits: Limits,
    login_timeout: Duration,
    mut session: Session,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = Output::default();
    // Kept across reads: a parsed request is about 100 bytes, and a fresh
    // list per read of a pipeline would be a large allocation every time.
    // After a burst it shrinks back to 256 entries (about 30 KB).
    let mut parsed: Parsed = Vec::new();
    // The argument list of the request being parsed, reused likewise, and
    // the parser, which resumes inside a request split across reads.
    let mut args: Vec<Bytes> = Vec::new();
    let mut parser = RequestParser::default();
    // One wait for the stop flag for the whole connection: a fresh one per
    // read registers and drops a watch notification every time.
    let mut stopping = std::pin::pin!(stopped(&mut stop));
    let before_auth = limits.before_auth();
    // Until its first request (and, with tokens, until it has logged in) a
    // connection has `login_timeout`: a socket that never says anything does
    // not hold a connection slot forever.
    let login_by = tokio::time::Instant::now() + login_timeout;
    // True once the connection has sent a request and logged in (when it
    // must): no timeout from then on, even if its token later runs out (it
    // then gets NOAUTH and may log in again, as in Redis).
    let mut settled = login_timeout.is_zero();
    let mut answered = false;
    // Set when parsing stopped after an AUTH: what follows it in `input` is
    // parsed, with the limits the AUTH earned, before reading more.
    let mut unparsed = false;
    loop {
        let logged_in = session.logged_in();
        settled |= answered && logged_in;
        if !unparsed {
            let read = stream.read_buf(&mut input);
            let n = if settled {
                tokio::select! {
                    n = read => n?,
                    () = &mut stopping => return stream.shutdown().await,
                }
            } else {
                tokio::select! {
                    n = tokio::time::timeout_at(login_by, read) => match n {
                        Ok(n) => n?,
                        Err(_) => {
                            backend.metrics.resp_login_timeouts.inc();
                            return stream.shutdown().await;
                        }
                    },
                    () = &mut stopping => return stream.shutdown().await,
                }
            };
            if n == 0 {
                return Ok(());
            }
        }
        unparsed = false;
        let limits = if logged_in { &limits } else { &before_auth };
        let mut fatal = None;
        loop {
            args.clear();
            match parser.parse(&mut input, limits, &mut args) {
                Ok(true) if args.is_empty() => {}
                Ok(true) => {
                    let cmd = command::parse(&mut args);
                    let login = !logged_in
                        && matches!(cmd, Ok(Command::Auth(_)) | Ok(Command::Hello { .. }));
                    parsed.push((Command::metric_name(&args[0]), cmd));
                    if login {
                        unparsed = !input.is_empty();
                        break;
                    }
                }
                Ok(false) => {
                    if input.len() > limits.max_query {
                        fatal = Some(ProtocolError::TooLarge {
                            what: "query buffer",
                            limit: limits.max_query,
                        });
                    }
                    break;
                }
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        answered |= !parsed.is_empty();
        // Let go of the last request's input before running anything.
        args.clear();
        args.shrink_to(64);
        let quit = run_pipeline(backend, &mut session, &mut parsed, &mut stream, &mut output).await;
        parsed.clear();
        // A burst of thousands of requests does not pin its memory.
        parsed.shrink_to(256);
        let quit = quit?;
        if let Some(e) = &fatal {
            output
                .put(&mut stream, &Reply::err(e), session.proto)
                .await?;
        }
        output.flush(&mut stream).await?;
        if quit || fatal.is_some() {
            stream.shutdown().await?;
            return Ok(());
        }
        if input.is_empty() && input.capacity() > 256 * 1024 {
            // A large request (a big value) does not pin its buffer.
            input = BytesMut::with_capacity(16 * 1024);
        }
    }
}

/// A cheap stand-in for a key in equality tests: its length and its last
/// eight bytes (where generated keys differ). Equal keys have equal
/// fingerprints; keys with equal fingerprints are then compared in full.
fn fingerprint(k: &[u8]) -> u64 {
    let tail = &k[k.len().saturating_sub(8)..];
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    u64::from_le_bytes(last) ^ (k.len() as u64).rotate_left(56)
}

/// Runs one data command and records it.
async fn data_command(backend: &Backend, name: &'static str, cmd: Command) -> Reply {
    let start = Instant::now();
    let reply = exec::execute_in_span(backend, name, cmd).await;
    backend
        .metrics
        .record("resp", name, !reply.is_error(), start.elapsed());
    reply
}

/// Records the commands of one pipelined run, whose replies (in order,
/// named by `names`) were all written after `elapsed`: one look-up of the
/// metrics per command name.
fn record_run(
    backend: &Backend,
    names: impl Iterator<Item = &'static str>,
    replies: &[Reply],
    elapsed: std::time::Duration,
) {
    // (name, ok, failed), in order of first appearance.
    let mut counts: SmallVec<[(&'static str, u64, u64); 4]> = SmallVec::new();
    for (name, reply) in names.zip(replies) {
        let at = counts.iter().position(|c| c.0 == name).unwrap_or_else(|| {
            counts.push((name, 0, 0));
            counts.len() - 1
        });
        if reply.is_error() {
            counts[at].2 += 1;
        } else {
            counts[at].1 += 1;
        }
    }
    for (name, ok, failed) in counts {
        backend
            .metrics
            .record_many("resp", name, ok, failed, elapsed);
    }
}

/// One read's worth of requests: each command's metric name and the
/// command, or the error reply it gets instead.
type Parsed = Vec<(&'static str, Result<Command, Reply>)>;

/// Runs one read's worth of requests and puts their replies in order into
/// `output` (which writes large ones to `stream` as they come). Returns true
/// when the client asked to QUIT.
async fn run_pipeline<S: AsyncWrite + Unpin>(
    backend: &Backend,
    session: &mut Session,
    parsed: &mut Parsed,
    stream: &mut S,
    output: &mut Output,
) -> std::io::Result<bool> {
    if let Some(auth) = &mut session.auth {
        auth.gate(parsed, unix_now());
    }
    // A command that runs is taken out of `parsed` (no clone of its keys and
    // values); what is left behind is never read again.
    let take = |cmd: &mut Result<Command, Reply>| std::mem::replace(cmd, Err(Reply::Integer(0)));
    let mut i = 0;
    while i < parsed.len() {
        // Runs of data commands on pairwise distinct keys go out together.
        // Keys are compared by a fingerprint first: a run of 16 compares 120
        // pairs. (The list borrows `parsed`, so it lives only for the scan.)
        let mut seen: SmallVec<[(u64, &Bytes); 16]> = SmallVec::new();
        let mut j = i;
        while j < parsed.len() {
            let Ok(cmd) = &parsed[j].1 else { break };
            let Some((ks, pairs)) = cmd.keys() else { break };
            let mut ks = ks
                .iter()
                .chain(pairs.iter().map(|(k, _)| k))
                .map(|k| (fingerprint(k), k));
            if ks
                .clone()
                .any(|(f, k)| seen.iter().any(|&(g, s)| f == g && s == k))
            {
                break;
            }
            seen.extend(ks.by_ref());
            j += 1;
        }
        drop(seen);
        if j == i + 1
            && let (name, cmd @ Ok(_)) = &mut parsed[i]
            && let Ok(cmd) = take(cmd)
        {
            // One command alone (the common case without pipelining): no
            // join, no boxing.
            let reply = data_command(backend, name, cmd).await;
            output.put(stream, &reply, session.proto).await?;
            i = j;
            continue;
        }
        if j > i {
            // futures-buffered's join_all: one allocation for the whole run,
            // sized exactly (a filtering iterator would make it regrow,
            // copying every future), and on a wake-up only the commands
            // whose answer came are polled, not every one still waiting.
            // (A run holds only parsed commands: the scan above stops at an
            // error reply, which is passed through here only for totality.)
            //
            // Every reply of the run is written when the last one is in, so
            // that is each command's latency as the client sees it: one clock
            // reading for the run, and one metrics look-up per command name.
            let start = Instant::now();
            let run = parsed[i..j].iter_mut().map(|(name, cmd)| {
                let (name, cmd) = (*name, take(cmd));
                async move {
                    match cmd {
                        Ok(cmd) => exec::execute_in_span(backend, name, cmd).await,
                        Err(reply) => reply,
                    }
                }
            });
            let replies = join_all(run).await;
            let names = parsed[i..j].iter().map(|(name, _)| *name);
            record_run(backend, names, &replies, start.elapsed());
            for reply in &replies {
                output.put(stream, reply, session.proto).await?;
            }
            i = j;
            continue;
        }
        let (name, cmd) = &mut parsed[i];
        let name = *name;
        i += 1;
        let start = Instant::now();
        let (reply, quit) = match take(cmd) {
            Err(reply) => (reply, false),
            Ok(cmd) => connection_command(backend, session, cmd).await,
        };
        backend
            .metrics
            .record("resp", name, !reply.is_error(), start.elapsed());
        // After the command: a HELLO is answered in the protocol it chose.
        output.put(stream, &reply, session.proto).await?;
        if quit {
            return Ok(true);
        }
    }
    Ok(false)
}
