//! Which role may call which RPC: the role table, by gRPC path, and the
//! [`Principal`] the auth layer hands on to the service.
//!
//! | RPC | readonly | user | admin |
//! |---|---|---|---|
//! | Get, HealthCheck, Batch / Pipeline message of gets only | yes | yes | yes |
//! | Set, Delete, CompareAndSwap, IncrBy, Expire, Scan, Fence, Batch / Pipeline message with writes | no | yes | yes |
//! | GetMetrics, any RPC not listed here | no | no | yes |
//! | grpc.reflection.* | yes | yes | yes (any valid token) |
//! | grpc.health.v1.Health/* | open, no token needed | | |
//!
//! A batch's contents are only known once the message is decoded, so the
//! service checks them ([`Principal::may_batch`]), for every message of a
//! `Pipeline` stream too.

use std::sync::Arc;

use super::live_keys::Signer;
use super::token::Role;

/// Who made a request, as proven by their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject.
    pub subject: Arc<str>,
    /// The token's role.
    pub role: Role,
    /// Unix seconds after which the token no longer counts (its expiry plus
    /// the verifier's leeway); 0 for no limit. Long-lived streams check it
    /// on every message.
    pub valid_until: u64,
    /// The key that signed the token, when known: once a reload retires
    /// it, the token counts as run out too.
    pub signed_by: Option<Signer>,
}

impl Principal {
    /// Whether the token has run out at `now` (Unix seconds), or a reload
    /// retired the key that signed it.
    pub fn expired(&self, now: u64) -> bool {
        (self.valid_until != 0 && now > self.valid_until)
            || self.signed_by.as_ref().is_some_and(Signer::retired)
    }

    /// Whether this caller may run a batch holding writes, not only gets.
    pub fn may_batch(&self, only_gets: bool) -> bool {
        only_gets || self.role >= Role::User
    }

    /// Whether this caller may run the batch `ops` (a `Batch` call or one
    /// `Pipeline` message): any role for gets only, else `user` or above.
    pub fn may_run_batch(&self, ops: &[distcache_proto::v1::Operation]) -> bool {
        use distcache_proto::v1::operation::Op;
        self.may_batch(ops.iter().all(|o| matches!(o.op, Some(Op::Get(_)))))
    }
}

/// True for `grpc.health.v1` calls: open to probes, never rate limited or shed.
pub fn is_health(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// Whether `path` is the `Batch` RPC, whose operations are each charged a
/// rate-limit token (the layer charges the first).
pub fn is_batch(path: &str) -> bool {
    path == "/distcache.v1.CacheService/Batch"
}

/// Whether `path` is a streaming RPC whose messages are checked one by one
/// (role and rate limit) by the service, not only when the stream opens.
pub fn is_stream(path: &str) -> bool {
    path == "/distcache.v1.CacheService/Pipeline"
}

/// Whether `path` answers with a stream that may stay open for long
/// (`Pipeline`, `Invalidations`, reflection): it holds no in-flight slot
/// past its opening (see `in_flight.rs`).
pub fn answers_with_a_stream(path: &str) -> bool {
    is_stream(path)
        || path == "/distcache.v1.CacheService/Invalidations"
        || path.starts_with("/grpc.reflection.")
}

/// The least role an RPC needs; `None` means open to anyone.
pub fn required_role(path: &str) -> Option<Role> {
    if is_health(path) {
        return None;
    }
    if path.starts_with("/grpc.reflection.") {
        return Some(Role::Readonly);
    }
    match path.strip_prefix("/distcache.v1.CacheService/") {
        Some("Get" | "Batch" | "Pipeline" | "HealthCheck" | "Invalidations") => {
            Some(Role::Readonly)
        }
        Some(
            "Set" | "Delete" | "CompareAndSwap" | "IncrBy" | "Expire" | "Scan" | "Fence" | "Forget",
        ) => Some(Role::User),
        // GetMetrics, and anything not listed (future admin RPCs).
        _ => Some(Role::Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table() {
        use Role::*;
        let t = |m: &str| required_role(&format!("/distcache.v1.CacheService/{m}"));
        assert_eq!(t("Get"), Some(Readonly));
        assert_eq!(t("Batch"), Some(Readonly));
        assert_eq!(t("HealthCheck"), Some(Readonly));
        assert_eq!(t("Invalidations"), Some(Readonly));
        for m in [
            "Set",
            "Delete",
            "CompareAndSwap",
            "IncrBy",
            "Expire",
            "Scan",
            "Fence",
            "Forget",
        ] {
            assert_eq!(t(m), Some(User), "{m}");
        }
        assert_eq!(t("GetMetrics"), Some(Admin));
        assert_eq!(t("SomethingNew"), Some(Admin));
        assert_eq!(required_role("/grpc.health.v1.Health/Watch"), None);
        let ro = Principal {
            subject: "a".into(),
            role: Readonly,
            valid_until: 100,
            signed_by: None,
        };
        assert!(!ro.expired(100) && ro.expired(101));
        assert!(ro.may_batch(true) && !ro.may_batch(false));
    }
}
