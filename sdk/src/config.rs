//! Client configuration: a plain struct with documented units and named
//! defaults, filled by [`ClientBuilder`] and validated once by `build`.

use std::time::Duration;

use crate::error::ConfigError;
pub use crate::types::MAX_NODES;

/// Replicas per key unless configured otherwise.
pub const DEFAULT_REPLICAS: usize = 2;
/// Overall deadline of one call, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one attempt against one node.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest timeout a client keeps: longer ones (`Duration::MAX` for
/// "no limit") are cut to this, so a deadline can always be computed and
/// sent to a node.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// HTTP/2 connections (tonic `Channel`s) per node.
pub const DEFAULT_POOL_SIZE: usize = 2;
/// Consecutive failures after which a node is marked unhealthy.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 2;
/// How often the background prober checks every node.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Retries (after failover) allowed per call, on top of the budget.
pub const DEFAULT_MAX_RETRIES: usize = 3;
/// Default [`ClientConfig::max_answer_bytes`]: 256 MiB.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 256 << 20;

/// How many replicas must answer a read or acknowledge a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// One replica (the first healthy one in the preference list).
    #[default]
    One,
    /// A majority of the key's N replicas: `N / 2 + 1`.
    Quorum,
    /// All N replicas.
    All,
}

impl Consistency {
    /// Answers required out of `n` replicas.
    pub fn required(self, n: usize) -> usize {
        match self {
            Consistency::One => 1.min(n),
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
        }
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "one" | "1" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            other => Err(format!("unknown consistency {other:?} (one, quorum, all)")),
        }
    }
}

/// Retry policy: exponential backoff with full jitter, bounded by a budget.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// First backoff delay.
    pub min_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Most retry rounds of one call (each round tries every candidate replica).
    pub max_retries: usize,
    /// Retries always allowed per second, whatever the traffic.
    pub budget_min_per_sec: u32,
    /// Extra retries allowed as a fraction of recent calls (0.2 = 20 %).
    pub budget_ratio: f32,
    /// Window over which the budget remembers calls.
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
            max_retries: DEFAULT_MAX_RETRIES,
            budget_min_per_sec: 10,
            budget_ratio: 0.2,
            budget_window: Duration::from_secs(10),
        }
    }
}

/// Coalescing of concurrent single-key operations into `Batch` RPCs.
#[derive(Debug, Clone)]
pub struct CoalesceConfig {
    /// Most operations per batch; 1 turns coalescing off (one RPC per operation).
    pub max_batch: usize,
    /// A batch stops growing past this many key + value bytes.
    pub max_batch_bytes: usize,
    /// Batches in flight per node at once. With 1 (the default), operations
    /// that arrive while a batch is out wait for its answer and go together
    /// in the next one: the fewest messages, the most CPU left for work
    /// (measured with the proxy under redis-benchmark). Raise it when a batch
    /// may take long on the node (`--wal-fsync always` writes wait for the
    /// disk) and reads should not wait behind it.
    ///
    /// A queued operation whose attempt deadline passes is failed, not sent,
    /// and every batch is bounded by the latest attempt deadline among its
    /// operations; so an operation waiting behind others gets its answer by
    /// the later of its own deadline and theirs.
    pub max_in_flight: usize,
    /// Operations that may wait per node before callers wait to enqueue.
    pub queue: usize,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_batch_bytes: 1 << 20,
            max_in_flight: 1,
            queue: 4096,
        }
    }
}

/// Default [`RebalanceConfig::grace`].
pub const DEFAULT_REBALANCE_GRACE: Duration = Duration::from_secs(10);
/// Default [`RebalanceConfig::keys_per_sec`].
pub const DEFAULT_REBALANCE_KEYS_PER_SEC: u64 = 20_000;
/// Default [`RebalanceConfig::bytes_per_sec`]: 32 MiB/s.
pub const DEFAULT_REBALANCE_BYTES_PER_SEC: u64 = 32 << 20;

