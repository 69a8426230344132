//! TLS termination for the proxy's HTTPS listener: certificate and key PEM files per hostname or
//! wildcard (`*.example.com`, one label deep), chosen by SNI. A client that sends no SNI, or a
//! name no certificate covers, gets the first configured certificate (as nginx's default server
//! does); the request is then routed by `Host` like any other.
//!
//! rustls is built with the aws-lc-rs provider passed explicitly, the same one reqwest and the
//! upstream connector use, so no process-wide default provider has to be installed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// One configured certificate: the hostname (or `*.` wildcard) it serves and its PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub hostname: String,
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate is configured")]
    NoCertificates,
    #[error("{hostname}: cannot read {}: {source}", path.display())]
    Read {
        hostname: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{hostname}: {} holds no PEM certificate", path.display())]
    NoCertificate { hostname: String, path: PathBuf },
    #[error("{hostname}: {} holds no usable PEM private key: {message}", path.display())]
    Key {
        hostname: String,
        path: PathBuf,
        message: String,
    },
    #[error("{hostname}: the key does not belong to the certificate, or is not supported: {message}")]
    Mismatch { hostname: String, message: String },
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider of every rustls configuration the proxy builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads every certificate and builds the acceptor of the HTTPS listener (ALPN `http/1.1`).
pub fn acceptor(files: &[CertificateFiles]) -> Result<TlsAcceptor, TlsError> {
    let provider = provider();
    let mut resolver = SniResolver::default();
    for file in files {
        let key = Arc::new(load_certified_key(file, &provider)?);
        let name = file.hostname.trim_end_matches('.').to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(parent) => resolver
                .wildcard
                .entry(parent.to_owned())
                .or_insert_with(|| key.clone()),
            None => resolver.exact.entry(name).or_insert_with(|| key.clone()),
        };
        resolver.fallback.get_or_insert(key);
    }
    if resolver.fallback.is_none() {
        return Err(TlsError::NoCertificates);
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(hostname: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        hostname: hostname.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn load_certified_key(file: &CertificateFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let hostname = file.hostname.as_str();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(hostname, &file.cert)?)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            hostname: hostname.to_owned(),
            path: file.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(hostname, &file.key)?).map_err(|e| TlsError::Key {
        hostname: hostname.to_owned(),
        path: file.key.clone(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        hostname: hostname.to_owned(),
        message: e.to_string(),
    })
}

/// Picks a certificate by SNI: an exact name first, then a wildcard for the parent domain, then
/// the first configured one.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the domain under the `*.`: `*.example.com` → `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    fallback: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn find(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = server_name.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        found.or(self.fallback.as_ref()).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_hostname_and_the_path() {
        let files = [CertificateFiles {
            hostname: "app.example.test".into(),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        }];
        let err = acceptor(&files).err().expect("an error");
        let message = err.to_string();
        assert!(message.contains("app.example.test"), "{message}");
        assert!(message.contains("/nonexistent/cert.pem"), "{message}");
        assert!(matches!(acceptor(&[]), Err(TlsError::NoCertificates)));
    }

    #[test]
    fn a_file_without_pem_blocks_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let files = [CertificateFiles {
            hostname: "app.example.test".into(),
            cert: cert.clone(),
            key: cert,
        }];
        assert!(matches!(acceptor(&files), Err(TlsError::NoCertificate { .. })));
    }
}
