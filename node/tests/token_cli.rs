//! The `distcache-node token` subcommand, run as a user would.

#![allow(clippy::expect_used)]

use std::process::Command;

use distcache_serve::security::{KeySet, Role};

#[test]
fn token_subcommand_prints_a_valid_token_last() {
    let dir = std::env::temp_dir().join(format!("distcache-token-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let keys = dir.join("keys");
    std::fs::write(
        &keys,
        "# rotation: the last line signs\nk1:old-secret-0123456789\nk2:new-secret-0123456789\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_distcache-node"))
        .args(["token", "--secret-file"])
        .arg(&keys)
        .args([
            "--user-id",
            "alice",
            "--role",
            "readonly",
            "--validity",
            "120",
        ])
        .env_remove("DISTCACHE_AUTH_SECRET")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let token = stdout.lines().last().expect("a line");
    assert!(token.starts_with("dc1.k2."), "{token}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let set = KeySet::parse("k2:new-secret-0123456789").expect("keys");
    let claims = set.verify(token, now, 5).expect("valid");
    assert_eq!(
        (claims.sub.as_str(), claims.role),
        ("alice", Role::Readonly)
    );
    assert!(claims.exp >= now + 100 && claims.exp <= now + 125);

    // The secret may come from the environment instead.
    let out = Command::new(env!("CARGO_BIN_EXE_distcache-node"))
        .args(["token", "--user-id", "ops", "--role", "admin"])
        .env("DISTCACHE_AUTH_SECRET", "env-secret-0123456789")
        .env_remove("DISTCACHE_AUTH_SECRET_FILE")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let token = stdout.lines().last().expect("a line");
    let set = KeySet::parse("default:env-secret-0123456789").expect("keys");
    assert_eq!(set.verify(token, now, 5).expect("valid").role, Role::Admin);

    // No secret at all: a clear error and a failing exit code.
    let out = Command::new(env!("CARGO_BIN_EXE_distcache-node"))
        .args(["token", "--user-id", "ops", "--role", "admin"])
        .env_remove("DISTCACHE_AUTH_SECRET")
        .env_remove("DISTCACHE_AUTH_SECRET_FILE")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no secret"));
    let _ = std::fs::remove_dir_all(&dir);
}
