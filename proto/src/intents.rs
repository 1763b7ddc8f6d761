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

/// One intent received this tick.
#[derive(Clone, Debug)]
pub struct ReceivedIntent {
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
    /// The intents named `kind`, decoded as `T`, with their senders.
    pub fn read<T: DeserializeOwned>(&self, kind: &str) -> Vec<(String, T)> {
        self.0
            .iter()
            .filter(|i| i.kind == kind)
            .filter_map(|i| {
                rmp_serde::from_slice(&i.payload)
                    .ok()
                    .map(|t| (i.perspective.clone(), t))
            })
            .collect()
    }
}
