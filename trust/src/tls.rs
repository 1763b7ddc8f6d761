//! TLS for hoard: the server's long-lived certificate and key, the server
//! identity derived from it, and the client's pinning of identities (trust
//! on first use in a `known_servers` file, like SSH's `known_hosts`, or a
//! fingerprint given on the command line).
//!
//! The identity is blake3 of the certificate's SubjectPublicKeyInfo, so it
//! names the key: a re-issued certificate for the same key keeps it. TLS 1.3
//! handshake signatures are verified with rustls's own verifier; only the
//! chain-of-trust check is replaced by the pin.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hoard_engine::ServerIdentity;
use hoard_engine::lock::lock;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

/// File names in the server's data directory.
const CERT_FILE: &str = "server.crt.der";
const KEY_FILE: &str = "server.key.der";
const SECRET_FILE: &str = "token.secret";
/// The name the certificate is issued for; clients connect by address and pin
/// the key, so the name is not what is trusted.
pub const SERVER_NAME: &str = "hoard.server";

/// Why TLS material could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a file in the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The stored certificate or key is unusable.
    #[error("{path}: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Generating a certificate failed.
    #[error("generating the server certificate: {0}")]
    Generate(String),
}

/// The identity named by a certificate: blake3 of its public key info.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<ServerIdentity, String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("certificate does not parse: {e:?}"))?;
    Ok(ServerIdentity::of_key(parsed.subject_public_key_info().as_ref()))
}

/// The server's certificate, key, identity and token secret.
pub struct ServerKeys {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The private key (PKCS#8 DER).
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The identity clients pin.
    pub identity: ServerIdentity,
    /// The secret of the previous protocol version's MAC tokens (still
    /// accepted for this version).
    pub token_secret: [u8; 32],
    /// The world's token keys (`token.key`, `token-keys`).
    pub token_keys: crate::token_keys::WorldTokenKeys,
}

impl fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKeys")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let written = (|| {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // A full disk must not leave a half-written key file behind: the
        // next start would find it and refuse it as damaged.
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    // The rename is durable only once the directory is: a key lost to a
    // power cut would orphan every client cache keyed by this identity.
    if let Some(dir) = path.parent() {
        sync_dir(dir).map_err(|source| TlsError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// fsyncs a directory's entries.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A file's bytes, or `None` if it does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>, TlsError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

impl ServerKeys {
    /// Loads the keys from `data_dir`, generating and saving them on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<ServerKeys, TlsError> {
        if !data_dir.is_dir() {
            std::fs::create_dir_all(data_dir).map_err(|source| TlsError::Io {
                path: data_dir.to_owned(),
                source,
            })?;
            if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(|source| TlsError::Io {
                    path: parent.to_owned(),
                    source,
                })?;
            }
        }
        let cert_path = data_dir.join(CERT_FILE);
        let key_path = data_dir.join(KEY_FILE);
        let secret_path = data_dir.join(SECRET_FILE);
        let (cert, key) = match (read(&cert_path)?, read(&key_path)?) {
            (Some(cert), Some(key)) => (CertificateDer::from(cert), PrivatePkcs8KeyDer::from(key)),
            _ => {
                let generated = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
                    .map_err(|e| TlsError::Generate(e.to_string()))?;
                let cert = generated.cert.der().clone();
                let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
                write_private(&key_path, key.secret_pkcs8_der())?;
                write_private(&cert_path, cert.as_ref())?;
                tracing::info!(path = %cert_path.display(), "generated the server certificate");
                (cert, key)
            }
        };
        let identity = identity_of(&cert).map_err(|detail| TlsError::Invalid {
            path: cert_path.clone(),
            detail,
        })?;
        // A damaged or foreign key file is named here, at start-up, rather
        // than failing later as a TLS configuration error.
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(vec![cert.clone()], PrivateKeyDer::Pkcs8(key.clone_key()), &provider)
            .map_err(|e| TlsError::Invalid {
                path: key_path.clone(),
                detail: format!("not the private key of {}: {e}", cert_path.display()),
            })?;
        let token_secret = match read(&secret_path)? {
            Some(bytes) => bytes.try_into().map_err(|_| TlsError::Invalid {
                path: secret_path.clone(),
                detail: "token secret must be 32 bytes".into(),
            })?,
            None => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| TlsError::Generate(e.to_string()))?;
                write_private(&secret_path, &secret)?;
                secret
            }
        };
        let token_keys = crate::token_keys::WorldTokenKeys::load_or_create(data_dir)?;
        Ok(ServerKeys {
            cert,
            key,
            identity,
            token_secret,
            token_keys,
        })
    }

    /// The token authority of a server of this world: checks world tokens
    /// with the world's accepted token keys (and mints them with its
    /// `token.key`), and the previous version's MAC tokens with the secret.
    pub fn authority(&self) -> hoard_proto::auth::TokenAuthority {
        hoard_proto::auth::TokenAuthority::new(self.token_secret)
            .with_world_tokens(self.token_keys.token_keys(self.identity))
            .with_minter(self.token_keys.signing.clone())
    }

    /// The world's public key, SubjectPublicKeyInfo DER (its BLAKE3 is
    /// [`ServerKeys::identity`]): what verifies signed shard heads.
    pub fn world_key(&self) -> Result<Vec<u8>, String> {
        let parsed =
            webpki::EndEntityCert::try_from(&self.cert).map_err(|e| format!("certificate does not parse: {e:?}"))?;
        Ok(parsed.subject_public_key_info().as_ref().to_vec())
    }

    /// A rustls server configuration presenting this certificate, ALPN
    /// `hoard/1`, TLS 1.3, 0-RTT allowed.
    pub fn rustls_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Generate(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        config.alpn_protocols = vec![hoard_proto::wire::ALPN.to_vec()];
        // quinn requires this exact value to accept 0-RTT.
        config.max_early_data_size = u32::MAX;
        // One ticket a connection: a client that comes back within this
        // process's life resumes with it and sends `Hello` and `EnterZone`
        // as 0-RTT data. Tickets are stateful and single-use (rustls takes
        // a session out of this cache when it is resumed), so early data
        // is accepted at most once per ticket; the cache is bounded, and a
        // restarted server has none (its clients make a full handshake).
        config.send_tls13_tickets = 1;
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(RESUMABLE_SESSIONS);
        Ok(config)
    }
}

