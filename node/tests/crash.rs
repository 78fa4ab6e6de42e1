//! Crash tests against the real `distcache-node` binary: real files, real
//! processes, real fsync, `SIGKILL` at random moments.
//!
//! They live in the node package (not `tests/`) because Cargo only hands an
//! integration test the path of a binary of its own package
//! (`CARGO_BIN_EXE_distcache-node`).

// Test helpers outside #[test] functions; panicking is how they fail a test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use distcache_proto::v1 as pb;
use pb::cache_service_client::CacheServiceClient;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::transport::{Channel, Endpoint};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running node process; killed when dropped.
struct Node {
    child: Child,
    grpc: String,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on port 0 with JSON logs on stderr; returns once it
/// logged its gRPC address, or `Err(logs)` if it exited first.
fn spawn(dir: &Path, extra: &[&str]) -> Result<Node, String> {
    spawn_command(
        Command::new(env!("CARGO_BIN_EXE_distcache-node")),
        dir,
        extra,
    )
}

/// [`spawn`] with every file it writes limited to `kib` KiB (a disk that
/// fills up): a write past it fails with EFBIG (SIGXFSZ is ignored).
fn spawn_with_file_limit(dir: &Path, extra: &[&str], kib: u64) -> Result<Node, String> {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
            kib * 2
        ))
        .arg(env!("CARGO_BIN_EXE_distcache-node"));
    spawn_command(sh, dir, extra)
}

fn spawn_command(mut command: Command, dir: &Path, extra: &[&str]) -> Result<Node, String> {
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--log-format", "json", "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let reader = {
        let logs = logs.clone();
        // Keeps draining stderr for the node's whole life so it never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                logs.lock().expect("logs").push(line.clone());
                let _ = tx.send(line);
            }
        })
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["fields"]["message"] == "listening" {
                    let grpc = v["fields"]["grpc"].as_str().ok_or("no grpc")?.to_owned();
                    return Ok(Node {
                        child,
                        grpc,
                        logs,
                        reader: Some(reader),
                    });
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(logs.lock().expect("logs").join("\n"));
            }
        }
    }
}

impl Node {
    /// Polls HealthCheck until the node serves (recovery runs before that).
    async fn client(&self) -> CacheServiceClient<Channel> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let endpoint = Endpoint::from_shared(format!("http://{}", self.grpc))
                .expect("uri")
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(5));
            if let Ok(ch) = endpoint.connect().await {
                let mut c = CacheServiceClient::new(ch);
                if let Ok(r) = c.health_check(pb::HealthCheckRequest {}).await
                    && r.get_ref().status == pb::ServingStatus::Serving as i32
                {
                    return c;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node never became healthy:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Waits for the process to exit on its own and for its last log line to
    /// be read; returns whether it succeeded.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return status.success();
            }
            assert!(Instant::now() < deadline, "node did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    async fn metrics(&self, c: &mut CacheServiceClient<Channel>) -> serde_json::Value {
        let r = c
            .get_metrics(pb::GetMetricsRequest {
                format: pb::MetricsFormat::Json as i32,
            })
            .await
            .expect("metrics");
        serde_json::from_str(&r.get_ref().body).expect("json")
    }
}

/// What a key must hold: `None` deleted, else value and version.
type State = Option<(Bytes, u64)>;

/// One client's keys: what was acknowledged, and the write in flight when the
/// node died (it may or may not have landed).
#[derive(Default)]
struct Ledger {
    acked: HashMap<Bytes, State>,
    pending: Option<(Bytes, Option<Bytes>)>,
}

