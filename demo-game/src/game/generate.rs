//! A deterministic, plausible world: `zones` zones of 256×256 tiles, each an
//! 8×8 grid of 32×32 chunks, one shard per chunk holding 32 terrain rows, a
//! few houses and items lying around.

use bevy_ecs::prelude::*;
use hoard_engine::store::ShardSpec;
use hoard_engine::{ObjectId, Published, ShardId, ZoneId};

use super::{House, Item, TerrainRow};

/// Zone names, in order.
pub(crate) const ZONE_NAMES: [&str; 8] = [
    "meadow", "forest", "desert", "coast", "hills", "marsh", "tundra", "canyon",
];
const OWNERS: [&str; 6] = ["ann", "bob", "cleo", "dmitri", "eve", "farah"];
const KINDS: [&str; 6] = ["wood", "stone", "gold", "axe", "seed", "rope"];

/// A generated zone: its name and shards.
pub(crate) struct ZonePlan {
    /// The zone.
    pub(crate) zone: ZoneId,
    /// Its shards.
    pub(crate) shards: Vec<ShardSpec>,
}

/// Spawns the world into `world` and returns the zones to create in the store.
pub(crate) fn generate(world: &mut World, zones: usize, seed: u64) -> anyhow::Result<Vec<ZonePlan>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next = 1u64;
    let mut plans = Vec::new();
    for (z, name) in ZONE_NAMES.iter().take(zones).enumerate() {
        let mut shards = Vec::new();
        for chunk in 0..64u64 {
            let shard = ShardId(z as u64 * 1000 + chunk);
            shards.push(ShardSpec::shared(shard));
            let (cx, cy) = ((chunk % 8) as u16 * 32, (chunk / 8) as u16 * 32);
            let base = rng.u8(0..5);
            for row in 0..32u16 {
                let tiles = (0..32)
                    .map(|_| if rng.u8(0..10) < 7 { base } else { rng.u8(0..6) })
                    .collect();
                world.spawn((
                    Published::new(ObjectId(next), shard),
                    TerrainRow {
                        x: cx,
                        y: cy + row,
                        tiles,
                    },
                ));
                next += 1;
            }
            for h in 0..rng.usize(0..3) {
                let owner = OWNERS[rng.usize(..OWNERS.len())];
                world.spawn((
                    Published::new(ObjectId(next), shard),
                    House {
                        owner: owner.to_owned(),
                        name: format!("{owner}'s house {h}"),
                        x: cx + rng.u16(0..28),
                        y: cy + rng.u16(0..28),
                        size: (rng.u8(2..5), rng.u8(2..5)),
                        colour: (rng.u8(..), rng.u8(..), rng.u8(..)),
                    },
                ));
                next += 1;
            }
            for _ in 0..rng.usize(5..16) {
                world.spawn((
                    Published::new(ObjectId(next), shard),
                    Item {
                        kind: KINDS[rng.usize(..KINDS.len())].to_owned(),
                        count: rng.u16(1..20),
                        x: cx + rng.u16(0..32),
                        y: cy + rng.u16(0..32),
                    },
                ));
                next += 1;
            }
        }
        plans.push(ZonePlan {
            zone: ZoneId::new(*name)?,
            shards,
        });
    }
    Ok(plans)
}
