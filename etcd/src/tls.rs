//! Loading the TLS files of [`Tls`] into tonic's client TLS configuration,
//! checking each on the way: tonic would skip a CA certificate it cannot parse
//! and fail only in the handshake, with an error that names no file.
//!
//! And finding out why a TLS connection failed when tonic cannot say: with TLS
//! 1.3 the client's handshake is over before the server has checked the client
//! certificate, so etcd's verdict (an alert, `CertificateRequired` or
//! `BadCertificate`) reaches only tonic's connection task, and the request sees
//! "connection closed". [`diagnose`] makes one TLS connection of its own with
//! the same settings and reads what etcd answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::AsyncReadExt;
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::{chain, Error};
use crate::security::Tls;

const CA: &str = "CA bundle";
const CERT: &str = "client certificate";
const KEY: &str = "client key";

/// The TLS settings loaded: tonic's configuration for the channels, and the
/// same as a rustls configuration for [`diagnose`].
#[derive(Clone)]
pub(crate) struct Loaded {
    pub(crate) tonic: ClientTlsConfig,
    rustls: Arc<ClientConfig>,
    /// Whether a client certificate is configured.
    identity: bool,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").finish_non_exhaustive()
    }
}

/// The client TLS configuration of `tls`: its CA bundle (else the system's
/// roots) and its client certificate and key, each read and parsed now.
pub(crate) fn load(tls: &Tls) -> Result<Loaded, Error> {
    let mut config = ClientTlsConfig::new();
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(path) => {
            let pem = read(CA, path)?;
            let certs = certificates(CA, path, &pem)?;
            let n = certs.len();
            for (i, cert) in certs.into_iter().enumerate() {
                roots.add(cert).map_err(|e| {
                    bad(CA, path, format!("certificate {} of {n} is not a usable X.509 certificate: {e}", i + 1))
                })?;
            }
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        None => {
            // Only for a diagnosis: tonic loads the system roots for itself.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            config = config.with_native_roots();
        }
    }
    let provider = Arc::new(default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut rustls = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let cert_pem = read(CERT, &identity.cert)?;
            let key_pem = read(KEY, &identity.key)?;
            let chain = certificates(CERT, &identity.cert, &cert_pem)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| bad(KEY, &identity.key, format!("no PEM private key: {e}")))?;
            let signing = provider
                .key_provider
                .load_private_key(key.clone_key())
                .map_err(|e| bad(KEY, &identity.key, format!("not a usable private key: {e}")))?;
            CertifiedKey::new(chain.clone(), signing).keys_match().map_err(|e| {
                let reason = format!("does not parse, or does not belong to the key {}: {e}", identity.key.display());
                bad(CERT, &identity.cert, reason)
            })?;
            config = config.identity(Identity::from_pem(cert_pem, key_pem));
            builder.with_client_auth_cert(chain, key).map_err(|e| Error::Tls(e.to_string()))?
        }
    };
    rustls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded { tonic: config, rustls: Arc::new(rustls), identity: tls.identity.is_some() })
}

/// Why a TLS connection to `uri` fails, as rustls sees it, when it fails
/// within `limit`: connects, shakes hands, then reads the first record etcd
/// sends (its HTTP/2 settings once it accepted the client, or its alert).
/// `None` when this connection works, or the reason cannot be found.
pub(crate) async fn diagnose(uri: &http::Uri, tls: &Loaded, limit: Duration) -> Option<String> {
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.clone()).ok()?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.ok()?;
        let mut stream = match TlsConnector::from(tls.rustls.clone()).connect(name, tcp).await {
            Ok(s) => s,
            Err(e) => return Some(format!("TLS handshake: {}", chain(&e))),
        };
        let mut first = [0u8; 1];
        // Go's TLS 1.3 server answers a missing client certificate with
        // BadCertificate, as it does a refused one.
        let hint = if tls.identity { "" } else { "; no client certificate is configured, does etcd require one?" };
        match stream.read(&mut first).await {
            Ok(0) => Some(format!("etcd closed the TLS connection right after the handshake{hint}")),
            Ok(_) => None,
            Err(e) => Some(format!("TLS, after the handshake: {}{hint}", chain(&e))),
        }
    };
    tokio::time::timeout(limit, attempt).await.ok().flatten()
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| bad(what, path, format!("cannot read it: {e}")))
}

/// The certificates of a PEM file; at least one.
fn certificates(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(what, path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(what, path, "no PEM CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn bad(what: &'static str, path: &Path, reason: String) -> Error {
    Error::TlsFile { what, path: path.to_path_buf(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::ClientIdentity;

    fn file_error(tls: &Tls) -> (&'static str, String, String) {
        match load(tls) {
            Err(Error::TlsFile { what, path, reason }) => (what, path.display().to_string(), reason),
            other => panic!("{tls:?}: {other:?}"),
        }
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let (what, path, reason) = file_error(&Tls { ca: Some(missing.clone()), identity: None });
        assert_eq!((what, path.as_str()), (CA, missing.to_str().unwrap()));
        assert!(reason.starts_with("cannot read it"), "{reason}");
        let text = Error::TlsFile { what, path: missing.clone(), reason }.to_string();
        assert!(text.starts_with(&format!("etcd TLS CA bundle {}: cannot read it", missing.display())), "{text}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "hello\n").unwrap();
        let (_, _, reason) = file_error(&Tls { ca: Some(empty.clone()), identity: None });
        assert_eq!(reason, "no PEM CERTIFICATE block");

        // A PEM block whose content is not a certificate.
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n").unwrap();
        let (_, _, reason) = file_error(&Tls { ca: Some(garbage.clone()), identity: None });
        assert!(reason.starts_with("certificate 1 of 1 is not a usable X.509 certificate"), "{reason}");

        // The client certificate is read before the key is looked at.
        let identity = ClientIdentity { cert: missing.clone(), key: garbage.clone() };
        let (what, _, _) = file_error(&Tls { ca: None, identity: Some(identity) });
        assert_eq!(what, CERT);
        let identity = ClientIdentity { cert: garbage.clone(), key: empty.clone() };
        let (what, _, reason) = file_error(&Tls { ca: None, identity: Some(identity) });
        assert_eq!(what, KEY);
        assert!(reason.starts_with("no PEM private key"), "{reason}");
    }
}