async fn writer(
    mut c: CacheServiceClient<Channel>,
    client: usize,
    round: usize,
    mut ledger: Ledger,
) -> Ledger {
    for n in 0.. {
        let key = Bytes::from(format!("c{client}-k{}", n % 40));
        let del = n % 5 == 4;
        let value = (!del).then(|| Bytes::from(format!("r{round}-c{client}-n{n}")));
        ledger.pending = Some((key.clone(), value.clone()));
        let acked = match &value {
            Some(v) => c
                .set(pb::SetRequest {
                    key: key.clone(),
                    value: v.clone(),
                    ..Default::default()
                })
                .await
                .map(|r| Some((v.clone(), r.get_ref().version))),
            None => c
                .delete(pb::DeleteRequest {
                    key: key.clone(),
                    version: 0,
                    return_value: false,
                })
                .await
                .map(|_| None),
        };
        match acked {
            Ok(state) => {
                ledger.acked.insert(key, state);
                ledger.pending = None;
            }
            Err(_) => break,
        }
    }
    ledger
}

async fn get_many(c: &mut CacheServiceClient<Channel>, keys: &[Bytes]) -> Vec<State> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let operations = chunk
            .iter()
            .map(|k| pb::Operation {
                op: Some(pb::operation::Op::Get(pb::GetRequest {
                    key: k.clone(),
                    ..Default::default()
                })),
            })
            .collect();
        let r = c
            .batch(pb::BatchRequest { operations })
            .await
            .expect("batch get");
        for res in &r.get_ref().results {
            match &res.result {
                Some(pb::operation_result::Result::Get(g)) if g.found => {
                    out.push(Some((g.value.clone(), g.version)));
                }
                Some(pb::operation_result::Result::Get(_)) => out.push(None),
                other => panic!("unexpected batch result {other:?}"),
            }
        }
    }
    out
}

