//! The proxy following DNS, with a loopback DNS server ([`TestDns`]) in
//! front of real nodes: `dns+srv://` as a Kubernetes StatefulSet behind a
//! headless Service publishes it (stable target names, addresses that change
//! when a pod restarts), and `dns://` with `--discovery-health-ids`, nodes
//! on 127.0.0.1 to 127.0.0.4 on one port, named by the id each reports.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distcache_proxy::membership::{self, Discovery, NodeAccess, Poller, Source};
use distcache_serve::security::{Claims, KeySet, Role};
use distcache_tests::tls::Ca;
use distcache_tests::{
    ClusterNode, TestDns, TestNode, TestProxy, Zone, cluster, eventually, proxy, restart_named,
    test_config,
};

const LIMIT: Duration = Duration::from_secs(20);
/// The SRV name of the nodes' `grpc` port.
const SRV: &str = "_grpc._tcp.distcache.test";

/// A proxy whose membership follows a discovery source.
struct Proxy {
    proxy: TestProxy,
    poller: Option<Poller>,
}

impl std::ops::Deref for Proxy {
    type Target = TestProxy;
    fn deref(&self) -> &TestProxy {
        &self.proxy
    }
}

impl Proxy {
    /// Reads `discovery` once, builds the client (moves with a short grace)
    /// and polls it.
    async fn start(discovery: Discovery) -> Self {
        let nodes = membership::initial(&discovery).await.expect("first list");
        let r = distcache::RebalanceConfig {
            grace: Duration::from_millis(300),
            ..distcache::RebalanceConfig::default()
        };
        let backend = TestProxy::backend_with(nodes, r).await;
        let poller = membership::spawn(discovery, backend.clone());
        let proxy = TestProxy::start(backend, proxy::frontend()).await;
        Self {
            proxy,
            poller: Some(poller),
        }
    }

    /// Polls `/ring` until it lists exactly `want` (name, URL) and no move
    /// is in progress.
    async fn wait_members(&self, want: &[(String, String)]) {
        let reached = eventually(LIMIT, || async {
            self.ring_members().await == want && self.phase().await == "stable"
        })
        .await;
        assert!(
            reached.is_ok(),
            "ring {:?} ({}), wanted {want:?}",
            self.ring_members().await,
            self.phase().await
        );
    }

    /// Writes `keys` through the proxy's Redis front end.
    async fn set_all(&self, keys: &[(String, String)]) {
        let keys = keys.to_vec();
        self.redis(move |c| {
            for (k, v) in keys {
                let _: () = redis::cmd("SET").arg(&k).arg(&v).query(c).expect("set");
            }
        })
        .await;
    }

    /// Checks that every one of `keys` reads its value through the proxy.
    async fn check_all(&self, keys: &[(String, String)]) {
        let keys = keys.to_vec();
        self.redis(move |c| {
            for (k, want) in keys {
                let got: Option<String> = redis::cmd("GET").arg(&k).query(c).expect("get");
                assert_eq!(got.as_ref(), Some(&want), "{k}");
            }
        })
        .await;
    }

    /// Runs `f` on a Redis connection to the proxy, on a blocking thread.
    async fn redis<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> T + Send + 'static,
    ) -> T {
        let url = format!("redis://{}/", self.resp);
        tokio::task::spawn_blocking(move || {
            let mut con = redis::Client::open(url)
                .expect("url")
                .get_connection()
                .expect("connect");
            f(&mut con)
        })
        .await
        .expect("redis task")
    }

    async fn stop(mut self) {
        if let Some(p) = self.poller.take() {
            p.stop().await;
        }
        self.proxy.stop().await.expect("proxy run");
    }
}

/// `source` polled every 50 ms, asking `dns`.
fn discovery(source: &str, dns: &TestDns) -> Discovery {
    Discovery {
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        dns_server: Some(dns.addr),
        ..Discovery::new(Source::parse_discovery(source).expect("source"))
    }
}

/// The stable host name of the StatefulSet's pod `i`.
fn pod(i: usize) -> String {
    format!("distcache-{i}.distcache.test")
}

/// Publishes `nodes` as a headless Service's SRV records: pod `i` is the
/// target `pod(i)` on its node's port, with address 127.0.0.1.
fn statefulset(dns: &TestDns, nodes: &[ClusterNode]) {
    dns.update(|z| {
        let records = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (pod(i), n.addr.port()));
        z.srv.insert(SRV.into(), records.collect());
        z.hosts.clear();
        for (i, n) in nodes.iter().enumerate() {
            z.hosts.insert(pod(i), vec![n.addr.ip()]);
        }
    });
}

/// What `/ring` should list for `nodes` published by [`statefulset`].
fn pods(nodes: &[ClusterNode]) -> Vec<(String, String)> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (pod(i), n.url()))
        .collect()
}

