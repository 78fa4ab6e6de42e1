//! A fault-injection history checker for distcache (issue 14).
//!
//! ```text
//!  clients (RESP via proxy A and B, SDK direct) ──► history ──► checks
//!        │                                            ▲
//!        ▼                                            │ final reads at All
//!  proxy A, proxy B ──► node 0 (WAL) node 1 (WAL) node 2 (memory only)
//!                           ▲ nemesis: SIGKILL + restart, SIGSTOP/SIGCONT,
//!                             remove / re-add in the proxies' cluster file
//! ```
//!
//! [`history`] and [`check`] are pure (no tokio, no I/O) and unit-tested on
//! synthetic histories; [`cluster`] runs the real binaries on loopback and
//! [`driver`] runs clients and the nemesis against them. It is not a
//! benchmark and it does not fix anything: it reports.

pub mod check;
pub mod cluster;
pub mod driver;
pub mod history;
pub mod reshard;