/// Checks every acknowledged write after a restart and adopts what the node
/// holds (an in-flight write may have landed) as the new expectation.
async fn verify(
    c: &mut CacheServiceClient<Channel>,
    ledgers: &mut [Ledger],
    bulk: &HashMap<Bytes, State>,
) {
    for l in ledgers.iter_mut() {
        let keys: Vec<Bytes> = l.acked.keys().cloned().collect();
        let got = get_many(c, &keys).await;
        for (key, got) in keys.into_iter().zip(got) {
            let want = &l.acked[&key];
            let same = match (want, &got) {
                (None, None) => true,
                (Some((wv, wver)), Some((gv, gver))) => wv == gv && wver == gver,
                _ => false,
            };
            let landed = match &l.pending {
                Some((k, v)) if *k == key => match (v, &got) {
                    (None, None) => true,
                    (Some(v), Some((gv, _))) => v == gv,
                    _ => false,
                },
                _ => false,
            };
            assert!(
                same || landed,
                "key {key:?}: acknowledged {want:?}, recovered {got:?} (in flight: {:?})",
                l.pending
            );
            l.acked.insert(key, got);
        }
        l.pending = None;
    }
    let keys: Vec<Bytes> = bulk.keys().cloned().collect();
    let got = get_many(c, &keys).await;
    for (key, got) in keys.iter().zip(got) {
        assert_eq!(&got, &bulk[key], "bulk key {key:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let flags = [
        "--wal-fsync",
        "always",
        "--snapshot-interval",
        "1s",
        "--wal-segment-bytes",
        "1MiB",
    ];
    let mut ledgers: Vec<Ledger> = (0..CLIENTS).map(|_| Ledger::default()).collect();
    let mut bulk = HashMap::new();
    for round in 0..ROUNDS {
        let mut node = spawn(dir.path(), &flags).expect("node starts");
        let mut c = node.client().await;
        if round > 0 {
            verify(&mut c, &mut ledgers, &bulk).await;
        } else {
            // Enough data that a snapshot takes a while to write.
            for chunk in 0..40 {
                let operations = (0..1000)
                    .map(|i| {
                        let key = Bytes::from(format!("bulk-{chunk}-{i}"));
                        let value = Bytes::from(format!("{:0>100}", chunk * 1000 + i));
                        pb::Operation {
                            op: Some(pb::operation::Op::Set(pb::SetRequest {
                                key,
                                value,
                                ..Default::default()
                            })),
                        }
                    })
                    .collect::<Vec<_>>();
                let keys: Vec<_> = operations
                    .iter()
                    .filter_map(|o| match &o.op {
                        Some(pb::operation::Op::Set(s)) => Some((s.key.clone(), s.value.clone())),
                        _ => None,
                    })
                    .collect();
                let r = c
                    .batch(pb::BatchRequest { operations })
                    .await
                    .expect("bulk");
                for ((k, v), res) in keys.into_iter().zip(&r.get_ref().results) {
                    match &res.result {
                        Some(pb::operation_result::Result::Set(s)) => {
                            bulk.insert(k, Some((v, s.version)));
                        }
                        other => panic!("bulk set failed: {other:?}"),
                    }
                }
            }
        }
        let tasks: Vec<_> = std::mem::take(&mut ledgers)
            .into_iter()
            .enumerate()
            .map(|(i, l)| tokio::spawn(writer(c.clone(), i, round, l)))
            .collect();
        if round == ROUNDS - 1 {
            // Kill while a snapshot is being written.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let writing = std::fs::read_dir(dir.path())
                    .expect("read_dir")
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"));
                if writing {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no snapshot seen:\n{}",
                    node.logs()
                );
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        } else {
            let ms = rng.random_range(100..700);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        node.child.kill().expect("SIGKILL");
        let _ = node.child.wait();
        for t in tasks {
            ledgers.push(t.await.expect("writer"));
        }
        let acked: usize = ledgers.iter().map(|l| l.acked.len()).sum();
        assert!(acked > 0, "round {round}: no write was acknowledged");
    }
    let node = spawn(dir.path(), &flags).expect("node starts after the snapshot kill");
    let mut c = node.client().await;
    verify(&mut c, &mut ledgers, &bulk).await;
    let leftovers = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0, "unfinished snapshot removed at start");
    let m = node.metrics(&mut c).await;
    assert!(m["wal"]["recovery"]["seconds"].is_number(), "{m}");
}

#[tokio::test]
async fn corruption_lock_and_graceful_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = ["--wal-fsync", "always", "--snapshot-interval", "0"];
    let mut node = spawn(dir.path(), &flags).expect("starts");
    let mut c = node.client().await;
    for i in 0..200 {
        c.set(pb::SetRequest {
            key: Bytes::from(format!("key-{i:03}")),
            value: Bytes::from_static(b"some value"),
            ..Default::default()
        })
        .await
        .expect("set");
    }

    // A second node on the same data directory is refused.
    let second = spawn(dir.path(), &flags);
    let logs = match second {
        Err(logs) => logs,
        Ok(mut n) => {
            assert!(!n.wait_exit(), "second node must fail");
            n.logs()
        }
    };
    assert!(logs.contains("in use by another distcache-node"), "{logs}");

    node.child.kill().expect("SIGKILL");
    let _ = node.child.wait();
    drop(node);

    // Flip a bit in the middle of the segment holding the records.
    let seg = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&seg, &bytes).expect("write");

    let name = seg
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let logs = match spawn(dir.path(), &flags) {
        Err(logs) => logs,
        Ok(mut n) => {
            assert!(!n.wait_exit(), "strict recovery must refuse to start");
            n.logs()
        }
    };
    assert!(
        logs.contains("corrupt write-ahead log") && logs.contains(&name) && logs.contains("offset"),
        "{logs}"
    );

    let mut skip = flags.to_vec();
    skip.extend(["--wal-recovery", "skip-corrupt", "--snapshot-on-shutdown"]);
    let mut node = spawn(dir.path(), &skip).expect("skip-corrupt starts");
    let mut c = node.client().await;
    let h = c
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("health");
    assert_eq!(h.get_ref().keys, 199, "exactly the damaged record is lost");
    let m = node.metrics(&mut c).await;
    assert_eq!(m["wal"]["recovery"]["corrupt_skipped"], 1, "{m}");
    assert!(seg.with_file_name(format!("{name}.corrupt")).exists());

    // Graceful shutdown: flush, final snapshot, exit 0.
    let pid = node.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(node.wait_exit(), "clean exit:\n{}", node.logs());
    drop(node);

    let node = spawn(dir.path(), &flags).expect("strict starts again");
    let mut c = node.client().await;
    let m = node.metrics(&mut c).await;
    assert_eq!(m["wal"]["recovery"]["records_replayed"], 0, "{m}");
    assert_eq!(m["wal"]["recovery"]["snapshot_entries"], 199, "{m}");
    assert_eq!(m["keys"], 199);
}

