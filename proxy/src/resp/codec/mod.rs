//! The Redis serialization protocol, request side and reply side, for both
//! RESP2 and RESP3.
//!
//! Requests are the same in both protocols: arrays of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every client library sends) or
//! inline commands (`GET k\r\n`, what a person types into telnet). Arguments
//! are returned as [`Bytes`] split off the read buffer, so parsing copies
//! nothing. Frame sizes and argument counts are bounded: a request beyond a
//! bound is a [`ProtocolError`] and the caller closes that connection, as
//! Redis does.
//!
//! Replies are one [`Reply`] tree encoded for the connection's [`Protocol`]
//! (`reply.rs`): RESP3's types (null, map, set, double, boolean, verbatim
//! string) are written as Redis writes them to a RESP2 client when the
//! connection has not said `HELLO 3`. The codec decodes no replies: the
//! proxy never reads one.
//!
//! Synchronous and I/O-free: the connection task feeds it a `BytesMut`.
//! A maintained crate (redis-protocol) exists, but it decodes into a general
//! frame tree that would then be copied into commands; requests are a small,
//! fixed subset of RESP, so this parser is short, allocation-light and
//! property-tested instead. redis-protocol is the tests' reference: requests
//! it encodes parse to the same arguments here, and every reply encoded here
//! decodes there to the same value (`differential.rs`).

use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;

mod reply;

pub use reply::{Protocol, Reply};

/// Bounds on what one request may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (one argument) in bytes.
    pub max_bulk: usize,
    /// Most arguments in one request.
    pub max_args: usize,
    /// Longest inline command line in bytes.
    pub max_inline: usize,
    /// Bytes of not yet complete requests one connection may buffer (Redis's
    /// `client-query-buffer-limit`); past it the connection is closed.
    pub max_query: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk: 2 << 20,
            max_args: 64 * 1024,
            max_inline: 64 * 1024,
            max_query: 1 << 30,
        }
    }
}

impl Limits {
    /// The limits of a connection that must authenticate and has not yet:
    /// Redis's (10 arguments of at most 16 KiB, the fix of CVE-2021-32675),
    /// so an unauthenticated client cannot make the proxy buffer much.
    pub fn before_auth(&self) -> Self {
        Self {
            max_bulk: self.max_bulk.min(16 * 1024),
            max_args: self.max_args.min(10),
            max_inline: self.max_inline.min(16 * 1024),
            max_query: self.max_query.min(256 * 1024),
        }
    }
}

/// A request that cannot be parsed; the connection is closed after replying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Something other than the expected byte at a position.
    #[error("Protocol error: expected '{expected}', got '{got}'")]
    Unexpected {
        /// What the grammar wanted.
        expected: char,
        /// What arrived (as a char, lossy).
        got: char,
    },
    /// A length or count that is not a number.
    #[error("Protocol error: invalid {what} length")]
    BadLength {
        /// "multibulk" or "bulk".
        what: &'static str,
    },
    /// A bound in [`Limits`] was exceeded.
    #[error("Protocol error: {what} exceeds the limit of {limit}")]
    TooLarge {
        /// Which bound.
        what: &'static str,
        /// Its value.
        limit: usize,
    },
    /// An inline command with an unbalanced quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// Parses one request from the front of `buf`. Returns `Ok(None)` when more
/// bytes are needed (nothing is consumed), `Ok(Some(args))` with the request's
/// arguments (possibly empty for a blank inline line) after consuming it.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let mut args = Vec::new();
    Ok(parse_request_into(buf, limits, &mut args)?.then_some(args))
}

/// [`parse_request`] into a list the caller keeps: appends the arguments to
/// `args` and returns true after consuming a request, false when more bytes
/// are needed. Each call starts from the front of `buf`; a connection keeps
/// a [`RequestParser`] instead, which resumes where the last call stopped.
pub fn parse_request_into(
    buf: &mut BytesMut,
    limits: &Limits,
    args: &mut Vec<Bytes>,
) -> Result<bool, ProtocolError> {
    RequestParser::default().parse(buf, limits, args)
}

/// The request parser of one connection. It keeps its position inside a
/// request that has not fully arrived, so each read costs what it brought:
/// a slow sender's request is scanned once, not once per read (before, a
/// 64 KiB inline line sent a byte at a time was searched for its newline
/// 64 Ki times, and a 64 Ki-argument array had its argument headers walked
/// again on every read).
///
/// `buf` must only grow at its end between calls until a request is
/// returned or an error ends the connection (what a connection's read
/// buffer does).
#[derive(Debug, Default)]
pub struct RequestParser {
    /// The array being parsed: its argument count (0: none in progress),
    /// where its next argument starts, and the arguments found so far.
    count: usize,
    pos: usize,
    spans: SmallVec<[(usize, usize); 8]>,
    /// Bytes of an inline line already searched for its newline.
    scanned: usize,
    /// Argument headers and inline bytes examined since the parser was
    /// made: what the tests bound.
    steps: u64,
}

