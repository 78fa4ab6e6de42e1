//! The proxy following membership at run time: Consul and JSON-list HTTP
//! discovery served by wiremock, and a rewritten cluster file, in front of
//! real nodes, with Redis writes going on throughout.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distcache_proxy::membership::{self, Discovery, Poller, Source};
use distcache_tests::{ClusterNode, TestProxy, cluster, eventually, http_get, proxy};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const LIMIT: Duration = Duration::from_secs(20);

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
    /// A proxy whose membership follows `source`, polled every 50 ms.
    async fn start(source: Source) -> Self {
        Self::start_with(source, distcache::RebalanceConfig::default()).await
    }

    /// [`Proxy::start`] with its moves configured by `r`.
    async fn start_with(source: Source, r: distcache::RebalanceConfig) -> Self {
        Self::start_discovery(
            Discovery {
                interval: Duration::from_millis(50),
                timeout: Duration::from_secs(2),
                ..Discovery::new(source)
            },
            r,
        )
        .await
    }

    /// A proxy following `discovery`.
    async fn start_discovery(discovery: Discovery, r: distcache::RebalanceConfig) -> Self {
        let nodes = membership::initial(&discovery).await.expect("first list");
        let backend = TestProxy::backend_with(nodes, r).await;
        let poller = membership::spawn(discovery, backend.clone());
        let proxy = TestProxy::start(backend, proxy::frontend()).await;
        Self {
            proxy,
            poller: Some(poller),
        }
    }

    /// The nodes `/ring` lists, sorted.
    async fn ring(&self) -> Vec<String> {
        let members = self.ring_members().await;
        members.into_iter().map(|(name, _)| name).collect()
    }

    /// Polls `/ring` until it lists exactly `nodes`.
    async fn wait_ring(&self, nodes: &[&ClusterNode]) {
        let mut want: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        want.sort();
        let reached = eventually(LIMIT, || async { self.ring().await == want }).await;
        assert!(
            reached.is_ok(),
            "ring {:?}, wanted {want:?}",
            self.ring().await
        );
    }

    /// Writes distinct keys over RESP until stopped, counting them in
    /// `done`; returns (writes, errors).
    fn writer(
        &self,
        stop: Arc<AtomicBool>,
        done: Arc<AtomicUsize>,
    ) -> tokio::task::JoinHandle<(usize, usize)> {
        let url = format!("redis://{}/", self.resp);
        tokio::task::spawn_blocking(move || {
            let mut con = redis::Client::open(url)
                .expect("url")
                .get_connection()
                .expect("connect");
            let (mut writes, mut errors) = (0, 0);
            while !stop.load(Ordering::Relaxed) || writes < 20 {
                let r: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(format!("m:{writes}"))
                    .arg(writes)
                    .query(&mut con);
                if let Err(e) = r {
                    eprintln!("SET m:{writes}: {e}");
                    errors += 1;
                }
                writes += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            (writes, errors)
        })
    }

    /// Stops `writer` and checks that none of its writes failed, and that
    /// the ring changed `ring_changes` times (when given); then stops.
    async fn finish(
        self,
        stop: &AtomicBool,
        writer: tokio::task::JoinHandle<(usize, usize)>,
        ring_changes: Option<f64>,
    ) {
        stop.store(true, Ordering::Relaxed);
        let (writes, failed) = writer.await.expect("writer");
        assert_eq!(failed, 0, "{failed} of {writes} writes failed");
        if let Some(n) = ring_changes {
            assert_eq!(self.metric("distcache_proxy_ring_changes_total").await, n);
        }
        self.stop().await;
    }

    async fn stop(mut self) {
        if let Some(p) = self.poller.take() {
            p.stop().await;
        }
        self.proxy.stop().await.expect("proxy run");
    }
}

/// Waits until the writer has done a few more writes, so that every
/// membership change happens while writes are going on.
async fn more_writes(done: &AtomicUsize) {
    let seen = done.load(Ordering::Relaxed);
    eventually(LIMIT, || async {
        done.load(Ordering::Relaxed) >= seen + 10
    })
    .await
    .expect("the writer makes progress");
}

/// A discovery endpoint whose answer the test changes.
#[derive(Clone)]
struct Answer(Arc<Mutex<ResponseTemplate>>);

impl Answer {
    fn set(&self, r: ResponseTemplate) {
        *self.0.lock().unwrap() = r;
    }
}

impl Respond for Answer {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.lock().unwrap().clone()
    }
}

