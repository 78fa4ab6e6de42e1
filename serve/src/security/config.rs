//! The `[tls]`, `[auth]` and `[rate_limit]` sections of the node's TOML file.
//! Secrets never come from TOML: `[auth] secret_file` names a file of
//! `key-id:secret` lines, and the command line adds `DISTCACHE_AUTH_SECRET`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::bucket::Rate;
use super::token::KeySet;
use crate::units::HumanDuration;

/// Per-client rate `--enable-rate-limiting` turns on, requests per second.
pub const DEFAULT_PER_CLIENT_RPS: f64 = 1_000.0;
/// Global rate `--enable-rate-limiting` turns on, requests per second.
pub const DEFAULT_GLOBAL_RPS: f64 = 50_000.0;
/// Key id of a secret given without one (environment variable or argv).
pub const DEFAULT_KEY_ID: &str = "default";

/// `[tls]`: TLS is on when `cert` and `key` are set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain, PEM.
    #[serde(alias = "cert_file", alias = "server_cert")]
    pub cert: Option<PathBuf>,
    /// Server private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(alias = "key_file", alias = "server_key")]
    pub key: Option<PathBuf>,
    /// CA certificates, PEM; when set, clients must present a certificate it signed.
    #[serde(alias = "ca_cert", alias = "client_ca_file")]
    pub client_ca: Option<PathBuf>,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: HumanDuration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            handshake_timeout: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl TlsConfig {
    /// Reads the prototype's `--tls-config FILE`: a TOML file with the same
    /// fields as `[tls]`; relative paths are taken from the file's folder.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read TLS config {}: {e}", path.display()))?;
        let mut c: TlsConfig = toml::from_str(&text)
            .map_err(|e| format!("invalid TLS config {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.cert, &mut c.key, &mut c.client_ca]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        Ok(c)
    }

    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }

    /// Checks that cert and key come together, and a client CA only with them.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) | (None, Some(_)) => {
                Err("tls: cert and key must be given together".into())
            }
            (None, None) if self.client_ca.is_some() => {
                Err("tls: client_ca needs cert and key (mTLS runs over TLS)".into())
            }
            _ => Ok(()),
        }
    }
}

/// `[auth]`: tokens are required when any secret is configured.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require tokens; start-up fails if this is set and no secret is configured.
    pub enabled: bool,
    /// File of `key-id:secret` lines; the last line signs new tokens.
    pub secret_file: Option<PathBuf>,
    /// Clock-skew leeway on token expiry.
    pub leeway: HumanDuration,
    /// Start with secrets shorter than [`MIN_SECRET_BYTES`] or a secret
    /// file every user can read (else refused; see [`check_secrets`]).
    pub allow_weak_secrets: bool,
    /// Secrets from the environment or argv (never from TOML).
    #[serde(skip)]
    pub keys: KeySet,
    /// A secret came from argv, where other users can read it.
    #[serde(skip)]
    pub secret_on_argv: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            secret_file: None,
            leeway: HumanDuration(Duration::from_secs(5)),
            allow_weak_secrets: false,
            keys: KeySet::default(),
            secret_on_argv: false,
        }
    }
}

impl AuthConfig {
    /// All configured secrets: `keys`, then `secret_file`'s lines (which win
    /// on a shared key id and sign, being newest). Empty means auth is off.
    pub fn load_keys(&self) -> Result<KeySet, String> {
        self.with_file_keys(self.file_keys()?.as_ref())
    }

    /// The secrets of `secret_file` alone (`None` without one); a file
    /// without any `key-id:secret` line is an error.
    pub fn file_keys(&self) -> Result<Option<KeySet>, String> {
        let Some(path) = &self.secret_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read auth secret file {}: {e}", path.display()))?;
        let file = KeySet::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if file.is_empty() {
            return Err(format!("{}: no key-id:secret line", path.display()));
        }
        Ok(Some(file))
    }

