//! The WebTransport endpoint: how browsers reach the server. A second UDP
//! port beside the raw QUIC one, speaking HTTP/3 (ALPN `h3`); a session is
//! a WebTransport `CONNECT` to [`WEB_PATH`], and on its streams runs the
//! same hoard session as on raw QUIC (`control::serve_web`, `link`), under
//! the same connection limits, deadlines, answer slots and metrics.
//!
//! Certificates: a deployment names a real certificate
//! ([`WebCertificate::Files`]); for development the server makes its own
//! ([`WebCertificate::Development`]): ECDSA P-256, valid for
//! [`DEV_CERT_VALIDITY`] (browsers accept a self-signed certificate through
//! `serverCertificateHashes` only if it is valid for at most 14 days), made
//! anew every [`DEV_CERT_ROTATE`]; [`WebEndpoint::certificate_hashes`] says
//! the SHA-256 of the current and the previous one, for the page to pass to
//! `new WebTransport(url, { serverCertificateHashes })`. This certificate
//! is only the transport's: what a browser trusts about the world is the
//! world's identity and key (`Welcome`), and its shards' signed heads.

use std::path::Path;
use std::sync::RwLock;
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;
use hoard_engine::lock::{read, write};

/// The path of a hoard WebTransport session (`https://host:port/hoard`).
pub const WEB_PATH: &str = "/hoard";
/// How long a development certificate is valid (browsers take at most 14
/// days through `serverCertificateHashes`).
pub const DEV_CERT_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// How often a development certificate is made anew: the previous one
/// stays valid for a week after, so a page loaded before still connects.
pub const DEV_CERT_ROTATE: Duration = Duration::from_secs(6 * 24 * 3600);

/// Where browsers connect, and with which certificate.
#[derive(Clone, Debug)]
pub struct WebTransportOptions {
    /// The UDP address of the WebTransport (HTTP/3) endpoint.
    pub listen: SocketAddr,
    /// The certificate it presents.
    pub certificate: WebCertificate,
}

/// The certificate of the WebTransport endpoint.
#[derive(Clone, Debug)]
pub enum WebCertificate {
    /// Made by the server (ECDSA P-256, [`DEV_CERT_VALIDITY`], rotated):
    /// browsers accept it through its hash, which the page is told.
    Development,
    /// A certificate chain and its private key, PEM files (a real
    /// certificate for the server's name, which browsers check as for any
    /// HTTPS site).
    Files {
        /// The chain, leaf first.
        chain: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

/// A running WebTransport endpoint.
pub struct WebEndpoint {
    /// The bound UDP address.
    pub addr: SocketAddr,
    endpoint: Endpoint,
    hashes: Arc<RwLock<Vec<[u8; 32]>>>,
    rotation: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for WebEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebEndpoint").field("addr", &self.addr).finish()
    }
}

impl WebEndpoint {
    /// SHA-256 of the development certificates a browser may meet, newest
    /// first (empty for a real certificate: browsers check that as usual).
    pub fn certificate_hashes(&self) -> Vec<[u8; 32]> {
        read(&self.hashes).clone()
    }

    /// [`WebEndpoint::certificate_hashes`] as a function another thread
    /// may keep (a page server answering after a renewal).
    pub fn certificate_hashes_source(&self) -> impl Fn() -> Vec<[u8; 32]> + Send + Sync + 'static {
        let hashes = self.hashes.clone();
        move || read(&hashes).clone()
    }

    pub(super) fn close(&self, code: ErrorCode, reason: &[u8]) {
        self.endpoint.close(close_code(code), reason);
        if let Some(rotation) = &self.rotation {
            rotation.abort();
        }
    }

    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// Binds the WebTransport endpoint and accepts its sessions into `shared`'s
/// server.
pub(super) fn bind_web(options: &WebTransportOptions, shared: &Arc<Shared>) -> Result<WebEndpoint, ServerError> {
    let bind_err = |source| ServerError::Bind {
        addr: options.listen,
        source,
    };
    let hashes: Arc<RwLock<Vec<[u8; 32]>>> = Arc::default();
    let (chain, key, development) = match &options.certificate {
        WebCertificate::Development => {
            let (cert, key) = development_certificate()?;
            write(&hashes).push(sha256(&cert));
            (vec![cert], key, true)
        }
        WebCertificate::Files { chain, key } => (read_chain(chain)?, read_key(key)?, false),
    };
    let socket = super::super::socket::bind(options.listen).map_err(bind_err)?;
    let runtime = quinn::default_runtime().ok_or_else(|| bind_err(std::io::Error::other("no async runtime")))?;
    let endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(chain, key)?),
        socket,
        runtime,
    )
    .map_err(bind_err)?;
    let addr = endpoint.local_addr().map_err(bind_err)?;
    let rotation = development.then(|| tokio::spawn(rotate(endpoint.clone(), hashes.clone())));
    tokio::spawn(accept_loop(endpoint.clone(), shared.clone(), Flavor::Web));
    tracing::info!(%addr, path = WEB_PATH, "WebTransport endpoint listening");
    Ok(WebEndpoint {
        addr,
        endpoint,
        hashes,
        rotation,
    })
}

/// Makes a development certificate every [`DEV_CERT_ROTATE`]; new sessions
/// get the new one, and the page is told both hashes.
async fn rotate(endpoint: Endpoint, hashes: Arc<RwLock<Vec<[u8; 32]>>>) {
    loop {
        tokio::time::sleep(DEV_CERT_ROTATE).await;
        let made = development_certificate().and_then(|(cert, key)| {
            let hash = sha256(&cert);
            Ok((server_config(vec![cert], key)?, hash))
        });
        match made {
            Ok((config, hash)) => {
                endpoint.set_server_config(Some(config));
                let mut hashes = write(&hashes);
                hashes.insert(0, hash);
                hashes.truncate(2);
                tracing::info!("WebTransport development certificate renewed");
            }
            Err(e) => tracing::error!(error = %e, "could not renew the WebTransport development certificate"),
        }
    }
}

/// An ECDSA P-256 certificate for `localhost` and the loopback addresses,
/// valid from an hour ago for [`DEV_CERT_VALIDITY`] in all.
fn development_certificate() -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), ServerError> {
    let generate = |e: rcgen::Error| ServerError::Config(format!("making a development certificate: {e}"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])
            .map_err(generate)?;
    let start = SystemTime::now() - Duration::from_secs(3600);
    params.not_before = start.into();
    params.not_after = (start + DEV_CERT_VALIDITY).into();
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}

fn sha256(cert: &CertificateDer<'_>) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| ServerError::Config(format!("{}: {e}", path.display()));
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if chain.is_empty() {
        return Err(bad(&"no certificate in the file"));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ServerError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
}

/// HTTP/3 for WebTransport: ALPN `h3`, TLS 1.3, no 0-RTT (a browser's
/// WebTransport never sends early data), and the transport limits of
/// [`super::super::transport::web_server`].
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ServerConfig, ServerError> {
    let config_err = |e: &dyn std::fmt::Display| ServerError::Config(format!("WebTransport TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_err(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| config_err(&e))?;
    tls.alpn_protocols = vec![web_transport_quinn::ALPN.as_bytes().to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| config_err(&e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(super::super::transport::web_server()));
    Ok(config)
}