async fn mock(route: &str, first: ResponseTemplate) -> (MockServer, Answer) {
    let server = MockServer::start().await;
    let answer = Answer(Arc::new(Mutex::new(first)));
    Mock::given(method("GET"))
        .and(path(route))
        .respond_with(answer.clone())
        .mount(&server)
        .await;
    (server, answer)
}

/// Consul's `/v1/health/service/NAME?passing` answer for `nodes`; every
/// other entry leaves `Service.Address` empty, so `Node.Address` is used.
fn consul(nodes: &[&ClusterNode]) -> ResponseTemplate {
    let entries: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let service_address = if i % 2 == 0 { "127.0.0.1" } else { "" };
            json!({
                "Node": {"ID": format!("id-{i}"), "Node": format!("host-{i}"), "Address": "127.0.0.1", "Datacenter": "dc1"},
                "Service": {"ID": format!("distcache-{i}"), "Service": "distcache", "Tags": [],
                            "Address": service_address, "Port": n.addr.port()},
                "Checks": [{"CheckID": "serfHealth", "Status": "passing"}]
            })
        })
        .collect();
    ResponseTemplate::new(200).set_body_json(entries)
}

fn url_list(nodes: &[&ClusterNode]) -> ResponseTemplate {
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    ResponseTemplate::new(200).set_body_json(urls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_discovery_changes_the_ring_without_failing_writes() {
    let n = cluster(3).await.expect("cluster");
    let route = "/v1/health/service/distcache";
    let (server, answer) = mock(route, consul(&[&n[0], &n[1]])).await;
    let uri = format!("{}{route}?passing", server.uri());
    let proxy = Proxy::start(Source::parse_discovery(&uri).expect("source")).await;
    proxy.wait_ring(&[&n[0], &n[1]]).await;
    assert_eq!(proxy.metric("distcache_proxy_ring_members").await, 2.0);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writer = proxy.writer(stop.clone(), done.clone());
    more_writes(&done).await;
    answer.set(consul(&[&n[0], &n[1], &n[2]]));
    proxy.wait_ring(&[&n[0], &n[1], &n[2]]).await;
    more_writes(&done).await;
    answer.set(consul(&[&n[1], &n[2]]));
    proxy.wait_ring(&[&n[1], &n[2]]).await;
    assert_eq!(
        proxy.metric("distcache_proxy_ring_changes_total").await,
        2.0
    );
    assert_eq!(proxy.metric("distcache_proxy_ring_members").await, 2.0);

    // A failing registry, then an empty answer: counted, the nodes stay.
    for bad in [
        ResponseTemplate::new(500).set_body_string("consul is down"),
        ResponseTemplate::new(200).set_body_json(json!([])),
    ] {
        let errors = proxy.metric("distcache_proxy_discovery_errors_total").await;
        answer.set(bad);
        eventually(LIMIT, || async {
            proxy.metric("distcache_proxy_discovery_errors_total").await > errors
        })
        .await
        .expect("errors counted");
        proxy.wait_ring(&[&n[1], &n[2]]).await;
    }

    more_writes(&done).await;
    proxy.finish(&stop, writer, Some(2.0)).await;
}

/// `--discovery-consul-ids`: nodes named by their Consul `Service.ID`; a
/// node registered again at another port keeps its place on the ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_service_ids_keep_a_nodes_place_when_its_address_changes() {
    let mut n = cluster(3).await.expect("cluster");
    let route = "/v1/health/service/distcache";
    let (server, answer) = mock(route, consul(&[&n[0], &n[1], &n[2]])).await;
    let uri = format!("{}{route}?passing", server.uri());
    let proxy = Proxy::start_discovery(
        Discovery {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(2),
            consul_ids: true,
            ..Discovery::new(Source::parse_discovery(&uri).expect("source"))
        },
        distcache::RebalanceConfig::default(),
    )
    .await;
    let names = ["distcache-0", "distcache-1", "distcache-2"]
        .map(String::from)
        .to_vec();
    assert_eq!(proxy.ring().await, names);
    n[1].kill();
    n[1] = ClusterNode::start().await.expect("restart");
    answer.set(consul(&[&n[0], &n[1], &n[2]]));
    let url = n[1].url();
    eventually(LIMIT, || async {
        let (_, body) = http_get(proxy.admin, "/ring").await;
        body.contains(&url)
    })
    .await
    .expect("the proxy reconnects distcache-1 at its new address");
    assert_eq!(proxy.ring().await, names);
    assert_eq!(
        proxy.metric("distcache_proxy_ring_changes_total").await,
        0.0
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_list_discovery_adds_and_removes_nodes() {
    let n = cluster(3).await.expect("cluster");
    let (server, answer) = mock("/nodes", url_list(&[&n[0]])).await;
    let source = Source::parse_discovery(&format!("{}/nodes", server.uri())).expect("source");
    let proxy = Proxy::start(source).await;
    proxy.wait_ring(&[&n[0]]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writer = proxy.writer(stop.clone(), done.clone());
    more_writes(&done).await;
    answer.set(url_list(&[&n[0], &n[1], &n[2]]));
    proxy.wait_ring(&[&n[0], &n[1], &n[2]]).await;
    answer.set(ResponseTemplate::new(200).set_body_string("<html>bad gateway</html>"));
    eventually(LIMIT, || async {
        proxy.metric("distcache_proxy_discovery_errors_total").await > 0.0
    })
    .await
    .expect("bad answers counted");
    proxy.wait_ring(&[&n[0], &n[1], &n[2]]).await;
    more_writes(&done).await;
    answer.set(url_list(&[&n[2]]));
    proxy.wait_ring(&[&n[2]]).await;
    more_writes(&done).await;
    proxy.finish(&stop, writer, None).await;
}

/// Writes `nodes` as the cluster file `file` (aside, then renamed over, as
/// editors and ConfigMaps do).
fn write_cluster_file(file: &std::path::Path, nodes: &[&ClusterNode]) {
    let entries: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    write_cluster_entries(file, &entries);
}

/// Writes a cluster file listing `entries` (URLs or `ID=URL`).
fn write_cluster_entries(file: &std::path::Path, entries: &[String]) {
    let list: Vec<String> = entries.iter().map(|e| format!("\"{e}\"")).collect();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("[cluster]\nnodes = [{}]\n", list.join(", "))).expect("write");
    std::fs::rename(&tmp, file).expect("rename");
}

/// Two proxies following one cluster file while a fourth node is added
/// and then one removed: `/ring` shows each move, keys written before are
/// read as last written through either proxy during and after it, and
/// once it is done every owner of every key holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_move_the_data_when_the_cluster_file_changes() {
    let n = cluster(4).await.expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("cluster.toml");
    write_cluster_file(&file, &[&n[0], &n[1], &n[2]]);
    let r = distcache::RebalanceConfig {
        grace: Duration::from_millis(500),
        ..distcache::RebalanceConfig::default()
    };
    let p1 = Proxy::start_with(Source::File(file.clone()), r.clone()).await;
    // p2 polls the file every 300 ms: it sees each change after p1 does, and
    // writes meanwhile on the ring p1 is leaving.
    let p2 = Proxy::start_discovery(
        Discovery {
            interval: Duration::from_millis(300),
            timeout: Duration::from_secs(2),
            ..Discovery::new(Source::File(file.clone()))
        },
        r,
    )
    .await;
    let con = |p: &Proxy| {
        redis::Client::open(format!("redis://{}/", p.resp))
            .expect("url")
            .get_connection()
            .expect("connect")
    };
    let (mut c1, mut c2) = (con(&p1), con(&p2));
    let mut model: Vec<(String, Option<String>)> = Vec::new();
    for i in 0..300 {
        let (k, v) = (format!("f:{i}"), format!("v{i}"));
        let c = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        if i % 9 == 4 {
            let _: () = redis::cmd("SET").arg(&k).arg(&v).query(c).expect("set");
            let _: i64 = redis::cmd("DEL").arg(&k).query(c).expect("del");
            model.push((k, None));
        } else {
            let _: () = redis::cmd("SET").arg(&k).arg(&v).query(c).expect("set");
            model.push((k, Some(v)));
        }
    }
    let read_all = |c: &mut redis::Connection, model: &[(String, Option<String>)], who: &str| {
        for (k, want) in model {
            let got: Option<String> = redis::cmd("GET").arg(k).query(c).expect("get");
            assert_eq!(&got, want, "{who} read {k}");
        }
    };
    for (round, (nodes, moves)) in [
        (vec![&n[0], &n[1], &n[2], &n[3]], 1.0),
        (vec![&n[1], &n[2], &n[3]], 2.0),
    ]
    .into_iter()
    .enumerate()
    {
        write_cluster_file(&file, &nodes);
        p1.wait_ring(&nodes).await;
        // Writes through both while p2 is still likely on the old ring.
        for (i, (k, want)) in model.iter_mut().enumerate().filter(|(i, _)| i % 3 == round) {
            let v = format!("r{round}-{i}");
            let c = if i % 2 == 0 { &mut c1 } else { &mut c2 };
            let _: () = redis::cmd("SET").arg(&*k).arg(&v).query(c).expect("set");
            *want = Some(v);
        }
        p2.wait_ring(&nodes).await;
        // During the move (or just after it on a slow machine).
        read_all(&mut c1, &model, "proxy 1");
        read_all(&mut c2, &model, "proxy 2");
        for p in [&p1, &p2] {
            eventually(LIMIT, || async { p.phase().await == "stable" })
                .await
                .expect("the move ends");
            assert_eq!(p.metric("distcache_proxy_moves_total").await, moves);
            assert_eq!(p.metric("distcache_proxy_moving").await, 0.0);
        }
        read_all(&mut c1, &model, "proxy 1");
        read_all(&mut c2, &model, "proxy 2");
        // Every owner holds every key: the move copied them.
        let ring = p1.backend.client.clone();
        for (k, want) in &model {
            for owner in ring.owners(k) {
                let node = n.iter().find(|x| x.url() == owner).expect("owner");
                let held = node.raw_get(k).await.expect("raw get");
                let got = held
                    .found
                    .then(|| String::from_utf8_lossy(&held.value).into_owned());
                assert_eq!(&got, want, "{owner} holds {k}");
            }
        }
    }
    // Between them (a copy claimed by one is not made again by the other).
    let copied = p1.metric("distcache_proxy_rebalance_entries_total").await
        + p2.metric("distcache_proxy_rebalance_entries_total").await;
    assert!(copied > 0.0);
    p1.stop().await;
    p2.stop().await;
}

/// A cluster file naming nodes `ID=URL`: a node restarted at another port
/// under its id is reconnected there, and the ring does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_named_by_id_keeps_its_place_when_its_address_changes() {
    let mut n = cluster(3).await.expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("cluster.toml");
    let write = |n: &[ClusterNode]| {
        let entries: Vec<String> = n
            .iter()
            .enumerate()
            .map(|(i, x)| format!("cache-{i}={}", x.url()))
            .collect();
        write_cluster_entries(&file, &entries);
    };
    write(&n);
    let proxy = Proxy::start(Source::File(file.clone())).await;
    let names = ["cache-0", "cache-1", "cache-2"].map(String::from).to_vec();
    assert_eq!(proxy.ring().await, names);
    let mut con = redis::Client::open(format!("redis://{}/", proxy.resp))
        .expect("url")
        .get_connection()
        .expect("connect");
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("id:{i}"))
            .arg(i)
            .query(&mut con)
            .expect("set");
    }
    n[1].kill();
    n[1] = ClusterNode::start().await.expect("restart");
    write(&n);
    let url = n[1].url();
    eventually(LIMIT, || async {
        let (_, body) = http_get(proxy.admin, "/ring").await;
        body.contains(&url)
    })
    .await
    .expect("the proxy reconnects cache-1 at its new address");
    assert_eq!(proxy.ring().await, names);
    assert_eq!(
        proxy.metric("distcache_proxy_ring_changes_total").await,
        0.0
    );
    assert_eq!(proxy.phase().await, "stable");
    for i in 0..100 {
        let got: Option<i64> = redis::cmd("GET")
            .arg(format!("id:{i}"))
            .query(&mut con)
            .expect("get");
        assert_eq!(got, Some(i), "id:{i}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_cluster_file_adds_and_removes_nodes() {
    let n = cluster(3).await.expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("cluster.toml");
    let write = |nodes: &[&ClusterNode]| write_cluster_file(&file, nodes);
    write(&[&n[0], &n[1]]);
    let proxy = Proxy::start(Source::File(file.clone())).await;
    proxy.wait_ring(&[&n[0], &n[1]]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writer = proxy.writer(stop.clone(), done.clone());
    more_writes(&done).await;
    write(&[&n[1], &n[2]]);
    proxy.wait_ring(&[&n[1], &n[2]]).await;

    // A broken file is reported and the nodes stay.
    std::fs::write(&file, "[cluster]\nnodes = [\"http://unterminated\n").expect("write");
    eventually(LIMIT, || async {
        proxy.metric("distcache_proxy_discovery_errors_total").await >= 1.0
    })
    .await
    .expect("bad file counted");
    proxy.wait_ring(&[&n[1], &n[2]]).await;
    more_writes(&done).await;
    write(&[&n[0], &n[1], &n[2]]);
    proxy.wait_ring(&[&n[0], &n[1], &n[2]]).await;
    more_writes(&done).await;
    proxy.finish(&stop, writer, Some(2.0)).await;
}
