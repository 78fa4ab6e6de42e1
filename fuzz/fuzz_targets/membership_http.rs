#![no_main]
//! See docs/fuzzing.md; the body is `distcache_proxy::fuzzing::membership_http`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| distcache_proxy::fuzzing::membership_http(data));
