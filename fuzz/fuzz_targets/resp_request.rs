#![no_main]
//! See docs/fuzzing.md; the body is `distcache_proxy::fuzzing::resp_request`.
//! Here only, a differential against the maintained `redis-protocol`
//! crate: a request it decodes from canonical RESP2 (an array of bulk
//! strings, written exactly as the crate would write it) the proxy's
//! parser must decode to the same arguments, consuming the same bytes.

use bytes::BytesMut;
use distcache_proxy::resp::codec::{Limits, parse_request_into};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    distcache_proxy::fuzzing::resp_request(data);
    if let Some(input) = data.get(1..) {
        differential(input);
    }
});

fn differential(input: &[u8]) {
    let Ok(Some((OwnedFrame::Array(items), used))) = decode(input) else {
        return;
    };
    let limits = Limits::default();
    let mut args = Vec::with_capacity(items.len());
    for item in items {
        match item {
            OwnedFrame::BulkString(b) if b.len() <= limits.max_bulk => args.push(b),
            _ => return,
        }
    }
    if args.is_empty() || args.len() > limits.max_args || canonical(&args) != input[..used] {
        return;
    }
    let mut buf = BytesMut::from(input);
    let mut ours = Vec::new();
    match parse_request_into(&mut buf, &limits, &mut ours) {
        Ok(true) => {
            assert_eq!(input.len() - buf.len(), used, "consumed");
            let ours: Vec<Vec<u8>> = ours.iter().map(|b| b.to_vec()).collect();
            assert_eq!(ours, args, "arguments differ from redis-protocol's");
        }
        other => panic!("redis-protocol decodes {args:?}; the proxy gives {other:?}"),
    }
}

fn canonical(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}
