//! Turns a RESP request's arguments into a typed [`Command`], with the exact
//! error replies Redis gives for wrong arity, bad options and bad numbers.
//! Pure: executing a command against the cluster is the front end's job.

use bytes::Bytes;
use distcache_serve::security::Role;

use super::codec::{Protocol, Reply};

mod hello;

/// When a SET's value expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No expiry (SET without an option clears any TTL).
    None,
    /// In this many milliseconds (EX, PX, SETEX, PSETEX).
    In(u64),
    /// At this Unix time in milliseconds (EXAT, PXAT).
    At(u64),
    /// Keep the current expiry (KEEPTTL).
    Keep,
}

/// A condition on SET or EXPIRE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// No condition.
    Always,
    /// Only when absent (SET NX) / only when no TTL (EXPIRE NX).
    Nx,
    /// Only when present (SET XX) / only when a TTL exists (EXPIRE XX).
    Xx,
    /// EXPIRE GT: only when the new TTL is greater.
    Gt,
    /// EXPIRE LT: only when the new TTL is less.
    Lt,
}

/// A user name and password, as AUTH and HELLO … AUTH give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name, when given (`AUTH <user> <password>`, always with HELLO).
    pub user: Option<Bytes>,
    /// The password: with `--auth-secret-file`, a distcache token.
    pub password: Bytes,
}

/// What a COMMAND request asks for (the proxy describes no commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandQuery {
    /// COMMAND COUNT: an integer.
    Count,
    /// COMMAND DOCS: a map (empty).
    Docs,
    /// COMMAND, COMMAND INFO, COMMAND LIST …: an array (empty).
    List,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Command {
    Ping(Option<Bytes>),
    Echo(Bytes),
    Get(Bytes),
    /// SET and its relatives. `get` returns the old value (SET … GET, GETSET).
    Set {
        key: Bytes,
        value: Bytes,
        cond: Cond,
        expiry: Expiry,
        get: bool,
        /// Reply with :1/:0 instead of +OK/nil (SETNX).
        integer_reply: bool,
    },
    GetDel(Bytes),
    /// DEL and UNLINK.
    Del(Vec<Bytes>),
    Exists(Vec<Bytes>),
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    /// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT, normalised to an absolute or
    /// relative time in milliseconds.
    Expire {
        key: Bytes,
        at: Expiry,
        cond: Cond,
    },
    /// TTL (`millis = false`) and PTTL.
    Ttl {
        key: Bytes,
        millis: bool,
    },
    Persist(Bytes),
    IncrBy(Bytes, i64),
    Append(Bytes, Bytes),
    StrLen(Bytes),
    DbSize,
    Info(Option<Bytes>),
    Select(i64),
    Auth(Credentials),
    /// HELLO: the protocol to switch to (none: stay), and what to do first.
    Hello {
        proto: Option<Protocol>,
        auth: Option<Credentials>,
        name: Option<Bytes>,
    },
    Quit,
    /// COMMAND and its subcommands: answered with an empty list, map or a count.
    CommandInfo(CommandQuery),
    ClientSetName(Bytes),
    ClientGetName,
    /// CLIENT SETINFO and other harmless CLIENT subcommands answered +OK.
    ClientOk,
    ClientId,
}

/// Every command name the table knows, lowercase: the `command` label of the
/// proxy's metrics (anything else is counted as `unknown`).
const NAMES: &[&str] = &[
    "get",
    "set",
    "ping",
    "echo",
    "setnx",
    "setex",
    "psetex",
    "getset",
    "getdel",
    "del",
    "unlink",
    "exists",
    "mget",
    "mset",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "ttl",
    "pttl",
    "persist",
    "incr",
    "incrby",
    "decr",
    "decrby",
    "append",
    "strlen",
    "dbsize",
    "info",
    "select",
    "auth",
    "hello",
    "quit",
    "command",
    "client",
];

/// A slice of keys and a slice of key-value pairs (see [`Command::keys`]).
pub type Keys<'a> = (&'a [Bytes], &'a [(Bytes, Bytes)]);