    /// `keys` and then `file` (see [`AuthConfig::load_keys`]).
    pub fn with_file_keys(&self, file: Option<&KeySet>) -> Result<KeySet, String> {
        let mut keys = self.keys.clone();
        if let Some(file) = file {
            keys.extend(file);
        }
        if self.enabled && keys.is_empty() {
            return Err(
                "auth is enabled but no secret is configured: use --auth-secret-file \
                 or DISTCACHE_AUTH_SECRET"
                    .into(),
            );
        }
        Ok(keys)
    }
}

/// Secrets shorter than this are refused (HMAC-SHA256 wants 32 bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// Weak secrets: shorter than [`MIN_SECRET_BYTES`], or in a secret file
/// every user of the machine can read. Each is refused at start-up and on
/// reload unless `allow_weak_secrets` ([`check_secrets`]).
pub fn weak_secrets(auth: &AuthConfig, keys: &KeySet) -> Vec<String> {
    let mut w = Vec::new();
    let short = keys.short_key_ids(MIN_SECRET_BYTES);
    if !short.is_empty() {
        w.push(format!(
            "auth secrets shorter than {MIN_SECRET_BYTES} bytes are easy to guess: key ids {short:?} \
             (make one with `head -c 32 /dev/urandom | base64`)"
        ));
    }
    if let Some((path, mode)) = secret_file_mode(auth)
        && mode & 0o004 != 0
    {
        w.push(format!(
            "auth secret file {} is readable by every user (mode {mode:o}); chmod 600 it",
            path.display()
        ));
    }
    w
}

/// The secret file and its permission bits, where the platform has them.
fn secret_file_mode(auth: &AuthConfig) -> Option<(&std::path::Path, u32)> {
    let path = auth.secret_file.as_deref()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        Some((path, mode))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Refuses [`weak_secrets`] unless `auth.allow_weak_secrets` (then they are
/// [`auth_warnings`]).
pub fn check_secrets(auth: &AuthConfig, keys: &KeySet) -> Result<(), String> {
    let weak = weak_secrets(auth, keys);
    if weak.is_empty() || auth.allow_weak_secrets {
        return Ok(());
    }
    Err(format!(
        "{}; or start with --allow-weak-secrets ([auth] allow_weak_secrets = true)",
        weak.join("; ")
    ))
}

/// Things worth a warning at start-up: a secret on argv, a secret file its
/// group can read (a Kubernetes Secret volume with `fsGroup` is 0440), and
/// the [`weak_secrets`] that `allow_weak_secrets` let through.
pub fn auth_warnings(auth: &AuthConfig, keys: &KeySet) -> Vec<String> {
    let mut w = Vec::new();
    if auth.secret_on_argv {
        w.push(
            "--auth-secret is visible to other users of this machine (ps, /proc); \
             use --auth-secret-file or DISTCACHE_AUTH_SECRET"
                .into(),
        );
    }
    if auth.allow_weak_secrets {
        w.extend(weak_secrets(auth, keys));
    }
    if let Some((path, mode)) = secret_file_mode(auth)
        && mode & 0o044 == 0o040
    {
        w.push(format!(
            "auth secret file {} is readable by its group; chmod 600 it unless that is meant",
            path.display()
        ));
    }
    w
}

/// `[rate_limit]`: token buckets; a rate of 0 turns that limit off.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second per client (token subject, else peer IP); 0 = off.
    pub per_client_rps: f64,
    /// Requests a client may send at once; 0 means one second's worth.
    pub per_client_burst: u32,
    /// Requests per second for the whole node; 0 = off.
    pub global_rps: f64,
    /// Requests the node accepts at once; 0 means one second's worth.
    pub global_burst: u32,
    /// Most clients tracked; the longest-idle one is forgotten beyond it.
    pub max_clients: usize,
    /// A client's bucket is forgotten after this long without requests.
    pub idle_timeout: HumanDuration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_client_rps: 0.0,
            per_client_burst: 0,
            global_rps: 0.0,
            global_burst: 0,
            max_clients: 100_000,
            idle_timeout: HumanDuration(Duration::from_secs(60)),
        }
    }
}

