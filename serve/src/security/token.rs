//! HMAC-SHA256 bearer tokens: mint, parse and verify. Pure and synchronous.
//!
//! A token is four dot-separated fields, all URL-safe base64 without padding
//! except the first two:
//!
//! ```text
//! dc1.<key id>.<claims>.<signature>
//! claims    = base64url(JSON {"sub": "alice", "role": "user", "iat": 1700000000, "exp": 1700003600})
//! signature = base64url(HMAC-SHA256(secret of <key id>, "dc1.<key id>.<claims>"))
//! ```
//!
//! The signature is checked (in constant time, by `hmac`'s `verify_slice`)
//! before the claims are decoded, so untrusted JSON is never parsed. The key id
//! picks the secret, which is what makes rotation work: sign with the newest
//! key, accept every configured key. This module does not know about gRPC.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Version prefix of the token format.
const PREFIX: &str = "dc1";
/// Longest token accepted, in bytes; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest key id, in bytes.
pub const MAX_KEY_ID_BYTES: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// What a token lets its holder do, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Get, batch of gets, health.
    Readonly,
    /// Reads and writes: get, set, delete, CAS, counters, expire, batch, health.
    User,
    /// Everything, including metrics and administrative RPCs.
    Admin,
}

impl Role {
    /// The name used in tokens and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Readonly => "readonly",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "readonly" | "read-only" | "read_only" => Ok(Role::Readonly),
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?}: use admin, user or readonly")),
        }
    }
}

/// The signed content of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who holds the token (the rate-limit key, too).
    pub sub: String,
    /// What the holder may do.
    pub role: Role,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
}

/// Why a token was refused; each is `UNAUTHENTICATED` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `dc1.<kid>.<claims>.<sig>`, or the claims do not decode.
    #[error("malformed token")]
    Malformed,
    /// The key id names no configured secret (a foreign or retired key).
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The signature does not match (tampered, or signed with another secret).
    #[error("token signature does not match")]
    BadSignature,
    /// Past its expiry, beyond the clock-skew leeway.
    #[error("token expired")]
    Expired,
    /// Issued in the future, beyond the clock-skew leeway.
    #[error("token issued in the future")]
    NotYetValid,
    /// Valid for longer than [`MAX_TOKEN_LIFETIME_SECS`] (`exp` far ahead, up
    /// to `u64::MAX`, would never expire).
    #[error("token lifetime exceeds the maximum ({MAX_TOKEN_LIFETIME_SECS} s)")]
    TooLongLived,
    /// The subject is empty: nobody to rate-limit or log.
    #[error("token has an empty subject")]
    EmptySubject,
}

/// The longest a token may be valid: 366 days. Minting refuses longer
/// validities; verification refuses tokens issued for longer, or whose
/// expiry is further than that from now.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 366 * 86_400;

impl TokenError {
    /// The `reason` label on the auth-failure counter.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::TooLongLived => "too_long_lived",
            TokenError::EmptySubject => "empty_subject",
        }
    }
}

/// A secret, with its HMAC state keyed once (cloned per token, which saves
/// hashing the key on every request).
#[derive(Clone)]
struct Key {
    secret: Arc<[u8]>,
    mac: HmacSha256,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

impl Eq for Key {}

/// One or more HMAC secrets by key id; the last one added signs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: HashMap<String, Key>,
    newest: Option<String>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("KeySet")
            .field("key_ids", &ids)
            .field("newest", &self.newest)
            .finish_non_exhaustive()
    }
}

/// The key id field of a token, unchecked (`None` if it has none).
pub fn key_id_of(token: &str) -> Option<&str> {
    let mut parts = token.split('.');
    parts.next()?;
    parts.next()
}

