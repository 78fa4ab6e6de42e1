//! TLS for the gRPC listener: reads the PEM files named in `[tls]`, checks
//! them with `rustls-pki-types` so a bad file fails start-up with its path in
//! the message, and builds tonic's rustls (ring) server configuration. TLS 1.2
//! and 1.3 are offered; with a client CA, clients must present a certificate
//! it signed (mTLS).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
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

fn certs(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(path)?;
    let bad = |what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(&pem) {
        c.map_err(|e| bad(format!("bad certificate PEM: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(bad("no CERTIFICATE block found".into()));
    }
    Ok(pem)
}

/// tonic's server TLS settings for `c`, or `None` when TLS is off.
pub fn server_config(c: &TlsConfig) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&c.cert, &c.key) else {
        return Ok(None);
    };
    let cert = certs(cert_path)?;
    let key = read(key_path)?;
    PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        what: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })?;
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(c.handshake_timeout.0);
    if let Some(ca) = &c.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(certs(ca)?));
    }
    Ok(Some(tls))
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