/// What a command is, in one room: its keys, the role it needs and its
/// metrics name (parsing is [`parse`]). The matches are exhaustive, so a new
/// command must be placed in each.
impl Command {
    /// The metrics name of a request's first argument, without allocating.
    /// From the name as sent, not the parsed command: SETNX, SETEX and SET
    /// parse to one variant but are counted apart. Unknown names count as
    /// `unknown`.
    pub fn metric_name(arg0: &[u8]) -> &'static str {
        NAMES
            .iter()
            .find(|n| n.len() == arg0.len() && n.as_bytes().eq_ignore_ascii_case(arg0))
            .copied()
            .unwrap_or("unknown")
    }

    /// The keys a command touches (as a slice of keys and a slice of
    /// key-value pairs, one of them empty: no allocation), or `None` when it
    /// must run alone (it reads or changes connection state, or spans the
    /// whole cluster).
    pub fn keys(&self) -> Option<Keys<'_>> {
        use std::slice::from_ref;
        Some(match self {
            Command::Get(k)
            | Command::Set { key: k, .. }
            | Command::GetDel(k)
            | Command::Expire { key: k, .. }
            | Command::Ttl { key: k, .. }
            | Command::Persist(k)
            | Command::IncrBy(k, _)
            | Command::Append(k, _)
            | Command::StrLen(k) => (from_ref(k), &[]),
            Command::Del(ks) | Command::Exists(ks) | Command::MGet(ks) => (ks.as_slice(), &[]),
            Command::MSet(pairs) => (&[], pairs.as_slice()),
            Command::Ping(_) | Command::Echo(_) => (&[], &[]),
            Command::DbSize
            | Command::Info(_)
            | Command::Select(_)
            | Command::Auth(_)
            | Command::Hello { .. }
            | Command::Quit
            | Command::CommandInfo(_)
            | Command::ClientSetName(_)
            | Command::ClientGetName
            | Command::ClientOk
            | Command::ClientId => return None,
        })
    }

    /// The least role a command needs. Every command is listed, so a new one
    /// must be placed here.
    pub fn required_role(&self) -> Role {
        match self {
            Command::Set { .. }
            | Command::GetDel(_)
            | Command::Del(_)
            | Command::MSet(_)
            | Command::Expire { .. }
            | Command::Persist(_)
            | Command::IncrBy(..)
            | Command::Append(..) => Role::User,
            // DBSIZE and INFO read what HealthCheck shows (open to readonly on a node).
            Command::Ping(_)
            | Command::Echo(_)
            | Command::Get(_)
            | Command::Exists(_)
            | Command::MGet(_)
            | Command::Ttl { .. }
            | Command::StrLen(_)
            | Command::DbSize
            | Command::Info(_)
            | Command::Select(_)
            | Command::Auth(_)
            | Command::Hello { .. }
            | Command::Quit
            | Command::CommandInfo(_)
            | Command::ClientSetName(_)
            | Command::ClientGetName
            | Command::ClientOk
            | Command::ClientId => Role::Readonly,
        }
    }
}

fn arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

fn syntax() -> Reply {
    Reply::err("syntax error")
}

fn not_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

/// Parses a decimal i64 argument the way Redis does.
pub fn int_arg(b: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| !s.starts_with('+') && !s.is_empty() && s.len() <= 20)
        .and_then(|s| s.parse().ok())
        .ok_or_else(not_integer)
}

/// A command or option name upper-cased on the stack: every name Redis
/// knows fits, so parsing a request allocates nothing for it. A longer or
/// non-ASCII word reads as "", which matches no name.
struct Upper {
    buf: [u8; 16],
    len: usize,
}