fn keys(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{prefix}:{i}"), format!("v{i}")))
        .collect()
}

/// 3 → 4 nodes through SRV records: the nodes are named by their targets,
/// the fourth joins (its address looked up, since the answer no longer
/// carries the targets' addresses), the data moves, and every key written
/// before reads its value and is held by every owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_targets_name_the_nodes_and_a_fourth_joins_with_the_data() {
    let n = cluster(4).await.expect("cluster");
    let dns = TestDns::start(Zone {
        glue: true,
        ..Zone::default()
    })
    .await;
    statefulset(&dns, &n[..3]);
    let proxy = Proxy::start(discovery(&format!("dns+srv://{SRV}"), &dns)).await;
    assert_eq!(proxy.ring_members().await, pods(&n[..3]));
    let written = keys("srv", 300);
    proxy.set_all(&written).await;

    dns.update(|z| z.glue = false);
    statefulset(&dns, &n);
    proxy.wait_members(&pods(&n)).await;
    assert_eq!(
        proxy.metric("distcache_proxy_ring_changes_total").await,
        1.0
    );
    assert_eq!(proxy.metric("distcache_proxy_moves_total").await, 1.0);
    proxy.check_all(&written).await;
    let members = proxy.backend.client.members();
    for (k, want) in &written {
        for owner in proxy.backend.client.owners(k) {
            let url = &members
                .iter()
                .find(|(name, _)| *name == owner)
                .expect("member")
                .1;
            let node = n.iter().find(|x| x.url() == *url).expect("node");
            let held = node.raw_get(k).await.expect("raw get");
            assert!(held.found, "{owner} lacks {k}");
            assert_eq!(
                String::from_utf8_lossy(&held.value),
                want.as_str(),
                "{owner}: {k}"
            );
        }
    }
    assert_eq!(
        proxy.metric("distcache_proxy_discovery_errors_total").await,
        0.0
    );
    proxy.stop().await;
}

/// A pod restarted on a new address under its stable name: the proxy
/// reconnects it (counted as a readdress), the ring does not change, no
/// data moves, and the keys still read. Then an NXDOMAIN answer is counted
/// as an error and the nodes stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_restarted_at_a_new_address_keeps_its_place_on_the_ring() {
    let mut n = cluster(3).await.expect("cluster");
    let dns = TestDns::start(Zone {
        glue: true,
        ..Zone::default()
    })
    .await;
    statefulset(&dns, &n);
    let proxy = Proxy::start(discovery(&format!("dns+srv://{SRV}"), &dns)).await;
    assert_eq!(proxy.ring_members().await, pods(&n));
    let written = keys("pod", 100);
    proxy.set_all(&written).await;

    let old = n[1].url();
    n[1].kill();
    n[1] = ClusterNode::start().await.expect("restart");
    assert_ne!(n[1].url(), old);
    statefulset(&dns, &n);
    proxy.wait_members(&pods(&n)).await;
    assert_eq!(
        proxy.metric("distcache_proxy_node_readdresses_total").await,
        1.0
    );
    assert_eq!(
        proxy.metric("distcache_proxy_ring_changes_total").await,
        0.0
    );
    assert_eq!(proxy.metric("distcache_proxy_moves_total").await, 0.0);
    proxy.check_all(&written).await;

    dns.update(|z| z.srv.clear());
    eventually(LIMIT, || async {
        proxy.metric("distcache_proxy_discovery_errors_total").await > 0.0
    })
    .await
    .expect("NXDOMAIN counted");
    assert_eq!(proxy.ring_members().await, pods(&n));
    proxy.stop().await;
}

/// Nodes named `ids` on 127.0.0.1, 127.0.0.2, …, all on one port (a
/// `dns://` source names one port), with that port also free on the next
/// address; returns the port and the nodes.
async fn nodes_on_one_port(ids: &[&str]) -> (u16, Vec<ClusterNode>) {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut nodes = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match ClusterNode::start_named(loopback(i + 1, port), Some(id)).await {
                Ok(node) => nodes.push(node),
                Err(_) => break,
            }
        }
        let next_free = std::net::TcpListener::bind(loopback(ids.len() + 1, port)).is_ok();
        if nodes.len() == ids.len() && next_free {
            return (port, nodes);
        }
    }
    panic!("no port free on 127.0.0.1 to 127.0.0.{}", ids.len() + 1);
}

/// `127.0.0.i:port`.
fn loopback(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, u8::try_from(i).expect("small")], port))
}

