//! Example applications that use distcache; each is an `examples/*.rs`
//! file, run with `cargo run -p distcache-examples --example NAME`.
//!
//! # Layout
//!
//! No library code: one file per example under `examples/`.
//!
//! - `read_through`: a read-through cache in front of a slow "user service",
//!   on a 3-node cluster started in-process (or on `DISTCACHE_NODES`), that
//!   keeps serving while one node shuts down.
