//! The proxy's front ends secured and shut down: RESP and gRPC over TLS
//! (certificates made here with rcgen), RESP `AUTH` and gRPC bearer tokens
//! with roles, and a shutdown that drains requests already received. The
//! proxy runs in-process over real nodes on 127.0.0.1:0; RESP is spoken as
//! raw bytes so the same client works over TCP and TLS.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient, operation};
use distcache_proxy::{FrontSecurity, FrontendConfig};
use distcache_serve::security::config::{AuthConfig, TlsConfig};
use distcache_serve::security::{Claims, KeySet, Role};
use distcache_tests::tls::Ca;
use distcache_tests::{TestNode, TestProxy, eventually, http_get, test_config};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, RootCertStore, pki_types::ServerName};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distcache-front-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A proxy running in-process over two nodes.
struct Front {
    proxy: TestProxy,
    nodes: Vec<TestNode>,
}

impl std::ops::Deref for Front {
    type Target = TestProxy;
    fn deref(&self) -> &TestProxy {
        &self.proxy
    }
}

impl Front {
    async fn start(config: FrontendConfig) -> Self {
        let nodes = vec![
            TestNode::start(test_config()).await,
            TestNode::start(test_config()).await,
        ];
        let backend = TestProxy::backend(nodes.iter().map(TestNode::url).collect()).await;
        let proxy = TestProxy::start(backend, config).await;
        Self { proxy, nodes }
    }

    /// Starts shutdown and waits for `run` to return.
    async fn stop(self) -> Vec<TestNode> {
        self.proxy.stop().await.expect("proxy run");
        self.nodes
    }

    async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.1
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Reads one reply as text: `+OK`, `-ERR …`, `:1`, a bulk's contents,
/// `(nil)`, or an array's elements in brackets.
fn read_reply<'a, S: AsyncRead + Unpin + Send>(
    s: &'a mut BufReader<S>,
) -> Pin<Box<dyn Future<Output = std::io::Result<String>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        if s.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end().to_owned();
        match line.as_bytes().first() {
            Some(b'$') if line == "$-1" => Ok("(nil)".into()),
            Some(b'$') => {
                let n: usize = line[1..].parse().expect("bulk length");
                let mut buf = vec![0; n + 2];
                s.read_exact(&mut buf).await?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            }
            Some(b'*') => {
                let n: usize = line[1..].parse().expect("array length");
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(read_reply(s).await?);
                }
                Ok(format!("[{}]", items.join(",")))
            }
            _ => Ok(line),
        }
    })
}

/// A RESP connection over any stream.
struct Resp<S>(BufReader<S>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Resp<S> {
    async fn cmd(&mut self, args: &[&str]) -> String {
        self.0
            .get_mut()
            .write_all(&encode(args))
            .await
            .expect("write");
        read_reply(&mut self.0).await.expect("reply")
    }
}

async fn plain(addr: SocketAddr) -> Resp<TcpStream> {
    Resp(BufReader::new(
        TcpStream::connect(addr).await.expect("connect"),
    ))
}

fn tls_client(ca: &Ca) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).expect("root");
    let provider = rustls::crypto::ring::default_provider();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn tls(
    addr: SocketAddr,
    ca: &Ca,
) -> std::io::Result<Resp<tokio_rustls::client::TlsStream<TcpStream>>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let s = tls_client(ca).connect(name, tcp).await?;
    Ok(Resp(BufReader::new(s)))
}