/// `--discovery-health-ids`: the ring is keyed by the ids the nodes report;
/// an address with no node is left out without an error; a node reporting
/// an id another address has is refused, naming both, and the membership
/// stays; once it reports its own id it joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ids_name_dns_nodes_by_the_ids_they_report() {
    let (port, n) = nodes_on_one_port(&["cache-a", "cache-b", "cache-c"]).await;
    let name = "nodes.distcache.test";
    let dns = TestDns::start(Zone::default()).await;
    let publish = |count: usize| {
        dns.update(|z| {
            let ips = (1..=count).map(|i| loopback(i, port).ip()).collect();
            z.hosts.insert(name.into(), ips);
        });
    };
    publish(3);
    let d = Discovery {
        health_ids: true,
        ..discovery(&format!("dns://{name}:{port}"), &dns)
    };
    let proxy = Proxy::start(d.clone()).await;
    let named = |ids: &[&str]| -> Vec<(String, String)> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                (
                    (*id).to_owned(),
                    format!("http://{}", loopback(i + 1, port)),
                )
            })
            .collect()
    };
    assert_eq!(
        proxy.ring_members().await,
        named(&["cache-a", "cache-b", "cache-c"])
    );
    assert_eq!(n.len(), 3);

    // 127.0.0.4 has no node yet: left out, and no error.
    publish(4);
    dns.wait_queries(8).await;
    assert_eq!(
        proxy.ring_members().await,
        named(&["cache-a", "cache-b", "cache-c"])
    );
    assert_eq!(
        proxy.metric("distcache_proxy_discovery_errors_total").await,
        0.0
    );

    // A node there reporting cache-a: the answer is refused.
    let mut twin = ClusterNode::start_named(loopback(4, port), Some("cache-a"))
        .await
        .expect("twin");
    eventually(LIMIT, || async {
        proxy.metric("distcache_proxy_discovery_errors_total").await > 0.0
    })
    .await
    .expect("the collision counted");
    assert_eq!(
        proxy.ring_members().await,
        named(&["cache-a", "cache-b", "cache-c"])
    );
    let e = d.fetch_once().await.expect_err("two nodes named cache-a");
    let shown = e.to_string();
    assert!(
        shown.contains(&format!(
            "{} and {} are both named \"cache-a\"",
            loopback(1, port),
            loopback(4, port)
        )) && shown.contains("--node-id"),
        "{shown}"
    );

    // It comes back with its own id: it joins.
    twin.kill();
    let _own = restart_named(loopback(4, port), Some("cache-d"))
        .await
        .expect("restart");
    proxy
        .wait_members(&named(&["cache-a", "cache-b", "cache-c", "cache-d"]))
        .await;
    proxy.stop().await;
}

/// The health-id probes use the proxy's CA and token: a node that requires
/// both is named when the probe has them, and not without either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_id_probes_use_the_proxys_tls_and_token() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("distcache test CA");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    let secret = "k1:0123456789abcdef0123456789abcdef";
    for (file, text) in [
        ("node.pem", &cert),
        ("node.key", &key),
        ("keys", &secret.to_owned()),
    ] {
        distcache_tests::write_private(&dir.path().join(file), text);
    }
    let mut config = test_config();
    config.server.node_id = "cache-tls".into();
    config.tls.cert = Some(dir.path().join("node.pem"));
    config.tls.key = Some(dir.path().join("node.key"));
    config.auth.secret_file = Some(dir.path().join("keys"));
    let node = TestNode::spawn(config).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = KeySet::parse(secret)
        .expect("keys")
        .sign(&Claims {
            sub: "proxy".into(),
            role: Role::Readonly,
            iat: now,
            exp: now + 3600,
        })
        .expect("token");
    let dns = TestDns::start(Zone::default()).await;
    dns.update(|z| {
        z.hosts
            .insert("tls.distcache.test".into(), vec![node.grpc.ip()]);
    });
    let probe = |tls_ca: Option<Vec<u8>>, token: Option<String>| Discovery {
        health_ids: true,
        access: NodeAccess {
            tls_ca,
            identity: None,
            token,
        },
        ..discovery(
            &format!("dns://tls.distcache.test:{}", node.grpc.port()),
            &dns,
        )
    };
    let both = probe(Some(ca.pem().into_bytes()), Some(token.clone()));
    eventually(LIMIT, || async { both.fetch_once().await.is_ok() })
        .await
        .expect("the node answers the proxy's probe");
    assert_eq!(
        both.fetch_once().await.expect("named"),
        [format!("cache-tls={}", node.grpc)]
    );
    for (what, d) in [
        ("no token", probe(Some(ca.pem().into_bytes()), None)),
        ("no TLS", probe(None, Some(token.clone()))),
    ] {
        let e = d.fetch_once().await.expect_err(what);
        assert!(
            e.to_string().contains("none of 1 addresses answered"),
            "{what}: {e}"
        );
    }
    node.stop().await.expect("node");
}
