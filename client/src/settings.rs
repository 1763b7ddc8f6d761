//! [`SessionSettings`]: who a client is and where it caches, whatever the
//! transport — the token it signs in with, the service, the world its
//! cache is keyed by, whether shards must come with signed heads, the cache
//! folder, compression, the key that signs intents. A transport's own
//! options (an address, a pinned certificate, a socket) are its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hoard_engine::{RegistryHash, ServerIdentity};
use hoard_proto::intent_sig::PlayerKey;
use hoard_proto::wire::{CODECS, Hello, PROTOCOL_VERSION};

use crate::host::HostConfig;

/// Who a client is and where it caches (see the module docs).
///
/// ```
/// # use hoard_client::SessionSettings;
/// let mut settings = SessionSettings::new("cache".into(), "dev:ann".into());
/// settings.service = "arena".into();
/// assert!(settings.compression, "compression is asked for by default");
/// ```
#[derive(Clone)]
pub struct SessionSettings {
    /// The cache root (it also holds the cache's lock, and for QUIC the
    /// `known_servers` file).
    pub cache_dir: PathBuf,
    /// Where the cache's files live, if not on disk under `cache_dir`
    /// (`cache_dir` still holds the cache's lock): a process holding many
    /// clients whose caches need not outlive it (a load tester's bots)
    /// keeps them in memory ([`hoard_world_cache::MemStorage`]).
    pub cache_files: Option<Arc<dyn hoard_world_cache::Storage>>,
    /// The token that signs the player in.
    pub token: String,
    /// The service (world) to join on the server (default `world`).
    pub service: String,
    /// The world this server serves, when it is a relay of it: the cache is
    /// keyed by the world (so it stays valid through any relay and at the
    /// origin), and every shard is checked against the world's signed
    /// heads. `None`: the server is the world's own.
    pub world: Option<ServerIdentity>,
    /// Ask for signed heads and check them even from the world's own server
    /// (a relay's upstream does, to hand them on).
    pub proofs: bool,
    /// Ask the server to compress zone answers and deltas (`Packed`, zstd):
    /// a cold entry of the reference zone is about 0.6 of its bytes, for a
    /// few milliseconds of CPU a megabyte on each side. On by default.
    pub compression: bool,
    /// The player's intent key, when the token binds it (a world token's
    /// `key` claim): the client then signs every intent with it, under the
    /// nonce the server gives the session, so no relay between can alter,
    /// drop, reorder or replay one unnoticed.
    pub player_key: Option<PlayerKey>,
    /// Ask for the world's signed token keys in `Welcome` (a relay does,
    /// to check its players' world tokens).
    pub token_keys: bool,
    /// How long the server has to answer `Hello` once the connection is
    /// open: a server that keeps the connection alive but never answers
    /// ends the session with an error instead of leaving it waiting.
    /// Default [`WELCOME_TIMEOUT`].
    pub welcome_timeout: Duration,
    /// Recompute, in the background once a zone is ready, the digests of
    /// the cached copies its entry took on trust (their file checksums
    /// held), and have the server repair any whose objects do not give
    /// the digest their writer stated — a guard against a cache writer's
    /// bug (two BLAKE3 calls an object; about 1 ms for a zone of 2,700
    /// objects). On by default. A load tester whose bots' caches live in
    /// its own memory and end with it may turn it off to spend its CPU on
    /// load; a copy left wrong is then caught only when its shard next
    /// changes (the delta's digest check fails and the shard is repaired).
    pub audit_cached_copies: bool,
}

/// How long a client waits for the server's answer to `Hello`, by default
/// (a server gives a client 5 s to send `Hello`, and answers at once).
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("cache_dir", &self.cache_dir)
            .field("service", &self.service)
            .field("world", &self.world)
            .field("proofs", &self.proofs)
            .finish_non_exhaustive()
    }
}

impl SessionSettings {
    /// Settings for the player `token` signs in, caching under
    /// `cache_dir`: service `world`, the server the world's own, compression
    /// asked for, intents unsigned.
    pub fn new(cache_dir: PathBuf, token: String) -> SessionSettings {
        SessionSettings {
            cache_dir,
            cache_files: None,
            token,
            service: "world".into(),
            world: None,
            proofs: false,
            compression: true,
            player_key: None,
            token_keys: false,
            welcome_timeout: WELCOME_TIMEOUT,
            audit_cached_copies: true,
        }
    }

    /// The `Hello` that signs in with these settings, for a client of
    /// `registry`.
    pub fn hello(&self, registry: RegistryHash) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            registry: registry.0,
            service: self.service.clone(),
            token: self.token.clone(),
            codecs: if self.compression { CODECS.to_vec() } else { Vec::new() },
            token_keys: self.token_keys,
        }
    }

    /// The world the cache is keyed by, for a server that proved to be
    /// `identity`, and whether shards are checked against signed heads.
    pub fn world_and_proofs(&self, identity: ServerIdentity) -> (ServerIdentity, bool) {
        let world = self.world.unwrap_or(identity);
        (world, self.proofs || world != identity)
    }

    /// The host's configuration for a session with a server that proved to
    /// be `identity`, speaking as `perspective`.
    pub fn host_config(&self, identity: ServerIdentity, perspective: &str, registry: RegistryHash) -> HostConfig {
        let (world, proofs) = self.world_and_proofs(identity);
        HostConfig {
            world,
            proofs,
            service: self.service.clone(),
            perspective: perspective.to_owned(),
            registry,
            audit: self.audit_cached_copies,
        }
    }
}
