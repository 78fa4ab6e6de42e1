//! A RESP connection's session state and the commands that read or change
//! it: HELLO (the protocol switch), CLIENT SETNAME/GETNAME/ID, SELECT, AUTH
//! without tokens, QUIT, COMMAND. Token logins (AUTH and HELLO … AUTH with
//! tokens configured) are `auth.rs`'s, which takes the token out of a HELLO
//! before it gets here; data commands are `exec.rs`'s.

use bytes::Bytes;

use super::auth::{RespAuth, WRONGPASS};
use super::codec::{Protocol, Reply};
use super::command::{Command, CommandQuery, Credentials};
use super::exec;
use crate::backend::{Backend, REDIS_VERSION};

/// Per-connection state that commands can change.
#[derive(Debug, Default)]
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) name: Option<Bytes>,
    /// What replies are written in: RESP2 until `HELLO 3`.
    pub(super) proto: Protocol,
    /// Token checks, when the front end requires tokens.
    pub(super) auth: Option<RespAuth>,
}

impl Session {
    /// False while the front end requires a token and none is accepted yet.
    pub(super) fn logged_in(&self) -> bool {
        self.auth.as_ref().is_none_or(RespAuth::is_logged_in)
    }
}

/// Commands that read or change the connection's state, or run alone.
/// Returns the reply and whether the connection closes after it.
pub(super) async fn connection_command(
    backend: &Backend,
    session: &mut Session,
    cmd: Command,
) -> (Reply, bool) {
    let reply = match cmd {
        Command::Quit => return (Reply::OK, true),
        Command::Select(0) => Reply::OK,
        Command::Select(_) => Reply::err("DB index is out of range"),
        Command::Auth(creds) => match without_password(&creds) {
            Ok(()) => Reply::OK,
            Err(r) => r,
        },
        Command::Hello { proto, auth, name } => hello(session, proto, auth, name),
        Command::CommandInfo(CommandQuery::Count) => Reply::Integer(0),
        Command::CommandInfo(CommandQuery::Docs) => Reply::Map(vec![]),
        Command::CommandInfo(CommandQuery::List) => Reply::Array(Some(vec![])),
        Command::ClientSetName(n) => match client_name(n) {
            Ok(n) => {
                session.name = n;
                Reply::OK
            }
            Err(r) => r,
        },
        Command::ClientGetName => Reply::Bulk(session.name.clone()),
        Command::ClientId => Reply::Integer(i64::try_from(session.id).unwrap_or(i64::MAX)),
        Command::ClientOk => Reply::OK,
        other => exec::execute(backend, other).await,
    };
    (reply, false)
}

/// HELLO, in Redis's order once its arguments parsed: authenticate (only
/// here without tokens), set the name, switch the protocol, and answer in
/// the protocol now in force. A failed step leaves the protocol as it was.
fn hello(
    session: &mut Session,
    proto: Option<Protocol>,
    auth: Option<Credentials>,
    name: Option<Bytes>,
) -> Reply {
    if let Some(Err(r)) = auth.as_ref().map(without_password) {
        return r;
    }
    if let Some(name) = name {
        match client_name(name) {
            Ok(n) => session.name = n,
            Err(r) => return r,
        }
    }
    if let Some(p) = proto {
        session.proto = p;
    }
    let b = |s: &'static str| Reply::bulk(Bytes::from_static(s.as_bytes()));
    Reply::Map(vec![
        (b("server"), b("redis")),
        (b("version"), b(REDIS_VERSION)),
        (b("proto"), Reply::Integer(session.proto.version())),
        (
            b("id"),
            Reply::Integer(i64::try_from(session.id).unwrap_or(i64::MAX)),
        ),
        (b("mode"), b("standalone")),
        (b("role"), b("master")),
        (b("modules"), Reply::Array(Some(vec![]))),
    ])
}

/// A login on a front end without tokens, answered as Redis answers it
/// without `requirepass` (its `default` user has no password): the one
/// argument form is refused as a likely misconfiguration, `default` with
/// any password is accepted, any other user does not exist.
fn without_password(creds: &Credentials) -> Result<(), Reply> {
    match &creds.user {
        None => Err(Reply::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        )),
        Some(user) if user.as_ref() == b"default" => Ok(()),
        Some(_) => Err(Reply::Error(WRONGPASS.into())),
    }
}

/// A client name as Redis takes one: empty clears it; otherwise only
/// printable ASCII without spaces (CLIENT LIST splits on spaces).
fn client_name(name: Bytes) -> Result<Option<Bytes>, Reply> {
    if name.iter().all(|c| (b'!'..=b'~').contains(c)) {
        Ok((!name.is_empty()).then_some(name))
    } else {
        Err(Reply::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

#[cfg(test)]
mod tests;
