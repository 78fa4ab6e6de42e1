//! The counters the security layers update: authentication failures by
//! reason, permission denials, rate-limit refusals by scope, and requests
//! shed at the in-flight bound. Created up front so every series shows at 0;
//! registered by whichever process runs the layers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabel {
    scope: &'static str,
}

/// Reasons an authentication fails, as counted.
const AUTH_REASONS: [&str; 5] = [
    "missing",
    "malformed",
    "unknown_key",
    "bad_signature",
    "expired",
];

/// Counters the security layers update; clones share the same counters.
#[derive(Debug, Clone)]
pub struct SecurityCounters {
    auth_failures: Family<ReasonLabel, Counter>,
    permission_denied: Counter,
    rate_limited: Family<ScopeLabel, Counter>,
    shed: Counter,
}

impl Default for SecurityCounters {
    fn default() -> Self {
        let c = Self {
            auth_failures: Family::default(),
            permission_denied: Counter::default(),
            rate_limited: Family::default(),
            shed: Counter::default(),
        };
        // Created up front so every series shows, at 0, before any failure.
        for reason in AUTH_REASONS {
            let _ = c.auth_failures.get_or_create(&ReasonLabel { reason });
        }
        for scope in ["client", "global"] {
            let _ = c.rate_limited.get_or_create(&ScopeLabel { scope });
        }
        c
    }
}

impl SecurityCounters {
    /// Counts a request refused as unauthenticated, by reason.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a request refused because the caller's role lacks the RPC.
    pub fn permission_denied(&self) {
        self.permission_denied.inc();
    }

    /// Counts a request refused by a rate limit (`client` or `global`).
    pub fn rate_limited(&self, scope: &'static str) {
        self.rate_limited.get_or_create(&ScopeLabel { scope }).inc();
    }

    /// Counts a request refused because the node was at its in-flight bound.
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// Registers the two auth series (`auth_failures{reason}`,
    /// `permission_denied`) in `r`: for the proxy, which checks tokens the
    /// node's way but neither rate limits nor sheds.
    pub fn register_auth(&self, r: &mut Registry) {
        r.register(
            "auth_failures",
            "Requests refused as unauthenticated, by reason",
            self.auth_failures.clone(),
        );
        r.register(
            "permission_denied",
            "Requests refused because the token's role lacks the RPC",
            self.permission_denied.clone(),
        );
    }

    /// Registers every series (the two auth series, `rate_limited{scope}`,
    /// `requests_shed`) in `r`: for the node, which runs the whole stack.
    pub fn register(&self, r: &mut Registry) {
        self.register_auth(r);
        r.register(
            "rate_limited",
            "Requests refused by a rate limit, by scope",
            self.rate_limited.clone(),
        );
        r.register(
            "requests_shed",
            "Requests refused because max_in_flight requests were being served",
            self.shed.clone(),
        );
    }

    /// The same counters as a JSON object.
    pub fn json(&self) -> serde_json::Value {
        let failures: serde_json::Map<_, _> = AUTH_REASONS
            .iter()
            .map(|&reason| {
                let n = self
                    .auth_failures
                    .get_or_create(&ReasonLabel { reason })
                    .get();
                (reason.to_owned(), n.into())
            })
            .collect();
        let limited = |scope| self.rate_limited.get_or_create(&ScopeLabel { scope }).get();
        serde_json::json!({
            "auth_failures": failures,
            "permission_denied": self.permission_denied.get(),
            "rate_limited": { "client": limited("client"), "global": limited("global") },
            "requests_shed": self.shed.get(),
        })
    }
}
