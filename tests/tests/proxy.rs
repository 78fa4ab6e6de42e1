//! The proxy in front of three real nodes, driven by the `redis` crate (as any
//! Redis client would), by raw bytes, and by the generated gRPC client.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};

use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient};
use distcache_tests::{
    ClusterNode, TestNode, TestProxy, cluster, http_get, proxy, test_config, urls,
};
use redis::Value;

async fn start(nodes: Vec<String>) -> TestProxy {
    TestProxy::start(TestProxy::backend(nodes).await, proxy::frontend()).await
}

fn redis_con(proxy: &TestProxy) -> redis::Connection {
    redis::Client::open(format!("redis://{}/", proxy.resp))
        .expect("url")
        .get_connection()
        .expect("connect")
}

fn q(con: &mut redis::Connection, args: &[&str]) -> Value {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query::<Value>(con).unwrap_or_else(|e| {
        // Keep server errors as values so tests can compare them.
        Value::SimpleString(format!("ERROR {e}"))
    })
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn ok() -> Value {
    Value::Okay
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_behave_like_redis() {
    let nodes = [
        TestNode::start(test_config()).await,
        TestNode::start(test_config()).await,
        TestNode::start(test_config()).await,
    ];
    let proxy = start(nodes.iter().map(TestNode::url).collect()).await;
    let mut con = redis_con(&proxy);
    blocking(move || {
        let c = &mut con;
        assert_eq!(q(c, &["PING"]), Value::SimpleString("PONG".into()));
        assert_eq!(q(c, &["ECHO", "hi"]), bulk("hi"));
        assert_eq!(q(c, &["SET", "user:123", r#"{"name":"Alice"}"#]), ok());
        assert_eq!(q(c, &["GET", "user:123"]), bulk(r#"{"name":"Alice"}"#));
        assert_eq!(q(c, &["GET", "missing"]), Value::Nil);
        assert_eq!(q(c, &["SET", "user:123", "x", "NX"]), Value::Nil);
        assert_eq!(q(c, &["SET", "nx-key", "1", "NX"]), ok());
        assert_eq!(q(c, &["SET", "absent", "1", "XX"]), Value::Nil);
        assert_eq!(q(c, &["SET", "user:123", "Bob", "GET"]), bulk(r#"{"name":"Alice"}"#));
        assert_eq!(q(c, &["GETSET", "user:123", "Carol"]), bulk("Bob"));
        assert_eq!(q(c, &["SETNX", "user:123", "x"]), Value::Int(0));
        assert_eq!(q(c, &["SETNX", "fresh", "x"]), Value::Int(1));
        // TTLs: -2 missing, -1 no expiry, seconds otherwise.
        assert_eq!(q(c, &["TTL", "missing"]), Value::Int(-2));
        assert_eq!(q(c, &["TTL", "user:123"]), Value::Int(-1));
        assert_eq!(q(c, &["SETEX", "t", "100", "v"]), ok());
        assert!(matches!(q(c, &["TTL", "t"]), Value::Int(99 | 100)));
        assert!(matches!(q(c, &["PTTL", "t"]), Value::Int(ms) if ms > 90_000 && ms <= 100_000));
        assert_eq!(q(c, &["SET", "t", "w", "KEEPTTL"]), ok());
        assert!(matches!(q(c, &["TTL", "t"]), Value::Int(99 | 100)));
        assert_eq!(q(c, &["PERSIST", "t"]), Value::Int(1));
        assert_eq!(q(c, &["PERSIST", "t"]), Value::Int(0));
        assert_eq!(q(c, &["EXPIRE", "t", "50"]), Value::Int(1));
        assert_eq!(q(c, &["EXPIRE", "t", "10", "GT"]), Value::Int(0));
        assert_eq!(q(c, &["EXPIRE", "missing", "10"]), Value::Int(0));
        assert_eq!(q(c, &["PEXPIRE", "t", "0"]), Value::Int(1));
        assert_eq!(q(c, &["GET", "t"]), Value::Nil);
        assert_eq!(q(c, &["SET", "px", "v", "PX", "60000"]), ok());
        assert!(matches!(q(c, &["PTTL", "px"]), Value::Int(ms) if ms > 50_000));
        // Counters.
        assert_eq!(q(c, &["INCR", "n"]), Value::Int(1));
        assert_eq!(q(c, &["INCRBY", "n", "10"]), Value::Int(11));
        assert_eq!(q(c, &["DECR", "n"]), Value::Int(10));
        assert_eq!(q(c, &["DECRBY", "n", "20"]), Value::Int(-10));
        assert_eq!(
            q(c, &["INCR", "user:123"]),
            Value::SimpleString(
                "ERROR An error was signalled by the server - ResponseError: value is not an integer or out of range".into()
            )
        );
        // Strings.
        assert_eq!(q(c, &["APPEND", "s", "Hello"]), Value::Int(5));
        assert_eq!(q(c, &["APPEND", "s", " World"]), Value::Int(11));
        assert_eq!(q(c, &["GET", "s"]), bulk("Hello World"));
        assert_eq!(q(c, &["STRLEN", "s"]), Value::Int(11));
        assert_eq!(q(c, &["STRLEN", "missing"]), Value::Int(0));
        assert_eq!(q(c, &["GETDEL", "s"]), bulk("Hello World"));
        assert_eq!(q(c, &["GETDEL", "s"]), Value::Nil);
        // Multi-key commands spread over the nodes.
        assert_eq!(q(c, &["MSET", "a", "1", "b", "2", "c", "3"]), ok());
        assert_eq!(
            q(c, &["MGET", "a", "nope", "c"]),
            Value::Array(vec![bulk("1"), Value::Nil, bulk("3")])
        );
        assert_eq!(q(c, &["EXISTS", "a", "b", "nope", "a"]), Value::Int(3));
        assert_eq!(q(c, &["DEL", "a", "b", "nope"]), Value::Int(2));
        assert_eq!(q(c, &["UNLINK", "c"]), Value::Int(1));
        // Binary-safe keys and values.
        let v: Vec<u8> = (0..=255).collect();
        redis::cmd("SET").arg(&b"k\r\n\0"[..]).arg(&v).query::<()>(c).expect("binary set");
        let got: Vec<u8> = redis::cmd("GET").arg(&b"k\r\n\0"[..]).query(c).expect("binary get");
        assert_eq!(got, v);
        // Errors keep the connection usable.
        let e = q(c, &["FLUSHALL"]);
        assert!(matches!(&e, Value::SimpleString(s) if s.contains("unknown command")), "{e:?}");
        let e = q(c, &["GET"]);
        assert!(matches!(&e, Value::SimpleString(s) if s.contains("wrong number of arguments")), "{e:?}");
        assert_eq!(q(c, &["SET", "k", "v", "EX", "0"]), Value::SimpleString("ERROR An error was signalled by the server - ResponseError: invalid expire time in 'set' command".into()));
        assert_eq!(q(c, &["PING"]), Value::SimpleString("PONG".into()));
        // Connection commands clients send.
        assert_eq!(q(c, &["SELECT", "0"]), ok());
        assert_eq!(q(c, &["CLIENT", "SETNAME", "app"]), ok());
        assert_eq!(q(c, &["CLIENT", "GETNAME"]), bulk("app"));
        assert_eq!(q(c, &["CLIENT", "SETINFO", "lib-name", "redis-rs"]), ok());
        assert!(matches!(q(c, &["HELLO", "2"]), Value::Array(_)));
        assert!(matches!(q(c, &["INFO"]), Value::BulkString(b) if b.starts_with(b"# Server")));
        assert!(matches!(q(c, &["DBSIZE"]), Value::Int(n) if n >= 5));
    })
    .await;
    proxy.stop().await.expect("proxy run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_are_answered_in_order() {
    let nodes = cluster(3).await.expect("cluster");
    let proxy = start(urls(&nodes)).await;
    let mut con = redis_con(&proxy);
    blocking(move || {
        let mut p = redis::pipe();
        for i in 0..200 {
            p.cmd("SET").arg(format!("p:{}", i % 50)).arg(i);
            p.cmd("GET").arg(format!("p:{}", i % 50));
            p.cmd("INCR").arg("p:count");
        }
        let replies: Vec<Value> = p.query(&mut con).expect("pipeline");
        assert_eq!(replies.len(), 600);
        for i in 0..200 {
            assert_eq!(replies[3 * i], Value::Okay);
            assert_eq!(
                replies[3 * i + 1],
                bulk(&i.to_string()),
                "GET after SET in one pipeline"
            );
            assert_eq!(replies[3 * i + 2], Value::Int(i as i64 + 1));
        }
    })
    .await;
    // One write of 30 commands with unknown commands and wrong arities in
    // it; every reply is one line.
    let addr = proxy.resp;
    blocking(move || {
        use std::io::BufRead;
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let mut out = String::new();
        for i in 0..10 {
            out += &format!("SET q:{i} {i}\r\nGET q:{i} extra\r\nNOSUCH {i}\r\n");
        }
        s.write_all(out.as_bytes()).expect("write");
        let mut r = std::io::BufReader::new(s);
        for _ in 0..10 {
            let mut line = |want: &str| {
                let mut l = String::new();
                r.read_line(&mut l).expect("reply");
                assert!(l.starts_with(want), "{l:?} is not {want:?}");
            };
            line("+OK");
            line("-ERR wrong number of arguments for 'get' command");
            line("-ERR unknown command 'NOSUCH'");
        }
    })
    .await;
    // Every command was counted once, under its own name and result, and
    // timed: pipelined runs are recorded together.
    let (_, metrics) = http_get(proxy.admin, "/metrics").await;
    for line in [
        r#"distcache_proxy_commands_total{frontend="resp",command="set",result="ok"} 210"#,
        r#"distcache_proxy_commands_total{frontend="resp",command="get",result="ok"} 200"#,
        r#"distcache_proxy_commands_total{frontend="resp",command="get",result="error"} 10"#,
        r#"distcache_proxy_commands_total{frontend="resp",command="incr",result="ok"} 200"#,
        r#"distcache_proxy_commands_total{frontend="resp",command="unknown",result="error"} 10"#,
        r#"distcache_proxy_command_duration_seconds_count{frontend="resp",command="set"} 210"#,
        r#"distcache_proxy_command_duration_seconds_count{frontend="resp",command="get"} 210"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    proxy.stop().await.expect("proxy run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_that_connection() {
    let nodes = cluster(3).await.expect("cluster");
    let proxy = start(urls(&nodes)).await;
    let addr = proxy.resp;
    let mut good = redis_con(&proxy);
    blocking(move || {
        assert_eq!(q(&mut good, &["SET", "safe", "1"]), ok());
        for garbage in [
            &b"*2\r\n$3\r\nGET\r\n:oops\r\n"[..],
            b"*x\r\n",
            b"*1\r\n$99999999999\r\n",
            b"\"unbalanced\r\n",
        ] {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(garbage).expect("write");
            let mut reply = Vec::new();
            s.read_to_end(&mut reply).expect("closed by the proxy");
            assert!(
                reply.starts_with(b"-ERR Protocol error") || reply.starts_with(b"-Protocol error"),
                "{:?}",
                String::from_utf8_lossy(&reply)
            );
        }
        // Random bytes of every kind: the proxy survives.
        let mut seed = 0x1234_5678_u64;
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            let _ = s.write_all(&bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
        assert_eq!(q(&mut good, &["GET", "safe"]), bulk("1"));
    })
    .await;
    proxy.stop().await.expect("proxy run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_costs_no_client_errors() {
    let mut nodes: Vec<ClusterNode> = cluster(3).await.expect("cluster");
    let proxy = start(urls(&nodes)).await;
    let mut con = redis_con(&proxy);
    let writer = blocking(move || {
        for i in 0..300 {
            assert_eq!(
                q(&mut con, &["SET", &format!("k{i}"), &i.to_string()]),
                ok()
            );
        }
        con
    })
    .await;
    let load = tokio::task::spawn_blocking(move || {
        let mut con = writer;
        let mut errors = 0;
        for round in 0..3 {
            for i in 0..300 {
                match q(&mut con, &["GET", &format!("k{i}")]) {
                    v if v == bulk(&i.to_string()) => {}
                    other => {
                        errors += 1;
                        eprintln!("round {round} k{i}: {other:?}");
                    }
                }
            }
        }
        errors
    });
    nodes[1].kill();
    assert_eq!(
        load.await.expect("load"),
        0,
        "reads failed over to live replicas"
    );
    proxy.stop().await.expect("proxy run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_front_end_and_admin() {
    let nodes = cluster(3).await.expect("cluster");
    let proxy = start(urls(&nodes)).await;
    let mut c = CacheServiceClient::connect(format!("http://{}", proxy.grpc))
        .await
        .expect("connect");
    let w = c
        .set(pb::SetRequest {
            key: "user:123".into(),
            value: "Alice".into(),
            ..Default::default()
        })
        .await
        .expect("set")
        .into_inner();
    assert!(w.applied);
    let g = c
        .get(pb::GetRequest {
            key: "user:123".into(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert!(g.found && &g.value[..] == b"Alice" && g.version == w.version);
    let e = c
        .set(pb::SetRequest {
            key: "k".into(),
            value: "v".into(),
            version: 7,
            ..Default::default()
        })
        .await
        .expect_err("versions are the proxy's");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let h = c
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("health")
        .into_inner();
    assert_eq!(h.status, pb::ServingStatus::Serving as i32);

    assert_eq!(http_get(proxy.admin, "/healthz").await.0, 200);
    let (status, ring) = http_get(proxy.admin, "/ring").await;
    assert_eq!(status, 200);
    for n in urls(&nodes) {
        assert!(ring.contains(&n), "{ring}");
    }
    let (_, metrics) = http_get(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains(
            r#"distcache_proxy_commands_total{frontend="grpc",command="set",result="ok"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("distcache_proxy_node_healthy{"),
        "{metrics}"
    );
    proxy.stop().await.expect("proxy run");
}
