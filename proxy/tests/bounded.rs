//! The real `distcache-proxy --dev` (proxy and three nodes in one process)
//! under requests that ask for far more than they send: it stays alive, its
//! memory stays bounded, and it keeps serving. Before the answer budgets, a
//! 300 KB `MGET` aborted a node, a 900-byte gRPC `Batch` cost 300 MiB, and
//! pipelined `GET`s of a large value were answered from one buffer holding
//! every reply.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use distcache_proto::budget::is_answer_full;
use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient};
use support::{Proxy, log_path, proc_bytes, spawn_dev, wait_listening};

const MIB: usize = 1 << 20;

/// One RESP reply, as far as these tests need it.
#[derive(Debug, PartialEq)]
enum R {
    Line(String),
    Bulk(Option<Vec<u8>>),
    Array(Vec<R>),
}

fn read_reply(s: &mut BufReader<TcpStream>) -> R {
    let mut line = String::new();
    s.read_line(&mut line).expect("read reply");
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1);
    match kind {
        "$" if rest == "-1" => R::Bulk(None),
        "$" => {
            let n: usize = rest.parse().expect("bulk length");
            let mut body = vec![0; n + 2];
            s.read_exact(&mut body).expect("bulk body");
            body.truncate(n);
            R::Bulk(Some(body))
        }
        "*" => {
            let n: usize = rest.parse().expect("array length");
            R::Array((0..n).map(|_| read_reply(s)).collect())
        }
        _ => R::Line(line.to_owned()),
    }
}

fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn call(s: &mut BufReader<TcpStream>, args: &[&[u8]]) -> R {
    s.get_mut().write_all(&request(args)).expect("write");
    read_reply(s)
}

struct Dev {
    proxy: Proxy,
    resp: SocketAddr,
    grpc: SocketAddr,
}

impl Dev {
    fn start(tag: &str) -> Self {
        let log = log_path(tag);
        let mut proxy = spawn_dev(&log, &[]);
        let (resp, grpc) = wait_listening(&mut proxy, &log);
        let dev = Self { proxy, resp, grpc };
        support::poll(std::time::Duration::from_secs(30), || {
            let mut c = dev.try_connect()?;
            (call(&mut c, &[b"PING"]) == R::Line("+PONG".into())).then_some(())
        });
        dev
    }

    fn try_connect(&self) -> Option<BufReader<TcpStream>> {
        TcpStream::connect(self.resp).ok().map(BufReader::new)
    }

    fn connect(&self) -> BufReader<TcpStream> {
        self.try_connect().expect("connect")
    }

    fn peak(&self) -> usize {
        proc_bytes(self.proxy.0.id(), "VmHWM") as usize
    }

    fn alive(&self) -> bool {
        let mut c = self.connect();
        call(&mut c, &[b"PING"]) == R::Line("+PONG".into())
    }
}

fn value(i: usize) -> Vec<u8> {
    vec![b'a' + (i % 26) as u8; MIB]
}

#[test]
fn an_mget_asking_for_30_gb_is_refused_and_the_cluster_keeps_serving() {
    let dev = Dev::start("mget-30gb");
    let mut c = dev.connect();
    assert_eq!(
        call(&mut c, &[b"SET", b"big", &value(0)]),
        R::Line("+OK".into())
    );
    let before = dev.peak();
    // 30,000 copies of one 1 MiB key: 300 KB asking for 30 GB.
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 30_000));
    match call(&mut c, &args) {
        R::Line(l) => assert!(
            l.starts_with("-ERR") && l.contains("max_answer_bytes"),
            "{l}"
        ),
        other => panic!(
            "expected an error, got {} items",
            matches!(other, R::Array(_))
        ),
    }
    assert_eq!(call(&mut c, &[b"GET", b"big"]), R::Bulk(Some(value(0))));
    assert!(dev.alive());
    let grew = dev.peak().saturating_sub(before);
    assert!(grew < 64 * MIB, "peak RSS grew by {} MiB", grew / MIB);
}

#[test]
fn an_mget_of_more_than_16_mib_per_node_returns_every_value() {
    let dev = Dev::start("mget-big");
    let mut c = dev.connect();
    let keys: Vec<Vec<u8>> = (0..60).map(|i| format!("big:{i}").into_bytes()).collect();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(call(&mut c, &[b"SET", k, &value(i)]), R::Line("+OK".into()));
    }
    // 60 MiB over three nodes: each node's share is over its 16 MiB message
    // limit, so each answers in parts (this used to fail every time).
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys.iter().map(Vec::as_slice));
    args.push(b"missing");
    let R::Array(items) = call(&mut c, &args) else {
        panic!("not an array")
    };
    assert_eq!(items.len(), 61);
    for (i, item) in items[..60].iter().enumerate() {
        assert!(*item == R::Bulk(Some(value(i))), "value {i}");
    }
    assert_eq!(items[60], R::Bulk(None));
}

#[test]
fn pipelined_gets_of_a_large_value_are_streamed_not_built_whole() {
    let dev = Dev::start("pipelined-big");
    let mut c = dev.connect();
    assert_eq!(
        call(&mut c, &[b"SET", b"big", &value(3)]),
        R::Line("+OK".into())
    );
    assert!(dev.alive());
    let before = dev.peak();
    // 200 GETs in one write (2.6 KB): 200 MiB of replies.
    let one = request(&[b"GET", b"big"]);
    c.get_mut().write_all(&one.repeat(200)).expect("write");
    for i in 0..200 {
        assert!(read_reply(&mut c) == R::Bulk(Some(value(3))), "reply {i}");
    }
    let grew = dev.peak().saturating_sub(before);
    assert!(grew < 100 * MIB, "peak RSS grew by {} MiB", grew / MIB);
}

#[tokio::test]
async fn a_grpc_batch_asking_for_1_gb_gets_a_budgeted_answer() {
    let dev = Dev::start("grpc-batch");
    let mut c = dev.connect();
    assert_eq!(
        call(&mut c, &[b"SET", b"big", &value(5)]),
        R::Line("+OK".into())
    );
    let before = dev.peak();
    let mut g = CacheServiceClient::connect(format!("http://{}", dev.grpc))
        .await
        .expect("connect")
        .max_decoding_message_size(64 * MIB);
    let get = pb::Operation {
        op: Some(pb::operation::Op::Get(pb::GetRequest {
            key: "big".into(),
            ..Default::default()
        })),
    };
    // About 9 KB asking for 1 GB.
    let operations = vec![get; 1000];
    let answer = g
        .batch(pb::BatchRequest { operations })
        .await
        .expect("batch")
        .into_inner();
    let hits = answer
        .results
        .iter()
        .filter(|r| matches!(&r.result, Some(pb::operation_result::Result::Get(g)) if g.found))
        .count();
    let not_run = answer.results.iter().filter(|r| is_answer_full(r)).count();
    assert!((10..=16).contains(&hits), "{hits} values");
    assert_eq!(hits + not_run, 1000);
    assert!(dev.alive());
    let grew = dev.peak().saturating_sub(before);
    assert!(grew < 128 * MIB, "peak RSS grew by {} MiB", grew / MIB);
}