#[tokio::test]
async fn every_mutation_kind_is_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = ["--wal-fsync", "always"];
    let mut node = spawn(dir.path(), &flags).expect("starts");
    let mut c = node.client().await;
    let key = |k: &str| Bytes::from(k.to_owned());
    let set = |k: &str, v: &str, ttl_ms: u64| pb::SetRequest {
        key: key(k),
        value: Bytes::from(v.to_owned()),
        ttl_ms,
        ..Default::default()
    };
    c.set(set("plain", "v", 0)).await.expect("set");
    c.set(set("gone", "v", 0)).await.expect("set");
    c.delete(pb::DeleteRequest {
        key: key("gone"),
        version: 0,
        return_value: false,
    })
    .await
    .expect("delete");
    let v = c
        .set(set("cas", "old", 0))
        .await
        .expect("set")
        .get_ref()
        .version;
    let swapped = c
        .compare_and_swap(pb::CompareAndSwapRequest {
            key: key("cas"),
            expected_version: v,
            value: Bytes::from_static(b"new"),
            ttl_ms: 0,
        })
        .await
        .expect("cas");
    assert!(swapped.get_ref().swapped);
    for _ in 0..3 {
        c.incr_by(pb::IncrByRequest {
            key: key("counter"),
            delta: 7,
        })
        .await
        .expect("incr");
    }
    c.set(set("ttl", "v", 0)).await.expect("set");
    c.expire(pb::ExpireRequest {
        key: key("ttl"),
        ttl_ms: 3_600_000,
        version: 0,
    })
    .await
    .expect("expire");
    c.set(set("short", "v", 300)).await.expect("set");
    node.child.kill().expect("SIGKILL");
    let _ = node.child.wait();
    drop(node);
    // Let "short" expire while the node is down.
    tokio::time::sleep(Duration::from_millis(400)).await;

    let node = spawn(dir.path(), &flags).expect("restarts");
    let mut c = node.client().await;
    let get = |k: &str| pb::GetRequest {
        key: key(k),
        ..Default::default()
    };
    let value = |r: &pb::GetResponse| (r.found, String::from_utf8_lossy(&r.value).into_owned());
    let r = c.get(get("plain")).await.expect("get");
    assert_eq!(value(r.get_ref()), (true, "v".into()));
    let r = c.get(get("gone")).await.expect("get");
    assert!(!r.get_ref().found, "deleted stays deleted");
    let r = c.get(get("cas")).await.expect("get");
    assert_eq!(value(r.get_ref()), (true, "new".into()));
    let r = c.get(get("counter")).await.expect("get");
    assert_eq!(value(r.get_ref()), (true, "21".into()));
    let r = c.get(get("ttl")).await.expect("get");
    let ttl = r.get_ref().ttl_ms;
    assert!(
        r.get_ref().found && ttl > 3_500_000 && ttl <= 3_600_000,
        "ttl {ttl}"
    );
    let r = c.get(get("short")).await.expect("get");
    assert!(!r.get_ref().found, "expired while down");
}

