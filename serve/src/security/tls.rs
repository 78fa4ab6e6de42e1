//! TLS files: reads the PEM files named in `[tls]`, checks them with
//! `rustls-pki-types` so a bad file fails start-up (or a reload) with its
//! path in the message, and builds the rustls (ring) server configuration.
//! TLS 1.2 and 1.3 are offered; with a client CA, clients must present a
//! certificate it signed (mTLS). Serving it, and swapping it on reload, is
//! `live_tls.rs`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, RootCertStore, server::WebPkiClientVerifier};

use super::config::TlsConfig;

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates in a PEM file (at least one).
fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let bad = |what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let mut parsed = Vec::new();
    for c in CertificateDer::pem_slice_iter(&pem) {
        parsed.push(c.map_err(|e| bad(format!("bad certificate PEM: {e}")))?);
    }
    if parsed.is_empty() {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    Ok(parsed)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })?;
    Ok(key)
}

/// The rustls (ring) server configuration for `c`: TLS 1.2 and 1.3, the
/// certificate chain and key, client certificates from `client_ca`
/// required when set, and `alpn` offered (`h2` for gRPC, nothing for the
/// proxy's Redis-protocol port). `None` when TLS is off. The caller bounds
/// the handshake with `c.handshake_timeout`.
pub fn rustls_config(
    c: &TlsConfig,
    alpn: &[&[u8]],
) -> Result<Option<rustls::ServerConfig>, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&c.cert, &c.key) else {
        return Ok(None);
    };
    let chain = certs(cert_path)?;
    let key = key(key_path)?;
    let bad = |path: &Path, what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| bad(cert_path, format!("TLS set-up failed: {e}")))?;
    let builder = match &c.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| bad(ca, format!("unusable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad(ca, format!("unusable client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad(key_path, format!("key does not fit the certificate: {e}")))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_name_themselves() {
        let dir = std::env::temp_dir().join(format!("distcache-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a pem file\n").expect("write");
        let cfg = |cert: &Path, key: &Path| TlsConfig {
            cert: Some(cert.to_owned()),
            key: Some(key.to_owned()),
            ..TlsConfig::default()
        };
        let load = |c: &TlsConfig| rustls_config(c, &[b"h2"]).map(|c| c.is_some());
        let e = load(&cfg(&junk, &junk)).expect_err("junk");
        assert!(
            e.to_string().contains("junk.pem") && e.to_string().contains("CERTIFICATE"),
            "{e}"
        );
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        let e = load(&cfg(&c, &junk)).expect_err("bad key");
        assert!(e.to_string().contains("private key"), "{e}");
        let e = load(&cfg(&c, &dir.join("missing.pem"))).expect_err("missing");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert!(load(&cfg(&c, &k)).expect("good"));
        assert!(!load(&TlsConfig::default()).expect("off"));
        let other = rcgen::KeyPair::generate().expect("key");
        let o = dir.join("other.key");
        std::fs::write(&o, other.serialize_pem()).expect("write");
        let e = load(&cfg(&c, &o)).expect_err("mismatched key");
        assert!(e.to_string().contains("other.key"), "{e}");
        let mtls = TlsConfig {
            client_ca: Some(c.clone()),
            ..cfg(&c, &k)
        };
        assert!(load(&mtls).expect("mTLS"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
