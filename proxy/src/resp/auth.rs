//! Redis-style authentication on the RESP front end when the proxy has
//! `--auth-secret-file`: like Redis with `requirepass`, where the password is
//! a distcache token (verified by the node's [`Verifier`]) and its role acts
//! as the ACL.
//!
//! - Before a successful `AUTH <token>`, `AUTH <user> <token>` or
//!   `HELLO 2|3 AUTH <user> <token>`, every command except AUTH, HELLO and
//!   QUIT gets `-NOAUTH Authentication required.` (the user name is not
//!   checked: the token says who the client is). HELLO's AUTH is checked
//!   here like AUTH's, so the same pre-auth limits, counters and replies
//!   apply; a HELLO whose arguments are wrong (`-NOPROTO` for a version
//!   other than 2 or 3) is answered before any authentication, as Redis does.
//! - A bad token gets `-WRONGPASS …`; a failed AUTH leaves an earlier
//!   successful one in place, as in Redis.
//! - A command the token's role may not run gets `-NOPERM …`
//!   ([`Command::required_role`]: readonly tokens read, user and admin tokens write).
//! - The token's expiry is checked before every command: once it is past
//!   (beyond the leeway) the connection is logged out and gets `-NOAUTH`
//!   until it authenticates again.
//!
//! Requests are judged in order before a read's pipeline runs, so a
//! pipelined `AUTH` covers the commands after it. Refusals are counted in the
//! node's auth counters on the proxy's `/metrics`. Without a verifier nothing
//! here runs and AUTH answers as Redis does without a password.
//!
//! [`handshake`] is the TLS half: it runs in the connection's own task.

use std::sync::Arc;
use std::time::Duration;

use distcache_serve::security::{Principal, SecurityCounters, Verifier};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::codec::Reply;
use super::command::Command;
use crate::backend::Backend;

