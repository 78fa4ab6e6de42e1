#![no_main]
//! See docs/fuzzing.md; the body is `distcache_proto::fuzzing::proto_decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| distcache_proto::fuzzing::proto_decode(data));
