//! Intents: typed game messages from clients, registered by name like
//! components, delivered to the game's systems on the server with the
//! sender's perspective.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::sync::Arc;

use bevy_ecs::resource::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

type Check = fn(&[u8]) -> bool;

/// The intents a game accepts, by name.
#[derive(Clone, Default)]
pub struct IntentRegistry {
    kinds: Arc<BTreeMap<String, (TypeId, Check)>>,
    /// Passes every intent on (a relay's: it runs no game and answers
    /// intents itself).
    any: bool,
}

impl std::fmt::Debug for IntentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

fn decodes<T: DeserializeOwned>(bytes: &[u8]) -> bool {
    rmp_serde::from_slice::<T>(bytes).is_ok()
}

impl IntentRegistry {
    /// An empty registry.
    pub fn new() -> IntentRegistry {
        IntentRegistry::default()
    }

    /// Accepts intents of type `T` under `name`.
    #[must_use]
    pub fn intent<T: DeserializeOwned + Serialize + 'static>(self, name: &str) -> IntentRegistry {
        let mut kinds = (*self.kinds).clone();
        kinds.insert(name.to_owned(), (TypeId::of::<T>(), decodes::<T> as Check));
        IntentRegistry {
            kinds: Arc::new(kinds),
            any: self.any,
        }
    }

    /// A registry that passes every intent on, whatever its name: for a
    /// server that runs no game of its own (a relay), whose driver answers
    /// intents itself.
    pub fn any() -> IntentRegistry {
        IntentRegistry {
            kinds: Arc::default(),
            any: true,
        }
    }

    /// Whether `payload` is a valid intent named `kind`.
    pub fn accepts(&self, kind: &str, payload: &[u8]) -> bool {
        self.any || self.kinds.get(kind).is_some_and(|(_, check)| check(payload))
    }
}

/// Which intent: the session it came on and its seq there. A game names an
/// intent by it to refuse, defer or complete it ([`IntentOutcomes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntentId {
    /// The session (connection) it came on.
    pub session: u64,
    /// Its seq, as the client numbered it.
    pub seq: u32,
}

/// One intent received this tick.
#[derive(Clone, Debug)]
pub struct ReceivedIntent {
    /// Which intent it is (set by the server's tick core when it hands the
    /// intent to the game).
    pub id: IntentId,
    /// Who sent it.
    pub perspective: String,
    /// Its registered name.
    pub kind: String,
    /// Its MessagePack payload.
    pub payload: Vec<u8>,
}

/// The perspectives (players) connected now, each with its number of
/// sessions; the server keeps it up to date before each tick. Games use it
/// to forget transient state of players who left.
#[derive(Resource, Default, Debug, Clone, PartialEq, Eq)]
pub struct ConnectedPlayers(pub std::collections::BTreeMap<String, usize>);

impl ConnectedPlayers {
    /// Whether `perspective` has a session open.
    pub fn contains(&self, perspective: &str) -> bool {
        self.0.contains_key(perspective)
    }
}

/// The intents received since the last tick; the server fills it before
/// running the game's schedule and clears it after.
#[derive(Resource, Default, Debug)]
pub struct IncomingIntents(pub Vec<ReceivedIntent>);

impl IncomingIntents {
    /// The intents named `kind`, decoded as `T`, each with its id (to
    /// refuse or defer it, [`IntentOutcomes`]) and its sender.
    pub fn read_with_ids<T: DeserializeOwned>(&self, kind: &str) -> Vec<(IntentId, String, T)> {
        self.0
            .iter()
            .filter(|i| i.kind == kind)
            .filter_map(|i| {
                rmp_serde::from_slice(&i.payload)
                    .ok()
                    .map(|t| (i.id, i.perspective.clone(), t))
            })
            .collect()
    }

    /// The intents named `kind`, decoded as `T`, with their senders.
    pub fn read<T: DeserializeOwned>(&self, kind: &str) -> Vec<(String, T)> {
        self.read_with_ids(kind)
            .into_iter()
            .map(|(_, perspective, t)| (perspective, t))
            .collect()
    }
}

/// The lowest code a game may refuse an intent with: codes below are
/// hoard's own (docs/PROTOCOL.md, "Error codes").
pub const FIRST_GAME_CODE: u16 = 1000;

/// What the game did with this frame's intents, beyond applying them: an
/// intent it neither refuses nor defers in the frame it arrives is taken as
/// applied by that frame, and confirmed (`Processed`) once the commit
/// holding the frame's changes is durable.
#[derive(Resource, Default, Debug)]
pub struct IntentOutcomes {
    refused: Vec<(IntentId, u16, String)>,
    deferred: Vec<IntentId>,
    completed: Vec<IntentId>,
}

impl IntentOutcomes {
    /// Refuses `intent` with the game's own `code` (at least
    /// [`FIRST_GAME_CODE`]; a lower one is raised to it) and `message` for
    /// the player: its client gets `IntentRejected` for the intent's seq
    /// instead of `Processed`. The game must not have changed the world for
    /// it.
    pub fn refuse(&mut self, intent: IntentId, code: u16, message: impl Into<String>) {
        self.refused.push((intent, code.max(FIRST_GAME_CODE), message.into()));
    }

    /// Holds `intent` back: the game will apply it at a later frame (it
    /// waits for something) and then [`IntentOutcomes::complete`] it, or
    /// refuse it. Until then it is not confirmed.
    pub fn defer(&mut self, intent: IntentId) {
        self.deferred.push(intent);
    }

    /// A deferred intent was applied this frame: it is confirmed once this
    /// frame's commit is durable.
    pub fn complete(&mut self, intent: IntentId) {
        self.completed.push(intent);
    }

    /// Takes this frame's outcomes (refused, deferred, completed).
    #[allow(clippy::type_complexity)]
    pub fn take(&mut self) -> (Vec<(IntentId, u16, String)>, Vec<IntentId>, Vec<IntentId>) {
        (
            std::mem::take(&mut self.refused),
            std::mem::take(&mut self.deferred),
            std::mem::take(&mut self.completed),
        )
    }
}
