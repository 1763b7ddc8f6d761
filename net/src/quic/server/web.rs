//! The WebTransport endpoint: how browsers reach the server. A second UDP
//! port beside the raw QUIC one, speaking HTTP/3 (ALPN `h3`); a session is
//! a WebTransport `CONNECT` to [`WEB_PATH`], and on its streams runs the
//! same hoard session as on raw QUIC (`control::serve_web`, `link`), under
//! the same connection limits, deadlines, answer slots and metrics.
//!
//! Certificates (made and read by `hoard_trust::web`): a deployment names a
//! real certificate ([`WebCertificate::Files`]); for development the
//! server makes its own ([`WebCertificate::Development`]): ECDSA P-256,
//! valid for [`DEV_CERT_VALIDITY`] (browsers accept a self-signed
//! certificate through `serverCertificateHashes` only if it is valid for at
//! most 14 days), made anew every [`DEV_CERT_ROTATE`]; [`WebEndpoint::certificate_hashes`] says
//! the SHA-256 of the current and the previous one, for the page to pass to
//! `new WebTransport(url, { serverCertificateHashes })`. This certificate
//! is only the transport's: what a browser trusts about the world is the
//! world's identity and key (`Welcome`), and its shards' signed heads.

use std::sync::RwLock;

use hoard_trust::web;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::*;
use hoard_engine::lock::{read, write};

/// A certificate that could not be made or read, as the server reports it.
fn config_err(e: hoard_trust::tls::TlsError) -> ServerError {
    ServerError::Config(e.to_string())
}

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
            let (cert, key) = web::development_certificate(DEV_CERT_VALIDITY).map_err(config_err)?;
            write(&hashes).push(web::certificate_sha256(&cert));
            (vec![cert], key, true)
        }
        WebCertificate::Files { chain, key } => (
            web::read_chain(chain).map_err(config_err)?,
            web::read_key(key).map_err(config_err)?,
            false,
        ),
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
        let made = web::development_certificate(DEV_CERT_VALIDITY)
            .map_err(config_err)
            .and_then(|(cert, key)| {
                let hash = web::certificate_sha256(&cert);
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

/// HTTP/3 for WebTransport: ALPN `h3`, TLS 1.3, no 0-RTT (a browser's
/// WebTransport never sends early data), and the transport limits of
/// [`super::super::transport::web_server`].
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ServerConfig, ServerError> {
    let tls = web::web_tls_config(chain, key, web_transport_quinn::ALPN.as_bytes()).map_err(config_err)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| ServerError::Config(format!("WebTransport TLS: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(super::super::transport::web_server()));
    Ok(config)
}
