//! The TLS flags every server process takes (`--tls-cert`, `--tls-key`,
//! `--tls-client-ca`, `--tls-config`, `--use-tls`, and their
//! `DISTCACHE_TLS_*` variables), applied over a `[tls]` section.

use std::path::PathBuf;

use super::config::TlsConfig;

/// The TLS flags, shared with `distcache-proxy` (its front ends take the
/// same ones, and the same `DISTCACHE_TLS_*` variables).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Server certificate chain (PEM); with --tls-key turns TLS on.
    #[arg(long, env = "DISTCACHE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "DISTCACHE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that client certificates must chain to (mTLS).
    #[arg(long, env = "DISTCACHE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// TOML file with cert, key and optional client_ca (the C++ prototype's flag).
    #[arg(long, env = "DISTCACHE_TLS_CONFIG")]
    pub tls_config: Option<PathBuf>,
    /// Require TLS; start-up fails unless a certificate and key are configured.
    #[arg(long)]
    pub use_tls: bool,
}

impl TlsArgs {
    /// Applies the flags over `tls`: `--tls-config`'s file replaces it, then
    /// the single-file flags override fields; checks the result.
    pub fn apply(&self, tls: &mut TlsConfig) -> Result<(), String> {
        if let Some(path) = &self.tls_config {
            *tls = TlsConfig::from_file(path)?;
        }
        set_some(&mut tls.cert, &self.tls_cert);
        set_some(&mut tls.key, &self.tls_key);
        set_some(&mut tls.client_ca, &self.tls_client_ca);
        if self.use_tls && !tls.enabled() {
            return Err("--use-tls needs --tls-cert and --tls-key (or --tls-config FILE)".into());
        }
        tls.validate()
    }
}

fn set_some<T: Clone>(slot: &mut Option<T>, v: &Option<T>) {
    if v.is_some() {
        slot.clone_from(v);
    }
}