impl std::ops::Deref for Upper {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Upper {
    fn as_str(&self) -> &str {
        self
    }
}

fn upper(b: &[u8]) -> Upper {
    let mut buf = [0; 16];
    if b.len() > buf.len() || !b.is_ascii() {
        return Upper { buf, len: 0 };
    }
    buf[..b.len()].copy_from_slice(b);
    buf.make_ascii_uppercase();
    Upper { buf, len: b.len() }
}

/// A positive expire time in ms from `n` units of `unit_ms`, or Redis's error.
fn expire_ms(n: &[u8], unit_ms: i64, cmd: &str) -> Result<u64, Reply> {
    let n = int_arg(n)?;
    let ms = n.checked_mul(unit_ms).filter(|ms| *ms > 0);
    ms.and_then(|ms| u64::try_from(ms).ok())
        .ok_or_else(|| Reply::err(format!("invalid expire time in '{cmd}' command")))
}

/// The `-ERR unknown command` reply, with the first arguments as Redis shows them.
fn unknown(name: &[u8], rest: &[Bytes]) -> Reply {
    let mut msg = format!(
        "unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(name)
    );
    for a in rest.iter().take(10) {
        msg.push_str(&format!("'{}' ", String::from_utf8_lossy(a)));
    }
    Reply::err(msg)
}

/// Parses one request; `Err` carries the reply to send instead. Arguments
/// the command keeps are taken out of `args` (left empty) or cloned.
pub fn parse(args: &mut [Bytes]) -> Result<Command, Reply> {
    let Some((name, rest)) = args.split_first_mut() else {
        return Err(Reply::err("empty command"));
    };
    let cmd = upper(name);
    let cmd = cmd.as_str();
    let n = rest.len();
    let need = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(arity(&cmd.to_ascii_lowercase()))
        }
    };
    let a = |i: usize| rest[i].clone();
    Ok(match cmd {
        "PING" => {
            need(n <= 1)?;
            Command::Ping(rest.first().cloned())
        }
        "ECHO" => {
            need(n == 1)?;
            Command::Echo(a(0))
        }
        // The two hot commands take their arguments rather than clone them
        // (each clone and drop of a `Bytes` is an atomic operation).
        "GET" => {
            need(n == 1)?;
            Command::Get(std::mem::take(&mut rest[0]))
        }
        "SET" => {
            need(n >= 2)?;
            let (kv, opts) = rest.split_at_mut(2);
            parse_set(std::mem::take(&mut kv[0]), std::mem::take(&mut kv[1]), opts)?
        }
        "SETNX" => {
            need(n == 2)?;
            Command::Set {
                key: a(0),
                value: a(1),
                cond: Cond::Nx,
                expiry: Expiry::None,
                get: false,
                integer_reply: true,
            }
        }
        "SETEX" | "PSETEX" => {
            need(n == 3)?;
            let unit = if cmd == "SETEX" { 1000 } else { 1 };
            let ms = expire_ms(&rest[1], unit, &cmd.to_ascii_lowercase())?;
            Command::Set {
                key: a(0),
                value: a(2),
                cond: Cond::Always,
                expiry: Expiry::In(ms),
                get: false,
                integer_reply: false,
            }
        }
        "GETSET" => {
            need(n == 2)?;
            Command::Set {
                key: a(0),
                value: a(1),
                cond: Cond::Always,
                expiry: Expiry::None,
                get: true,
                integer_reply: false,
            }
        }
        "GETDEL" => {
            need(n == 1)?;
            Command::GetDel(a(0))
        }
        "DEL" | "UNLINK" => {
            need(n >= 1)?;
            Command::Del(rest.to_vec())
        }
        "EXISTS" => {
            need(n >= 1)?;
            Command::Exists(rest.to_vec())
        }
        "MGET" => {
            need(n >= 1)?;
            Command::MGet(rest.to_vec())
        }
        "MSET" => {
            need(n >= 2 && n % 2 == 0)?;
            Command::MSet(
                rest.chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
            )
        }
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => {
            need(n == 2 || n == 3)?;
            let t = int_arg(&rest[1])?;
            let unit: i64 = if cmd.starts_with('P') { 1 } else { 1000 };
            let ms = t.checked_mul(unit).ok_or_else(|| {
                Reply::err(format!(
                    "invalid expire time in '{}' command",
                    cmd.to_ascii_lowercase()
                ))
            })?;
            // A time at or before now deletes the key; the executor sees that
            // as a non-positive relative or past absolute time.
            let ms = u64::try_from(ms.max(0)).unwrap_or(0);
            let at = if cmd.ends_with("AT") {
                Expiry::At(ms)
            } else {
                Expiry::In(ms)
            };
            let cond = match rest.get(2).map(|o| upper(o)).as_deref() {
                None => Cond::Always,
                Some("NX") => Cond::Nx,
                Some("XX") => Cond::Xx,
                Some("GT") => Cond::Gt,
                Some("LT") => Cond::Lt,
                Some(other) => {
                    return Err(Reply::err(format!("Unsupported option {other}")));
                }
            };
            Command::Expire {
                key: a(0),
                at,
                cond,
            }
        }
        "TTL" | "PTTL" => {
            need(n == 1)?;
            Command::Ttl {
                key: a(0),
                millis: cmd == "PTTL",
            }
        }
        "PERSIST" => {
            need(n == 1)?;
            Command::Persist(a(0))
        }
        "INCR" | "DECR" => {
            need(n == 1)?;
            Command::IncrBy(a(0), if cmd == "INCR" { 1 } else { -1 })
        }
        "INCRBY" | "DECRBY" => {
            need(n == 2)?;
            let d = int_arg(&rest[1])?;
            let d = if cmd == "INCRBY" {
                d
            } else {
                d.checked_neg()
                    .ok_or_else(|| Reply::err("decrement would overflow"))?
            };
            Command::IncrBy(a(0), d)
        }
        "APPEND" => {
            need(n == 2)?;
            Command::Append(a(0), a(1))
        }
        "STRLEN" => {
            need(n == 1)?;
            Command::StrLen(a(0))
        }
        "DBSIZE" => {
            need(n == 0)?;
            Command::DbSize
        }
        "INFO" => Command::Info(rest.first().cloned()),
        "SELECT" => {
            need(n == 1)?;
            Command::Select(int_arg(&rest[0])?)
        }
        "AUTH" => {
            need(n == 1 || n == 2)?;
            Command::Auth(Credentials {
                user: (n == 2).then(|| a(0)),
                password: a(n - 1),
            })
        }
        "HELLO" => hello::parse(rest)?,
        "QUIT" => Command::Quit,
        "COMMAND" => Command::CommandInfo(match rest.first().map(|s| upper(s)).as_deref() {
            Some("COUNT") => CommandQuery::Count,
            Some("DOCS") => CommandQuery::Docs,
            _ => CommandQuery::List,
        }),
        "CLIENT" => {
            need(n >= 1)?;
            match upper(&rest[0]).as_str() {
                "SETNAME" if n == 2 => Command::ClientSetName(a(1)),
                "GETNAME" if n == 1 => Command::ClientGetName,
                "ID" if n == 1 => Command::ClientId,
                "SETINFO" if n == 3 => Command::ClientOk,
                "SETNAME" | "GETNAME" | "ID" | "SETINFO" => {
                    return Err(arity(&format!(
                        "client|{}",
                        upper(&rest[0]).to_ascii_lowercase()
                    )));
                }
                "NO-EVICT" | "NO-TOUCH" | "REPLY" => Command::ClientOk,
                _ => {
                    // As sent, as Redis shows it (a name past 16 bytes reads
                    // as "" above: redis-py 8's MAINT_NOTIFICATIONS is 19).
                    let sub = &rest[0][..rest[0].len().min(128)];
                    return Err(Reply::err(format!(
                        "unknown subcommand '{}'. Try CLIENT HELP.",
                        String::from_utf8_lossy(sub)
                    )));
                }
            }
        }
        _ => return Err(unknown(name, rest)),
    })
}

