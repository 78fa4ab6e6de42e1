//! The RESP2 request parser (`resp::codec`), multibulk and inline.

use bytes::{BufMut, Bytes, BytesMut};

use crate::resp::codec::{Limits, ProtocolError, RequestParser, parse_request_into};

/// What a stream of bytes parses to: the requests, then either the bytes
/// left waiting for more or the error that closes the connection.
type Outcome = (Vec<Vec<Bytes>>, Result<usize, ProtocolError>);

/// The `resp_request` target. `data[0]` picks the limits (default, before
/// AUTH, or tiny ones that every bound is reached with) and a chunk size;
/// the rest is what a client sends. Oracles:
///
/// - feeding the bytes in chunks to one [`RequestParser`] parses to exactly
///   what feeding them at once does (a request split across reads is the
///   same request, wherever the parser stopped inside it);
/// - "need more bytes" consumes nothing, and a request consumes something;
/// - every request, sent again as a multibulk array and as a quoted inline
///   line, parses back to the same arguments.
pub fn resp_request(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let limits = match flags % 3 {
        0 => Limits::default(),
        1 => Limits::default().before_auth(),
        _ => Limits {
            max_bulk: 8,
            max_args: 4,
            max_inline: 16,
            max_query: 64,
        },
    };
    let chunk = usize::from(flags / 3 % 8) + 1;
    let whole = parse_stream(input, &limits, input.len().max(1));
    let pieces = parse_stream(input, &limits, chunk);
    assert_eq!(whole, pieces, "fed in chunks of {chunk}");
    for args in whole.0.iter().filter(|a| !a.is_empty()) {
        assert_eq!(reparse(multibulk(args)), *args, "as multibulk");
        let line = inline(args);
        if line.len() <= Limits::default().max_inline {
            assert_eq!(reparse(line), *args, "as inline");
        }
    }
}

/// Parses `input`, handing the parser `chunk` more bytes whenever it asks
/// for more, as a connection does with its reads.
fn parse_stream(input: &[u8], limits: &Limits, chunk: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut requests = Vec::new();
    // One parser for the stream, as a connection keeps: it resumes inside
    // a request split across reads.
    let mut parser = RequestParser::default();
    loop {
        let before = buf.clone();
        let mut args = Vec::new();
        match parser.parse(&mut buf, limits, &mut args) {
            Ok(true) => {
                assert!(buf.len() < before.len(), "a request consumed nothing");
                requests.push(args);
            }
            Ok(false) => {
                assert_eq!(buf, before, "asking for more bytes consumed some");
                assert!(args.is_empty(), "asking for more bytes gave arguments");
                if fed == input.len() {
                    return (requests, Ok(buf.len()));
                }
                let end = input.len().min(fed + chunk);
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            Err(e) => return (requests, Err(e)),
        }
    }
}

/// One request parsed with the default limits, which must take all of `wire`.
fn reparse(wire: BytesMut) -> Vec<Bytes> {
    let mut buf = wire.clone();
    let mut args = Vec::new();
    match parse_request_into(&mut buf, &Limits::default(), &mut args) {
        Ok(true) if buf.is_empty() => args,
        other => panic!("{wire:?} parses to {other:?}, {} bytes left", buf.len()),
    }
}

fn multibulk(args: &[Bytes]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.put_slice(format!("${}\r\n", a.len()).as_bytes());
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
    out
}

/// Every argument in double quotes, with the escapes the parser reads.
fn inline(args: &[Bytes]) -> BytesMut {
    let mut out = BytesMut::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.put_u8(b' ');
        }
        out.put_u8(b'"');
        for &b in a.iter() {
            match b {
                b'"' | b'\\' => out.put_slice(&[b'\\', b]),
                b'\n' => out.put_slice(b"\\n"),
                b'\r' => out.put_slice(b"\\r"),
                _ => out.put_u8(b),
            }
        }
        out.put_u8(b'"');
    }
    out.put_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `resp_request` target (`fuzz/regressions/resp_request/`):
    /// a length line one byte longer than the bound was refused when it
    /// arrived a byte at a time, but waited for more when it arrived whole
    /// (the bound and the search for its CR differed by one).
    #[test]
    fn a_too_long_length_line_is_refused_however_it_arrives() {
        let line = [&b"*"[..], &[b'x'; 30], b"*0\r"].concat();
        let limits = Limits::default();
        assert_eq!(
            parse_stream(&line, &limits, line.len()),
            parse_stream(&line, &limits, 1)
        );
        // Flags 2: the tiny limits, fed a byte at a time (the input found).
        resp_request(&[&[2][..], &line].concat());
    }
}
