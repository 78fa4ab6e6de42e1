//! The real `distcache-node` binary, bounded at 32 MiB, takes 200 MiB of
//! writes: its resident memory stays well under 128 MiB and it keeps answering.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use distcache_proto::v1::{self as pb, cache_service_client::CacheServiceClient};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on port 0 and reads the bound gRPC address from its log.
fn spawn(args: &[&str]) -> (Node, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcache-node"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn distcache-node");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("node exited before listening")
            .expect("read log");
        if let Some(rest) = line.split("grpc=").nth(1) {
            break rest.split_whitespace().next().expect("addr").to_owned();
        }
    };
    // Keep draining the log so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Node(child), addr)
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[tokio::test]
async fn two_hundred_mib_into_a_32_mib_node() {
    let (node, addr) = spawn(&["--max-memory", "32MiB"]);
    let mut c = CacheServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut written = 0usize;
    let mut i = 0u64;
    while written < 200 << 20 {
        // Values from 1 KiB to 64 KiB, sent 16 to a batch.
        let operations = (0..16)
            .map(|_| {
                i += 1;
                let len = 1024 + (i * 7919 % 63) as usize * 1024;
                written += len;
                pb::Operation {
                    op: Some(pb::operation::Op::Set(pb::SetRequest {
                        key: format!("key:{i}").into_bytes().into(),
                        value: vec![(i % 251) as u8; len].into(),
                        ..Default::default()
                    })),
                }
            })
            .collect();
        c.batch(pb::BatchRequest { operations })
            .await
            .expect("batch");
    }
    let h = c
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("still answering")
        .into_inner();
    assert!(
        h.memory_bytes <= 32 << 20,
        "accounted {} bytes",
        h.memory_bytes
    );
    let newest = c
        .get(pb::GetRequest {
            key: format!("key:{i}").into_bytes().into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(newest.found, "the newest write survives eviction");
    let rss = rss_bytes(node.0.id());
    assert!(rss < 128 << 20, "RSS {} MiB", rss >> 20);
    eprintln!(
        "wrote {} MiB; RSS {} MiB; {} keys",
        written >> 20,
        rss >> 20,
        h.keys
    );
}