/// The value of the series whose line starts with `series` on `/metrics`.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_and_grpc_over_tls() {
    let dir = scratch("tls");
    let ca = Ca::new("front ca");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    std::fs::write(dir.join("front.pem"), cert).expect("write");
    std::fs::write(dir.join("front.key"), key).expect("write");
    // The prototype's form: --use-tls --tls-config FILE, paths relative to it.
    std::fs::write(
        dir.join("tls.toml"),
        "cert = \"front.pem\"\nkey = \"front.key\"\nhandshake_timeout = \"300ms\"\n",
    )
    .expect("write");
    let tls_cfg = TlsConfig::from_file(&dir.join("tls.toml")).expect("tls config");
    let security = FrontSecurity::load(&tls_cfg, &AuthConfig::default()).expect("security");
    let front = Front::start(FrontendConfig {
        security,
        ..FrontendConfig::default()
    })
    .await;

    let mut c = tls(front.resp, &ca).await.expect("TLS handshake");
    assert_eq!(c.cmd(&["PING"]).await, "+PONG");
    assert_eq!(c.cmd(&["SET", "greeting", "hello"]).await, "+OK");
    assert_eq!(c.cmd(&["GET", "greeting"]).await, "hello");

    // A client that never speaks holds no one up and is dropped after the
    // handshake deadline.
    let mut silent = TcpStream::connect(front.resp).await.expect("connect");
    let mut other = tls(front.resp, &ca).await.expect("served meanwhile");
    assert_eq!(other.cmd(&["GET", "greeting"]).await, "hello");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("closed by the handshake deadline");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // Plaintext RESP to the TLS port gets no answer, only a closed connection.
    let mut p = plain(front.resp).await;
    p.0.get_mut()
        .write_all(&encode(&["PING"]))
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = p.0.read_to_end(&mut got).await;
    assert!(!String::from_utf8_lossy(&got).contains("PONG"), "{got:?}");
    // An untrusting client fails its handshake; neither hurts the others.
    assert!(tls(front.resp, &Ca::new("other ca")).await.is_err());
    assert_eq!(c.cmd(&["GET", "greeting"]).await, "hello");
    let m = front.metrics().await;
    assert!(
        metric(&m, "distcache_proxy_resp_tls_handshake_failures_total") >= 3,
        "{m}"
    );

    // gRPC over TLS with the CA; plaintext gRPC is refused.
    let tls_cfg = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    let ch = Channel::from_shared(format!("https://{}", front.grpc))
        .expect("url")
        .tls_config(tls_cfg)
        .expect("tls")
        .connect()
        .await
        .expect("gRPC over TLS");
    let got = CacheServiceClient::new(ch)
        .get(pb::GetRequest {
            key: "greeting".into(),
            ..Default::default()
        })
        .await
        .expect("get");
    assert_eq!(&got.get_ref().value[..], b"hello");
    let plain_grpc = async {
        let ch = Channel::from_shared(format!("http://{}", front.grpc))
            .ok()?
            .connect()
            .await
            .ok()?;
        CacheServiceClient::new(ch)
            .get(pb::GetRequest {
                key: "k".into(),
                ..Default::default()
            })
            .await
            .ok()
    };
    assert!(plain_grpc.await.is_none(), "plaintext gRPC was served");
    front.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn mint(keys: &KeySet, sub: &str, role: Role, exp: u64) -> String {
    keys.sign(&Claims {
        sub: sub.into(),
        role,
        iat: now(),
        exp,
    })
    .expect("sign")
}

/// The status code of an RPC's result (`Code::Ok` for an answer).
fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.map_or_else(|s| s.code(), |_| Code::Ok)
}