/// What a membership change does before the new ring is used alone: the
/// keys whose owners changed are copied from the old owners to the new
/// ones (see [`Client::set_nodes`](crate::Client::set_nodes)).
#[derive(Debug, Clone)]
pub struct RebalanceConfig {
    /// How long after a change the copy starts, and the least time the old
    /// owners keep taking writes and answering reads: long enough for every
    /// other client (each proxy polling its discovery) to see the change,
    /// since until then they write to the old owners only.
    pub grace: Duration,
    /// Most entries copied per second (summed over the new owners).
    pub keys_per_sec: u64,
    /// Most key and value bytes copied per second.
    pub bytes_per_sec: u64,
    /// When a move is done, tell the nodes of the ring left to forget
    /// (through their WAL) what they no longer own. Off by default: a
    /// client whose copy ends later than this one's drain (a retried pass,
    /// a change seen much later) still reads and copies from those nodes,
    /// and would miss what they forgot.
    pub forget_moved: bool,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        Self {
            grace: DEFAULT_REBALANCE_GRACE,
            keys_per_sec: DEFAULT_REBALANCE_KEYS_PER_SEC,
            bytes_per_sec: DEFAULT_REBALANCE_BYTES_PER_SEC,
            forget_moved: false,
        }
    }
}

/// Everything a [`Client`](crate::Client) needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Nodes: `http://host:port`, whose spelling is its ring identity, or
    /// `ID=http://host:port`, placed on the ring by `ID` whatever its
    /// address (a node that comes back at another address keeps its keys).
    pub nodes: Vec<String>,
    /// Replicas per key (N).
    pub replicas: usize,
    /// Virtual nodes per node on the ring.
    pub vnodes: usize,
    /// Default read consistency.
    pub read_consistency: Consistency,
    /// Default write consistency.
    pub write_consistency: Consistency,
    /// Overall deadline of one call.
    pub timeout: Duration,
    /// Deadline of one attempt against one node. With coalescing, an
    /// operation queued behind others may wait until theirs (see
    /// [`CoalesceConfig::max_in_flight`]).
    pub attempt_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// HTTP/2 connections per node.
    pub pool_size: usize,
    /// HTTP/2 keepalive ping interval.
    pub keepalive: Duration,
    /// Consecutive failures that mark a node unhealthy.
    pub failure_threshold: u32,
    /// Interval of active health checks; `Duration::ZERO` disables them.
    pub probe_interval: Duration,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Coalescing of concurrent operations per node.
    pub coalesce: CoalesceConfig,
    /// Bearer token sent as `authorization` metadata (a running client's
    /// can be replaced with [`Client::set_token`](crate::Client::set_token)).
    pub token: Option<String>,
    /// Where a running client's connections read the token from; the
    /// client fills it from `token` when it is built. Leave it at its
    /// default.
    #[doc(hidden)]
    pub token_slot: TokenSlot,
    /// PEM CA bundle to verify `https://` nodes with (rustls, ring
    /// provider). Needs the `tls` feature (on by default): without it
    /// [`validate`](Self::validate) refuses a CA bundle and `https://` nodes.
    pub tls_ca: Option<Vec<u8>>,
    /// Client certificate and key presented to `https://` nodes that
    /// require one (mTLS: a node's `--tls-client-ca`). Needs `tls_ca`.
    pub tls_identity: Option<TlsIdentity>,
    /// Bytes of values one multi-key read (`mget`) may return, a key asked
    /// for twice counting twice; past it the call fails with
    /// `Error::ResourceExhausted` instead of holding an unbounded answer.
    pub max_answer_bytes: usize,
    /// How membership changes move the data.
    pub rebalance: RebalanceConfig,
    /// Bytes of keys and values the near cache keeps (0: no near cache).
    /// See [`ClientBuilder::near_cache`](crate::ClientBuilder::near_cache).
    pub near_cache_bytes: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            replicas: DEFAULT_REPLICAS,
            vnodes: crate::ring::DEFAULT_VNODES,
            read_consistency: Consistency::One,
            write_consistency: Consistency::One,
            timeout: DEFAULT_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            keepalive: Duration::from_secs(20),
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            retry: RetryConfig::default(),
            coalesce: CoalesceConfig::default(),
            token: None,
            token_slot: TokenSlot::default(),
            tls_ca: None,
            tls_identity: None,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            rebalance: RebalanceConfig::default(),
            near_cache_bytes: 0,
        }
    }
}

