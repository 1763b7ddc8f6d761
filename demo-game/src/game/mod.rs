//! The demo game's world: its publishable components and a deterministic
//! generator of zones (terrain, houses, items), one shard per 32×32 chunk.

pub(crate) mod generate;
pub(crate) mod rules;
pub(crate) mod server;

use bevy_ecs::prelude::*;
use hoard_engine::PublishRegistry;
use serde::{Deserialize, Serialize};

/// One row of 32 terrain tiles of a chunk.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct TerrainRow {
    /// Tile coordinates of the row's first tile.
    pub(crate) x: u16,
    /// Its row.
    pub(crate) y: u16,
    /// Tile kinds: 0 grass, 1 water, 2 sand, 3 rock, 4 forest, 5 road.
    pub(crate) tiles: Vec<u8>,
}

/// A house.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct House {
    /// Owner's player name.
    pub(crate) owner: String,
    /// The house's name.
    pub(crate) name: String,
    /// Top-left tile.
    pub(crate) x: u16,
    /// Top-left tile.
    pub(crate) y: u16,
    /// Size in tiles.
    pub(crate) size: (u8, u8),
    /// RGB colour.
    pub(crate) colour: (u8, u8, u8),
}

/// An item on the ground or in an inventory.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Item {
    /// wood, stone, gold, axe, ...
    pub(crate) kind: String,
    /// How many.
    pub(crate) count: u16,
    /// Tile position (on the ground).
    pub(crate) x: u16,
    /// Tile position (on the ground).
    pub(crate) y: u16,
}

/// The demo's publish registry.
pub(crate) fn registry() -> PublishRegistry {
    PublishRegistry::builder()
        .publish::<TerrainRow>("terrain", 1)
        .publish::<House>("house", 1)
        .publish::<Item>("item", 1)
        .build()
}