/// Sessions a server keeps for resumption (one per ticket it issued and no
/// client has used yet; about 200 bytes each). Past this, the oldest go.
pub const RESUMABLE_SESSIONS: usize = 8192;

/// The client's record of server identities by address (`known_servers`).
#[derive(Debug, Clone)]
pub struct KnownServers {
    path: PathBuf,
}

impl KnownServers {
    /// The file at `path` (created when the first server is remembered).
    pub fn new(path: PathBuf) -> KnownServers {
        KnownServers { path }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity pinned for `addr`, if any.
    pub fn get(&self, addr: &str) -> Option<ServerIdentity> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(a, _)| *a == addr)
            .and_then(|(_, id)| id.trim().parse().ok())
    }

    /// Every address `identity` was met at.
    pub fn addresses_of(&self, identity: ServerIdentity) -> Vec<String> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut out: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, id)| id.trim().parse::<ServerIdentity>().is_ok_and(|i| i == identity))
            .map(|(a, _)| a.to_owned())
            .collect();
        out.dedup();
        out
    }

    /// Remembers `addr` → `identity`.
    pub fn remember(&self, addr: &str, identity: ServerIdentity) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        writeln!(f, "{addr} {identity}")
    }
}

/// Verifies a server by its pinned identity instead of a certificate chain.
#[derive(Debug)]
pub struct PinnedVerifier {
    addr: String,
    pinned: Mutex<Option<ServerIdentity>>,
    known_servers: Option<PathBuf>,
    seen: Mutex<Option<ServerIdentity>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    /// Verifies the server at `addr` against `pinned` (`None`: trust on first use).
    pub fn new(addr: &str, pinned: Option<ServerIdentity>, known_servers: Option<PathBuf>) -> PinnedVerifier {
        PinnedVerifier {
            addr: addr.to_owned(),
            pinned: Mutex::new(pinned),
            known_servers,
            seen: Mutex::new(None),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    /// The identity the server presented, once the handshake got that far.
    pub fn seen(&self) -> Option<ServerIdentity> {
        *lock(&self.seen)
    }

    /// From now on, requires `identity` (after a first contact trusted it).
    pub fn pin(&self, identity: ServerIdentity) {
        *lock(&self.pinned) = Some(identity);
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let identity = identity_of(end_entity).map_err(rustls::Error::General)?;
        *lock(&self.seen) = Some(identity);
        let pinned = *lock(&self.pinned);
        match pinned {
            Some(pinned) if pinned != identity => {
                let remedy = match &self.known_servers {
                    Some(path) => format!(
                        "if the server's key was replaced on purpose, remove the line for {} from {} (or pass the new fingerprint)",
                        self.addr,
                        path.display()
                    ),
                    None => "check the fingerprint you were given".to_owned(),
                };
                Err(rustls::Error::General(format!(
                    "server {} presents identity {identity}, but {pinned} is pinned: it may be impersonated; {remedy}",
                    self.addr
                )))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls client configuration verifying by pin, ALPN `hoard/1`, TLS 1.3,
/// 0-RTT enabled for resumed connections.
pub fn client_config(verifier: Arc<PinnedVerifier>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Generate(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![hoard_proto::wire::ALPN.to_vec()];
    config.enable_early_data = true;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_that_cannot_be_written_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The rename onto a non-empty directory fails after the temporary
        // file was written and synced, as a full disk can fail a write.
        let path = dir.path().join("server.key.der");
        std::fs::create_dir_all(path.join("occupied")).expect("mkdir");
        let error = write_private(&path, b"key bytes").expect_err("the rename fails");
        assert!(error.to_string().contains("server.key.der"), "{error}");
        assert!(!path.with_extension("tmp").exists(), "the temporary file is removed");
    }

    #[test]
    fn a_damaged_key_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = ServerKeys::load_or_create(dir.path()).expect("first start makes keys");
        ServerKeys::load_or_create(dir.path()).expect("the same keys load again");
        std::fs::write(dir.path().join(KEY_FILE), b"garbage").expect("write");
        let error = ServerKeys::load_or_create(dir.path()).expect_err("refused");
        assert!(
            matches!(&error, TlsError::Invalid { path, .. } if path.ends_with(KEY_FILE)),
            "{error}"
        );
        // Another server's key beside this certificate is refused too.
        let other = tempfile::tempdir().expect("tempdir");
        ServerKeys::load_or_create(other.path()).expect("other keys");
        std::fs::copy(other.path().join(KEY_FILE), dir.path().join(KEY_FILE)).expect("copy");
        let error = ServerKeys::load_or_create(dir.path()).expect_err("refused");
        assert!(error.to_string().contains("not the private key"), "{error}");
        drop(made);
    }
}
