//! hoard keeps an online game's world persistent on the server and on every
//! player's disk. The server stores the world durably and replicates it over
//! QUIC; each client caches what it has seen, per shard, across sessions, so
//! entering a zone again costs one round trip and only what changed.
//!
//! # Concepts
//!
//! - **Object**: an entity with a [`Published`](prelude::Published) marker
//!   (a stable `ObjectId` and the shard it lives in) and the components you
//!   registered as publishable. Spawn it with
//!   [`NewObject::in_shard`](prelude::NewObject::in_shard) instead, and the
//!   server gives it an id from the store's allocator (never one given
//!   before, also after a crash); hand-picked ids suit static world files.
//! - **Shard**: the unit of storage, caching and reconciliation (a chunk of a
//!   zone, a player's inventory). Each has a **seq** (bumped by every commit
//!   that changes it), an **epoch** (a new one when its history is broken, as
//!   by a restore) and a **digest** (a set hash of its objects, equal on
//!   server and client iff they hold the same objects).
//! - **Zone**: the set of shards a player enters at once.
//! - **World identity**: the fingerprint of the server's key; it names the
//!   client's cache, so one world can never poison another's.
//! - **Service**: a named world served by a server (`world`, `arena`).
//! - **Perspective**: the authenticated player a client acts through; it
//!   decides what the client may see (perspective-scoped shards, such as
//!   inventories, are only sent to their owner) and do.
//!
//! # Quick start
//!
//! A server and a client are each one plugin on a `bevy_app` App (see
//! `examples/minimal.rs`, a whole game in under 100 lines):
//!
//! ```no_run
//! use std::sync::Arc;
//! use bevy_app::prelude::*;
//! use bevy_ecs::prelude::*;
//! use hoard::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Component, Serialize, Deserialize)]
//! struct Lamp { lit: bool }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Light { lamp: u64 }
//!
//! // What server and client both register: each published component and
//! // intent under a stable name and a schema version.
//! fn shared(app: &mut App) {
//!     app.publish::<Lamp>("lamp", 1).add_intent::<Light>("light", 1);
//! }
//!
//! // A new world: its zone and first objects. Runs only while the store is
//! // empty; every later start loads what is stored instead.
//! fn seed(world: &mut World, store: &dyn WorldStore) -> Result<(), String> {
//!     let meadow = ZoneId::new("meadow").map_err(|e| e.to_string())?;
//!     if !store.zones().map_err(|e| e.to_string())?.contains(&meadow) {
//!         store.create_zone(&meadow, &[ShardSpec::shared(ShardId(0))]).map_err(|e| e.to_string())?;
//!     }
//!     for id in 0..3 {
//!         world.spawn((Published::new(ObjectId(id), ShardId(0)), Lamp { lit: false }));
//!     }
//!     Ok(())
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The server: the App runs the game; the plugin loads the stored world
//! // into it (or seeds a new one), stores its changes and serves it.
//! let store = Arc::new(RedbStore::open_dir("server-data".as_ref())?);
//! let options = ServerOptions::new("127.0.0.1:7000".parse()?, "server-data".into());
//! let mut server = App::new();
//! server.add_plugins(shared);
//! // A port in use, damaged keys, ...: an error, not a panic.
//! server.add_hoard_server(HoardServerPlugin::new(options, store).seed(seed))?;
//!
//! // A client: enter a zone by writing a message; objects arrive as entities.
//! let token = server.world().resource::<HoardServer>().handle.auth.issue("ann", i64::MAX / 2)?;
//! let options = ClientOptions::new("127.0.0.1:7000".parse()?, "cache".into(), token);
//! let mut client = App::new();
//! client.add_plugins((shared, HoardClientPlugin::new(options)));
//! client.world_mut().write_message(ZoneRequest::Enter(ZoneId::new("meadow")?));
//! loop {
//!     server.update();
//!     client.update();
//! }
//! # }
//! ```
//!
//! # Compared with bevy_replicon
//!
//! What a `bevy_replicon` user finds, and what differs:
//!
//! | bevy_replicon | hoard |
//! | --- | --- |
//! | `app.replicate::<C>()` | `app.publish::<C>(name, version)`: a stable name and a schema version, with migrations of stored objects (`app.migrate`) |
//! | entities mapped server → client automatically | objects have persistent ids ([`ObjectId`](prelude::ObjectId)): from the store's allocator ([`NewObject`](prelude::NewObject)) or hand-picked; the same id across restarts, caches and relays |
//! | client events (`FromClient<E>`, `add_client_event`) | intents (`app.add_intent::<I>`, `FromClient<I>` with the authenticated perspective), versioned in the registry, each answered `Processed` (applied and durable) or `IntentRejected` (with the game's own code and reason) |
//! | server events (`ToClients`, `SendMode::Broadcast`/`Direct`/`BroadcastExcept`) | server messages (`ToClients` with `Audience::All`/`Zone`/`Player`), sent after the deltas of the frame that wrote them, once durable |
//! | visibility per client entity | zones of shards a client enters; shards scoped to one player (inventories) |
//! | state lives in the server's memory | state is stored durably (redb, PostgreSQL) and cached per shard on every client's disk: a returning player's zone costs one round trip and only what changed |
//!
//! Not in hoard (use bevy_replicon, or build on hoard's messages): unreliable
//! or unordered channels (every message is reliable and ordered with its
//! zone's deltas); `BroadcastExcept`; custom per-component serialisation
//! functions (components are serde MessagePack); client-side prediction
//! and interpolation helpers; client-authoritative entities; transports
//! other than QUIC (replicon has backends for renet, quinnet, aeronet).
//! Players on a relay hear a zone's messages, not messages to everyone or
//! to them alone (docs/PROTOCOL.md, relays).
//!
//! # What happens on zone entry
//!
//! The client reads its cache *headers* for the zone's shards and sends them
//! in one `EnterZone`. The server answers each shard: up to date; the changes
//! since the client's copy; the live id list plus what is newer (when its
//! tombstones are gone); or a snapshot. The client applies each answer, checks
//! its digest equals the server's (one more round trip repairs a copy that
//! does not match), writes the shards atomically, and only then puts the
//! objects in the world and sends `ZoneReady`. Live deltas follow from the
//! seq each answer was built from, and only changes the server has made
//! durable are ever sent.
//!
//! # Recipes
//!
//! Each is compiled with the tests; those that need no server run too.
//!
//! **Registering on the App**, as Bevy games register everything else: one
//! function both the server's and the client's App add, so the two ends
//! agree; hoard's plugins build the registry from it when they are added.
//! [`HoardPlugins`](prelude::HoardPlugins) adds the log plugin with either
//! side's plugin.
//!
//! ```
//! # use bevy_app::App;
//! # use bevy_ecs::prelude::*;
//! # use hoard::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! #[derive(Component, Serialize, Deserialize)]
//! struct Lamp { lit: bool }
//! #[derive(Serialize, Deserialize)]
//! struct Light { lamp: u64 }
//! #[derive(Serialize, Deserialize)]
//! struct Notice { text: String }
//!
//! fn shared(app: &mut App) {
//!     app.publish::<Lamp>("lamp", 1)
//!         .add_intent::<Light>("light", 1)
//!         .add_server_message::<Notice>("notice");
//! }
//! let mut app = App::new();
//! app.add_plugins(shared);
//! assert!(app.world().resource::<hoard::bevy::HoardRegistration>().has_registry());
//! ```
//!
//! **A registry**: published components and the intents players may send,
//! each under a stable name and a schema version; both ends must agree on
//! its hash.
//!
//! ```
//! # use bevy_ecs::prelude::*;
//! # use hoard::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! #[derive(Component, Serialize, Deserialize)]
//! struct Lamp { lit: bool }
//! #[derive(Serialize, Deserialize)]
//! struct Light { lamp: u64 }
//!
//! let registry = PublishRegistry::builder().publish::<Lamp>("lamp", 1).intent::<Light>("light", 1).build();
//! assert_eq!(registry.intent_name::<Light>(), Some("light"));
//! assert_ne!(registry.hash(), PublishRegistry::builder().publish::<Lamp>("lamp", 2).build().hash());
//! ```
//!
//! **A schema change**: the stored objects are migrated on start; a
//! returning player re-fetches only the shards holding them.
//!
//! ```
//! # use bevy_ecs::prelude::*;
//! # use hoard::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)]
//! struct LampV1 { on: bool }
//! #[derive(Component, Serialize, Deserialize)]
//! struct Lamp { lit: bool, colour: u8 }
//!
//! let registry = PublishRegistry::builder()
//!     .publish::<Lamp>("lamp", 2)
//!     .migrate::<Lamp>(1, |bytes| {
//!         let old: LampV1 = hoard::engine::registry::decode_old(bytes)?;
//!         Ok(Lamp { lit: old.on, colour: 0 })
//!     })
//!     .build();
//! assert_eq!(registry.components().collect::<Vec<_>>(), vec![("lamp", 2)]);
//! ```
//!
//! **Object ids from the store**: reserved in blocks, never given twice,
//! also after a crash; the server plugin hands them to objects spawned
//! with [`NewObject`](prelude::NewObject).
//!
//! ```
//! # use hoard::prelude::*;
//! let store = MemoryStore::new();
//! let first = store.reserve_object_ids(100, 0)?;
//! let next = store.reserve_object_ids(100, 0)?;
//! assert!(first.end <= next.start);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Verifying a store** (what a server does before it serves):
//!
//! ```
//! # use hoard::prelude::*;
//! let store = MemoryStore::new();
//! store.create_zone(&ZoneId::new("meadow")?, &[ShardSpec::shared(ShardId(1))])?;
//! assert!(hoard::engine::store::verify(&store)?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Naming an object** anywhere (across sessions and relays):
//!
//! ```
//! # use hoard::prelude::*;
//! let url: HoardUrl = "hoard://127.0.0.1:7000/world/meadow/3/42".parse()?;
//! assert_eq!(url.object, Some(ObjectId(42)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Client options**: built, then pinned to the server's identity.
//!
//! ```
//! # use hoard::prelude::*;
//! let identity = ServerIdentity([7; 32]);
//! let options = ClientOptions::new("127.0.0.1:7000".parse()?, "cache".into(), "token".into()).with_pin(identity);
//! assert_eq!(options.pin, Some(identity));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **A new world, made once** (every later start loads the stored one):
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use bevy_ecs::prelude::*;
//! # use hoard::prelude::*;
//! # #[derive(Component, serde::Serialize, serde::Deserialize)] struct Lamp { lit: bool }
//! # fn registry() -> PublishRegistry { PublishRegistry::builder().publish::<Lamp>("lamp", 1).build() }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let (options, store) = (ServerOptions::new("127.0.0.1:0".parse()?, "data".into()), Arc::new(RedbStore::open_dir("data".as_ref())?));
//! let plugin = HoardServerPlugin::with_registry(options, store, registry()).seed(|world, store| {
//!     let meadow = ZoneId::new("meadow").map_err(|e| e.to_string())?;
//!     if !store.zones().map_err(|e| e.to_string())?.contains(&meadow) {
//!         store.create_zone(&meadow, &[ShardSpec::shared(ShardId(0))]).map_err(|e| e.to_string())?;
//!     }
//!     world.spawn((NewObject::in_shard(ShardId(0)), Lamp { lit: false }));
//!     Ok(())
//! });
//! let started = plugin.start()?; // a port in use or damaged keys: an error, not a panic
//! # let _ = started; Ok(()) }
//! ```
//!
//! **Answering players**: apply an intent, or refuse it with the game's own
//! code (1000 and up) and reason; or hold it back and complete it later
//! (it is confirmed only once applied and durable).
//!
//! ```
//! # use bevy_ecs::prelude::*;
//! # use hoard::prelude::*;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Light { lamp: u64 }
//! fn light(mut asked: MessageReader<FromClient<Light>>, mut outcomes: ResMut<IntentOutcomes>) {
//!     for FromClient { intent, id, .. } in asked.read() {
//!         if intent.lamp > 2 {
//!             outcomes.refuse(*id, 1000, format!("there is no lamp {}", intent.lamp));
//!         }
//!     }
//! }
//! # let _ = light;
//! ```
//!
//! **Telling players**: a message to one player, a zone's players or
//! everyone, after the frame's changes are durable.
//!
//! ```
//! # use bevy_ecs::prelude::*;
//! # use hoard::prelude::*;
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Notice { text: String }
//! fn announce(mut tell: MessageWriter<ToClients<Notice>>) {
//!     tell.write(ToClients { to: Audience::All, message: Notice { text: "the market opens".into() } });
//! }
//! # let _ = announce;
//! ```
//!
//! **Where the connection stands**, from the first frame:
//!
//! ```
//! # use bevy_ecs::prelude::*;
//! # use hoard::prelude::*;
//! fn status(connection: Res<HoardConnection>) {
//!     if let HoardConnection::Failed { reason } = &*connection {
//!         eprintln!("cannot reach the world: {reason}");
//!     }
//! }
//! # let _ = status;
//! ```
//!
//! **Logs** on stderr for a game without a `tracing` subscriber of its own
//! (`RUST_LOG` filters them):
//!
//! ```
//! # use bevy_app::App;
//! # use hoard::prelude::*;
//! App::new().add_plugins(HoardLogPlugin { default_filter: "warn".into() });
//! ```
//!
//! # Logs
//!
//! hoard logs through `tracing`; a game without a subscriber of its own adds
//! [`HoardLogPlugin`](prelude::HoardLogPlugin) to print them on stderr.
//! Useful targets for `RUST_LOG`:
//! `hoard_proto::sync` (zone entries, answers, repairs), `hoard_net::quic`
//! (connections, budgets, the world thread), `hoard_engine::store` (commits,
//! recovery), `hoard_world_cache` (cache writes and bad files).
//!
//! # Crates
//!
//! - [`engine`]: the object model, publishing bevy_ecs components, the world store.
//! - [`world_cache`]: the client's verified, crash-safe, per-shard disk cache.
//! - [`trust`]: who a server is and what its world signs: the server's TLS
//!   key and identity, clients' pins, signed shard heads, token keys.
//! - [`net`]: the QUIC server and client, thin drivers of the sans-IO
//!   machines of `hoard-proto` (the wire protocol, client sync, server
//!   session, the server's tick core: no sockets, threads or clocks inside),
//!   which a game does not use directly and the facade does not re-export.
//!
//! A game's client build needs no store: with `default-features = false,
//! features = ["bevy"]` redb is not compiled (the `redb` feature, on by
//! default, brings `RedbStore` for servers).
//! - `bevy` (feature `bevy`, on by default): `HoardServerPlugin` and
//!   `HoardClientPlugin` for games built on `bevy_app`.

