#![no_main]
//! See docs/fuzzing.md; the body is `distcache_proxy::fuzzing::resp_command`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| distcache_proxy::fuzzing::resp_command(data));
