//! The distcache sidecar proxy: gRPC and Redis-protocol front ends over the SDK.
//!
//! Under construction: so far only the RESP codec ([`resp`]) exists; the
//! front ends, admin endpoint and `--dev` cluster arrive with the proxy issue.
//! Until then, run a node (`cargo run --release -p distcache-node`) and talk
//! to it directly.

pub mod resp;
