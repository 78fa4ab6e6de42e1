//! `distcache-node --check-config` on the real binary: exit 0 and the
//! effective configuration (secrets redacted) for a usable configuration,
//! exit 1 and the reason for an unusable one; the data directory untouched.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_distcache-node"))
        .arg("--check-config")
        .args(args)
        .env_remove("DISTCACHE_AUTH_SECRET")
        .output()
        .expect("run distcache-node")
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A weak secret (shorter than 32 bytes, or a file every user can read) is
/// refused, naming the problem, unless `--allow-weak-secrets`.
#[test]
fn weak_secrets_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("auth.keys");
    std::fs::write(&keys, "k1:short\n").expect("write");
    chmod(&keys, 0o600);
    let path = keys.to_str().unwrap();
    let out = check(&["--auth-secret-file", path]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("shorter than 32 bytes") && stderr.contains("\"k1\""),
        "{stderr}"
    );
    std::fs::write(&keys, "k1:c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1iZS1wcmludGVk\n").expect("write");
    chmod(&keys, 0o644);
    let out = check(&["--auth-secret-file", path]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("readable by every user") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    let out = check(&["--auth-secret-file", path, "--allow-weak-secrets"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("readable by every user"),
        "still warned: {stderr}"
    );
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_usable_configuration_exits_0_and_prints_it_without_its_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("auth.keys");
    let secret = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1iZS1wcmludGVk";
    std::fs::write(&keys, format!("k1:{secret}\n")).expect("write");
    chmod(&keys, 0o600);
    let data = dir.path().join("data");
    let out = check(&[
        "--auth-secret-file",
        keys.to_str().unwrap(),
        "--max-memory",
        "512Mi",
        "--drain-delay",
        "5s",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("configuration ok"), "{stderr}");
    assert!(
        stdout.contains(&(512u64 << 20).to_string()),
        "512Mi: {stdout}"
    );
    assert!(stdout.contains("\"k1\""), "the key id is shown: {stdout}");
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "{stdout}"
    );
    assert!(
        !data.exists(),
        "the data directory is not created or locked"
    );
}

#[test]
fn an_unusable_configuration_exits_1_and_says_why() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = dir.path().join("missing.pem");
    let out = check(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing.pem"),
        "{}",
        text(&out.stderr)
    );

    let out = check(&["--shards", "100"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("power of two"));

    // A flag clap refuses exits 1 too (not clap's usual 2) under --check-config.
    let out = check(&["--max-memory", "lots"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let file = dir.path().join("node.toml");
    std::fs::write(&file, "[store]\nmax_memroy = \"1GiB\"\n").expect("write");
    let out = check(&["--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("max_memroy"),
        "{}",
        text(&out.stderr)
    );
}
