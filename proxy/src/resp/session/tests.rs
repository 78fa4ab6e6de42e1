use bytes::{Bytes, BytesMut};

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn session() -> Session {
    Session {
        id: 7,
        ..Session::default()
    }
}

fn wire(r: &Reply, proto: Protocol) -> String {
    let mut out = BytesMut::new();
    r.encode(proto, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn field<'a>(r: &'a Reply, name: &str) -> Option<&'a Reply> {
    let Reply::Map(pairs) = r else {
        panic!("HELLO answers a map: {r:?}")
    };
    pairs
        .iter()
        .find(|(k, _)| *k == Reply::bulk(b(name)))
        .map(|(_, v)| v)
}

#[test]
fn hello_3_switches_and_answers_redis_map_in_resp3() {
    let mut s = session();
    let r = hello(&mut s, Some(Protocol::Resp3), None, None);
    assert_eq!(s.proto, Protocol::Resp3);
    assert_eq!(
        wire(&r, s.proto),
        "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n\
         $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:7\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
    );
    // Without a version HELLO answers in the protocol in force…
    let r = hello(&mut s, None, None, None);
    assert_eq!(field(&r, "proto"), Some(&Reply::Integer(3)));
    assert_eq!(s.proto, Protocol::Resp3);
    // …and HELLO 2 switches back, answering the flat RESP2 list.
    let r = hello(&mut s, Some(Protocol::Resp2), None, None);
    assert_eq!(s.proto, Protocol::Resp2);
    assert!(wire(&r, s.proto).starts_with("*14\r\n$6\r\nserver\r\n"));
    assert_eq!(field(&r, "proto"), Some(&Reply::Integer(2)));
}

#[test]
fn a_failed_hello_keeps_the_protocol_and_the_name() {
    let mut s = session();
    s.name = Some(b("before"));
    let bad_user = Credentials {
        user: Some(b("alice")),
        password: b("x"),
    };
    let r = hello(
        &mut s,
        Some(Protocol::Resp3),
        Some(bad_user),
        Some(b("app")),
    );
    assert_eq!(r, Reply::Error(WRONGPASS.into()));
    let r = hello(&mut s, Some(Protocol::Resp3), None, Some(b("two words")));
    assert_eq!(
        r,
        Reply::err("Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(
        (s.proto, s.name.clone()),
        (Protocol::Resp2, Some(b("before")))
    );
    // The default user has no password without tokens, as in Redis.
    let default = Credentials {
        user: Some(b("default")),
        password: b("anything"),
    };
    let r = hello(&mut s, Some(Protocol::Resp3), Some(default), Some(b("app")));
    assert_eq!(field(&r, "proto"), Some(&Reply::Integer(3)));
    assert_eq!((s.proto, s.name), (Protocol::Resp3, Some(b("app"))));
}

#[test]
fn auth_without_tokens_answers_as_redis_without_requirepass() {
    let one = Credentials {
        user: None,
        password: b("x"),
    };
    assert!(
        matches!(without_password(&one), Err(Reply::Error(e)) if e.starts_with("ERR AUTH <password> called without"))
    );
    let default = Credentials {
        user: Some(b("default")),
        password: b("x"),
    };
    assert_eq!(without_password(&default), Ok(()));
    let other = Credentials {
        user: Some(b("Default")),
        password: b("x"),
    };
    assert_eq!(
        without_password(&other),
        Err(Reply::Error(WRONGPASS.into()))
    );
}

#[test]
fn client_names_are_printable_without_spaces() {
    assert_eq!(client_name(b("app-1:x")), Ok(Some(b("app-1:x"))));
    assert_eq!(client_name(b("")), Ok(None), "empty clears the name");
    for bad in ["a b", "a\nb", "caf\u{e9}", "\t"] {
        assert!(client_name(b(bad)).is_err(), "{bad:?}");
    }
}
