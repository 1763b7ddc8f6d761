//! hoard keeps an online game's world persistent on the server and on every
//! player's disk. This facade re-exports the crates; most games only need
//! [`prelude`].
//!
//! - [`engine`]: the object model, publishing bevy_ecs components, the world store.
//! - [`world_cache`]: the client's verified, crash-safe, per-shard disk cache.
//! - [`net`]: the wire protocol, sans-IO sync, QUIC server and client.

pub use hoard_engine as engine;
pub use hoard_net as net;
pub use hoard_world_cache as world_cache;

/// The names a game needs most.
pub mod prelude {
    pub use hoard_engine::prelude::*;
}
