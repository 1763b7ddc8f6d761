//! hoard keeps an online game's world persistent on the server and on every
//! player's disk. This facade re-exports the crates; most games only need
//! [`prelude`].
//!
//! - [`engine`]: the object model, publishing bevy_ecs components, the world store.
//! - [`world_cache`]: the client's verified, crash-safe, per-shard disk cache.
//! - [`net`]: the wire protocol, sans-IO sync, QUIC server and client.
//! - `bevy` (feature `bevy`, on by default): `HoardServerPlugin` and
//!   `HoardClientPlugin` for games built on `bevy_app`.

#[cfg(feature = "bevy")]
pub use hoard_bevy as bevy;
pub use hoard_engine as engine;
pub use hoard_net as net;
pub use hoard_world_cache as world_cache;

/// Serving a world: start a server with a game's world, schedule and
/// intents; its handle issues tokens and reports a failure.
pub mod server {
    pub use hoard_net::quic::intents::{ConnectedPlayers, IncomingIntents, IntentRegistry, ReceivedIntent};
    pub use hoard_net::quic::server::{Game, ServerError, ServerHandle, ServerOptions, ServerStats, start};
}

/// Joining a world: connect, enter zones, apply what arrives to a `World`.
pub mod client {
    pub use hoard_net::quic::client::{ClientError, ClientEvent, ClientOptions, HoardClient, Replicated};
    pub use hoard_net::sync::client::EntryStats;
}

/// The names a game needs most.
pub mod prelude {
    #[cfg(feature = "bevy")]
    pub use crate::bevy::{
        FromClient, Hoard, HoardClientPlugin, HoardEvent, HoardServer, HoardServerPlugin, ZoneRequest, ZoneTransients,
    };
    pub use crate::client::{ClientError, ClientEvent, ClientOptions, EntryStats, HoardClient, Replicated};
    pub use crate::server::{Game, IncomingIntents, IntentRegistry, ServerHandle, ServerOptions};
    pub use hoard_engine::prelude::*;
}

// The README's code is compiled (and run) with the tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
