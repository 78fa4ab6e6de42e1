//! RESP3 on the proxy's RESP front end, over real nodes: the `redis` crate
//! in RESP3 mode (as a redis-rs application runs it), the exact bytes of
//! each reply on a raw connection before and after `HELLO 3` and back with
//! `HELLO 2`, HELLO's errors, and `HELLO 3 AUTH` with tokens over TLS
//! (NOAUTH, WRONGPASS, NOPERM and pipelining as in RESP2).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distcache_proxy::{FrontSecurity, FrontendConfig};
use distcache_serve::security::config::{AuthConfig, TlsConfig};
use distcache_serve::security::{Claims, KeySet, Role};
use distcache_tests::tls::Ca;
use distcache_tests::{TestNode, TestProxy, http_get, proxy, test_config};
use redis::{Value, VerbatimFormat};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, RootCertStore, pki_types::ServerName};

/// A proxy over two nodes with `config`; the nodes are returned to keep them up.
async fn start(config: FrontendConfig) -> (TestProxy, Vec<TestNode>) {
    let nodes = vec![
        TestNode::start(test_config()).await,
        TestNode::start(test_config()).await,
    ];
    let backend = TestProxy::backend(nodes.iter().map(TestNode::url).collect()).await;
    (TestProxy::start(backend, config).await, nodes)
}

