#![no_main]
//! See docs/fuzzing.md; the body is `distcache_serve::fuzzing::token`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| distcache_serve::fuzzing::token(data));
