//! The WebTransport endpoint's certificates: a browser reaches a server
//! over HTTP/3, whose TLS certificate is either a deployment's own (PEM
//! files: [`read_chain`], [`read_key`]) or, for development, one the server
//! makes ([`development_certificate`]): ECDSA P-256 for `localhost` and the
//! loopback addresses, valid for at most 14 days, which a browser accepts
//! through `serverCertificateHashes` (the SHA-256 of the certificate:
//! [`certificate_sha256`]). [`web_tls_config`] is the TLS side of the
//! endpoint. This certificate is only the transport's: what a browser
//! trusts about the world is the world's identity and key (`Welcome`) and
//! its shards' signed heads.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::tls::TlsError;

/// A development certificate valid from an hour ago for `validity` in all.
pub fn development_certificate(
    validity: Duration,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(format!("a development certificate: {e}"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
    let start = SystemTime::now() - Duration::from_secs(3600);
    params.not_before = start.into();
    params.not_after = (start + validity).into();
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}

/// The SHA-256 of a certificate, as `serverCertificateHashes` names it.
pub fn certificate_sha256(cert: &CertificateDer<'_>) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The certificate chain in a PEM file (at least one certificate).
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |detail: String| TlsError::Invalid {
        path: path.to_owned(),
        detail,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid("no certificate in the file".into()));
    }
    Ok(chain)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Invalid {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// TLS for a WebTransport endpoint: TLS 1.3 only, the ALPN given (`h3`),
/// no client certificates.
pub fn web_tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    let invalid = |e: rustls::Error| TlsError::Generate(format!("WebTransport TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(invalid)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(invalid)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_development_certificate_is_short_lived_and_hashed_as_browsers_name_it() {
        let (cert, key) = development_certificate(Duration::from_secs(13 * 24 * 3600)).expect("made");
        let hash = certificate_sha256(&cert);
        assert_ne!(hash, [0; 32]);
        assert_ne!(
            certificate_sha256(&development_certificate(Duration::from_secs(60)).expect("made").0),
            hash
        );
        web_tls_config(vec![cert], key, b"h3").expect("usable for TLS");
    }

    #[test]
    fn pem_files_that_hold_nothing_usable_are_refused_with_their_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("written");
        let error = read_chain(&empty).expect_err("no certificate").to_string();
        assert!(
            error.contains("empty.pem") && error.contains("no certificate"),
            "{error}"
        );
        assert!(read_key(&empty).is_err());
        assert!(read_chain(&dir.path().join("missing.pem")).is_err());
    }
}
