//! [`SessionSettings`]: who a client is and where it caches, whatever the
//! transport — the token it signs in with, the service, the world its
//! cache is keyed by, whether shards must come with signed heads, the cache
//! folder, compression, the key that signs intents. A transport's own
//! options (an address, a pinned certificate, a socket) are its own.

use std::path::PathBuf;
use std::sync::Arc;

use hoard_engine::{RegistryHash, ServerIdentity};
use hoard_proto::intent_sig::PlayerKey;
use hoard_proto::wire::{CODECS, Hello, PROTOCOL_VERSION};

use crate::host::HostConfig;

/// Who a client is and where it caches (see the module docs).
#[derive(Clone)]
pub struct SessionSettings {
    /// The cache root (it also holds the cache's lock, and for QUIC the
    /// `known_servers` file).
    pub cache_dir: PathBuf,
    /// Where the cache's files live, if not on disk under `cache_dir`
    /// (a process of many short-lived clients keeps them in memory:
    /// [`hoard_world_cache::MemStorage`]).
    pub cache_files: Option<Arc<dyn hoard_world_cache::Storage>>,
    /// The token that signs the player in.
    pub token: String,
    /// The service (world) to join on the server.
    pub service: String,
    /// The world the server carries when it is a relay of it (the cache is
    /// keyed by the world, and every shard checked against its signed
    /// heads); `None`: the server is the world's own.
    pub world: Option<ServerIdentity>,
    /// Ask for signed heads and check them even from the world's own server.
    pub proofs: bool,
    /// Ask the server to compress answers and deltas.
    pub compression: bool,
    /// The player's intent key, when the token binds one: intents are then
    /// signed with it.
    pub player_key: Option<PlayerKey>,
    /// Ask for the world's signed token keys in `Welcome`.
    pub token_keys: bool,
}

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
        }
    }
}
