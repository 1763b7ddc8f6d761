//! Shared fixtures: a small publishable game and store constructors.

use bevy_ecs::prelude::*;
use hoard_engine::state::StateBuilder;
use hoard_engine::{ObjectState, PublishRegistry};
use serde::{Deserialize, Serialize};

/// A tile of terrain.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Terrain {
    pub(crate) kind: u8,
    pub(crate) height: i16,
}

/// An item lying somewhere.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) name: String,
    pub(crate) count: u32,
}

pub(crate) fn registry() -> PublishRegistry {
    PublishRegistry::builder()
        .publish::<Terrain>("terrain", 1)
        .publish::<Item>("item", 1)
        .build()
}

/// A state with one component holding `n`.
pub(crate) fn state_n(n: u64) -> ObjectState {
    let mut value = Vec::new();
    rmp::encode::write_uint(&mut value, n).expect("vec write");
    StateBuilder::new().component("n", value).finish()
}

pub(crate) fn temp_store() -> (tempfile::TempDir, hoard_engine::RedbStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = hoard_engine::RedbStore::open_dir(dir.path()).expect("open store");
    (dir, store)
}
