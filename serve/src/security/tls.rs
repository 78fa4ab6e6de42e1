//! TLS for the gRPC listener: reads the PEM files named in `[tls]`, checks
//! them with `rustls-pki-types` so a bad file fails start-up with its path in
//! the message, and builds tonic's rustls (ring) server configuration. TLS 1.2
//! and 1.3 are offered; with a client CA, clients must present a certificate
//! it signed (mTLS). [`acceptor`] builds the same thing as a bare rustls
//! acceptor for non-gRPC listeners (the proxy's RESP port).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, RootCertStore, server::WebPkiClientVerifier};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

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

/// The PEM text of a certificate file and the certificates in it.
type Certs = (Vec<u8>, Vec<CertificateDer<'static>>);

fn certs(path: &Path) -> Result<Certs, TlsError> {
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
    Ok((pem, parsed))
}

fn key(path: &Path) -> Result<(Vec<u8>, PrivateKeyDer<'static>), TlsError> {
    let pem = read(path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })?;
    Ok((pem, key))
}

/// tonic's server TLS settings for `c`, or `None` when TLS is off.
pub fn server_config(c: &TlsConfig) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&c.cert, &c.key) else {
        return Ok(None);
    };
    let (cert, _) = certs(cert_path)?;
    let (key, _) = key(key_path)?;
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(c.handshake_timeout.0);
    if let Some(ca) = &c.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(certs(ca)?.0));
    }
    Ok(Some(tls))
}

/// The same certificates and rules as [`server_config`] (rustls with ring,
/// TLS 1.2 and 1.3, client certificates from `client_ca` required when set)
/// as a plain rustls acceptor, for listeners tonic does not serve (the
/// proxy's Redis-protocol port). No ALPN. `None` when TLS is off. The caller
/// bounds the handshake with `c.handshake_timeout`.
pub fn acceptor(c: &TlsConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&c.cert, &c.key) else {
        return Ok(None);
    };
    let (_, chain) = certs(cert_path)?;
    let (_, key) = key(key_path)?;
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
            for cert in certs(ca)?.1 {
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
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad(key_path, format!("key does not fit the certificate: {e}")))?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
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
        let e = server_config(&cfg(&junk, &junk)).expect_err("junk");
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
        let e = server_config(&cfg(&c, &junk)).expect_err("bad key");
        assert!(e.to_string().contains("private key"), "{e}");
        let e = server_config(&cfg(&c, &dir.join("missing.pem"))).expect_err("missing");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert!(server_config(&cfg(&c, &k)).expect("good").is_some());
        assert!(server_config(&TlsConfig::default()).expect("off").is_none());
        assert!(acceptor(&cfg(&c, &k)).expect("good").is_some());
        assert!(acceptor(&TlsConfig::default()).expect("off").is_none());
        let e = acceptor(&cfg(&c, &junk))
            .map(|a| a.is_some())
            .expect_err("bad key");
        assert!(e.to_string().contains("private key"), "{e}");
        let other = rcgen::KeyPair::generate().expect("key");
        let o = dir.join("other.key");
        std::fs::write(&o, other.serialize_pem()).expect("write");
        let e = acceptor(&cfg(&c, &o))
            .map(|a| a.is_some())
            .expect_err("mismatched key");
        assert!(e.to_string().contains("other.key"), "{e}");
        let mtls = TlsConfig {
            client_ca: Some(c.clone()),
            ..cfg(&c, &k)
        };
        assert!(acceptor(&mtls).expect("mTLS").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