impl ClientConfig {
    /// Checks the configuration and normalises node URLs.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        if self.replicas == 0 {
            return Err(ConfigError::ZeroReplicas);
        }
        check_tls(self.tls_ca.as_deref(), self.tls_identity.as_ref())?;
        for spec in &mut self.nodes {
            let (name, url) = parse_node(spec, self.tls_ca.is_some())?;
            *spec = if name == url {
                url
            } else {
                format!("{name}={url}")
            };
        }
        if let Some(t) = &self.token
            && tonic::metadata::MetadataValue::try_from(format!("Bearer {t}")).is_err()
        {
            return Err(ConfigError::BadToken);
        }
        self.pool_size = self.pool_size.max(1);
        self.timeout = self.timeout.min(MAX_TIMEOUT);
        self.attempt_timeout = self.attempt_timeout.min(MAX_TIMEOUT);
        self.connect_timeout = self.connect_timeout.min(MAX_TIMEOUT);
        // tower's budget asserts these ranges; clamp rather than panic.
        let r = &mut self.retry;
        r.budget_window = r
            .budget_window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        r.budget_ratio = r.budget_ratio.clamp(0.0, 1000.0);
        r.budget_min_per_sec = r.budget_min_per_sec.min(1 << 30);
        self.failure_threshold = self.failure_threshold.max(1);
        let rb = &mut self.rebalance;
        rb.grace = rb.grace.min(MAX_TIMEOUT);
        rb.keys_per_sec = rb.keys_per_sec.max(1);
        rb.bytes_per_sec = rb.bytes_per_sec.max(1);
        Ok(())
    }
}

/// The `authorization` value a client's connections send, shared by all
/// of them so that [`Client::set_token`](crate::Client::set_token) takes
/// effect on every node's next request. Its `Debug` hides the token.
#[derive(Clone, Default)]
pub struct TokenSlot(
    std::sync::Arc<
        std::sync::RwLock<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>>,
    >,
);

impl TokenSlot {
    /// A slot holding `token` (`None`: send no token).
    pub(crate) fn new(token: Option<&str>) -> Result<Self, ConfigError> {
        let slot = Self::default();
        slot.set(token)?;
        Ok(slot)
    }

    /// Replaces the token; a token that is no header value is refused and
    /// the old one kept.
    pub(crate) fn set(&self, token: Option<&str>) -> Result<(), ConfigError> {
        let value = match token {
            Some(t) => Some(
                tonic::metadata::MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| ConfigError::BadToken)?,
            ),
            None => None,
        };
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
        Ok(())
    }

    /// The value to send, if any.
    pub(crate) fn get(&self) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for TokenSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.get().is_some();
        f.debug_tuple("TokenSlot").field(&set).finish()
    }
}

/// A client certificate chain and its private key, both PEM, that a client
/// presents to nodes requiring client certificates (mTLS). Its `Debug`
/// shows neither (the key is a secret).
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first (PEM `CERTIFICATE` blocks).
    pub cert_pem: Vec<u8>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

/// Whether the TLS settings can be used: PEM where PEM is due, an identity
/// only with a CA bundle, and none of it in a build without the `tls`
/// feature. (The PEM is parsed when the connections are made, so a
/// malformed block is still refused by `build`.)
fn check_tls(ca: Option<&[u8]>, identity: Option<&TlsIdentity>) -> Result<(), ConfigError> {
    let has_pem = |pem: &[u8], label: &str| {
        let text = String::from_utf8_lossy(pem);
        text.contains("-----BEGIN ") && text.contains(label)
    };
    if !cfg!(feature = "tls") && (ca.is_some() || identity.is_some()) {
        return Err(ConfigError::Tls(NO_TLS_FEATURE.into()));
    }
    if let Some(pem) = ca
        && !has_pem(pem, "CERTIFICATE-----")
    {
        return Err(ConfigError::Tls("tls_ca holds no PEM certificate".into()));
    }
    if let Some(id) = identity {
        if ca.is_none() {
            return Err(ConfigError::Tls(
                "a client certificate (tls_identity) is presented over https:// only: \
                 it needs a CA bundle (tls_ca) too"
                    .into(),
            ));
        }
        if !has_pem(&id.cert_pem, "CERTIFICATE-----") {
            return Err(ConfigError::Tls(
                "tls_identity's certificate holds no PEM certificate".into(),
            ));
        }
        if !has_pem(&id.key_pem, "PRIVATE KEY-----") {
            return Err(ConfigError::Tls(
                "tls_identity's key holds no PEM private key".into(),
            ));
        }
    }
    Ok(())
}

