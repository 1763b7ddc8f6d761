//! Client TLS sessions kept for resumption over QUIC: the configuration a
//! client made for a pinned server, its ticket store and its QUIC
//! address-validation tokens, kept for the process's life (bounded) so a
//! later connection to the same server resumes and sends its first
//! messages as 0-RTT data. The identity a QUIC connection's server
//! presented ([`peer_identity`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hoard_engine::ServerIdentity;
use hoard_engine::lock::lock;
use hoard_trust::tls::{PinnedVerifier, TlsError, client_config, identity_of};
use rustls::pki_types::CertificateDer;

/// Servers (per client cache) whose TLS sessions this process keeps at
/// most; past this, one is forgotten (its next connection makes a full
/// handshake).
pub const RESUMABLE_SERVERS: usize = 1024;

/// Tickets kept per server (each resumption uses one; the server gives a
/// new one on every connection).
const TICKETS_PER_SERVER: usize = 4;

/// A client's TLS configuration for one pinned server, kept so that a
/// later connection resumes: rustls resumes a session only under the very
/// verifier (the same `Arc`) that verified it, with the tickets its store
/// holds.
#[derive(Clone)]
pub struct ResumableConfig {
    /// The configuration, with its own ticket store.
    pub crypto: Arc<rustls::ClientConfig>,
    /// Its verifier, pinned to the server's identity.
    pub verifier: Arc<PinnedVerifier>,
    /// The QUIC address-validation tokens the server gave (NEW_TOKEN): with
    /// one, the server may answer a returning client's first flight in full
    /// at once, instead of sending at most three times what it received
    /// until the client's address is proven.
    pub tokens: Arc<dyn quinn::TokenStore>,
}

impl fmt::Debug for ResumableConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumableConfig")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

/// (known_servers file, address, identity) → its configuration.
type Resumable = std::collections::HashMap<(Option<PathBuf>, String, ServerIdentity), ResumableConfig>;

fn resumable() -> &'static Mutex<Resumable> {
    static CONFIGS: std::sync::OnceLock<Mutex<Resumable>> = std::sync::OnceLock::new();
    CONFIGS.get_or_init(|| Mutex::new(Resumable::new()))
}

/// A new client configuration for the server at `addr`, verifying by
/// `pinned` (`None`: trust on first use), with its own ticket store.
pub fn new_client_config(
    addr: &str,
    pinned: Option<ServerIdentity>,
    known_servers: Option<PathBuf>,
) -> Result<ResumableConfig, TlsError> {
    let verifier = Arc::new(PinnedVerifier::new(addr, pinned, known_servers));
    let mut crypto = client_config(verifier.clone())?;
    crypto.resumption = rustls::client::Resumption::store(Arc::new(rustls::client::ClientSessionMemoryCache::new(
        TICKETS_PER_SERVER,
    )));
    Ok(ResumableConfig {
        crypto: Arc::new(crypto),
        verifier,
        tokens: Arc::new(quinn::TokenMemoryCache::default()),
    })
}

/// The configuration this process keeps for the server at `addr` pinned to
/// `identity` (by the client whose pins are in `known_servers`), made on
/// first use. Kept for the process's life: a client that connects to that
/// server again from this process resumes its TLS session and sends its
/// first messages as 0-RTT data (one round trip to a zone instead of two).
/// A ticket is only ever offered to the identity it came from. Tickets
/// cannot outlive the process: rustls 0.23 offers no way to serialize a
/// client session (rustls/rustls#2287).
pub fn resumable_client_config(
    addr: &str,
    identity: ServerIdentity,
    known_servers: Option<PathBuf>,
) -> Result<ResumableConfig, TlsError> {
    let key = (known_servers.clone(), addr.to_owned(), identity);
    if let Some(found) = lock(resumable()).get(&key) {
        return Ok(found.clone());
    }
    let made = new_client_config(addr, Some(identity), known_servers)?;
    keep(key, made.clone());
    Ok(made)
}

/// Keeps the configuration of a first contact with the server at `addr`,
/// now known to be `identity` (its verifier is pinned to it first), so the
/// next connection resumes with the tickets this one receives.
pub fn keep_client_config(
    addr: &str,
    identity: ServerIdentity,
    known_servers: Option<PathBuf>,
    config: ResumableConfig,
) {
    config.verifier.pin(identity);
    keep((known_servers, addr.to_owned(), identity), config);
}

fn keep(key: (Option<PathBuf>, String, ServerIdentity), config: ResumableConfig) {
    let mut configs = lock(resumable());
    if configs.len() >= RESUMABLE_SERVERS
        && let Some(any) = configs.keys().next().cloned()
    {
        configs.remove(&any);
    }
    configs.insert(key, config);
}

/// The identity of the certificate a connection's server presented (or,
/// for a resumed session, presented when the session began); `None`
/// before the handshake got that far.
pub fn peer_identity(conn: &quinn::Connection) -> Option<ServerIdentity> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    identity_of(certs.first()?).ok()
}
