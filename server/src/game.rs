//! What a server runs, whatever carries its sessions: the game ([`Game`]:
//! its world, schedule and publisher, and the hooks it gives the server),
//! the rules its sessions follow ([`GameRules`]), and the server's
//! counters ([`ServerStats`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use bevy_ecs::schedule::Schedule;
use bevy_ecs::world::World;
use hoard_engine::store::WorldStore;
use hoard_engine::{Publisher, RegistryHash, ZoneId};
use hoard_proto::intents::IntentRegistry;

/// The game the server runs: its world, its schedule and the publisher
/// gathering the world's changes.
pub struct Game {
    /// The ECS world.
    pub world: World,
    /// The game's systems, run once per tick.
    pub schedule: Schedule,
    /// Gathers each tick's changes.
    pub publisher: Publisher,
    /// The intents the game accepts.
    pub intents: IntentRegistry,
    /// Which zones each perspective may enter.
    pub access: Arc<dyn hoard_proto::sync::server::AccessPolicy>,
    /// Called once per connection when its perspective is authenticated,
    /// before any zone request of it is answered (the demo creates the
    /// player's inventory shard here). An error refuses the session with
    /// `Unavailable` and the reason, rather than letting the player act in a
    /// world not ready for them.
    pub on_join: Option<JoinHook>,
    /// Called once per connection whose join hook ran, when it has ended
    /// (on the connection's task, off the world thread; the world sees the
    /// player leave through `ConnectedPlayers` as ever).
    pub on_leave: Option<LeaveHook>,
    /// Called once per tick after the schedule: each zone's transient state
    /// (never stored — who stands where), encoded by the game. A zone's state
    /// goes to the sessions in that zone when it differs from the last sent,
    /// and to each session entering the zone; a zone left out is unchanged.
    pub transient: Option<TransientHook>,
}

/// See [`Game::on_join`].
pub type JoinHook = Arc<dyn Fn(&str, &dyn WorldStore) -> Result<(), String> + Send + Sync>;

/// See [`Game::on_leave`].
pub type LeaveHook = Arc<dyn Fn(&str) + Send + Sync>;

/// See [`Game::transient`].
pub type TransientHook = Arc<dyn Fn(&mut World) -> Vec<(ZoneId, Vec<u8>)> + Send + Sync>;

impl Game {
    /// A game open to every perspective, accepting `intents`.
    pub fn new(world: World, schedule: Schedule, publisher: Publisher, intents: IntentRegistry) -> Game {
        Game {
            world,
            schedule,
            publisher,
            intents,
            access: Arc::new(hoard_proto::sync::server::OpenWorld),
            on_join: None,
            on_leave: None,
            transient: None,
        }
    }
}

/// What a server needs of the game besides its world: the registry clients
/// must match, the intents it accepts, who may enter what, and the join hook.
#[derive(Clone)]
pub struct GameRules {
    /// The registry hash clients must present in `Hello`.
    pub registry: RegistryHash,
    /// The intents the game accepts.
    pub intents: IntentRegistry,
    /// Which zones each perspective may enter.
    pub access: Arc<dyn hoard_proto::sync::server::AccessPolicy>,
    /// See [`Game::on_join`].
    pub on_join: Option<JoinHook>,
    /// See [`Game::on_leave`].
    pub on_leave: Option<LeaveHook>,
}

impl GameRules {
    /// The rules of `game`.
    pub fn of(game: &Game) -> GameRules {
        GameRules {
            registry: game.publisher.registry().hash(),
            intents: game.intents.clone(),
            access: game.access.clone(),
            on_join: game.on_join.clone(),
            on_leave: game.on_leave.clone(),
        }
    }
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Live connections.
    pub connections: AtomicUsize,
    /// Connections refused for the connection limit (total or per address).
    pub refused: AtomicU64,
    /// Connections closed for not saying `Hello` in time.
    pub hello_timeouts: AtomicU64,
    /// Commits that failed (each retried).
    pub failed_commits: AtomicU64,
    /// Intents rejected because the store was failing.
    pub unavailable_intents: AtomicU64,
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Connections closed for reading too slowly.
    pub slow_consumers: AtomicU64,
    /// Objects committed.
    pub committed_objects: AtomicU64,
    /// Path MTU probes sent, over the connections that ended
    /// (hoard-net's `ServerOptions::mtu_discovery`).
    pub mtu_probes: AtomicU64,
    /// Sessions ended because a signed intent failed its check (altered,
    /// lost, reordered or replayed on the way: a relay between lied).
    pub bad_intents: AtomicU64,
}