/// The refusal of a build without the `tls` feature to use TLS.
const NO_TLS_FEATURE: &str =
    "this build of the distcache crate has no TLS (its `tls` feature is off)";

/// Longest node id in an `ID=URL` entry.
pub(crate) const MAX_NODE_ID: usize = 255;

/// One node entry: `URL`, or `ID=URL` naming the node by a stable id (a
/// StatefulSet pod name, a Consul service id) that places it on the ring
/// whatever its address. Returns (ring name, normalised URL); without an id
/// the ring name is the normalised URL, as it always was.
pub(crate) fn parse_node(spec: &str, has_ca: bool) -> Result<(String, String), ConfigError> {
    let spec = spec.trim();
    let (id, url) = match spec.split_once('=') {
        Some((id, url)) if !id.contains('/') && !id.contains(':') => (Some(id.trim()), url),
        _ => (None, spec),
    };
    let url = normalise_url(url, has_ca)?;
    match id {
        None => Ok((url.clone(), url)),
        Some(id)
            if id.is_empty()
                || id.len() > MAX_NODE_ID
                || id.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Err(ConfigError::BadUrl {
                url: spec.to_owned(),
                reason: format!(
                    "a node id is 1 to {MAX_NODE_ID} characters without spaces (ID=URL)"
                ),
            })
        }
        Some(id) => Ok((id.to_owned(), url)),
    }
}

