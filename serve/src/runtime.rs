//! The two builders every server process starts with: its tokio runtime,
//! and gRPC server reflection over the services it serves.

/// The async runtime of a node or proxy process: `threads` worker threads,
/// 0 for one per CPU core. With 1, a current-thread runtime: no work
/// stealing and no wake-ups across threads, the cheapest way to serve when
/// several processes share a few cores (as redis-server and twemproxy do).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        b.worker_threads(threads);
    }
    b.enable_all().build()
}

/// gRPC reflection over `distcache.v1` and `grpc.health.v1`, as grpcurl
/// needs it; build it with `build_v1()` and `build_v1alpha()` (grpcurl asks
/// for either). Used by the node and the proxy.
pub fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(distcache_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
