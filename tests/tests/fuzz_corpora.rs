//! The fuzz targets' smoke run on stable: every input committed under
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` is replayed
//! through the same function the target calls (see `docs/fuzzing.md`).
//! Long fuzzing runs are `scripts/fuzz.sh`, on nightly.
#![allow(clippy::expect_used)] // helpers outside #[test] fns fail loudly too

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (none if it is missing).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Replays the corpus (which must not be empty) and the regressions of
/// `target` through `body`, naming every input that panics.
fn replay(target: &str, body: impl Fn(&[u8])) {
    let corpus = inputs("corpus", target);
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ has no input");
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&inputs("regressions", target)) {
        let data = std::fs::read(path).expect("read a corpus file");
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: inputs that panic: {failed:#?}"
    );
}

#[test]
fn the_resp_request_corpus_parses_without_a_finding() {
    replay("resp_request", distcache_proxy::fuzzing::resp_request);
}

#[test]
fn the_resp_command_corpus_parses_without_a_finding() {
    replay("resp_command", distcache_proxy::fuzzing::resp_command);
}

#[test]
fn the_proto_decode_corpus_round_trips() {
    replay("proto_decode", distcache_proto::fuzzing::proto_decode);
}

#[test]
fn the_token_corpus_verifies_without_a_finding() {
    replay("token", distcache_serve::fuzzing::token);
}

#[test]
fn the_units_corpus_round_trips() {
    replay("units", distcache_serve::fuzzing::units);
}

#[test]
fn the_wal_record_corpus_round_trips() {
    replay("wal_record", distcache_node::wal::fuzzing::wal_record);
}

#[test]
fn the_wal_recovery_corpus_recovers_cleanly() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("data");
    replay("wal_recovery", |data| {
        distcache_node::wal::fuzzing::wal_recovery(&dir, data);
    });
}

#[test]
fn the_membership_file_corpus_parses_without_a_finding() {
    replay("membership_file", distcache_proxy::fuzzing::membership_file);
}

#[test]
fn the_membership_http_corpus_parses_without_a_finding() {
    replay("membership_http", distcache_proxy::fuzzing::membership_http);
}
