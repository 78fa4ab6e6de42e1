//! Runs parsed Redis commands against the cluster through the SDK and builds
//! Redis's replies. SDK errors become RESP errors in one place
//! ([`error_reply`]).
//!
//! Commands the cache has no single RPC for are built from the SDK's
//! primitives: `SET … GET`, `GETSET`, `KEEPTTL` and `APPEND` are
//! compare-and-swap loops (atomic on the key's primary replica), and
//! `GETDEL` is a read followed by a delete (a write landing in between is
//! deleted too, but its value is not returned).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use distcache::{Client, Condition, Error, Exhausted};
use futures_util::future::join_all;

use super::codec::Reply;
use super::command::{Command, Cond, Expiry};
use crate::backend::Backend;

/// How often a compare-and-swap loop retries before giving up.
const CAS_ATTEMPTS: usize = 16;

/// The one place SDK errors become RESP errors.
pub fn error_reply(e: &Error) -> Reply {
    match e {
        Error::Overflow(_) => Reply::err("increment or decrement would overflow"),
        Error::NotAnInteger(_) => Reply::err("value is not an integer or out of range"),
        Error::Unauthenticated(m) | Error::PermissionDenied(m) => {
            Reply::Error(format!("NOPERM upstream refused the proxy's token: {m}"))
        }
        Error::ResourceExhausted {
            kind: Exhausted::Memory,
            message,
        } => Reply::Error(format!("OOM {message}")),
        other => Reply::err(other),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A relative TTL from an [`Expiry`]: `Ok(None)` for no expiry, `Err(())`
/// when the time is already past.
fn relative(expiry: Expiry) -> Result<Option<Duration>, ()> {
    match expiry {
        Expiry::None | Expiry::Keep => Ok(None),
        Expiry::In(0) => Err(()),
        Expiry::In(ms) => Ok(Some(Duration::from_millis(ms))),
        Expiry::At(at) => match at.checked_sub(now_ms()) {
            Some(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
            _ => Err(()),
        },
    }
}

fn int(n: usize) -> Reply {
    Reply::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// [`execute`] inside the command's `resp` debug span (named `name`), when
/// that span is on; as it is otherwise.
pub async fn execute_in_span(backend: &Backend, name: &'static str, cmd: Command) -> Reply {
    let span = crate::spans::resp(name, &cmd);
    if span.is_disabled() {
        drop(span);
        return execute(backend, cmd).await;
    }
    // Boxed: only with debug spans on.
    tracing::Instrument::instrument(Box::pin(execute(backend, cmd)), span).await
}

/// Runs one data command. Connection-state commands (AUTH, HELLO, CLIENT,
/// SELECT, QUIT) are handled by the connection, not here.
pub async fn execute(backend: &Backend, cmd: Command) -> Reply {
    let c = &backend.client;
    let result = match cmd {
        Command::Get(k) => c
            .get_bytes(k)
            .await
            .map(|e| Reply::Bulk(e.map(|e| e.value))),
        Command::Set {
            key,
            value,
            cond: Cond::Always,
            expiry: expiry @ (Expiry::None | Expiry::In(1..)),
            get: false,
            integer_reply: false,
        } => {
            let ttl = match expiry {
                Expiry::In(ms) => Some(Duration::from_millis(ms)),
                _ => None,
            };
            c.set_with_bytes(key, value, ttl, Condition::Always)
                .await
                .map(|_| Reply::OK)
        }
        // Boxed, so that the futures of the two hot commands above (held by
        // every connection, and copied when pipelined commands are joined)
        // stay small.
        other => return Box::pin(execute_other(backend, other)).await,
    };
    result.unwrap_or_else(|e| error_reply(&e))
}

/// Every data command but plain GET and SET.
async fn execute_other(backend: &Backend, cmd: Command) -> Reply {
    let c = &backend.client;
    let result = match cmd {
        Command::Ping(None) => Ok(Reply::Simple("PONG")),
        Command::Ping(Some(m)) | Command::Echo(m) => Ok(Reply::Bulk(Some(m))),
        Command::Get(k) => c.get(&k).await.map(|e| Reply::Bulk(e.map(|e| e.value))),
        Command::Set {
            key,
            value,
            cond,
            expiry,
            get,
            integer_reply,
        } => set(c, key, value, cond, expiry, get, integer_reply).await,
        Command::GetDel(k) => c.get_del(&k).await.map(Reply::Bulk),
        Command::Del(keys) => {
            let results = join_all(keys.iter().map(|k| c.delete(k))).await;
            results
                .into_iter()
                .try_fold(0usize, |n, r| r.map(|d| n + usize::from(d)))
                .map(int)
        }
        Command::Exists(keys) => c
            .mget(&keys)
            .await
            .map(|v| int(v.iter().filter(|e| e.is_some()).count())),
        Command::MGet(keys) => c.mget(&keys).await.map(|v| {
            Reply::Array(Some(
                v.into_iter()
                    .map(|e| Reply::Bulk(e.map(|e| e.value)))
                    .collect(),
            ))
        }),
        Command::MSet(pairs) => c.mset(&pairs, None).await.map(|()| Reply::OK),
        Command::Expire { key, at, cond } => expire(c, key, at, cond).await,
        Command::Ttl { key, millis } => c.get(&key).await.map(|e| {
            Reply::Integer(match e {
                None => -2,
                Some(e) => match e.ttl {
                    None => -1,
                    Some(t) if millis => t.as_millis() as i64,
                    Some(t) => ((t.as_millis() + 500) / 1000) as i64,
                },
            })
        }),
        Command::Persist(k) => match c.get(&k).await {
            Ok(Some(e)) if e.ttl.is_some() => c.expire(&k, None).await.map(|a| int(a.into())),
            Ok(_) => Ok(Reply::Integer(0)),
            Err(e) => Err(e),
        },
        Command::IncrBy(k, d) => c.incr_by(&k, d).await.map(Reply::Integer),
        Command::Append(k, v) => append(c, k, v).await,
        Command::StrLen(k) => c.get(&k).await.map(|e| int(e.map_or(0, |e| e.value.len()))),
        Command::DbSize => Ok(Reply::Integer(backend.dbsize().await as i64)),
        // A verbatim string in RESP3, as Redis sends INFO; a bulk in RESP2.
        Command::Info(_) => Ok(Reply::Verbatim(backend.info().await.into())),
        other => Ok(Reply::err(format!(
            "command {other:?} is handled by the connection"
        ))),
    };
    result.unwrap_or_else(|e| error_reply(&e))
}

async fn set(
    c: &Client,
    key: Bytes,
    value: Bytes,
    cond: Cond,
    expiry: Expiry,
    get: bool,
    integer_reply: bool,
) -> Result<Reply, Error> {
    let done = |applied: bool| {
        if integer_reply {
            Reply::Integer(applied.into())
        } else if applied {
            Reply::OK
        } else {
            Reply::Bulk(None)
        }
    };
    if !get && expiry != Expiry::Keep {
        let Ok(ttl) = relative(expiry) else {
            // An expiry already in the past: the key ends up absent.
            let exists = c.get(&key).await?.is_some();
            let allowed = match cond {
                Cond::Nx => !exists,
                Cond::Xx => exists,
                _ => true,
            };
            if allowed {
                c.delete(&key).await?;
            }
            return Ok(done(allowed));
        };
        let condition = match cond {
            Cond::Nx => Condition::IfAbsent,
            Cond::Xx => Condition::IfPresent,
            _ => Condition::Always,
        };
        return Ok(done(
            c.set_with(&key, &value, ttl, condition).await?.applied,
        ));
    }
    // SET … GET and KEEPTTL: a compare-and-swap loop, so the value returned
    // is exactly the one replaced.
    for _ in 0..CAS_ATTEMPTS {
        let old = c.get(&key).await?;
        let allowed = match cond {
            Cond::Nx => old.is_none(),
            Cond::Xx => old.is_some(),
            _ => true,
        };
        let old_value = || Reply::Bulk(old.as_ref().map(|e| e.value.clone()));
        if !allowed {
            return Ok(if get { old_value() } else { done(false) });
        }
        let ttl = match expiry {
            Expiry::Keep => old.as_ref().and_then(|e| e.ttl),
            other => match relative(other) {
                Ok(t) => t,
                Err(()) => Some(Duration::from_millis(1)),
            },
        };
        let expected = old.as_ref().map_or(0, |e| e.version);
        if c.compare_and_swap(&key, expected, &value, ttl)
            .await?
            .applied
        {
            return Ok(if get { old_value() } else { done(true) });
        }
    }
    Ok(Reply::err("the key changed too often under SET; try again"))
}

async fn expire(c: &Client, key: Bytes, at: Expiry, cond: Cond) -> Result<Reply, Error> {
    let Ok(ttl) = relative(at) else {
        // Zero, negative or past: Redis deletes the key.
        let gate = cond == Cond::Always || c.get(&key).await?.is_some();
        return Ok(Reply::Integer((gate && c.delete(&key).await?).into()));
    };
    let Some(ttl) = ttl else {
        return Ok(Reply::Integer(0));
    };
    if cond != Cond::Always {
        let Some(e) = c.get(&key).await? else {
            return Ok(Reply::Integer(0));
        };
        let ok = match (cond, e.ttl) {
            (Cond::Nx, t) => t.is_none(),
            (Cond::Xx, t) => t.is_some(),
            (Cond::Gt, Some(t)) => ttl > t,
            (Cond::Gt, None) => false,
            (Cond::Lt, Some(t)) => ttl < t,
            (Cond::Lt, None) => true,
            (Cond::Always, _) => true,
        };
        if !ok {
            return Ok(Reply::Integer(0));
        }
    }
    Ok(Reply::Integer(c.expire(&key, Some(ttl)).await?.into()))
}

async fn append(c: &Client, key: Bytes, tail: Bytes) -> Result<Reply, Error> {
    for _ in 0..CAS_ATTEMPTS {
        let old = c.get(&key).await?;
        let mut value = BytesMut::new();
        if let Some(e) = &old {
            value.extend_from_slice(&e.value);
        }
        value.extend_from_slice(&tail);
        let expected = old.as_ref().map_or(0, |e| e.version);
        let ttl = old.as_ref().and_then(|e| e.ttl);
        if c.compare_and_swap(&key, expected, &value, ttl)
            .await?
            .applied
        {
            return Ok(int(value.len()));
        }
    }
    Ok(Reply::err(
        "the key changed too often under APPEND; try again",
    ))
}