/// Runs the TLS handshake on an accepted connection within `deadline`; a
/// failure or timeout is counted and ends only this connection.
pub async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
    backend: &Backend,
) -> std::io::Result<TlsStream<TcpStream>> {
    let result = match tokio::time::timeout(deadline, tls.accept(stream)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    if result.is_err() {
        backend.metrics.tls_handshake_failures.inc();
    }
    result
}

/// The reply to a command sent before authenticating.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// The reply to a bad token.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// Redis's reply to a HELLO without AUTH on a connection not yet authenticated.
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, \
     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
     client and select the RESP protocol version at the same time";

/// Commands Redis runs before authentication.
fn pre_auth(name: &str) -> bool {
    ["AUTH", "HELLO", "QUIT"]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}

/// Who a connection authenticated as, and until when.
#[derive(Debug)]
struct Login {
    principal: Principal,
    exp: u64,
}

/// One connection's authentication state.
#[derive(Debug)]
pub struct RespAuth {
    verifier: Arc<Verifier>,
    counters: SecurityCounters,
    login: Option<Login>,
}

impl RespAuth {
    /// A connection that has not authenticated yet.
    pub fn new(verifier: Arc<Verifier>, counters: SecurityCounters) -> Self {
        Self {
            verifier,
            counters,
            login: None,
        }
    }

    /// Judges one read's requests in order at `now` (Unix seconds): AUTH and
    /// HELLO … AUTH are answered or passed on without their token, refused
    /// commands are replaced by the error reply to send, the rest are left
    /// to run.
    pub fn gate(&mut self, requests: &mut [(&'static str, Result<Command, Reply>)], now: u64) {
        for (name, request) in requests.iter_mut() {
            if let Some(reply) = self.judge(name, request, now) {
                *request = Err(reply);
            }
        }
    }

    fn judge(
        &mut self,
        name: &str,
        request: &mut Result<Command, Reply>,
        now: u64,
    ) -> Option<Reply> {
        match request {
            Ok(Command::Auth(creds)) => Some(match self.login(&creds.password, now) {
                Ok(()) => Reply::OK,
                Err(r) => r,
            }),
            // The token is taken out: the connection sets the name and
            // switches the protocol once it was accepted.
            Ok(Command::Hello { auth, .. }) => match auth.take() {
                Some(creds) => self.login(&creds.password, now).err(),
                None if self.login.is_none() => Some(Reply::Error(NOAUTH_HELLO.into())),
                None => None,
            },
            Ok(Command::Quit) => None,
            Err(_) if pre_auth(name) => None,
            Err(_) if self.login.is_some() => None,
            Err(_) => self.noauth("missing"),
            Ok(cmd) => {
                let Some(login) = &self.login else {
                    return self.noauth("missing");
                };
                // `principal.expired`: a reload retired the token's key.
                if self.verifier.expired(login.exp, now) || login.principal.expired(now) {
                    self.login = None;
                    return self.noauth("expired");
                }
                if login.principal.role < cmd.required_role() {
                    self.counters.permission_denied();
                    return Some(Reply::Error(format!(
                        "NOPERM User {} has no permissions to run the '{}' command",
                        login.principal.subject,
                        name.to_ascii_lowercase()
                    )));
                }
                None
            }
        }
    }

    /// Whether a token was accepted (and has not been found expired since).
    pub fn is_logged_in(&self) -> bool {
        self.login.is_some()
    }

    fn noauth(&self, reason: &'static str) -> Option<Reply> {
        self.counters.auth_failure(reason);
        Some(Reply::Error(NOAUTH.into()))
    }

    /// Verifies `token`; on success the connection is logged in as its subject.
    fn login(&mut self, token: &[u8], now: u64) -> Result<(), Reply> {
        let claims = std::str::from_utf8(token)
            .map_err(|_| distcache_serve::security::TokenError::Malformed)
            .and_then(|t| self.verifier.verify_signed(t, now));
        match claims {
            Ok((c, signed_by)) => {
                self.login = Some(Login {
                    principal: Principal {
                        subject: c.sub.into(),
                        role: c.role,
                        valid_until: 0,
                        signed_by,
                    },
                    exp: c.exp,
                });
                Ok(())
            }
            Err(e) => {
                self.counters.auth_failure(e.reason());
                Err(Reply::Error(WRONGPASS.into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use distcache_serve::security::{Claims, KeySet, Role};

    use super::super::command;
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn verifier() -> Arc<Verifier> {
        let mut keys = KeySet::default();
        keys.insert("k1", b"0123456789abcdef0123456789abcdef")
            .expect("valid");
        Arc::new(Verifier::new(keys, Duration::from_secs(5)))
    }

    fn token(v: &Verifier, role: Role, exp: u64) -> String {
        v.keys()
            .current()
            .sign(&Claims {
                sub: "alice".into(),
                role,
                iat: NOW - 10,
                exp,
            })
            .expect("signs")
    }

    /// Gates one pipeline and returns, per request, the error sent instead
    /// (`None`: the request runs).
    fn run(a: &mut RespAuth, reqs: &[&[&str]], now: u64) -> Vec<Option<String>> {
        let mut parsed: Vec<_> = reqs
            .iter()
            .map(|r| {
                let mut args: Vec<Bytes> = r.iter().map(|s| Bytes::from(s.to_string())).collect();
                (
                    Command::metric_name(r[0].as_bytes()),
                    command::parse(&mut args),
                )
            })
            .collect();
        a.gate(&mut parsed, now);
        parsed
            .into_iter()
            .map(|(_, r)| match r {
                Err(Reply::Error(e)) => Some(e),
                Err(Reply::Simple(s)) => Some(format!("+{s}")),
                Err(other) => Some(format!("{other:?}")),
                Ok(_) => None,
            })
            .collect()
    }

    fn starts(r: &Option<String>, prefix: &str) -> bool {
        r.as_deref().is_some_and(|e| e.starts_with(prefix))
    }

    #[test]
    fn noauth_until_auth_then_roles_apply() {
        let v = verifier();
        let counters = SecurityCounters::default();
        let mut a = RespAuth::new(v.clone(), counters);
        let user = token(&v, Role::User, NOW + 60);
        let r = run(
            &mut a,
            &[&["PING"], &["GET", "k"], &["nosuch"], &["HELLO"], &["QUIT"]],
            NOW,
        );
        assert_eq!(r[0].as_deref(), Some(NOAUTH));
        assert_eq!(r[1].as_deref(), Some(NOAUTH));
        assert_eq!(r[2].as_deref(), Some(NOAUTH), "unknown commands too");
        assert!(starts(&r[3], "NOAUTH HELLO must be called"));
        assert_eq!(r[4], None, "QUIT is allowed");
        // A pipelined AUTH covers what follows it; AUTH's arity error passes.
        let r = run(
            &mut a,
            &[
                &["AUTH", "a", "b", "c"],
                &["auth", "default", &user],
                &["SET", "k", "v"],
            ],
            NOW,
        );
        assert!(starts(&r[0], "ERR wrong number of arguments"), "{r:?}");
        assert_eq!(r[1].as_deref(), Some("+OK"));
        assert_eq!(r[2], None);
        // A failed AUTH keeps the earlier login.
        let r = run(
            &mut a,
            &[&["AUTH", "dc1.k1.forged.sig"], &["GET", "k"]],
            NOW,
        );
        assert_eq!(r[0].as_deref(), Some(WRONGPASS));
        assert_eq!(r[1], None);
    }

    #[test]
    fn a_session_whose_key_a_reload_retired_is_logged_out() {
        let v = verifier();
        let mut a = RespAuth::new(v.clone(), SecurityCounters::default());
        let user = token(&v, Role::User, NOW + 60);
        let r = run(&mut a, &[&["AUTH", &user], &["GET", "k"]], NOW);
        assert_eq!(r, [Some("+OK".into()), None]);
        let mut rotated = KeySet::default();
        rotated
            .insert("k2", b"a-new-secret-a-new-secret-32byte")
            .expect("ok");
        v.keys().replace(rotated);
        let r = run(&mut a, &[&["GET", "k"]], NOW);
        assert_eq!(r[0].as_deref(), Some(NOAUTH));
        assert!(!a.is_logged_in());
    }

    #[test]
    fn wrongpass_noperm_and_expiry() {
        let v = verifier();
        let mut a = RespAuth::new(v.clone(), SecurityCounters::default());
        let expired = token(&v, Role::Admin, NOW - 60);
        let mut other = KeySet::default();
        other
            .insert("k1", b"another-secret-another-secret-32")
            .expect("ok");
        let foreign = other
            .sign(&Claims {
                sub: "mallory".into(),
                role: Role::Admin,
                iat: NOW,
                exp: NOW + 60,
            })
            .expect("signs");
        for bad in [expired.as_str(), foreign.as_str(), "not-a-token", ""] {
            let r = run(&mut a, &[&["AUTH", bad], &["GET", "k"]], NOW);
            assert_eq!(r[0].as_deref(), Some(WRONGPASS), "{bad}");
            assert_eq!(r[1].as_deref(), Some(NOAUTH), "{bad}");
        }
        let ro = token(&v, Role::Readonly, NOW + 60);
        let r = run(
            &mut a,
            &[
                &["HELLO", "2", "AUTH", "default", &ro],
                &["GET", "k"],
                &["SET", "k", "v"],
                &["DEL", "k"],
                &["MGET", "a", "b"],
            ],
            NOW,
        );
        assert_eq!(r[0], None, "HELLO goes on to answer, without its token");
        assert_eq!(r[1], None);
        assert_eq!(
            r[2].as_deref(),
            Some("NOPERM User alice has no permissions to run the 'set' command")
        );
        assert!(starts(&r[3], "NOPERM"));
        assert_eq!(r[4], None);
        // HELLO 3 logs in like HELLO 2; an unserved version is NOPROTO
        // before any authentication (so a forged token costs no counter).
        let r = run(
            &mut a,
            &[
                &["HELLO", "3", "AUTH", "u", "x"],
                &["HELLO", "4", "AUTH", "u", "x"],
                &["HELLO", "3", "AUTH", "u", &ro],
                &["HELLO", "3", "SETNAME", "a b"],
            ],
            NOW,
        );
        assert_eq!(r[0].as_deref(), Some(WRONGPASS));
        assert_eq!(
            r[1].as_deref(),
            Some("NOPROTO unsupported protocol version")
        );
        assert_eq!(r[2], None);
        assert_eq!(r[3], None, "the connection refuses the name");
        // Within the leeway the token still works; past it the session ends.
        assert_eq!(run(&mut a, &[&["GET", "k"]], NOW + 64)[0], None);
        let r = run(&mut a, &[&["GET", "k"], &["GET", "k"]], NOW + 66);
        assert_eq!(r[0].as_deref(), Some(NOAUTH));
        assert_eq!(r[1].as_deref(), Some(NOAUTH));
    }
}
