//! What a reload re-reads of the security stack: the certificate, key and
//! client CA of each TLS listener, and the secret file. Everything is read
//! and checked first ([`Reloader::prepare`]); only if all of it is usable is
//! it put in force together ([`Prepared::apply`]), so a failed reload keeps
//! every old file's content, never half of them.
//!
//! Not reloaded (they need a restart): turning TLS or tokens on or off, the
//! handshake timeout, the leeway, secrets from the environment or argv, and
//! which files are named. A reload refuses weak secrets as start-up does
//! ([`check_secrets`]: shorter than 32 bytes, or a file every user can
//! read) unless `allow_weak_secrets`.

use std::sync::Arc;

use tokio_rustls::rustls::ServerConfig;

use super::SecurityError;
use super::config::{AuthConfig, TlsConfig, auth_warnings, check_secrets};
use super::live_keys::LiveKeys;
use super::live_tls::LiveTls;
use super::token::KeySet;

/// The live material of one process and the settings naming its files;
/// the default reloads nothing.
#[derive(Debug, Clone, Default)]
pub struct Reloader {
    tls_config: TlsConfig,
    auth: AuthConfig,
    tls: Vec<Arc<LiveTls>>,
    keys: Option<Arc<LiveKeys>>,
}

/// Everything re-read and found usable, not yet in force.
#[derive(Debug)]
pub struct Prepared {
    tls: Vec<(Arc<LiveTls>, Arc<ServerConfig>)>,
    keys: Option<(Arc<LiveKeys>, KeySet)>,
}

impl Reloader {
    /// Reloads the files `tls_config` names into each of `tls` (a process
    /// may serve the same files on several listeners) and `auth`'s secret
    /// file into `keys` (`None`: tokens are off).
    pub fn new(
        tls_config: TlsConfig,
        auth: AuthConfig,
        tls: Vec<Arc<LiveTls>>,
        keys: Option<Arc<LiveKeys>>,
    ) -> Self {
        Self {
            tls_config,
            auth,
            tls,
            keys,
        }
    }

    /// Reads and checks every file again.
    pub fn prepare(&self) -> Result<Prepared, SecurityError> {
        let mut tls = Vec::new();
        for live in &self.tls {
            tls.push((live.clone(), live.reread(&self.tls_config)?));
        }
        let keys = match &self.keys {
            None => None,
            Some(live) => {
                let file = self.auth.file_keys().map_err(SecurityError::Auth)?;
                let keys = self
                    .auth
                    .with_file_keys(file.as_ref())
                    .map_err(SecurityError::Auth)?;
                check_secrets(&self.auth, &keys).map_err(SecurityError::Auth)?;
                for warning in auth_warnings(&self.auth, &keys) {
                    tracing::warn!("{warning}");
                }
                Some((live.clone(), keys))
            }
        };
        Ok(Prepared { tls, keys })
    }

    /// [`Reloader::prepare`], then [`Prepared::apply`]; on error nothing
    /// changed.
    pub fn reload(&self) -> Result<String, SecurityError> {
        self.prepare().map(Prepared::apply)
    }
}

impl Prepared {
    /// Puts everything in force; says what was reloaded.
    pub fn apply(self) -> String {
        let mut what = Vec::new();
        if !self.tls.is_empty() {
            what.push("TLS certificate and key".to_owned());
        }
        for (live, config) in self.tls {
            live.install(config);
        }
        if let Some((live, keys)) = self.keys {
            what.push(format!(
                "auth secrets (signing key {})",
                keys.signing_key_id().unwrap_or("none")
            ));
            live.replace(keys);
        }
        if what.is_empty() {
            "no certificates or secrets configured".into()
        } else {
            what.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::live_tls::ALPN_H2;

    #[test]
    fn a_failed_reload_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("distcache-reloader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (c, k, s) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("keys"));
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        let long = "k1:0123456789abcdef0123456789abcdef\n";
        std::fs::write(&s, long).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Writes below keep the mode: a file every user can read is weak.
            std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let tls_config = TlsConfig {
            cert: Some(c.clone()),
            key: Some(k.clone()),
            ..TlsConfig::default()
        };
        let auth = AuthConfig {
            secret_file: Some(s.clone()),
            ..AuthConfig::default()
        };
        let live = LiveTls::load(&tls_config, &[ALPN_H2])
            .expect("tls")
            .expect("on");
        let keys = Arc::new(LiveKeys::new(auth.load_keys().expect("keys")));
        let r = Reloader::new(tls_config, auth, vec![live.clone()], Some(keys.clone()));
        let before = Arc::as_ptr(&keys.current());
        std::fs::write(&s, format!("{long}k2:short\n")).expect("write");
        let e = r.reload().expect_err("short secret");
        assert!(e.to_string().contains("\"k2\""), "{e}");
        std::fs::write(&s, format!("{long}k2:0123456789abcdef0123456789abcdeX\n")).expect("write");
        std::fs::write(&c, "garbage").expect("write");
        let e = r.reload().expect_err("bad PEM");
        assert!(e.to_string().contains("c.pem"), "{e}");
        assert_eq!(Arc::as_ptr(&keys.current()), before, "keys kept");
        std::fs::write(&c, cert.pem()).expect("write");
        let said = r.reload().expect("good");
        assert!(said.contains("signing key k2"), "{said}");
        assert_eq!(keys.current().signing_key_id(), Some("k2"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
