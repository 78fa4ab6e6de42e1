#![no_main]
//! See docs/fuzzing.md; the body is `distcache_node::wal::fuzzing::wal_recovery`.
//! The data directory is rebuilt for every input, on tmpfs when there is one.

use std::path::PathBuf;
use std::sync::LazyLock;

static SCRATCH: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = std::env::var_os("DISTCACHE_FUZZ_SCRATCH")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!("distcache-fuzz-wal-{}", std::process::id()))
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    distcache_node::wal::fuzzing::wal_recovery(&SCRATCH, data);
});
