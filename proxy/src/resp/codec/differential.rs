//! The codec against a maintained RESP implementation (the redis-protocol
//! crate, a dev-dependency only): any reply tree encoded here, in RESP2 and
//! in RESP3, decodes there to the same value, consuming exactly its bytes,
//! and every strict prefix of it reads as incomplete; any request that crate
//! encodes parses here to the same arguments.

use bytes::{Bytes, BytesMut};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use redis_protocol::resp2::types::{OwnedFrame as Frame2, Resp2Frame};
use redis_protocol::resp3::types::{OwnedFrame as Frame3, VerbatimStringFormat};

use super::*;

/// A reply as both sides can describe it: maps and sets in key order (the
/// reference decodes them into hash maps), doubles by their exact value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Norm {
    Simple(Vec<u8>),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Norm>),
    Map(Vec<(Norm, Norm)>),
    Set(Vec<Norm>),
    Double(String),
    Bool(bool),
    Verbatim(Vec<u8>),
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The value `reply` must decode to when written in `proto`.
fn expected(reply: &Reply, proto: Protocol) -> Norm {
    let all = |items: &[Reply]| items.iter().map(|r| expected(r, proto)).collect();
    let resp3 = proto == Protocol::Resp3;
    match reply {
        Reply::Simple(s) => Norm::Simple(s.as_bytes().to_vec()),
        Reply::Error(e) => Norm::Error(e.replace(['\r', '\n'], " ")),
        Reply::Integer(n) => Norm::Int(*n),
        Reply::Bulk(None) | Reply::Array(None) => Norm::Null,
        Reply::Bulk(Some(b)) => Norm::Bulk(b.to_vec()),
        Reply::Array(Some(items)) => Norm::Array(all(items)),
        Reply::Map(pairs) if resp3 => Norm::Map(sorted(
            pairs
                .iter()
                .map(|(k, v)| (expected(k, proto), expected(v, proto)))
                .collect(),
        )),
        Reply::Map(pairs) => Norm::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [expected(k, proto), expected(v, proto)])
                .collect(),
        ),
        Reply::Set(items) if resp3 => Norm::Set(sorted(all(items))),
        Reply::Set(items) => Norm::Array(all(items)),
        Reply::Double(x) if resp3 => Norm::Double(format!("{x:?}")),
        // Redis's text for a double: what reads back as the same number.
        Reply::Double(x) => Norm::Bulk(
            match *x {
                x if x.is_nan() => "nan".to_string(),
                f64::INFINITY => "inf".to_string(),
                f64::NEG_INFINITY => "-inf".to_string(),
                x => x.to_string(),
            }
            .into_bytes(),
        ),
        Reply::Boolean(b) if resp3 => Norm::Bool(*b),
        Reply::Boolean(b) => Norm::Int(i64::from(*b)),
        Reply::Verbatim(t) if resp3 => Norm::Verbatim(t.to_vec()),
        Reply::Verbatim(t) => Norm::Bulk(t.to_vec()),
    }
}

fn norm2(f: Frame2) -> Norm {
    match f {
        Frame2::SimpleString(s) => Norm::Simple(s),
        Frame2::Error(e) => Norm::Error(e),
        Frame2::Integer(n) => Norm::Int(n),
        Frame2::BulkString(b) => Norm::Bulk(b),
        Frame2::Array(items) => Norm::Array(items.into_iter().map(norm2).collect()),
        Frame2::Null => Norm::Null,
    }
}

fn norm3(f: Frame3) -> Norm {
    match f {
        Frame3::SimpleString { data, .. } => Norm::Simple(data),
        Frame3::SimpleError { data, .. } => Norm::Error(data),
        Frame3::Number { data, .. } => Norm::Int(data),
        Frame3::BlobString { data, .. } => Norm::Bulk(data),
        Frame3::Null => Norm::Null,
        Frame3::Array { data, .. } => Norm::Array(data.into_iter().map(norm3).collect()),
        Frame3::Map { data, .. } => Norm::Map(sorted(
            data.into_iter()
                .map(|(k, v)| (norm3(k), norm3(v)))
                .collect(),
        )),
        Frame3::Set { data, .. } => Norm::Set(sorted(data.into_iter().map(norm3).collect())),
        Frame3::Double { data, .. } => Norm::Double(format!("{data:?}")),
        Frame3::Boolean { data, .. } => Norm::Bool(data),
        Frame3::VerbatimString { data, format, .. } => {
            assert_eq!(format, VerbatimStringFormat::Text, "Redis sends txt");
            Norm::Verbatim(data)
        }
        other => panic!("a frame the codec never writes: {other:?}"),
    }
}

