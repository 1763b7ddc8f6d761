//! hoard-client: a hoard client without a runtime or a socket. proto's
//! sans-IO [`ClientSession`](hoard_proto::sync::session::ClientSession)
//! decides; [`ClientHost`] keeps what a driver keeps beside it (the disk
//! cache, the session's clock, the world's key) and does the synchronous
//! work it asks for (cache reads for an entry, applying what arrived, cache
//! writes before the game sees anything, audits, journal folds); a
//! [`wire::Wire`] is what a transport implements to carry its messages.
//! hoard ships two drivers of it: `tasks` (feature `tokio`), tokio tasks
//! behind an async API over any control link, which hoard-net's QUIC
//! client runs on; and hoard-bevy's client plugin, whose systems drive the
//! host each frame over any [`wire::WireTransport`].

pub mod host;
pub mod intents;
pub mod settings;
#[cfg(feature = "tokio")]
pub mod tasks;
pub mod wire;

pub use host::{ApplyError, CachedZone, ClientHost, HostConfig, Inbound, Outcome, Writes, open_cache};
pub use intents::{IntentQueue, IntentSigning};
pub use settings::SessionSettings;
pub use wire::{Arrival, Wire, WireConnecting, WireTransport};