/// `Forget` (what a finished move sends to a key's old owners) goes through
/// the log: after `SIGKILL` and a restart, the forgotten ranges stay empty,
/// while keys outside them, and a key written in them after the forget,
/// are back. A forget naming no range is refused, not taken for "all".
#[tokio::test]
async fn forgotten_ranges_stay_forgotten_after_sigkill() {
    use distcache_proto::ring::key_hash;
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = ["--wal-fsync", "always"];
    let mut node = spawn(dir.path(), &flags).expect("starts");
    let mut c = node.client().await;
    let lower = |k: &str| key_hash(k.as_bytes()) <= u64::MAX / 2;
    let keys: Vec<String> = (0..300).map(|i| format!("f{i}")).collect();
    let mut newest = 0;
    for k in &keys {
        let r = c
            .set(pb::SetRequest {
                key: Bytes::from(k.clone()),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })
            .await
            .expect("set");
        newest = newest.max(r.get_ref().version);
    }
    let err = c
        .forget(pb::ForgetRequest {
            ranges: Vec::new(),
            below_version: u64::MAX,
        })
        .await
        .expect_err("no ranges");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let removed = c
        .forget(pb::ForgetRequest {
            ranges: vec![pb::HashRange {
                start: 0,
                end: u64::MAX / 2,
            }],
            below_version: newest + 1,
        })
        .await
        .expect("forget")
        .get_ref()
        .removed;
    let moved = keys.iter().filter(|k| lower(k)).count() as u64;
    assert_eq!(removed, moved);
    let late = keys.iter().find(|k| lower(k)).expect("a key in the range");
    c.set(pb::SetRequest {
        key: Bytes::from(late.clone()),
        value: Bytes::from_static(b"late"),
        ..Default::default()
    })
    .await
    .expect("set");
    node.child.kill().expect("SIGKILL");
    let _ = node.child.wait();
    drop(node);

    let node = spawn(dir.path(), &flags).expect("restarts");
    let mut c = node.client().await;
    for k in &keys {
        let r = c
            .get(pb::GetRequest {
                key: Bytes::from(k.clone()),
                ..Default::default()
            })
            .await
            .expect("get");
        let r = r.get_ref();
        let want = if k == late {
            Some("late")
        } else if lower(k) {
            None
        } else {
            Some("v")
        };
        let got = r
            .found
            .then(|| String::from_utf8_lossy(&r.value).into_owned());
        assert_eq!(got.as_deref(), want, "{k}");
    }
}

/// A node whose write-ahead log fails (the disk is full) stops serving: the
/// failed write is an error, HealthCheck says NOT_SERVING, reads and a
/// resend of the failed write are refused (the store may hold writes the
/// log never took), and after a restart from its log every acknowledged
/// write is there. Before, the resend was answered "already applied", the
/// proxy said OK, and the value was gone after the restart.
#[tokio::test]
async fn a_failed_log_stops_the_node_and_nothing_unlogged_is_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = spawn_with_file_limit(dir.path(), &["--wal-fsync", "always"], 256).expect("start");
    let mut c = node.client().await;
    let value = Bytes::from(vec![b'x'; 4096]);
    let set = |i: u64| pb::SetRequest {
        key: format!("k{i}").into_bytes().into(),
        value: value.clone(),
        version: distcache_proto::version_floor(1_700_000_000_000) + i,
        ..Default::default()
    };
    let mut acked = Vec::new();
    let failed = loop {
        let i = acked.len() as u64;
        assert!(i < 1000, "the log never filled up");
        match c.set(set(i)).await {
            Ok(r) => {
                assert!(r.get_ref().applied);
                acked.push(i);
            }
            Err(s) => break (i, s),
        }
    };
    assert_eq!(failed.1.code(), tonic::Code::Unavailable, "{:?}", failed.1);
    let h = c
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(h.status, pb::ServingStatus::NotServing as i32);
    let resend = c
        .set(set(failed.0))
        .await
        .expect_err("the resend is refused");
    assert_eq!(resend.code(), tonic::Code::Unavailable);
    assert!(
        resend.message().contains("write-ahead log failed"),
        "{}",
        resend.message()
    );
    let read = c
        .get(pb::GetRequest {
            key: "k0".into(),
            ..Default::default()
        })
        .await
        .expect_err("reads are refused too");
    assert_eq!(read.code(), tonic::Code::Unavailable);
    drop(c);
    drop(node);

    let node = spawn(dir.path(), &[]).expect("restart from the log");
    let mut c = node.client().await;
    for i in acked {
        let r = c
            .get(pb::GetRequest {
                key: format!("k{i}").into_bytes().into(),
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner();
        assert!(r.found, "acknowledged write k{i} survived");
    }
}
