//! The distcache sidecar proxy: gRPC and Redis-protocol front ends over the SDK.
//!
//! Not built yet; it arrives with the proxy issue. Until then, run a node
//! (`cargo run --release -p distcache-node`) and talk to it directly.