fn rate(rps: f64, burst: u32) -> Option<Rate> {
    (rps > 0.0).then(|| Rate {
        per_sec: rps,
        burst: if burst == 0 {
            rps.max(1.0)
        } else {
            f64::from(burst)
        },
    })
}

impl RateLimitConfig {
    /// The per-client rate, if on.
    pub fn per_client(&self) -> Option<Rate> {
        rate(self.per_client_rps, self.per_client_burst)
    }

    /// The global rate, if on.
    pub fn global(&self) -> Option<Rate> {
        rate(self.global_rps, self.global_burst)
    }

    fn validate(&self) -> Result<(), String> {
        let ok = |r: f64| r.is_finite() && r >= 0.0;
        if !ok(self.per_client_rps) || !ok(self.global_rps) {
            return Err("rate_limit: rates must be finite and not negative".into());
        }
        if self.max_clients == 0 {
            return Err("rate_limit.max_clients must be positive".into());
        }
        Ok(())
    }
}

/// Checks the three sections together.
pub fn validate(tls: &TlsConfig, rate_limit: &RateLimitConfig) -> Result<(), String> {
    tls.validate()?;
    rate_limit.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_merge_and_warnings() {
        let dir = std::env::temp_dir().join(format!("distcache-auth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("keys");
        std::fs::write(&file, "k2:a-secret-that-is-long-enough-32b\n").expect("write");
        let mut auth = AuthConfig::default();
        auth.keys.insert(DEFAULT_KEY_ID, b"short").expect("valid");
        auth.secret_file = Some(file.clone());
        auth.secret_on_argv = true;
        let keys = auth.load_keys().expect("loads");
        assert_eq!(
            keys.signing_key_id(),
            Some("k2"),
            "the file's newest key signs"
        );
        // A short secret is refused, and so is a file every user can read.
        let e = check_secrets(&auth, &keys).expect_err("weak");
        assert!(e.contains("\"default\"") && !e.contains("\"k2\""), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |m| std::fs::Permissions::from_mode(m);
            std::fs::set_permissions(&file, mode(0o644)).expect("chmod");
            let e = check_secrets(&auth, &keys).expect_err("weak");
            assert!(e.contains("readable by every user"), "{e}");
            std::fs::set_permissions(&file, mode(0o640)).expect("chmod");
            let e = check_secrets(&auth, &keys).expect_err("still short");
            assert!(!e.contains("readable by every user"), "{e}");
            let w = auth_warnings(&auth, &keys).join("\n");
            assert!(w.contains("readable by its group"), "{w}");
        }
        // Allowed, they are warnings instead.
        auth.allow_weak_secrets = true;
        check_secrets(&auth, &keys).expect("allowed");
        let w = auth_warnings(&auth, &keys).join("\n");
        assert!(w.contains("visible to other users"), "{w}");
        assert!(w.contains("\"default\"") && !w.contains("\"k2\""), "{w}");
        let off = AuthConfig {
            enabled: true,
            ..AuthConfig::default()
        };
        assert!(
            off.load_keys()
                .expect_err("no secret")
                .contains("no secret")
        );
        let missing = AuthConfig {
            secret_file: Some(dir.join("nope")),
            ..AuthConfig::default()
        };
        assert!(missing.load_keys().expect_err("missing").contains("nope"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rates_and_bursts() {
        let mut r = RateLimitConfig::default();
        assert!(r.per_client().is_none() && r.global().is_none());
        r.per_client_rps = 0.5;
        r.global_rps = 100.0;
        r.global_burst = 7;
        assert_eq!(r.per_client().map(|r| r.burst), Some(1.0));
        assert_eq!(r.global().map(|r| r.burst), Some(7.0));
        r.global_rps = f64::NAN;
        assert!(r.validate().is_err());
    }
}
