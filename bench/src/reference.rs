//! The reference zone: 100,000 objects in 64 shards, about 10 MB serialised
//! (terrain strips, houses, items), generated deterministically from a seed.
//!
//! The zone is 256×256 tiles cut into an 8×8 grid of 32×32 chunks, one shard
//! per chunk. Each chunk holds 32 terrain strips (one row of tiles each), a
//! few dozen houses and, filling up to the object budget, items on the ground.

use bevy_ecs::prelude::*;
use hoard_engine::state::StateBuilder;
use hoard_engine::{ObjectId, ObjectState, PublishRegistry, ShardId};
use serde::{Deserialize, Serialize};

/// One row of 32 terrain tiles.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TerrainStrip {
    /// Row within the chunk.
    pub row: u8,
    /// Tile kinds (grass, water, sand, rock, forest, road...).
    pub tiles: Vec<u8>,
    /// Tile heights.
    pub heights: Vec<i8>,
}

/// A house standing in a chunk.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct House {
    /// Owner's account name.
    pub owner: String,
    /// The house's name.
    pub name: String,
    /// Tile position and size.
    pub rect: (u16, u16, u8, u8),
    /// RGB colour.
    pub colour: (u8, u8, u8),
}

/// An item on the ground.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Item {
    /// What it is.
    pub kind: String,
    /// How many.
    pub count: u16,
    /// Tile position.
    pub pos: (u16, u16),
    /// Wear, 0 to 100.
    pub durability: u8,
    /// Free-form properties (enchantments, inscriptions).
    pub notes: String,
}

/// The registry of the reference zone's components.
pub fn registry() -> PublishRegistry {
    PublishRegistry::builder()
        .publish::<TerrainStrip>("terrain", 1)
        .publish::<House>("house", 1)
        .publish::<Item>("item", 1)
        .build()
}

/// One generated object.
#[derive(Clone, Debug)]
pub enum RefObject {
    /// A terrain strip.
    Terrain(TerrainStrip),
    /// A house.
    House(House),
    /// An item.
    Item(Item),
}

impl RefObject {
    /// The canonical state bytes, as the publisher would encode them.
    pub fn state(&self) -> ObjectState {
        let mut b = StateBuilder::new();
        // Serialising plain data into a Vec cannot fail.
        match self {
            RefObject::Terrain(t) => b.component("terrain", rmp_serde::to_vec(t).unwrap_or_default()),
            RefObject::House(h) => b.component("house", rmp_serde::to_vec(h).unwrap_or_default()),
            RefObject::Item(i) => b.component("item", rmp_serde::to_vec(i).unwrap_or_default()),
        };
        b.finish()
    }

    /// Spawns the object with its marker.
    pub fn spawn(&self, world: &mut World, id: ObjectId, shard: ShardId) -> Entity {
        let marker = hoard_engine::Published::new(id, shard);
        match self.clone() {
            RefObject::Terrain(t) => world.spawn((marker, t)).id(),
            RefObject::House(h) => world.spawn((marker, h)).id(),
            RefObject::Item(i) => world.spawn((marker, i)).id(),
        }
    }

    /// A changed copy (a tick of gameplay: an item used, a tile dug, a house repainted).
    pub fn mutated(&self, rng: &mut fastrand::Rng) -> RefObject {
        let mut next = self.clone();
        match &mut next {
            RefObject::Terrain(t) => {
                let i = rng.usize(..t.tiles.len());
                t.heights[i] = t.heights[i].wrapping_add(1);
            }
            RefObject::House(h) => h.colour.0 = h.colour.0.wrapping_add(1),
            RefObject::Item(i) => {
                i.count = i.count.wrapping_add(1);
                i.durability = i.durability.saturating_sub(1);
            }
        }
        next
    }
}

/// The zone's objects: `(id, shard, object)`.
pub struct ReferenceZone {
    /// Every object.
    pub objects: Vec<(ObjectId, ShardId, RefObject)>,
    /// Shard count.
    pub shards: u64,
}

const ITEM_KINDS: &[&str] = &["wood", "stone", "gold", "axe", "pickaxe", "seed", "rope", "lantern"];
const NAMES: &[&str] = &["ann", "bob", "cleo", "dmitri", "eve", "farah", "gus", "hana"];

/// Generates `objects` objects over `shards` shards (a square grid of chunks).
pub fn generate(objects: u64, shards: u64, seed: u64) -> ReferenceZone {
    let mut rng = fastrand::Rng::with_seed(seed);
    let per_shard = objects / shards;
    let mut out = Vec::with_capacity(objects as usize);
    let mut next_id = 1u64;
    for shard in 0..shards {
        let extra = u64::from(shard < objects % shards);
        let count = per_shard + extra;
        let (cx, cy) = ((shard % 8) as u16 * 32, (shard / 8) as u16 * 32);
        for k in 0..count {
            let object = if k < 32 {
                RefObject::Terrain(TerrainStrip {
                    row: k as u8,
                    tiles: (0..32).map(|_| rng.u8(0..6)).collect(),
                    heights: (0..32).map(|_| rng.i8(-4..12)).collect(),
                })
            } else if k < 64 {
                RefObject::House(House {
                    owner: NAMES[rng.usize(..NAMES.len())].to_owned(),
                    name: format!("house of the {} {}", ["red", "old", "tall", "quiet"][rng.usize(..4)], k),
                    rect: (cx + rng.u16(0..28), cy + rng.u16(0..28), rng.u8(2..5), rng.u8(2..5)),
                    colour: (rng.u8(..), rng.u8(..), rng.u8(..)),
                })
            } else {
                let notes_len = rng.usize(40..125);
                RefObject::Item(Item {
                    kind: ITEM_KINDS[rng.usize(..ITEM_KINDS.len())].to_owned(),
                    count: rng.u16(1..64),
                    pos: (cx + rng.u16(0..32), cy + rng.u16(0..32)),
                    durability: rng.u8(0..=100),
                    notes: (0..notes_len).map(|_| char::from(rng.u8(b'a'..=b'z'))).collect(),
                })
            };
            out.push((ObjectId(next_id), ShardId(shard), object));
            next_id += 1;
        }
    }
    ReferenceZone { objects: out, shards }
}
