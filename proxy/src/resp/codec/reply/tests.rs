use bytes::{Bytes, BytesMut};

use super::*;

fn enc(r: &Reply, proto: Protocol) -> Vec<u8> {
    let mut b = BytesMut::new();
    r.encode(proto, &mut b);
    b.to_vec()
}

/// Each reply, then its bytes in RESP2 and in RESP3 (what Redis 7 sends).
fn table() -> Vec<(Reply, &'static [u8], &'static [u8])> {
    let bulk = |s: &'static str| Reply::bulk(Bytes::from_static(s.as_bytes()));
    vec![
        (Reply::OK, b"+OK\r\n", b"+OK\r\n"),
        (
            Reply::err("unknown command 'FOO'"),
            b"-ERR unknown command 'FOO'\r\n",
            b"-ERR unknown command 'FOO'\r\n",
        ),
        (
            Reply::Error("WRONGTYPE x\r\ny".into()),
            b"-WRONGTYPE x  y\r\n",
            b"-WRONGTYPE x  y\r\n",
        ),
        (Reply::Integer(-2), b":-2\r\n", b":-2\r\n"),
        (Reply::Integer(0), b":0\r\n", b":0\r\n"),
        (
            Reply::Integer(i64::MIN),
            b":-9223372036854775808\r\n",
            b":-9223372036854775808\r\n",
        ),
        (Reply::Bulk(None), b"$-1\r\n", b"_\r\n"),
        (bulk("hi"), b"$2\r\nhi\r\n", b"$2\r\nhi\r\n"),
        (bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (Reply::Array(None), b"*-1\r\n", b"_\r\n"),
        (Reply::Array(Some(vec![])), b"*0\r\n", b"*0\r\n"),
        (
            Reply::Array(Some(vec![bulk("a"), Reply::Bulk(None)])),
            b"*2\r\n$1\r\na\r\n$-1\r\n",
            b"*2\r\n$1\r\na\r\n_\r\n",
        ),
        (
            Reply::Map(vec![
                (bulk("proto"), Reply::Integer(3)),
                (bulk("modules"), Reply::Array(Some(vec![]))),
            ]),
            b"*4\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n",
            b"%2\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n",
        ),
        (Reply::Map(vec![]), b"*0\r\n", b"%0\r\n"),
        (
            Reply::Set(vec![bulk("a"), Reply::Integer(1)]),
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"~2\r\n$1\r\na\r\n:1\r\n",
        ),
        (Reply::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (Reply::Double(3.0), b"$1\r\n3\r\n", b",3\r\n"),
        (Reply::Double(-0.25), b"$5\r\n-0.25\r\n", b",-0.25\r\n"),
        (Reply::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n"),
        (
            Reply::Double(f64::NEG_INFINITY),
            b"$4\r\n-inf\r\n",
            b",-inf\r\n",
        ),
        (Reply::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n"),
        (Reply::Boolean(true), b":1\r\n", b"#t\r\n"),
        (Reply::Boolean(false), b":0\r\n", b"#f\r\n"),
        (
            Reply::Verbatim(Bytes::from_static(b"# Server\r\nx:1\r\n")),
            b"$15\r\n# Server\r\nx:1\r\n\r\n",
            b"=19\r\ntxt:# Server\r\nx:1\r\n\r\n",
        ),
    ]
}

#[test]
fn every_reply_is_written_as_redis_writes_it_in_both_protocols() {
    for (reply, resp2, resp3) in table() {
        assert_eq!(
            enc(&reply, Protocol::Resp2),
            resp2,
            "RESP2 {reply:?}: {:?}",
            String::from_utf8_lossy(&enc(&reply, Protocol::Resp2))
        );
        assert_eq!(
            enc(&reply, Protocol::Resp3),
            resp3,
            "RESP3 {reply:?}: {:?}",
            String::from_utf8_lossy(&enc(&reply, Protocol::Resp3))
        );
    }
}

#[test]
fn nulls_inside_aggregates_follow_the_protocol() {
    let reply = Reply::Map(vec![(
        Reply::bulk("k"),
        Reply::Array(Some(vec![Reply::Bulk(None), Reply::Array(None)])),
    )]);
    assert_eq!(
        enc(&reply, Protocol::Resp2),
        b"*2\r\n$1\r\nk\r\n*2\r\n$-1\r\n*-1\r\n"
    );
    assert_eq!(
        enc(&reply, Protocol::Resp3),
        b"%1\r\n$1\r\nk\r\n*2\r\n_\r\n_\r\n"
    );
}

#[test]
fn hello_versions_map_to_protocols() {
    assert_eq!(Protocol::from_version(2), Some(Protocol::Resp2));
    assert_eq!(Protocol::from_version(3), Some(Protocol::Resp3));
    for v in [i64::MIN, -1, 0, 1, 4, i64::MAX] {
        assert_eq!(Protocol::from_version(v), None, "{v}");
    }
    assert_eq!(Protocol::default(), Protocol::Resp2);
    assert_eq!(Protocol::Resp3.version(), 3);
}