/// Decodes one frame of `proto` with the reference: its value and length,
/// or `None` when the bytes are not a whole frame.
fn reference(proto: Protocol, wire: &[u8]) -> Option<(Norm, usize)> {
    match proto {
        Protocol::Resp2 => redis_protocol::resp2::decode::decode(wire)
            .expect("valid RESP2")
            .map(|(f, n)| (norm2(f), n)),
        Protocol::Resp3 => redis_protocol::resp3::decode::complete::decode(wire)
            .expect("valid RESP3")
            .map(|(f, n)| (norm3(f), n)),
    }
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..24)
}

/// Replies that may be map keys and set elements (the reference hashes
/// them, and cannot hash aggregates).
fn key() -> impl Strategy<Value = Reply> {
    bytes().prop_map(Reply::bulk)
}

fn scalar() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::OK),
        Just(Reply::Simple("PONG")),
        "[ -~\r\n]{0,24}".prop_map(|s| Reply::Error(format!("ERR {s}"))),
        any::<i64>().prop_map(Reply::Integer),
        proptest::option::of(bytes()).prop_map(|b| Reply::Bulk(b.map(Bytes::from))),
        Just(Reply::Array(None)),
        any::<f64>().prop_map(Reply::Double),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e300)]
            .prop_map(Reply::Double),
        any::<bool>().prop_map(Reply::Boolean),
        bytes().prop_map(|b| Reply::Verbatim(b.into())),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|v| Reply::Array(Some(v))),
            btree_map(bytes(), inner, 0..4).prop_map(|m| {
                Reply::Map(m.into_iter().map(|(k, v)| (Reply::bulk(k), v)).collect())
            }),
            btree_set(bytes(), 0..4)
                .prop_map(|s| Reply::Set(s.into_iter().map(Reply::bulk).collect())),
            (key(), key()).prop_map(|(a, b)| Reply::Map(vec![(a, b)])),
        ]
    })
}

fn proto() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Resp2), Just(Protocol::Resp3)]
}

proptest! {
    #[test]
    fn replies_decode_in_the_reference_as_they_were_built(
        reply in reply(),
        next in reply(),
        proto in proto(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        reply.encode(proto, &mut wire);
        let len = wire.len();
        // A second reply behind it, as in a pipeline: the first ends exactly.
        next.encode(proto, &mut wire);
        prop_assert_eq!(reference(proto, &wire), Some((expected(&reply, proto), len)));
        prop_assert_eq!(
            reference(proto, &wire[len..]),
            Some((expected(&next, proto), wire.len() - len))
        );
        let cut = cut.index(len);
        prop_assert_eq!(reference(proto, &wire[..cut]), None, "a prefix of {} bytes", cut);
    }

    #[test]
    fn requests_the_reference_encodes_parse_to_the_same_arguments(
        args in vec(vec(any::<u8>(), 0..40), 1..8),
    ) {
        let frame = Frame2::Array(args.iter().cloned().map(Frame2::BulkString).collect());
        let mut wire = vec![0; frame.encode_len(false)];
        redis_protocol::resp2::encode::encode(&mut wire, &frame, false).expect("encodes");
        let mut buf = BytesMut::from(&wire[..]);
        let parsed = parse_request(&mut buf, &Limits::default()).expect("parses");
        let parsed: Option<Vec<Vec<u8>>> = parsed.map(|a| a.iter().map(|b| b.to_vec()).collect());
        prop_assert_eq!(parsed, Some(args));
        prop_assert!(buf.is_empty());
    }
}