impl RequestParser {
    /// Parses one request from the front of `buf`, resuming where the last
    /// call ran out of bytes: appends its arguments to `args` and returns
    /// true after consuming it, false when more bytes are needed (nothing is
    /// consumed, `args` unchanged).
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        args: &mut Vec<Bytes>,
    ) -> Result<bool, ProtocolError> {
        let r = if self.count > 0 {
            self.multibulk(buf, limits, args)
        } else {
            match buf.first() {
                None => Ok(false),
                Some(b'*') => self.multibulk(buf, limits, args),
                Some(_) => self.inline(buf, limits, args),
            }
        };
        if r.is_err() {
            self.reset();
        }
        r
    }

    /// Argument headers and inline bytes examined so far (each once, plus at
    /// most one partial header per call).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn reset(&mut self) {
        self.count = 0;
        self.pos = 0;
        self.spans.clear();
        self.scanned = 0;
        if self.spans.capacity() > 1024 {
            self.spans.shrink_to_fit();
        }
    }

    fn multibulk(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        args: &mut Vec<Bytes>,
    ) -> Result<bool, ProtocolError> {
        if self.count == 0 {
            let Some((count, pos)) = read_len(buf, 0, "multibulk", 32)? else {
                return Ok(false);
            };
            if count <= 0 {
                // "*0\r\n" and "*-1\r\n" are empty requests; Redis skips them.
                buf.advance(pos);
                return Ok(true);
            }
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if count > limits.max_args {
                return Err(ProtocolError::TooLarge {
                    what: "argument count",
                    limit: limits.max_args,
                });
            }
            self.count = count;
            self.pos = pos;
            self.spans.clear();
            self.spans.reserve(count.min(1024));
        }
        // Check the whole request is here, remembering spans; an argument
        // that has not fully arrived is looked at again next time.
        while self.spans.len() < self.count {
            self.steps += 1;
            let pos = self.pos;
            let Some(&kind) = buf.get(pos) else {
                return Ok(false);
            };
            if kind != b'$' {
                return Err(ProtocolError::Unexpected {
                    expected: '$',
                    got: char::from(kind),
                });
            }
            let Some((len, start)) = read_len(buf, pos, "bulk", 32)? else {
                return Ok(false);
            };
            let len =
                usize::try_from(len).map_err(|_| ProtocolError::BadLength { what: "bulk" })?;
            if len > limits.max_bulk {
                return Err(ProtocolError::TooLarge {
                    what: "bulk length",
                    limit: limits.max_bulk,
                });
            }
            let end = start + len;
            if buf.len() < end + 2 {
                return Ok(false);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::Unexpected {
                    expected: '\r',
                    got: char::from(buf[end]),
                });
            }
            self.spans.push((start, end));
            self.pos = end + 2;
        }
        // Split the request off and slice arguments out of it.
        let frame = buf.split_to(self.pos).freeze();
        args.extend(self.spans.drain(..).map(|(s, e)| frame.slice(s..e)));
        self.reset();
        Ok(true)
    }

    fn inline(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        args: &mut Vec<Bytes>,
    ) -> Result<bool, ProtocolError> {
        let from = self.scanned.min(buf.len());
        let found = buf[from..].iter().position(|&b| b == b'\n');
        self.steps += (found.map_or(buf.len() - from, |i| i + 1)) as u64;
        let Some(nl) = found.map(|i| from + i) else {
            self.scanned = buf.len();
            if buf.len() > limits.max_inline {
                return Err(ProtocolError::TooLarge {
                    what: "inline request",
                    limit: limits.max_inline,
                });
            }
            return Ok(false);
        };
        self.scanned = 0;
        if nl > limits.max_inline {
            return Err(ProtocolError::TooLarge {
                what: "inline request",
                limit: limits.max_inline,
            });
        }
        let line = buf.split_to(nl + 1);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let split = split_inline(line)?;
        if split.len() > limits.max_args {
            return Err(ProtocolError::TooLarge {
                what: "argument count",
                limit: limits.max_args,
            });
        }
        args.extend(split);
        Ok(true)
    }
}

/// Reads a decimal integer line that starts right after a type byte at `at`.
/// Returns (value, index just past the CRLF) or None when incomplete. The
/// number is what `i64::from_str` takes (an optional sign, then digits), at
/// most 20 characters; this runs twice or more per request, so it scans the
/// bytes itself rather than going through `str`.
fn read_len(
    buf: &[u8],
    at: usize,
    what: &'static str,
    max_line: usize,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let bad = || ProtocolError::BadLength { what };
    let start = at + 1;
    let window = buf.get(start..).unwrap_or_default();
    // Every length a client sends: 1 to 18 digits and CRLF, read in one pass
    // (18 digits cannot overflow). Anything else takes the general path.
    let mut n: i64 = 0;
    for (i, &b) in window.iter().take(19).enumerate() {
        let d = b.wrapping_sub(b'0');
        if d <= 9 && i < 18 {
            n = n * 10 + i64::from(d);
            continue;
        }
        if b == b'\r' && i > 0 {
            match window.get(i + 1) {
                Some(b'\n') => return Ok(Some((n, start + i + 2))),
                None => return Ok(None),
                Some(_) => return Err(bad()),
            }
        }
        break;
    }
    let Some(cr) = window.iter().take(max_line + 1).position(|&b| b == b'\r') else {
        if window.len() > max_line {
            return Err(bad());
        }
        return Ok(None);
    };
    match window.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(bad()),
    }
    let n = parse_i64(&window[..cr]).ok_or_else(bad)?;
    Ok(Some((n, start + cr + 2)))
}

/// What `i64::from_str` makes of `line` (an optional sign, then at most 20
/// characters in all), without going through `str`.
fn parse_i64(line: &[u8]) -> Option<i64> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, line),
    };
    if digits.is_empty() || line.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    if negative {
        0i64.checked_sub_unsigned(n)
    } else {
        i64::try_from(n).ok()
    }
}

/// Splits an inline line by the one rule the `distcache` CLI shares
/// ([`distcache::cli_words`]: redis-cli's quotes and escapes). Any line it
/// refuses gets Redis's one answer for it.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let words = distcache::cli_words::split(line).map_err(|_| ProtocolError::UnbalancedQuotes)?;
    Ok(words.into_iter().map(Bytes::from).collect())
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
