//! A RESP connection's session state and the commands that read or change
//! it: HELLO, CLIENT SETNAME/GETNAME/ID, SELECT, AUTH without tokens, QUIT,
//! COMMAND. Token logins (AUTH with tokens configured) are `auth.rs`'s;
//! data commands are `exec.rs`'s.

use bytes::Bytes;

use super::auth::RespAuth;
use super::codec::Reply;
use super::command::Command;
use super::exec;
use crate::backend::Backend;

/// Per-connection state that commands can change.
#[derive(Debug, Default)]
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) name: Option<Bytes>,
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
pub(super) async fn connection_command(
    backend: &Backend,
    session: &mut Session,
    cmd: Command,
) -> (Reply, bool) {
    let reply = match cmd {
        Command::Quit => return (Reply::OK, true),
        Command::Select(0) => Reply::OK,
        Command::Select(_) => Reply::err("DB index is out of range"),
        Command::Auth(_) => Reply::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        Command::Hello { proto, auth, name } => {
            if matches!(proto, Some(p) if p != 2) {
                return (
                    Reply::Error("NOPROTO sorry, this protocol version is not supported.".into()),
                    false,
                );
            }
            if auth.is_some() {
                return (
                    Reply::Error(
                        "WRONGPASS invalid username-password pair or user is disabled.".into(),
                    ),
                    false,
                );
            }
            if let Some(n) = name {
                session.name = Some(n);
            }
            hello(session.id)
        }
        Command::CommandInfo { count: true } => Reply::Integer(0),
        Command::CommandInfo { count: false } => Reply::Array(Some(vec![])),
        Command::ClientSetName(n) => {
            session.name = (!n.is_empty()).then_some(n);
            Reply::OK
        }
        Command::ClientGetName => Reply::Bulk(session.name.clone()),
        Command::ClientId => Reply::Integer(i64::try_from(session.id).unwrap_or(i64::MAX)),
        Command::ClientOk => Reply::OK,
        other => exec::execute(backend, other).await,
    };
    (reply, false)
}

/// HELLO's reply in RESP2: a flat list of field, value pairs.
fn hello(id: u64) -> Reply {
    let b = |s: &'static str| Reply::bulk(Bytes::from_static(s.as_bytes()));
    Reply::Array(Some(vec![
        b("server"),
        b("redis"),
        b("version"),
        b("7.2.0"),
        b("proto"),
        Reply::Integer(2),
        b("id"),
        Reply::Integer(i64::try_from(id).unwrap_or(i64::MAX)),
        b("mode"),
        b("standalone"),
        b("role"),
        b("master"),
        b("modules"),
        Reply::Array(Some(vec![])),
    ]))
}
