//! The alert rules (`deploy/prometheus/alerts.yml`) and the Grafana dashboard
//! (`deploy/grafana/distcache.json`) name only metrics that a running node
//! and proxy export: renaming a metric fails here, not in an operator's
//! empty dashboard or an alert that can never fire.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use distcache_tests::proxy::frontend;
use distcache_tests::{TestNode, TestProxy, eventually, http_get, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yml");
const ALERT_TESTS: &str = include_str!("../../deploy/prometheus/alerts_test.yml");
const DASHBOARD: &str = include_str!("../../deploy/grafana/distcache.json");

/// Suffixes a sample name adds to its family's name in the text format.
const SUFFIXES: [&str; 5] = ["_total", "_bucket", "_sum", "_count", "_created"];

/// Every `distcache_…` identifier in `text`.
fn used_names(text: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("distcache_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
        if !before.is_some_and(ident) {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The sample names and the family names (`# TYPE`) of a scrape.
fn exported(scrape: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut samples, mut families) = (BTreeSet::new(), BTreeSet::new());
    for line in scrape.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            families.insert(t.split(' ').next().unwrap().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (samples, families)
}

/// Sends RESP commands on one connection and reads what comes back.
async fn resp(addr: std::net::SocketAddr, commands: &str, replies: usize) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(commands.as_bytes()).await.expect("write");
    let mut got = String::new();
    let mut buf = [0u8; 1024];
    while got.matches("\r\n").count() < replies {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "proxy closed the connection after {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got
}

#[tokio::test]
async fn every_metric_the_alert_rules_and_the_dashboard_name_is_exported() {
    // A node with a data dir, so the WAL, snapshot and recovery series exist.
    let dir = tempfile::tempdir().expect("dir");
    let mut config = test_config();
    config.wal.data_dir = Some(dir.path().to_owned());
    let node = TestNode::start(config).await;
    let proxy = TestProxy::start(TestProxy::backend(vec![node.url()]).await, frontend()).await;
    eventually(Duration::from_secs(20), || async {
        http_get(proxy.admin, "/readyz").await.0 == 200
    })
    .await
    .expect("the proxy sees the node");
    // Commands through the proxy create the per-command and per-RPC series.
    let got = resp(proxy.resp, "SET k v\r\nGET k\r\nGET missing\r\n", 4).await;
    assert_eq!(got, "+OK\r\n$1\r\nv\r\n$-1\r\n");

    let (status, node_scrape) = http_get(node.admin, "/metrics").await;
    assert_eq!(status, 200);
    let (status, proxy_scrape) = http_get(proxy.admin, "/metrics").await;
    assert_eq!(status, 200);
    let (mut samples, mut families) = exported(&node_scrape);
    let (s, f) = exported(&proxy_scrape);
    samples.extend(s);
    families.extend(f);
    let is_exported = |name: &str| {
        samples.contains(name)
            || SUFFIXES
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|f| families.contains(f)))
    };

    for (file, text) in [
        ("deploy/prometheus/alerts.yml", ALERTS),
        ("deploy/prometheus/alerts_test.yml", ALERT_TESTS),
        ("deploy/grafana/distcache.json", DASHBOARD),
    ] {
        let used = used_names(text);
        assert!(used.len() >= 10, "{file} names only {used:?}");
        let missing: Vec<_> = used.iter().filter(|n| !is_exported(n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics no node or proxy exports: {missing:?}\n\
             node exports: {:?}\nproxy exports: {:?}",
            exported(&node_scrape).0,
            exported(&proxy_scrape).0,
        );
    }

    // Both processes say which version they run, under the same name.
    let info = format!(
        "distcache_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(node_scrape.contains(&info), "{node_scrape}");
    assert!(proxy_scrape.contains(&info), "{proxy_scrape}");
    assert!(
        node_scrape.contains("\ndistcache_ready 1\n"),
        "{node_scrape}"
    );
    assert!(
        proxy_scrape.ends_with("# EOF\n"),
        "one OpenMetrics document"
    );
    assert_eq!(proxy_scrape.matches("# EOF").count(), 1);

    proxy.stop().await.expect("proxy stops");
    node.stop().await.expect("node stops");
}
