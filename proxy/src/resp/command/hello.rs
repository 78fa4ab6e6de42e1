//! `HELLO [protover [AUTH username password] [SETNAME clientname]]`, read
//! in Redis's order: the version first (not a number: an error; not 2 or 3:
//! `-NOPROTO`, whatever follows it), then the options, each at most once
//! in effect (a later one wins, as in Redis). Authenticating and switching
//! are the connection's (`session.rs`, `auth.rs`).

use bytes::Bytes;

use super::{Command, Credentials, int_arg, upper};
use crate::resp::codec::{Protocol, Reply};

/// Redis's reply to a version other than 2 or 3.
pub(super) const NOPROTO: &str = "NOPROTO unsupported protocol version";

/// How much of an unknown option the error repeats: an option may be a
/// 2 MiB argument, and an error line is not the place to echo it.
const OPTION_SHOWN: usize = 64;

/// Parses HELLO's arguments (after the name).
pub(super) fn parse(rest: &[Bytes]) -> Result<Command, Reply> {
    let Some((version, options)) = rest.split_first() else {
        return Ok(Command::Hello {
            proto: None,
            auth: None,
            name: None,
        });
    };
    let version = int_arg(version)
        .map_err(|_| Reply::err("Protocol version is not an integer or out of range"))?;
    let proto = Protocol::from_version(version).ok_or_else(|| Reply::Error(NOPROTO.into()))?;
    let mut auth = None;
    let mut name = None;
    let mut i = 0;
    while i < options.len() {
        let more = options.len() - 1 - i;
        match upper(&options[i]).as_str() {
            "AUTH" if more >= 2 => {
                auth = Some(Credentials {
                    user: Some(options[i + 1].clone()),
                    password: options[i + 2].clone(),
                });
                i += 3;
            }
            "SETNAME" if more >= 1 => {
                name = Some(options[i + 1].clone());
                i += 2;
            }
            _ => {
                let opt = &options[i];
                let shown = String::from_utf8_lossy(&opt[..opt.len().min(OPTION_SHOWN)]);
                let ellipsis = if opt.len() > OPTION_SHOWN { "…" } else { "" };
                return Err(Reply::err(format!(
                    "Syntax error in HELLO option '{shown}{ellipsis}'"
                )));
            }
        }
    }
    Ok(Command::Hello {
        proto: Some(proto),
        auth,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&[u8]]) -> Result<Command, Reply> {
        parse(
            &args
                .iter()
                .map(|a| Bytes::copy_from_slice(a))
                .collect::<Vec<_>>(),
        )
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn error(r: Result<Command, Reply>) -> String {
        match r {
            Err(Reply::Error(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn versions_options_and_their_order() {
        assert_eq!(
            p(&[]),
            Ok(Command::Hello {
                proto: None,
                auth: None,
                name: None
            })
        );
        assert_eq!(
            p(&[b"3", b"auth", b"default", b"tok", b"SetName", b"app"]),
            Ok(Command::Hello {
                proto: Some(Protocol::Resp3),
                auth: Some(Credentials {
                    user: Some(b("default")),
                    password: b("tok")
                }),
                name: Some(b("app"))
            })
        );
        assert_eq!(
            p(&[b"2", b"SETNAME", b"a", b"SETNAME", b"b"]),
            Ok(Command::Hello {
                proto: Some(Protocol::Resp2),
                auth: None,
                name: Some(b("b"))
            }),
            "a later option wins"
        );
    }

    #[test]
    fn garbage_gets_redis_errors() {
        let not_int = "ERR Protocol version is not an integer or out of range";
        for v in [
            &b"three"[..],
            b"",
            b"3.0",
            b"+3",
            b"99999999999999999999",
            b"\xff",
        ] {
            assert_eq!(error(p(&[v])), not_int, "{v:?}");
        }
        for v in [&b"0"[..], b"1", b"4", b"-3", b"9223372036854775807"] {
            assert_eq!(error(p(&[v])), NOPROTO, "{v:?}");
            // The version is judged before the options, as Redis does.
            assert_eq!(error(p(&[v, b"AUTH"])), NOPROTO, "{v:?}");
        }
        assert_eq!(
            error(p(&[b"3", b"AUTH", b"user"])),
            "ERR Syntax error in HELLO option 'AUTH'"
        );
        assert_eq!(
            error(p(&[b"3", b"SETNAME"])),
            "ERR Syntax error in HELLO option 'SETNAME'"
        );
        assert_eq!(
            error(p(&[b"2", b"protover", b"3"])),
            "ERR Syntax error in HELLO option 'protover'"
        );
        let long = vec![b'x'; 1 << 20];
        let e = error(p(&[b"3", &long]));
        assert!(e.len() < 128 && e.ends_with("xxx…'"), "{e}");
        let e = error(p(&[b"3", b"\xff\r\n"]));
        assert_eq!(e, "ERR Syntax error in HELLO option '\u{fffd}\r\n'");
    }
}