/// A raw RESP connection that checks replies byte for byte.
struct Raw<S>(BufReader<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    /// Sends the requests in one write (a pipeline when there are several).
    async fn send(&mut self, requests: &[&[&str]]) {
        let mut out = Vec::new();
        for args in requests {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in *args {
                out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        self.0.get_mut().write_all(&out).await.expect("write");
    }

    /// Reads exactly `want`'s length and compares.
    async fn expect(&mut self, want: &str) {
        let mut got = vec![0; want.len()];
        tokio::time::timeout(Duration::from_secs(20), self.0.read_exact(&mut got))
            .await
            .expect("a reply in time")
            .expect("read");
        assert_eq!(String::from_utf8_lossy(&got), want);
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).await.expect("read");
        line
    }

    /// One request, one reply.
    async fn check(&mut self, args: &[&str], want: &str) {
        self.send(&[args]).await;
        self.expect(want).await;
    }

    /// HELLO's reply in `proto` (2 or 3), whatever the connection id.
    async fn expect_hello(&mut self, proto: u8) {
        let head = if proto == 3 { "%7" } else { "*14" };
        self.expect(&format!(
            "{head}\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n\
             $5\r\nproto\r\n:{proto}\r\n$2\r\nid\r\n"
        ))
        .await;
        let id = self.line().await;
        assert!(id.starts_with(':') && id.ends_with("\r\n"), "{id:?}");
        self.expect(
            "$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        )
        .await;
    }
}

async fn plain(addr: SocketAddr) -> Raw<TcpStream> {
    Raw(BufReader::new(
        TcpStream::connect(addr).await.expect("connect"),
    ))
}

fn q(con: &mut redis::Connection, args: &[&str]) -> Value {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query::<Value>(con)
        .unwrap_or_else(|e| Value::SimpleString(format!("ERROR {e}")))
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_crate_in_resp3_mode_gets_resp3_types() {
    let (proxy, _nodes) = start(proxy::frontend()).await;
    let url = format!("redis://{}/?protocol=resp3", proxy.resp);
    tokio::task::spawn_blocking(move || {
        let mut con = redis::Client::open(url)
            .expect("url")
            .get_connection()
            .expect("connect: HELLO 3 and CLIENT SETINFO, pipelined");
        let c = &mut con;
        // The client said HELLO 3; a HELLO without a version answers in it.
        let Value::Map(hello) = q(c, &["HELLO"]) else {
            panic!("HELLO answers a map in RESP3")
        };
        assert!(hello.contains(&(bulk("proto"), Value::Int(3))), "{hello:?}");
        assert!(hello.contains(&(bulk("version"), bulk("7.2.0"))));
        assert!(hello.contains(&(bulk("server"), bulk("redis"))));
        assert_eq!(q(c, &["PING"]), Value::SimpleString("PONG".into()));
        assert_eq!(q(c, &["GET", "missing"]), Value::Nil);
        assert_eq!(q(c, &["SET", "k", "v"]), Value::Okay);
        assert_eq!(q(c, &["GET", "k"]), bulk("v"));
        assert_eq!(q(c, &["SET", "k", "x", "NX"]), Value::Nil);
        assert_eq!(q(c, &["SET", "k", "w", "GET"]), bulk("v"));
        assert_eq!(q(c, &["GETDEL", "missing"]), Value::Nil);
        assert_eq!(
            q(c, &["MGET", "k", "missing"]),
            Value::Array(vec![bulk("w"), Value::Nil])
        );
        assert_eq!(q(c, &["EXISTS", "k", "missing"]), Value::Int(1));
        assert_eq!(q(c, &["TTL", "missing"]), Value::Int(-2));
        assert_eq!(q(c, &["TTL", "k"]), Value::Int(-1));
        assert_eq!(q(c, &["INCR", "n"]), Value::Int(1));
        assert_eq!(q(c, &["DEL", "k", "n", "missing"]), Value::Int(2));
        assert_eq!(q(c, &["CLIENT", "GETNAME"]), Value::Nil);
        assert_eq!(q(c, &["CLIENT", "SETNAME", "app"]), Value::Okay);
        assert_eq!(q(c, &["CLIENT", "GETNAME"]), bulk("app"));
        assert!(matches!(q(c, &["CLIENT", "ID"]), Value::Int(id) if id > 0));
        assert_eq!(q(c, &["COMMAND", "DOCS"]), Value::Map(vec![]));
        assert_eq!(q(c, &["COMMAND", "COUNT"]), Value::Int(0));
        match q(c, &["INFO"]) {
            Value::VerbatimString { format, text } => {
                assert_eq!(format, VerbatimFormat::Text);
                assert!(
                    text.starts_with("# Server\r\nredis_version:7.2.0\r\n"),
                    "{text}"
                );
            }
            other => panic!("INFO is a verbatim string in RESP3: {other:?}"),
        }
        let e = q(c, &["FLUSHALL"]);
        assert!(
            matches!(&e, Value::SimpleString(s) if s.contains("unknown command")),
            "{e:?}"
        );
        // A pipeline, answered in order in RESP3.
        let replies: Vec<Value> = redis::pipe()
            .cmd("SET")
            .arg("p")
            .arg("1")
            .cmd("GET")
            .arg("p")
            .cmd("GET")
            .arg("nope")
            .cmd("MGET")
            .arg("nope")
            .arg("p")
            .query(c)
            .expect("pipeline");
        assert_eq!(
            replies,
            [
                Value::Okay,
                bulk("1"),
                Value::Nil,
                Value::Array(vec![Value::Nil, bulk("1")])
            ]
        );
    })
    .await
    .expect("client thread");
    proxy.stop().await.expect("proxy run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reply_is_resp3_after_hello_3_and_resp2_again_after_hello_2() {
    let (proxy, _nodes) = start(proxy::frontend()).await;
    let mut c = plain(proxy.resp).await;
    c.check(&["SET", "a", "1"], "+OK\r\n").await;
    c.check(&["GET", "nope"], "$-1\r\n").await;
    c.send(&[&["HELLO", "3"]]).await;
    c.expect_hello(3).await;
    c.check(&["GET", "nope"], "_\r\n").await;
    c.check(&["GET", "a"], "$1\r\n1\r\n").await;
    c.check(&["MGET", "a", "nope"], "*2\r\n$1\r\n1\r\n_\r\n")
        .await;
    c.check(&["SET", "a", "2", "NX"], "_\r\n").await;
    c.check(&["SET", "a", "2", "XX", "GET"], "$1\r\n1\r\n")
        .await;
    c.check(&["EXISTS", "a", "nope"], ":1\r\n").await;
    c.check(&["TTL", "nope"], ":-2\r\n").await;
    c.check(&["CLIENT", "GETNAME"], "_\r\n").await;
    c.check(&["COMMAND", "DOCS"], "%0\r\n").await;
    c.check(&["COMMAND"], "*0\r\n").await;
    c.check(&["PING"], "+PONG\r\n").await;
    c.send(&[&["INFO"]]).await;
    let len: usize = c
        .line()
        .await
        .trim_end()
        .strip_prefix('=')
        .expect("=")
        .parse()
        .expect("len");
    let mut body = vec![0; len + 2];
    c.0.read_exact(&mut body).await.expect("body");
    assert!(
        body.starts_with(b"txt:# Server\r\n"),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    // Switches inside one pipeline apply to the replies after them.
    c.send(&[
        &["HELLO", "2"],
        &["GET", "nope"],
        &["HELLO", "3"],
        &["GET", "nope"],
    ])
    .await;
    c.expect_hello(2).await;
    c.expect("$-1\r\n").await;
    c.expect_hello(3).await;
    c.expect("_\r\n").await;
    // Garbage gets Redis's errors, and the protocol stays as it was.
    c.check(
        &["HELLO", "x"],
        "-ERR Protocol version is not an integer or out of range\r\n",
    )
    .await;
    c.check(&["HELLO", "4"], "-NOPROTO unsupported protocol version\r\n")
        .await;
    c.check(
        &["HELLO", "2", "AUTH", "u"],
        "-ERR Syntax error in HELLO option 'AUTH'\r\n",
    )
    .await;
    c.check(
        &["HELLO", "2", "SETNAME", "a b"],
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
    )
    .await;
    c.check(
        &["HELLO", "2", "AUTH", "bob", "pw"],
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    )
    .await;
    c.check(&["GET", "nope"], "_\r\n").await;
    // Without tokens the default user has no password, as in Redis.
    c.send(&[&["HELLO", "2", "AUTH", "default", "pw", "SETNAME", "app"]])
        .await;
    c.expect_hello(2).await;
    c.check(&["CLIENT", "GETNAME"], "$3\r\napp\r\n").await;
    // Inline, as typed into telnet.
    c.0.get_mut()
        .write_all(b"HELLO 3\r\n")
        .await
        .expect("write");
    c.expect_hello(3).await;
    // Another connection is RESP2 until it says otherwise.
    plain(proxy.resp)
        .await
        .check(&["GET", "nope"], "$-1\r\n")
        .await;
    proxy.stop().await.expect("proxy run");
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn mint(keys: &KeySet, sub: &str, role: Role) -> String {
    let claims = Claims {
        sub: sub.into(),
        role,
        iat: now(),
        exp: now() + 600,
    };
    keys.sign(&claims).expect("sign")
}

async fn tls(addr: SocketAddr, ca: &Ca) -> Raw<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).expect("root");
    let provider = rustls::crypto::ring::default_provider();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await;
    Raw(BufReader::new(s.expect("TLS handshake")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_3_auth_with_tokens_over_tls_behaves_as_auth_does() {
    let dir = std::env::temp_dir().join(format!("distcache-resp3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    let ca = Ca::new("resp3 ca");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    std::fs::write(dir.join("front.pem"), cert).expect("write");
    std::fs::write(dir.join("front.key"), key).expect("write");
    let secret = "k1:resp3-secret-resp3-secret-resp3-secret\n";
    distcache_tests::write_private(&dir.join("auth.keys"), secret);
    let tls_cfg = TlsConfig {
        cert: Some(dir.join("front.pem")),
        key: Some(dir.join("front.key")),
        ..TlsConfig::default()
    };
    let auth = AuthConfig {
        secret_file: Some(dir.join("auth.keys")),
        ..AuthConfig::default()
    };
    let security = FrontSecurity::load(&tls_cfg, &auth).expect("security");
    let (proxy, _nodes) = start(FrontendConfig {
        security,
        ..proxy::frontend()
    })
    .await;
    let keys = KeySet::parse(secret).expect("keys");
    let (user, reader) = (
        mint(&keys, "app", Role::User),
        mint(&keys, "reader", Role::Readonly),
    );
    let mut other = KeySet::default();
    other
        .insert("k1", b"not-the-proxys-secret-not-at-all")
        .expect("key");
    let forged = mint(&other, "mallory", Role::Admin);

    let noauth = "-NOAUTH Authentication required.\r\n";
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    let mut c = tls(proxy.resp, &ca).await;
    c.check(&["HELLO", "3"], "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n").await;
    c.check(&["GET", "k"], noauth).await;
    c.check(&["HELLO", "3", "AUTH", "default", &forged], wrongpass)
        .await;
    c.check(
        &["HELLO", "4", "AUTH", "default", &user],
        "-NOPROTO unsupported protocol version\r\n",
    )
    .await;
    c.check(&["GET", "k"], noauth).await;
    c.send(&[&["HELLO", "3", "AUTH", "default", &reader, "SETNAME", "dash"]])
        .await;
    c.expect_hello(3).await;
    c.check(&["GET", "k"], "_\r\n").await;
    c.check(
        &["SET", "k", "v"],
        "-NOPERM User reader has no permissions to run the 'set' command\r\n",
    )
    .await;
    c.check(&["CLIENT", "GETNAME"], "$4\r\ndash\r\n").await;

    // Logging in and working in one write: what follows the HELLO is read
    // with the limits the login earned, and answered in RESP3.
    let mut w = tls(proxy.resp, &ca).await;
    w.send(&[
        &["HELLO", "3", "AUTH", "default", &user],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["GET", "nope"],
    ])
    .await;
    w.expect_hello(3).await;
    w.expect("+OK\r\n$1\r\nv\r\n_\r\n").await;
    c.check(&["GET", "k"], "$1\r\nv\r\n").await;

    let m = http_get(proxy.admin, "/metrics").await.1;
    let metric = |series: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series}\n{m}"))
    };
    assert_eq!(
        metric("distcache_proxy_auth_failures_total{reason=\"missing\"}"),
        2
    );
    assert_eq!(
        metric("distcache_proxy_auth_failures_total{reason=\"bad_signature\"}"),
        1
    );
    assert_eq!(metric("distcache_proxy_permission_denied_total"), 1);
    proxy.stop().await.expect("proxy run");
    let _ = std::fs::remove_dir_all(dir);
}
