//! distcache's wire contract: the `distcache.v1` protobuf messages and the
//! `CacheService` gRPC client and server stubs, generated at build time from
//! `proto/cache.proto` by protox and tonic-prost-build (no system `protoc`).
//!
//! This crate holds types only; the node, SDK and proxy hold behaviour.
//! Byte fields are [`bytes::Bytes`], so values move between layers without copies.
//!
//! # Layout
//!
//! - [`v1`]: the generated messages and `CacheService` stubs.
//! - [`budget`]: how large a `Batch`/`Pipeline` answer may grow.
//! - [`status`]: a batched operation's error ↔ `tonic::Status`.
//! - [`codec`]: the gRPC codec (prost over one `Bytes`).
//! - [`ring`]: a key's position on the consistent-hash ring, and the hash
//!   ranges a `Scan` may be limited to.
//! - [`trace`]: W3C trace context (`traceparent`, `tracestate`).

pub mod budget;
pub mod codec;
#[doc(hidden)]
pub mod fuzzing;
pub mod ring;
pub mod status;
pub mod trace;

/// Generated types and stubs of package `distcache.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("distcache.v1");
}

/// The encoded `FileDescriptorSet` of `distcache.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/distcache_descriptor.bin"));

/// Bits of a version below the millisecond timestamp (see `cache.proto`).
pub const VERSION_LOGICAL_BITS: u32 = 16;

/// The smallest version a clock reading of `unix_ms` milliseconds stands for.
pub fn version_floor(unix_ms: u64) -> u64 {
    unix_ms << VERSION_LOGICAL_BITS
}
