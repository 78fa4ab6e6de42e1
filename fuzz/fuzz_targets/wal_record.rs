#![no_main]
//! See docs/fuzzing.md; the body is `distcache_node::wal::fuzzing::wal_record`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| distcache_node::wal::fuzzing::wal_record(data));
