//! Replies, and how they are written in RESP2 and in RESP3.
//!
//! One tree for both protocols: a command builds the reply Redis builds, and
//! the connection's [`Protocol`] decides how it is written. What RESP2 has no
//! type for is written as Redis writes it to a RESP2 client:
//!
//! ```text
//!   Reply            RESP3 (after HELLO 3)       RESP2
//!   Bulk(None)       _                           $-1
//!   Array(None)      _                           *-1
//!   Map(pairs)       %N  k1 v1 … kN vN           *2N k1 v1 … kN vN
//!   Set(items)       ~N  …                       *N  …
//!   Double(1.5)      ,1.5                        $3  1.5
//!   Boolean(true)    #t                          :1
//!   Verbatim(text)   =N  txt:text                $N  text
//! ```
//!
//! Everything else (`+`, `-`, `:`, `$`, `*`) is written alike in both. Push
//! frames (`>`) and big numbers are not here: nothing the proxy answers
//! uses them yet.

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol a connection speaks: RESP2 until it says `HELLO 3`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The protocol `HELLO <version>` asks for, if it is one served here.
    pub fn from_version(version: i64) -> Option<Self> {
        match version {
            2 => Some(Protocol::Resp2),
            3 => Some(Protocol::Resp3),
            _ => None,
        }
    }

    /// Its number, as `HELLO` reports it in `proto`.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// A reply, written for either protocol by [`Reply::encode`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(&'static str),
    /// `-ERR …`: the text must start with an error code such as `ERR`.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo` or, for `None`, the null (`$-1` in RESP2).
    Bulk(Option<Bytes>),
    /// `*N` followed by the elements, or for `None` the null (`*-1` in RESP2).
    Array(Option<Vec<Reply>>),
    /// Field, value pairs (`%N`; a flat array of 2N elements in RESP2).
    Map(Vec<(Reply, Reply)>),
    /// An unordered collection (`~N`; an array in RESP2).
    Set(Vec<Reply>),
    /// A floating-point number (`,1.5`; a bulk string in RESP2).
    Double(f64),
    /// `#t` / `#f` (`:1` / `:0` in RESP2).
    Boolean(bool),
    /// Text to show as is, of format `txt` (what Redis sends INFO as); a
    /// bulk string in RESP2.
    Verbatim(Bytes),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Simple("OK");

    /// An `-ERR …` reply.
    pub fn err(msg: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {msg}"))
    }

    /// Whether this is an error reply (a command that failed, for metrics).
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// A non-nil bulk string.
    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(Some(b.into()))
    }

    /// Appends the header of an array of `len` elements to `out` (for
    /// writers that encode the elements one by one): the same in both
    /// protocols.
    pub fn encode_array_header(len: usize, out: &mut BytesMut) {
        header(out, b'*', len);
    }

    /// Appends the encoding for `proto` to `out`.
    pub fn encode(&self, proto: Protocol, out: &mut BytesMut) {
        let resp3 = proto == Protocol::Resp3;
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(s) => {
                // Error lines must not contain CR or LF.
                let clean: Vec<u8> = s
                    .bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                    .collect();
                line(out, b'-', &clean);
            }
            Reply::Integer(n) => line(out, b':', itoa(*n, &mut [0; 20])),
            Reply::Bulk(None) | Reply::Array(None) if resp3 => out.put_slice(b"_\r\n"),
            Reply::Bulk(None) => out.put_slice(b"$-1\r\n"),
            Reply::Array(None) => out.put_slice(b"*-1\r\n"),
            Reply::Bulk(Some(b)) => blob(out, b'$', b"", b),
            Reply::Array(Some(items)) => {
                header(out, b'*', items.len());
                for item in items {
                    item.encode(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len());
                } else {
                    header(out, b'*', pairs.len().saturating_mul(2));
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Set(items) => {
                header(out, if resp3 { b'~' } else { b'*' }, items.len());
                for item in items {
                    item.encode(proto, out);
                }
            }
            Reply::Double(x) if resp3 => line(out, b',', double(*x).as_bytes()),
            Reply::Double(x) => blob(out, b'$', b"", double(*x).as_bytes()),
            Reply::Boolean(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Reply::Boolean(b) => out.put_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
            Reply::Verbatim(text) if resp3 => blob(out, b'=', b"txt:", text),
            Reply::Verbatim(text) => blob(out, b'$', b"", text),
        }
    }
}

/// A double as Redis writes it (in both protocols): `inf`, `-inf`, `nan`,
/// or the shortest decimal that reads back as the same number.
fn double(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        x.to_string()
    }
}

fn line(out: &mut BytesMut, kind: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(kind);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

/// A length-prefixed string: `kind`, the length of `prefix` and `body`
/// together, CRLF, then both and CRLF.
fn blob(out: &mut BytesMut, kind: u8, prefix: &[u8], body: &[u8]) {
    header(out, kind, prefix.len() + body.len());
    out.reserve(prefix.len() + body.len() + 2);
    out.put_slice(prefix);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

fn header(out: &mut BytesMut, kind: u8, len: usize) {
    line(
        out,
        kind,
        itoa(i64::try_from(len).unwrap_or(i64::MAX), &mut [0; 20]),
    );
}

/// Formats an i64 without allocating.
fn itoa(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let neg = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if neg {
        // u64::MAX has 20 digits but i64's magnitude has at most 19, so there is room.
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

#[cfg(test)]
mod tests;
