//! The `distcache-node` binary as a child process, and its memory as
//! `/proc` reports it: shared by the tests that bound the node's RSS.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running node, killed when dropped.
#[derive(Debug)]
pub(crate) struct Node(pub(crate) Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Node {
    /// The node's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// True while the process has not exited.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

/// Starts `command` (the node binary, or a shell that execs it) on port 0
/// and reads the bound gRPC address from its log.
pub(crate) fn spawn_command(mut command: Command, args: &[&str]) -> (Node, String) {
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
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

/// Starts the binary built with these tests on port 0.
pub(crate) fn spawn(args: &[&str]) -> (Node, String) {
    spawn_command(Command::new(env!("CARGO_BIN_EXE_distcache-node")), args)
}

/// A `/proc/PID/status` figure in bytes: `VmRSS` (resident now) or `VmHWM`
/// (the peak so far).
pub(crate) fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb * 1024
}
