//! The distcache client SDK.
//!
//! Not built yet: the consistent-hash ring, pooling, retry, failover and
//! replication arrive with the SDK issue. Until then this crate only re-exports
//! the wire types, so a service can talk to a single node with the generated
//! client:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use distcache::proto::{cache_service_client::CacheServiceClient, GetRequest};
//! let mut node = CacheServiceClient::connect("http://127.0.0.1:7001").await?;
//! let reply = node.get(GetRequest { key: "user:123".into() }).await?.into_inner();
//! println!("found={} version={}", reply.found, reply.version);
//! # Ok(()) }
//! ```

pub use distcache_proto::v1 as proto;