/// Whether `kid` is a usable key id: 1..=64 bytes of `[A-Za-z0-9_-]`.
pub fn valid_key_id(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KEY_ID_BYTES
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl KeySet {
    /// Adds (or replaces) a secret; it becomes the signing key.
    pub fn insert(&mut self, kid: &str, secret: &[u8]) -> Result<(), String> {
        if !valid_key_id(kid) {
            return Err(format!(
                "invalid key id {kid:?}: 1-64 characters of A-Z a-z 0-9 _ -"
            ));
        }
        if secret.is_empty() {
            return Err(format!("empty secret for key id {kid:?}"));
        }
        let mac = HmacSha256::new_from_slice(secret)
            .map_err(|_| format!("unusable secret for key id {kid:?}"))?;
        let key = Key {
            secret: Arc::from(secret),
            mac,
        };
        self.keys.insert(kid.to_owned(), key);
        self.newest = Some(kid.to_owned());
        Ok(())
    }

    /// Parses `kid:secret` lines; blank lines and `#` comments are skipped.
    /// The last line's key signs new tokens.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut set = KeySet::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((kid, secret)) = line.split_once(':') else {
                return Err(format!("line {}: expected key-id:secret", n + 1));
            };
            set.insert(kid.trim(), secret.trim().as_bytes())
                .map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(set)
    }

    /// Adds every key of `other`; `other`'s signing key becomes this set's.
    pub fn extend(&mut self, other: &KeySet) {
        for (kid, secret) in &other.keys {
            self.keys.insert(kid.clone(), secret.clone());
        }
        if other.newest.is_some() {
            self.newest.clone_from(&other.newest);
        }
    }

    /// Just the key `kid`, which then signs.
    pub fn only(&self, kid: &str) -> Option<KeySet> {
        let secret = self.keys.get(kid)?;
        let mut one = KeySet::default();
        one.keys.insert(kid.to_owned(), secret.clone());
        one.newest = Some(kid.to_owned());
        Some(one)
    }

    /// Key ids whose secret is shorter than `min` bytes, sorted.
    pub fn short_key_ids(&self, min: usize) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .keys
            .iter()
            .filter(|(_, k)| k.secret.len() < min)
            .map(|(k, _)| k.as_str())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The secret of `kid`, shared (to tell later whether a reload kept it).
    pub(crate) fn secret(&self, kid: &str) -> Option<Arc<[u8]>> {
        self.keys.get(kid).map(|k| k.secret.clone())
    }

    /// Whether `kid` still names exactly `secret`.
    pub(crate) fn holds(&self, kid: &str, secret: &[u8]) -> bool {
        self.keys.get(kid).is_some_and(|k| *k.secret == *secret)
    }

    /// True when no secret is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key id new tokens are signed with.
    pub fn signing_key_id(&self) -> Option<&str> {
        self.newest.as_deref()
    }

    /// Mints a token for `claims` with the newest key.
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let kid = self.newest.as_deref()?;
        let mut mac = self.keys.get(kid)?.mac.clone();
        let json = serde_json::to_vec(claims).ok()?;
        let signed = format!("{PREFIX}.{kid}.{}", B64.encode(json));
        mac.update(signed.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        Some(format!("{signed}.{sig}"))
    }

    /// Checks `token` at `now` (Unix seconds), allowing `leeway_secs` of clock
    /// skew on the expiry, and returns its claims.
    pub fn verify(&self, token: &str, now: u64, leeway_secs: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = signed.splitn(3, '.');
        let (Some(prefix), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if prefix != PREFIX || !valid_key_id(kid) || body.contains('.') {
            return Err(TokenError::Malformed);
        }
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self
            .keys
            .get(kid)
            .ok_or(TokenError::UnknownKey)?
            .mac
            .clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let json = B64.decode(body).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.exp.saturating_add(leeway_secs) < now {
            return Err(TokenError::Expired);
        }
        if claims.iat > now.saturating_add(leeway_secs) {
            return Err(TokenError::NotYetValid);
        }
        if claims.exp.saturating_sub(claims.iat) > MAX_TOKEN_LIFETIME_SECS
            || claims.exp > now.saturating_add(MAX_TOKEN_LIFETIME_SECS + leeway_secs)
        {
            return Err(TokenError::TooLongLived);
        }
        if claims.sub.trim().is_empty() {
            return Err(TokenError::EmptySubject);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(pairs: &[(&str, &str)]) -> KeySet {
        let mut k = KeySet::default();
        for (kid, s) in pairs {
            k.insert(kid, s.as_bytes()).expect("valid");
        }
        k
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            role: Role::User,
            iat: 1_000,
            exp,
        }
    }

    #[test]
    fn tokens_that_never_expire_come_from_the_future_or_name_nobody_are_refused() {
        let k = keys(&[("k1", "secret-one")]);
        let now = 1_700_000_000;
        let at = |sub: &str, iat: u64, exp: u64| {
            let c = Claims {
                sub: sub.into(),
                role: Role::Admin,
                iat,
                exp,
            };
            k.verify(&k.sign(&c).expect("signs"), now, 5)
        };
        assert!(at("ops", now, now + 3600).is_ok());
        assert_eq!(at("ops", now, u64::MAX), Err(TokenError::TooLongLived));
        let year = MAX_TOKEN_LIFETIME_SECS;
        assert!(at("ops", now - 10, now - 10 + year).is_ok(), "at the limit");
        assert_eq!(at("ops", 0, year + 1), Err(TokenError::Expired));
        // A back-dated iat does not stretch a far expiry past the limit.
        assert_eq!(
            at("ops", now - year, now + year),
            Err(TokenError::TooLongLived)
        );
        assert!(at("ops", now + 5, now + 3600).is_ok(), "within the leeway");
        assert_eq!(
            at("ops", now + 60, now + 3600),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(at("", now, now + 3600), Err(TokenError::EmptySubject));
        assert_eq!(at("  ", now, now + 3600), Err(TokenError::EmptySubject));
    }

    #[test]
    fn round_trip_and_expiry_with_leeway() {
        let k = keys(&[("k1", "secret-one")]);
        let t = k.sign(&claims(2_000)).expect("signs");
        assert_eq!(k.verify(&t, 1_500, 5), Ok(claims(2_000)));
        assert_eq!(k.verify(&t, 2_005, 5), Ok(claims(2_000)));
        assert_eq!(k.verify(&t, 2_006, 5), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_foreign_and_malformed_tokens_are_refused() {
        let k = keys(&[("k1", "secret-one")]);
        let t = k.sign(&claims(2_000)).expect("signs");
        // Change the claims to admin, keep the signature.
        let (head, sig) = t.rsplit_once('.').expect("dots");
        let (prefix_kid, _) = head.rsplit_once('.').expect("dots");
        let forged = Claims {
            role: Role::Admin,
            ..claims(2_000)
        };
        let body = B64.encode(serde_json::to_vec(&forged).expect("json"));
        let tampered = format!("{prefix_kid}.{body}.{sig}");
        assert_eq!(k.verify(&tampered, 1_500, 5), Err(TokenError::BadSignature));
        let other_secret = keys(&[("k1", "another-secret")]);
        let foreign = other_secret.sign(&claims(2_000)).expect("signs");
        assert_eq!(k.verify(&foreign, 1_500, 5), Err(TokenError::BadSignature));
        let other_kid = keys(&[("k9", "secret-one")]).sign(&claims(2_000));
        assert_eq!(
            k.verify(&other_kid.expect("signs"), 1_500, 5),
            Err(TokenError::UnknownKey)
        );
        for bad in [
            "",
            "dc1",
            "dc1.k1.x",
            "dc2.k1.e30.AAAA",
            "dc1.k 1.e30.AAAA",
            "a.b.c.d.e",
        ] {
            assert_eq!(k.verify(bad, 0, 5), Err(TokenError::Malformed), "{bad}");
        }
        assert_eq!(
            k.verify(&"x".repeat(MAX_TOKEN_BYTES + 1), 0, 5),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn rotation_signs_with_newest_and_accepts_all() {
        let old = keys(&[("k1", "old-secret")]);
        let t_old = old.sign(&claims(2_000)).expect("signs");
        let rotated = KeySet::parse("# rotation\nk1: old-secret\n\nk2:new-secret\n").expect("ok");
        assert_eq!(rotated.signing_key_id(), Some("k2"));
        assert!(rotated.verify(&t_old, 1_500, 5).is_ok());
        let t_new = rotated.sign(&claims(2_000)).expect("signs");
        assert!(t_new.starts_with("dc1.k2."));
        let retired = KeySet::parse("k2:new-secret").expect("ok");
        assert_eq!(
            retired.verify(&t_old, 1_500, 5),
            Err(TokenError::UnknownKey)
        );
        assert!(retired.verify(&t_new, 1_500, 5).is_ok());
    }

    #[test]
    fn key_file_errors_name_the_line_and_debug_hides_secrets() {
        assert!(KeySet::parse("k1 secret").unwrap_err().contains("line 1"));
        assert!(
            KeySet::parse("ok:x\nbad id:x")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(KeySet::parse("k1:").unwrap_err().contains("empty secret"));
        let k = keys(&[("k1", "hunter2-secret")]);
        assert!(!format!("{k:?}").contains("hunter2"));
        assert_eq!("readonly".parse::<Role>(), Ok(Role::Readonly));
        assert!("root".parse::<Role>().is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,600}") {
            let k = keys(&[("k1", "secret-one")]);
            let _ = k.verify(&s, 1_500, 5);
        }

        #[test]
        fn arbitrary_token_shapes_never_panic(
            kid in "[a-z0-9]{1,8}", body in "[A-Za-z0-9_=-]{0,80}", sig in "[A-Za-z0-9_.-]{0,60}"
        ) {
            let k = keys(&[("k1", "secret-one")]);
            let _ = k.verify(&format!("dc1.{kid}.{body}.{sig}"), 1_500, 5);
        }

        #[test]
        fn any_single_byte_change_is_refused(pos in 0usize..200, byte in any::<u8>()) {
            let k = keys(&[("k1", "secret-one")]);
            let t = k.sign(&claims(2_000)).expect("signs");
            let mut b = t.clone().into_bytes();
            let i = pos % b.len();
            prop_assume!(b[i] != byte);
            b[i] = byte;
            if let Ok(s) = String::from_utf8(b) {
                // Base64 has slack bits in its last character; a change there
                // may decode to the same signature, which is not a forgery.
                let same = B64.decode(s.rsplit('.').next().unwrap_or_default()).ok()
                    == B64.decode(t.rsplit('.').next().unwrap_or_default()).ok()
                    && s.rsplit_once('.').map(|x| x.0) == t.rsplit_once('.').map(|x| x.0);
                prop_assert!(same || k.verify(&s, 1_500, 5).is_err());
            }
        }
    }
}