fn parse_set(key: Bytes, value: Bytes, opts: &[Bytes]) -> Result<Command, Reply> {
    let mut cond = Cond::Always;
    let mut expiry = Expiry::None;
    let mut get = false;
    let mut i = 0;
    while i < opts.len() {
        let opt = upper(&opts[i]);
        let arg = opts.get(i + 1);
        match (opt.as_str(), arg) {
            ("NX", _) if cond == Cond::Always => cond = Cond::Nx,
            ("XX", _) if cond == Cond::Always => cond = Cond::Xx,
            ("GET", _) => get = true,
            ("KEEPTTL", _) if expiry == Expiry::None => expiry = Expiry::Keep,
            ("EX" | "PX" | "EXAT" | "PXAT", Some(arg)) if expiry == Expiry::None => {
                let unit = if opt.starts_with('E') { 1000 } else { 1 };
                let ms = expire_ms(arg, unit, "set")?;
                expiry = if opt.ends_with("AT") {
                    Expiry::At(ms)
                } else {
                    Expiry::In(ms)
                };
                i += 1;
            }
            _ => return Err(syntax()),
        }
        i += 1;
    }
    Ok(Command::Set {
        key,
        value,
        cond,
        expiry,
        get,
        integer_reply: false,
    })
}

#[cfg(test)]
mod tests;
