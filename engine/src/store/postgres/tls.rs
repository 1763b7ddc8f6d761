//! TLS for the PostgreSQL store: reads `sslmode` and `sslrootcert` from the
//! connection string as libpq spells them, and builds the rustls connector
//! that verifies the server's certificate. hoard never encrypts without
//! verifying: `require` and `verify-ca` check the certificate chain against
//! the roots, `verify-full` also the host name; `allow` and `prefer` (which
//! in libpq may fall back to an unverified or plain connection) are refused
//! with a message saying what to write instead.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the store connects, from the connection string's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Plain TCP (`disable`, or no `sslmode`).
    Disable,
    /// TLS, the certificate chain verified, the host name not
    /// (`require`, `verify-ca`).
    VerifyCa,
    /// TLS, the chain and the host name verified (`verify-full`).
    VerifyFull,
}

/// The connection string without the TLS parameters tokio-postgres does
/// not read, and what they said.
#[derive(Debug)]
pub(crate) struct TlsParams {
    /// What tokio-postgres parses.
    pub(crate) url: String,
    pub(crate) mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted roots, or `system`.
    pub(crate) root_cert: Option<String>,
}

fn mode_of(value: &str) -> Result<SslMode, String> {
    match value {
        "disable" => Ok(SslMode::Disable),
        "require" | "verify-ca" => Ok(SslMode::VerifyCa),
        "verify-full" => Ok(SslMode::VerifyFull),
        "allow" | "prefer" => Err(format!(
            "sslmode={value} may connect without TLS or without checking the server's certificate; \
             hoard takes sslmode=verify-full (or verify-ca / require: the certificate chain checked) or disable"
        )),
        other => Err(format!(
            "sslmode={other}: use disable, require, verify-ca or verify-full"
        )),
    }
}

/// Splits `sslmode` and `sslrootcert` off a connection string, in either
/// of libpq's forms: a URL (`postgres://…?sslmode=verify-full`) or
/// `key=value` words.
pub(crate) fn split(url: &str) -> Result<TlsParams, String> {
    let mut mode = SslMode::Disable;
    let mut root_cert = None;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut parsed = url::Url::parse(url).map_err(|e| format!("the connection URL does not parse: {e}"))?;
        let mut kept = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match &*key {
                "sslmode" => mode = mode_of(&value)?,
                "sslrootcert" => root_cert = Some(value.into_owned()),
                _ => kept.push((key.into_owned(), value.into_owned())),
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        return Ok(TlsParams {
            url: parsed.into(),
            mode,
            root_cert,
        });
    }
    let mut kept = Vec::new();
    for word in url.split_whitespace() {
        match word.split_once('=') {
            Some(("sslmode", value)) => mode = mode_of(value.trim_matches('\''))?,
            Some(("sslrootcert", value)) => root_cert = Some(value.trim_matches('\'').to_owned()),
            _ => kept.push(word),
        }
    }
    Ok(TlsParams {
        url: kept.join(" "),
        mode,
        root_cert,
    })
}

/// The roots a server certificate must chain to: the PEM file
/// `sslrootcert` names, or the operating system's (`system`, or none named).
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) if path != "system" => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path}: no certificate in it"));
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("no sslrootcert given and the system has no root certificates".into());
            }
        }
    }
    Ok(roots)
}

/// The connector for `mode`, or `None` for plain TCP.
pub(crate) fn connector(
    mode: SslMode,
    root_cert: Option<&str>,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, String> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root_cert)?), provider.clone())
        .build()
        .map_err(|e| format!("the certificate verifier: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::VerifyFull => webpki,
        _ => Arc::new(ChainOnly(webpki)),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

/// libpq's `verify-ca`: the chain must verify; a certificate for another
/// host name is accepted. Everything else is webpki's verdict.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_come_off_both_forms_of_connection_string() {
        let p = split(
            "postgres://u@db.example:5433/world?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .expect("parses");
        assert_eq!(p.mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(p.url, "postgres://u@db.example:5433/world?application_name=x");
        let p = split("postgres://u@h/db?sslmode=require").expect("parses");
        assert_eq!((p.mode, p.url.as_str()), (SslMode::VerifyCa, "postgres://u@h/db"));
        let p = split("host=h user=u sslmode=verify-ca sslrootcert=/ca.pem dbname=d").expect("parses");
        assert_eq!(p.mode, SslMode::VerifyCa);
        assert_eq!(p.root_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(p.url, "host=h user=u dbname=d");
        assert_eq!(split("postgres://u@h/db").expect("parses").mode, SslMode::Disable);
        for refused in ["prefer", "allow", "verify_full"] {
            let e = split(&format!("postgres://u@h/db?sslmode={refused}")).expect_err(refused);
            assert!(e.contains(refused), "{e}");
        }
    }

    #[test]
    fn a_root_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let e = connector(SslMode::VerifyFull, path.to_str()).err().expect("refused");
        assert!(e.contains("empty.pem"), "{e}");
        assert!(connector(SslMode::Disable, None).expect("plain").is_none());
    }
}
