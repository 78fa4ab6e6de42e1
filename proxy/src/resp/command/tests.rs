use bytes::Bytes;

use super::*;

fn p(line: &str) -> Result<Command, Reply> {
    parse(
        &mut line
            .split(' ')
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect::<Vec<_>>(),
    )
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn err(r: Result<Command, Reply>) -> String {
    match r {
        Err(Reply::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn set_options() {
    assert_eq!(
        p("set k v"),
        Ok(Command::Set {
            key: b("k"),
            value: b("v"),
            cond: Cond::Always,
            expiry: Expiry::None,
            get: false,
            integer_reply: false
        })
    );
    assert_eq!(
        p("SET k v nx ex 10 get"),
        Ok(Command::Set {
            key: b("k"),
            value: b("v"),
            cond: Cond::Nx,
            expiry: Expiry::In(10_000),
            get: true,
            integer_reply: false
        })
    );
    assert!(matches!(
        p("set k v PXAT 1700000000000"),
        Ok(Command::Set {
            expiry: Expiry::At(1_700_000_000_000),
            ..
        })
    ));
    assert!(matches!(
        p("set k v keepttl xx"),
        Ok(Command::Set {
            expiry: Expiry::Keep,
            cond: Cond::Xx,
            ..
        })
    ));
    assert_eq!(err(p("set k v nx xx")), "ERR syntax error");
    assert_eq!(err(p("set k v ex 1 px 5")), "ERR syntax error");
    assert_eq!(err(p("set k v ex")), "ERR syntax error");
    assert_eq!(
        err(p("set k v ex 0")),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err(p("set k v ex -5")),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err(p("set k v ex ten")),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(p("set k")),
        "ERR wrong number of arguments for 'set' command"
    );
}

#[test]
fn relatives_of_set() {
    assert!(matches!(
        p("setnx k v"),
        Ok(Command::Set {
            cond: Cond::Nx,
            integer_reply: true,
            ..
        })
    ));
    assert!(matches!(
        p("setex k 5 v"),
        Ok(Command::Set {
            expiry: Expiry::In(5000),
            ..
        })
    ));
    assert!(matches!(
        p("psetex k 5 v"),
        Ok(Command::Set {
            expiry: Expiry::In(5),
            ..
        })
    ));
    assert_eq!(
        err(p("setex k 0 v")),
        "ERR invalid expire time in 'setex' command"
    );
    assert!(matches!(
        p("getset k v"),
        Ok(Command::Set { get: true, .. })
    ));
}

#[test]
fn counters_and_expiry() {
    assert_eq!(p("incr n"), Ok(Command::IncrBy(b("n"), 1)));
    assert_eq!(p("decrby n 5"), Ok(Command::IncrBy(b("n"), -5)));
    assert_eq!(
        err(p("incrby n x")),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(p("incrby n +5")),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(p("decrby n -9223372036854775808")),
        "ERR decrement would overflow"
    );
    assert_eq!(
        p("expire k 10"),
        Ok(Command::Expire {
            key: b("k"),
            at: Expiry::In(10_000),
            cond: Cond::Always
        })
    );
    assert_eq!(
        p("pexpire k 10 gt"),
        Ok(Command::Expire {
            key: b("k"),
            at: Expiry::In(10),
            cond: Cond::Gt
        })
    );
    assert_eq!(
        p("expire k -1"),
        Ok(Command::Expire {
            key: b("k"),
            at: Expiry::In(0),
            cond: Cond::Always
        })
    );
    assert_eq!(
        p("expireat k 5"),
        Ok(Command::Expire {
            key: b("k"),
            at: Expiry::At(5000),
            cond: Cond::Always
        })
    );
    assert_eq!(err(p("expire k 1 zz")), "ERR Unsupported option ZZ");
    assert_eq!(
        p("pttl k"),
        Ok(Command::Ttl {
            key: b("k"),
            millis: true
        })
    );
}

#[test]
fn multi_key_and_arity() {
    assert_eq!(
        p("mset a 1 b 2"),
        Ok(Command::MSet(vec![(b("a"), b("1")), (b("b"), b("2"))]))
    );
    assert_eq!(
        err(p("mset a 1 b")),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(p("del a b"), Ok(Command::Del(vec![b("a"), b("b")])));
    assert_eq!(p("unlink a"), Ok(Command::Del(vec![b("a")])));
    assert_eq!(
        err(p("get")),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err(p("get a b")),
        "ERR wrong number of arguments for 'get' command"
    );
}

#[test]
fn connection_commands() {
    assert_eq!(p("PING"), Ok(Command::Ping(None)));
    assert_eq!(p("ping hi"), Ok(Command::Ping(Some(b("hi")))));
    assert_eq!(
        p("auth tok"),
        Ok(Command::Auth(Credentials {
            user: None,
            password: b("tok")
        }))
    );
    assert_eq!(
        p("auth default tok"),
        Ok(Command::Auth(Credentials {
            user: Some(b("default")),
            password: b("tok")
        }))
    );
    assert!(matches!(
        p("hello 3 AUTH default tok SETNAME app"),
        Ok(Command::Hello {
            proto: Some(Protocol::Resp3),
            auth: Some(_),
            name: Some(_)
        })
    ));
    assert_eq!(err(p("hello 4")), "NOPROTO unsupported protocol version");
    assert_eq!(p("client setinfo lib-name redis-py"), Ok(Command::ClientOk));
    assert_eq!(
        p("client setname app"),
        Ok(Command::ClientSetName(b("app")))
    );
    assert_eq!(
        p("command docs"),
        Ok(Command::CommandInfo(CommandQuery::Docs))
    );
    assert_eq!(p("COMMAND"), Ok(Command::CommandInfo(CommandQuery::List)));
    assert_eq!(
        p("command count"),
        Ok(Command::CommandInfo(CommandQuery::Count))
    );
    assert_eq!(p("select 0"), Ok(Command::Select(0)));
    assert_eq!(
        err(p("client MAINT_NOTIFICATIONS on")),
        "ERR unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP."
    );
}

#[test]
fn unknown_commands_name_themselves() {
    assert_eq!(
        err(p("FLUSHALL")),
        "ERR unknown command 'FLUSHALL', with args beginning with: "
    );
    assert_eq!(
        err(p("foo a b")),
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    assert_eq!(err(parse(&mut [])), "ERR empty command");
}