#[cfg(feature = "bevy")]
pub use hoard_bevy as bevy;
pub use hoard_engine as engine;
pub use hoard_net as net;
pub use hoard_trust as trust;
pub use hoard_world_cache as world_cache;

/// Serving a world: start a server with a game's world, schedule and
/// intents; its handle issues tokens and reports a failure.
pub mod server {
    pub use hoard_net::quic::server::{
        Game, ServerError, ServerHandle, ServerOptions, ServerStats, WEB_PATH, WebCertificate, WebEndpoint,
        WebTransportOptions, start,
    };
    pub use hoard_proto::auth::{TokenAuthority, TokenError};
    pub use hoard_proto::intents::{ConnectedPlayers, IncomingIntents, IntentRegistry, ReceivedIntent};
}

/// Joining a world: connect, enter zones, apply what arrives to a `World`.
pub mod client {
    /// Materialising what a client receives as entities.
    #[cfg(feature = "bevy")]
    pub use hoard_bevy::materialise::{Materialiser, Replicated, update};
    pub use hoard_net::quic::client::{
        ClientError, ClientEvent, ClientOptions, ClientUpdate, HoardClient, PendingEntry,
    };
    pub use hoard_proto::sync::client::EntryStats;

    /// Carrying a client session over another transport: implement
    /// [`WireTransport`](wire::WireTransport) and [`Wire`](wire::Wire) (they
    /// only move messages) and give it to `HoardClientPlugin::with_transport`
    /// with the [`SessionSettings`](wire::SessionSettings).
    pub mod wire {
        pub use hoard_client::SessionSettings;
        pub use hoard_client::host::Inbound;
        pub use hoard_client::wire::{Arrival, Wire, WireConnecting, WireTransport};
    }
}

/// The names a game needs most.
pub mod prelude {
    #[cfg(feature = "bevy")]
    pub use crate::bevy::server::{flush, idle_until, shutdown};
    #[cfg(feature = "bevy")]
    pub use crate::bevy::{
        Audience, FromClient, FromServer, Hoard, HoardAppExt, HoardClientPlugin, HoardConnection, HoardEvent,
        HoardLogPlugin, HoardPlugins, HoardServer, HoardServerPlugin, IntentId, IntentOutcomes, StartError, ToClients,
        ZoneRequest, ZoneTransients,
    };
    #[cfg(feature = "bevy")]
    pub use crate::client::Replicated;
    pub use crate::client::{ClientError, ClientEvent, ClientOptions, EntryStats, HoardClient};
    pub use crate::server::{Game, IncomingIntents, IntentRegistry, ServerHandle, ServerOptions};
    pub use hoard_engine::ServerIdentity;
    pub use hoard_engine::prelude::*;
    pub use hoard_engine::registry::decode_old;
}

// The README's code is compiled (and run) with the tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