fn bearer<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        let v = format!("Bearer {t}").parse().expect("ascii");
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// A proxy over two nodes whose front ends require tokens signed by the
/// returned keys.
async fn token_front(tag: &str, config: FrontendConfig) -> (Front, KeySet) {
    let dir = scratch(tag);
    let file = dir.join("auth.keys");
    distcache_tests::write_private(&file, "k1:front-secret-front-secret-front-secret\n");
    let auth = AuthConfig {
        secret_file: Some(file.clone()),
        ..AuthConfig::default()
    };
    let security = FrontSecurity::load(&TlsConfig::default(), &auth).expect("security");
    let front = Front::start(FrontendConfig { security, ..config }).await;
    let keys = KeySet::parse(&std::fs::read_to_string(&file).expect("read")).expect("keys");
    (front, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_on_resp_and_grpc() {
    let (front, keys) = token_front("auth", FrontendConfig::default()).await;
    let user = mint(&keys, "app", Role::User, now() + 600);
    let readonly = mint(&keys, "reader", Role::Readonly, now() + 600);
    let expired = mint(&keys, "app", Role::User, now() - 600);
    let mut other = KeySet::default();
    other
        .insert("k1", b"not-the-proxys-secret-not-at-all")
        .expect("key");
    let forged = mint(&other, "mallory", Role::Admin, now() + 600);

    // RESP, like Redis with requirepass.
    let mut c = plain(front.resp).await;
    assert_eq!(c.cmd(&["PING"]).await, "-NOAUTH Authentication required.");
    assert_eq!(
        c.cmd(&["SET", "k", "v"]).await,
        "-NOAUTH Authentication required."
    );
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.";
    assert_eq!(c.cmd(&["AUTH", &forged]).await, wrongpass);
    assert_eq!(c.cmd(&["AUTH", "default", &expired]).await, wrongpass);
    assert_eq!(c.cmd(&["AUTH", &user]).await, "+OK");
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, "+OK");
    assert_eq!(c.cmd(&["GET", "k"]).await, "v");
    assert_eq!(c.cmd(&["INCR", "n"]).await, ":1");

    let mut r = plain(front.resp).await;
    let hello = r.cmd(&["HELLO", "2", "AUTH", "default", &readonly]).await;
    assert!(hello.starts_with("[server,redis,"), "{hello}");
    assert_eq!(r.cmd(&["GET", "k"]).await, "v");
    assert_eq!(
        r.cmd(&["SET", "k", "w"]).await,
        "-NOPERM User reader has no permissions to run the 'set' command"
    );
    assert_eq!(
        r.cmd(&["DEL", "k"]).await.split(' ').next(),
        Some("-NOPERM")
    );
    assert_eq!(
        r.cmd(&["GET", "k"]).await,
        "v",
        "the refused writes did nothing"
    );

    let m = front.metrics().await;
    let failures = |reason: &str| {
        metric(
            &m,
            &format!("distcache_proxy_auth_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(failures("missing"), 2, "{m}");
    assert_eq!(failures("bad_signature"), 1);
    assert_eq!(failures("expired"), 1);
    assert_eq!(metric(&m, "distcache_proxy_permission_denied_total"), 2);

    // gRPC: the node's rules, on the proxy's CacheService.
    let ch = Channel::from_shared(format!("http://{}", front.grpc))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut g = CacheServiceClient::new(ch.clone());
    let get = || pb::GetRequest {
        key: "k".into(),
        ..Default::default()
    };
    let set = || pb::SetRequest {
        key: "k".into(),
        value: "g".into(),
        ..Default::default()
    };
    assert_eq!(
        code(g.get(bearer(get(), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(g.get(bearer(get(), Some(&forged))).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(g.get(bearer(get(), Some(&expired))).await),
        Code::Unauthenticated
    );
    assert_eq!(code(g.get(bearer(get(), Some(&readonly))).await), Code::Ok);
    assert_eq!(
        code(g.set(bearer(set(), Some(&readonly))).await),
        Code::PermissionDenied
    );
    let batch = || pb::BatchRequest {
        operations: vec![pb::Operation {
            op: Some(operation::Op::Set(set())),
        }],
    };
    assert_eq!(
        code(g.batch(bearer(batch(), Some(&readonly))).await),
        Code::PermissionDenied,
        "a batch with a write needs a user token"
    );
    assert_eq!(
        code(
            g.get_metrics(bearer(pb::GetMetricsRequest::default(), Some(&user)))
                .await
        ),
        Code::PermissionDenied,
        "metrics are for admins"
    );
    assert_eq!(code(g.set(bearer(set(), Some(&user))).await), Code::Ok);
    assert_eq!(code(g.batch(bearer(batch(), Some(&user))).await), Code::Ok);
    let health = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    assert!(health.is_ok(), "grpc.health.v1 is open: {health:?}");
    assert_eq!(c.cmd(&["GET", "k"]).await, "g");
    front.stop().await;
    let _ = std::fs::remove_dir_all(scratch("auth"));
}

/// What one pipelining client saw: replies in order, then how it ended.
#[derive(Debug)]
struct Seen {
    replies: Vec<String>,
    end: String,
}

/// Sends `n` SETs on one connection in one go and reads replies until the
/// proxy closes the connection.
async fn pipeline(addr: SocketAddr, client: usize, n: usize, replies: Arc<AtomicUsize>) -> Seen {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = tokio::io::split(stream);
    let mut out = Vec::new();
    for i in 0..n {
        out.extend(encode(&[
            "SET",
            &format!("drain:{client}:{i}"),
            &format!("v{i}"),
        ]));
    }
    // The proxy may close before reading everything: write errors are expected.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&out).await;
        write
    });
    let mut read = BufReader::new(read);
    let mut seen = Seen {
        replies: Vec::new(),
        end: String::new(),
    };
    loop {
        match read_reply(&mut read).await {
            Ok(r) => {
                seen.replies.push(r);
                replies.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                seen.end = e.kind().to_string();
                break;
            }
        }
    }
    drop(writer.await);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_already_received() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 3_000;
    let front = Front::start(FrontendConfig {
        shutdown_grace: Duration::from_secs(30),
        ..FrontendConfig::default()
    })
    .await;
    let replies = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(pipeline(front.resp, c, PER_CLIENT, replies.clone())))
        .collect();
    // Shut down while every client still has requests outstanding.
    eventually(Duration::from_secs(60), || {
        let n = replies.load(Ordering::Relaxed);
        async move { n >= 100 }
    })
    .await
    .expect("replies started");
    let (resp, grpc, backend) = (front.resp, front.grpc, front.backend.clone());
    let nodes = front.stop().await;
    assert_eq!(
        backend.resp_connections.load(Ordering::Relaxed),
        0,
        "run returned while RESP connections were still serving"
    );
    assert!(
        TcpStream::connect(resp).await.is_err(),
        "RESP still accepts"
    );
    assert!(
        TcpStream::connect(grpc).await.is_err(),
        "gRPC still accepts"
    );

    let mut acked = Vec::new();
    let mut total = 0;
    for (c, task) in clients.into_iter().enumerate() {
        let seen = task.await.expect("client");
        assert_eq!(
            seen.end,
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof)
                .kind()
                .to_string(),
            "client {c} ended mid-reply or with an error: {seen:?}"
        );
        for (i, r) in seen.replies.iter().enumerate() {
            // An upstream error (a loaded machine) is still an answer; only
            // +OK promises a write.
            assert!(
                r == "+OK" || r.starts_with("-ERR"),
                "client {c}, request {i}: {r}"
            );
            if r == "+OK" {
                acked.push((format!("drain:{c}:{i}"), format!("v{i}")));
            }
        }
        total += seen.replies.len();
    }
    assert!(
        total < CLIENTS * PER_CLIENT,
        "shutdown came after everything was done: the test proves nothing"
    );
    // Every acknowledged write took effect on the nodes. The proxy writes
    // with consistency One, so under load an acknowledged write may be on
    // one replica only (the other skipped as unhealthy): read from all.
    let upstream = backend.client.stats();
    let client = distcache::Client::builder()
        .nodes(nodes.iter().map(TestNode::url).collect::<Vec<_>>())
        .replicas(2)
        .read_consistency(distcache::Consistency::All)
        .timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("client");
    for chunk in acked.chunks(1000) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let got = client.mget(&keys).await.expect("mget");
        for ((k, v), e) in chunk.iter().zip(got) {
            assert_eq!(
                e.map(|e| e.value),
                Some(bytes::Bytes::from(v.clone())),
                "{k} (proxy upstream: {upstream:?})"
            );
        }
    }
}

/// Reads until the proxy closes the connection (bounded: the test fails
/// if it is still open after 20 s).
async fn closed<S: AsyncRead + Unpin + Send>(c: &mut Resp<S>) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(20), c.0.read_to_end(&mut rest)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_auth_a_connection_gets_small_limits_and_a_deadline() {
    let (front, keys) = token_front(
        "preauth",
        FrontendConfig {
            login_timeout: Duration::from_millis(400),
            ..FrontendConfig::default()
        },
    )
    .await;
    let user = mint(&keys, "app", Role::User, now() + 600);
    // Redis's limits before AUTH: 10 arguments, 16 KiB each.
    let mut c = plain(front.resp).await;
    let eleven = vec!["x"; 11];
    let refused = c.cmd(&eleven).await;
    assert!(
        refused.starts_with("-ERR Protocol error: argument count"),
        "{refused}"
    );
    assert!(closed(&mut c).await);
    let mut c = plain(front.resp).await;
    let big = "v".repeat(20 * 1024);
    let refused = c.cmd(&["SET", "k", &big]).await;
    assert!(
        refused.starts_with("-ERR Protocol error: bulk length"),
        "{refused}"
    );
    assert!(closed(&mut c).await);

    // AUTH and a 1 MiB SET in one write: the SET is read with the limits
    // the AUTH earned.
    let mut c = plain(front.resp).await;
    let value = "v".repeat(1 << 20);
    let mut both = encode(&["AUTH", &user]);
    both.extend(encode(&["SET", "big", &value]));
    c.0.get_mut().write_all(&both).await.expect("write");
    assert_eq!(read_reply(&mut c.0).await.expect("auth"), "+OK");
    assert_eq!(read_reply(&mut c.0).await.expect("set"), "+OK");
    // Logged in, it may stay idle past the login timeout.
    let mut quiet = plain(front.resp).await;
    assert_eq!(quiet.cmd(&["AUTH", &user]).await, "+OK");

    // A connection that never logs in, and one that never says a word, are
    // closed once the login timeout passes.
    let mut noauth = plain(front.resp).await;
    assert_eq!(
        noauth.cmd(&["PING"]).await,
        "-NOAUTH Authentication required."
    );
    let mut silent = plain(front.resp).await;
    assert!(closed(&mut noauth).await);
    assert!(closed(&mut silent).await);
    eventually(Duration::from_secs(10), || async {
        metric(
            &front.metrics().await,
            "distcache_proxy_resp_login_timeouts_total",
        ) >= 2
    })
    .await
    .expect("login timeouts counted");
    assert_eq!(quiet.cmd(&["GET", "big"]).await.len(), 1 << 20);
    front.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let front = Front::start(FrontendConfig {
        max_connections_per_ip: 2,
        ..FrontendConfig::default()
    })
    .await;
    let mut a = plain(front.resp).await;
    let mut b = plain(front.resp).await;
    assert_eq!(a.cmd(&["PING"]).await, "+PONG");
    assert_eq!(b.cmd(&["PING"]).await, "+PONG");
    let mut third = plain(front.resp).await;
    assert!(
        closed(&mut third).await,
        "a third connection is closed at once"
    );
    assert_eq!(
        metric(
            &front.metrics().await,
            "distcache_proxy_resp_refused_per_ip_total"
        ),
        1
    );
    drop(a);
    eventually(Duration::from_secs(10), || async {
        let mut c = plain(front.resp).await;
        tokio::time::timeout(Duration::from_secs(2), read_after_ping(&mut c))
            .await
            .is_ok_and(|r| r.as_deref().is_ok_and(|r| r == "+PONG"))
    })
    .await
    .expect("a slot comes back when a connection closes");
    assert_eq!(b.cmd(&["PING"]).await, "+PONG");
    front.stop().await;
}

async fn read_after_ping(c: &mut Resp<TcpStream>) -> std::io::Result<String> {
    c.0.get_mut().write_all(&encode(&["PING"])).await?;
    read_reply(&mut c.0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_buffer_past_its_limit_closes_the_connection() {
    let front = Front::start(FrontendConfig {
        resp_limits: distcache_proxy::resp::Limits {
            max_query: 64 * 1024,
            ..distcache_proxy::resp::Limits::default()
        },
        ..FrontendConfig::default()
    })
    .await;
    let mut c = plain(front.resp).await;
    // A 1 MiB argument announced and 100 KiB of it sent: more than may wait.
    let mut partial = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n".to_vec();
    partial.extend(std::iter::repeat_n(b'v', 100 * 1024));
    c.0.get_mut().write_all(&partial).await.expect("write");
    let refused = read_reply(&mut c.0).await.expect("reply");
    assert!(
        refused.starts_with("-ERR Protocol error: query buffer"),
        "{refused}"
    );
    assert!(closed(&mut c).await);
    let mut d = plain(front.resp).await;
    assert_eq!(d.cmd(&["PING"]).await, "+PONG");
    front.stop().await;
}

/// The proxy's gRPC port is bounded as a node's is: past `grpc_max_in_flight`
/// requests in flight, more get RESOURCE_EXHAUSTED at once (health checks
/// still answer), instead of piling up without limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_in_flight_are_bounded() {
    // A node that accepts connections and never answers: requests hang
    // until their deadline, holding their in-flight slots.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend =
        TestProxy::backend(vec![format!("http://{}", hole.local_addr().expect("addr"))]).await;
    let proxy = TestProxy::start(
        backend,
        FrontendConfig {
            grpc_max_in_flight: 2,
            ..FrontendConfig::default()
        },
    )
    .await;
    let channel = Channel::from_shared(format!("http://{}", proxy.grpc))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let get = |c: Channel| async move {
        CacheServiceClient::new(c)
            .get(pb::GetRequest {
                key: "k".into(),
                ..Default::default()
            })
            .await
    };
    // Two requests that hang; each tries again if it was refused (a probe
    // below may have held a slot for a moment).
    let hung: Vec<_> = (0..2)
        .map(|_| {
            let c = channel.clone();
            tokio::spawn(async move {
                while get(c.clone())
                    .await
                    .is_err_and(|s| s.code() == Code::ResourceExhausted)
                {}
            })
        })
        .collect();
    // (A probe that got a slot, because it overtook the two above, is
    // cancelled by its timeout and gives the slot back.)
    eventually(Duration::from_secs(10), || async {
        tokio::time::timeout(Duration::from_millis(500), get(channel.clone()))
            .await
            .is_ok_and(|r| r.is_err_and(|s| s.code() == Code::ResourceExhausted))
    })
    .await
    .expect("a third request is refused while two are in flight");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health checks are exempt");
    for h in hung {
        h.abort();
    }
    drop(hole);
    proxy.stop().await.expect("stop");
}
