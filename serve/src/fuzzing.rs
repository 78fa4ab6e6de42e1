//! The bodies of the `token` and `units` fuzz targets (`fuzz/`), here so
//! that the normal test suite can replay their corpora on stable Rust. Not
//! an API.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::security::token::MAX_TOKEN_LIFETIME_SECS;
use crate::security::{Claims, KeySet, Role};
use crate::units::{ByteSize, HumanDuration};

/// The key the `token` target signs with (and one more it accepts).
const KEYS: &str = "k1:fuzzing-secret-one\nk2:fuzzing-secret-two\n";
const LEEWAY_SECS: u64 = 30;

/// The `token` target. `data[0]` picks the mode, `data[1..9]` is "now"
/// (Unix seconds, little-endian), the rest the input:
///
/// - mode 0: the rest is a token as a client sends it;
/// - mode 1: the rest is the claims JSON of a token signed with key `k1`,
///   so the fuzzer reaches the code behind the signature check;
/// - mode 2: the rest is a key file (`kid:secret` lines).
///
/// Oracles: a token that verifies has claims within the bounds `verify`
/// promises, and signing those claims again gives a token that verifies
/// to the same claims; a key file that parses signs tokens it verifies.
pub fn token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (now, input) = match rest.split_first_chunk::<8>() {
        Some((now, input)) => (u64::from_le_bytes(*now), input),
        None => (1_700_000_000, rest),
    };
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let keys = match KeySet::parse(KEYS) {
        Ok(k) => k,
        Err(e) => panic!("the target's own key file does not parse: {e}"),
    };
    match mode % 3 {
        0 => check_verified(&keys, text, now),
        1 => check_verified(&keys, &sign_raw("k1", b"fuzzing-secret-one", text), now),
        _ => check_key_file(text, now),
    }
}

/// A token over `claims_json` as it stands (not re-serialised), signed with
/// `secret` as key `kid`.
fn sign_raw(kid: &str, secret: &[u8], claims_json: &str) -> String {
    let signed = format!("dc1.{kid}.{}", B64.encode(claims_json));
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(e) => panic!("HMAC takes any key: {e}"),
    };
    mac.update(signed.as_bytes());
    format!("{signed}.{}", B64.encode(mac.finalize().into_bytes()))
}

fn check_verified(keys: &KeySet, token: &str, now: u64) {
    let Ok(claims) = keys.verify(token, now, LEEWAY_SECS) else {
        return;
    };
    check_bounds(&claims, now);
    let again = keys
        .sign(&claims)
        .map(|t| keys.verify(&t, now, LEEWAY_SECS));
    assert_eq!(again, Some(Ok(claims)), "sign(verify(t)) does not verify");
}

fn check_bounds(c: &Claims, now: u64) {
    assert!(c.exp.saturating_add(LEEWAY_SECS) >= now, "expired: {c:?}");
    assert!(c.iat <= now.saturating_add(LEEWAY_SECS), "future: {c:?}");
    assert!(
        c.exp.saturating_sub(c.iat) <= MAX_TOKEN_LIFETIME_SECS,
        "too long: {c:?}"
    );
    assert!(!c.sub.trim().is_empty(), "no subject: {c:?}");
}

fn check_key_file(text: &str, now: u64) {
    let Ok(keys) = KeySet::parse(text) else {
        return;
    };
    let claims = Claims {
        sub: "fuzz".into(),
        role: Role::User,
        iat: now,
        exp: now.saturating_add(60),
    };
    let Some(token) = keys.sign(&claims) else {
        assert!(keys.is_empty(), "a non-empty key set does not sign");
        return;
    };
    let verified = keys.verify(&token, now, LEEWAY_SECS);
    assert_eq!(verified, Ok(claims), "a key file's own token");
}

/// The `units` target: the input as a size and as a duration, through
/// `FromStr` and through serde (JSON). Oracle: whatever parses prints as
/// text that parses back to the same value.
pub fn units(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(size) = text.parse::<ByteSize>() {
            check_size(size);
        }
        if let Ok(d) = text.parse::<HumanDuration>() {
            check_duration(d);
        }
    }
    if let Ok(size) = serde_json::from_slice::<ByteSize>(data) {
        check_size(size);
    }
    if let Ok(d) = serde_json::from_slice::<HumanDuration>(data) {
        check_duration(d);
    }
}

fn check_size(size: ByteSize) {
    let text = size.to_string();
    assert_eq!(
        text.parse::<ByteSize>(),
        Ok(size),
        "{size:?} prints as {text:?}"
    );
}

fn check_duration(d: HumanDuration) {
    let text = d.to_string();
    let back = text.parse::<HumanDuration>();
    assert_eq!(back, Ok(d), "{d:?} prints as {text:?}");
    assert!(d.0 <= Duration::from_millis(u64::MAX));
}
