//! What a client tells its game, whatever carries its bytes: the updates
//! of the game's world ([`ClientUpdate`]), the events among them
//! ([`ClientEvent`]) and why a call failed ([`ClientError`]). The QUIC client
//! of `hoard-net` produces them, the client plugin of `hoard-bevy`
//! consumes them through its transport trait, and another transport speaks
//! the same vocabulary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hoard_engine::shard::{CachedObject, CachedShard};
use hoard_engine::{ObjectId, ShardId, ZoneId};

use crate::sync::client::EntryStats;

/// Why the client failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server (a relay) sent a shard that is not the world's: altered,
    /// incomplete, invented or replayed, as the world's signed heads show.
    /// Nothing of it was written or shown; use another route to the world.
    #[error("the server is not faithful to the world: {0}")]
    Forged(String),
    /// A `hoard://` URL this client cannot resolve (another service, no
    /// such zone or shard).
    #[error("{0}")]
    Url(String),
    /// Could not connect (including a refused server identity).
    #[error("cannot connect to {addr}: {detail}")]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// What went wrong.
        detail: String,
    },
    /// The server refused the session or failed it.
    #[error("server refused: {message} (code {code})")]
    Refused {
        /// The error code.
        code: u16,
        /// The server's reason.
        message: String,
    },
    /// The server refused a zone.
    #[error("zone {zone} refused: {message} (code {code})")]
    ZoneDenied {
        /// The zone.
        zone: ZoneId,
        /// The error code.
        code: u16,
        /// The server's reason.
        message: String,
    },
    /// The zone is served by another server of the same world: connect
    /// there (with the same pin: a world's servers share its identity) and
    /// enter it again.
    #[error("zone {zone} is served by {address}")]
    ZoneElsewhere {
        /// The zone.
        zone: ZoneId,
        /// The serving server's address (`host:port`).
        address: String,
    },
    /// The cache could not be opened.
    #[error("cache: {0}")]
    Cache(String),
    /// The connection was lost.
    #[error("connection lost: {0}")]
    Lost(String),
    /// A zone entry did not complete within its time (`ENTRY_TIMEOUT_SECS`).
    #[error("zone {0} was not ready within {1:?}")]
    Timeout(ZoneId, Duration),
}

/// What happened, as the last of a zone's or an intent's [`ClientUpdate`]s.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A zone is in the world, verified and up to date.
    ZoneReady {
        /// The zone.
        zone: ZoneId,
        /// What the entry cost and reused.
        stats: EntryStats,
    },
    /// A zone was left: its entities were despawned.
    ZoneLeft {
        /// The zone.
        zone: ZoneId,
    },
    /// A zone was refused.
    ZoneDenied {
        /// The zone.
        zone: ZoneId,
        /// Why.
        message: String,
    },
    /// The zone is served by another server of the world, at `address`.
    ZoneElsewhere {
        /// The zone.
        zone: ZoneId,
        /// The serving server's address (`host:port`).
        address: String,
    },
    /// A message of the game to this player: `kind` names its type, as
    /// both ends registered it; `payload` is its MessagePack encoding. The
    /// Bevy client plugin turns it into a typed `FromServer<M>` message.
    GameMessage {
        /// Its registered kind.
        kind: String,
        /// The zone it was sent to, if it went to a zone's players.
        zone: Option<ZoneId>,
        /// Its MessagePack encoding.
        payload: Vec<u8>,
    },
    /// The server refused an intent: it was not applied.
    IntentRejected {
        /// The seq `HoardClient::send_intent` (hoard-net) returned for it.
        seq: u32,
        /// The error code (docs/PROTOCOL.md, error codes): hoard's below
        /// 1000, the game's own from 1000.
        code: u16,
        /// Why.
        message: String,
    },
    /// The server processed these intents (sent with
    /// `HoardClient::send_intent` (hoard-net)) in a tick that is now durable; the
    /// changes they caused arrived before this event.
    IntentsProcessed {
        /// Their seqs.
        seqs: Vec<u32>,
    },
    /// The server gave the nonce this session's intents are signed under
    /// (the session's token binds the player's key): the client signs its
    /// intents from now on, numbering them 1, 2, 3, … (hoard-net's client
    /// does this itself; a relay passes the nonce to its player).
    IntentNonce {
        /// The nonce.
        nonce: [u8; 16],
    },
    /// The server stopped or resumed accepting actions (its world store
    /// failed or recovered); show `message` to the player.
    ServerStatus {
        /// Whether actions are accepted.
        writable: bool,
        /// A sentence for the player.
        message: String,
    },
    /// The connection ended.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// What arrived for the game's world since the last
/// `HoardClient::take_updates` (hoard-net), in order: verified objects of entered
/// zones, live changes, zones left, and events. The client plugin of
/// `hoard-bevy` materialises them as entities (`Materialiser`); a game on
/// another ECS applies them itself. Prefetched zones bring none: only zones
/// entered with `HoardClient::enter_zone` are visible.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientUpdate {
    /// A zone's cached copies, loaded from disk while its entry is in flight
    /// and **not yet confirmed** by the server: a game may prepare them
    /// (decode them on other threads, say) but must not show them. The
    /// entry's `ZoneLoaded` follows, carrying each copy that turned out
    /// current as the very same `Arc` (compare with `Arc::ptr_eq`; changed
    /// shards come as new copies), or the entry fails. Sent for warm entries
    /// of entered (not prefetched) zones.
    ZoneCached {
        /// The zone being entered.
        zone: ZoneId,
        /// The copies as loaded (their checksums held).
        shards: Vec<Arc<CachedShard>>,
    },
    /// A zone was entered: every object of its shards, verified.
    ZoneLoaded {
        /// The zone.
        zone: ZoneId,
        /// Its shards, each with its objects (shared with the client's live
        /// copies, not copied for the game).
        shards: Vec<Arc<CachedShard>>,
        /// The world's signed head of each shard, when the client checks
        /// them (`ClientOptions::proofs`, or through a relay).
        proofs: Vec<crate::wire::HeadProof>,
    },
    /// A live change of one shard: objects written and objects removed.
    Objects {
        /// The zone.
        zone: ZoneId,
        /// The shard.
        shard: ShardId,
        /// Objects new or changed (their full new state).
        upserts: Vec<CachedObject>,
        /// Objects removed from this shard (an object that moved to
        /// another shard may already be upserted there).
        removed: Vec<ObjectId>,
        /// The whole shard after the change (shared with the live copy).
        head: Arc<CachedShard>,
        /// The world's signed head after the change, when the client checks
        /// them.
        proof: Option<crate::wire::HeadProof>,
    },
    /// A zone was left: its objects are gone from the game's view.
    ZoneLeft {
        /// The zone.
        zone: ZoneId,
    },
    /// Something else that happened (a zone ready, an intent answered, the
    /// server's status, a disconnection).
    Event(ClientEvent),
}