/// `url` as the client names nodes: trimmed, without a trailing `/`, with
/// `http://` when it has no scheme (`https://` when a CA bundle is set);
/// `https://` needs a CA bundle, and with one `http://` is refused, so a
/// token never crosses the network in clear.
pub(crate) fn normalise_url(url: &str, has_ca: bool) -> Result<String, ConfigError> {
    let trimmed = url.trim().trim_end_matches('/');
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else if has_ca {
        format!("https://{trimmed}")
    } else {
        format!("http://{trimmed}")
    };
    if let Err(e) = with_scheme.parse::<tonic::transport::Uri>() {
        return Err(ConfigError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        });
    }
    if with_scheme.starts_with("https://") && !cfg!(feature = "tls") {
        // Without TLS, tonic would speak plaintext HTTP/2 to an https:// URL.
        return Err(ConfigError::Tls(format!("{with_scheme}: {NO_TLS_FEATURE}")));
    }
    if with_scheme.starts_with("https://") && !has_ca {
        return Err(ConfigError::Tls(format!(
            "{with_scheme}: https:// nodes need a CA bundle (tls_ca)"
        )));
    }
    if with_scheme.starts_with("http://") && has_ca {
        return Err(ConfigError::Tls(format!(
            "{with_scheme}: with a CA bundle (tls_ca) configured, nodes must be https:// \
             (over http:// the token and the data would cross the network in clear)"
        )));
    }
    Ok(with_scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(nodes: &[&str]) -> ClientConfig {
        ClientConfig {
            nodes: nodes.iter().map(|s| (*s).to_owned()).collect(),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn urls_are_normalised() {
        let mut c = config(&["127.0.0.1:7001", "http://b:7002/", " http://c:7003 "]);
        assert!(c.validate().is_ok());
        assert_eq!(
            c.nodes,
            ["http://127.0.0.1:7001", "http://b:7002", "http://c:7003"]
        );
    }

    #[test]
    fn nodes_may_be_named_by_an_id() {
        assert_eq!(
            parse_node(" cache-0=10.0.0.1:7001 ", false).expect("id"),
            ("cache-0".to_owned(), "http://10.0.0.1:7001".to_owned())
        );
        assert_eq!(
            parse_node("http://10.0.0.1:7001", false).expect("url"),
            (
                "http://10.0.0.1:7001".to_owned(),
                "http://10.0.0.1:7001".to_owned()
            )
        );
        for bad in ["=10.0.0.1:7001", "a b=10.0.0.1:7001"] {
            assert!(
                matches!(parse_node(bad, false), Err(ConfigError::BadUrl { .. })),
                "{bad}"
            );
        }
        let long = format!("{}=10.0.0.1:7001", "x".repeat(MAX_NODE_ID + 1));
        assert!(parse_node(&long, false).is_err());
        let mut c = config(&["cache-0=10.0.0.1:7001", "10.0.0.2:7001"]);
        assert!(c.validate().is_ok());
        assert_eq!(
            c.nodes,
            ["cache-0=http://10.0.0.1:7001", "http://10.0.0.2:7001"]
        );
    }

    #[test]
    #[cfg(feature = "tls")]
    fn with_a_ca_bundle_nodes_are_https_and_plaintext_is_refused() {
        assert_eq!(
            normalise_url("10.0.0.1:7001", true).expect("bare"),
            "https://10.0.0.1:7001"
        );
        assert_eq!(
            normalise_url("10.0.0.1:7001", false).expect("bare"),
            "http://10.0.0.1:7001"
        );
        let e = normalise_url("http://10.0.0.1:7001", true).expect_err("clear text");
        assert!(
            matches!(&e, ConfigError::Tls(m) if m.contains("in clear")),
            "{e}"
        );
        assert!(normalise_url("https://10.0.0.1:7001", false).is_err());
    }

    #[test]
    fn invalid_configurations_are_refused() {
        assert!(matches!(config(&[]).validate(), Err(ConfigError::NoNodes)));
        let mut c = config(&["a:1"]);
        c.replicas = 0;
        assert!(matches!(c.validate(), Err(ConfigError::ZeroReplicas)));
        let mut c = config(&["https://a:1"]);
        assert!(matches!(c.validate(), Err(ConfigError::Tls(_))));
        c.tls_ca = Some(b"not a certificate".to_vec());
        assert!(matches!(c.validate(), Err(ConfigError::Tls(_))));
        let mut c = config(&["a:1"]);
        c.token = Some("bad\ntoken".into());
        assert!(matches!(c.validate(), Err(ConfigError::BadToken)));
        assert!(matches!(
            config(&["http://[::1"]).validate(),
            Err(ConfigError::BadUrl { .. })
        ));
    }

    const CERT: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &[u8] = b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";

    fn identity(cert: &[u8], key: &[u8]) -> Option<TlsIdentity> {
        Some(TlsIdentity {
            cert_pem: cert.to_vec(),
            key_pem: key.to_vec(),
        })
    }

    #[test]
    #[cfg(feature = "tls")]
    fn a_client_identity_needs_a_ca_bundle_and_pem() {
        let tls = |ca: Option<&[u8]>, id: Option<TlsIdentity>| {
            let mut c = config(&["10.0.0.1:7001"]);
            c.tls_ca = ca.map(<[u8]>::to_vec);
            c.tls_identity = id;
            c.validate()
        };
        assert!(tls(Some(CERT), identity(CERT, KEY)).is_ok());
        let refused = |r: Result<(), ConfigError>, want: &str| {
            assert!(
                matches!(&r, Err(ConfigError::Tls(m)) if m.contains(want)),
                "{r:?}"
            );
        };
        refused(tls(None, identity(CERT, KEY)), "needs a CA bundle");
        refused(tls(Some(CERT), identity(KEY, KEY)), "no PEM certificate");
        refused(tls(Some(CERT), identity(CERT, CERT)), "no PEM private key");
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn without_the_tls_feature_tls_settings_are_refused() {
        let mut c = config(&["https://10.0.0.1:7001"]);
        assert!(matches!(c.validate(), Err(ConfigError::Tls(m)) if m.contains("`tls` feature")));
        let mut c = config(&["10.0.0.1:7001"]);
        c.tls_ca = Some(CERT.to_vec());
        assert!(matches!(c.validate(), Err(ConfigError::Tls(m)) if m.contains("`tls` feature")));
    }

    #[test]
    fn an_identity_never_shows_its_key() {
        let shown = format!("{:?}", identity(CERT, KEY));
        assert!(
            !shown.contains("PRIVATE") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn quorum_is_a_majority() {
        assert_eq!(Consistency::Quorum.required(2), 2);
        assert_eq!(Consistency::Quorum.required(3), 2);
        assert_eq!(Consistency::Quorum.required(5), 3);
        assert_eq!(Consistency::One.required(3), 1);
        assert_eq!(Consistency::All.required(3), 3);
        assert_eq!("QUORUM".parse::<Consistency>(), Ok(Consistency::Quorum));
    }
}
