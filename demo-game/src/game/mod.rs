//! The demo game's world: its publishable components (a zone's description,
//! terrain rows, houses, items) and the rules the server runs on them.
//!
//! Every component denies unknown fields, so a typo in a world file
//! (`colour` spelled `color`) is reported by `hoard-demo world validate`
//! instead of silently ignored.

pub(crate) mod chat;
pub(crate) mod hosting;
pub(crate) mod leases;
pub(crate) mod presence;
pub(crate) mod rules;
pub(crate) mod server;

use bevy_ecs::prelude::*;
use hoard_engine::PublishRegistry;
use serde::{Deserialize, Serialize};

/// Zone side in tiles.
pub(crate) const ZONE_SIZE: u16 = 256;
/// Chunk side in tiles: each chunk of a zone is one shard.
pub(crate) const CHUNK_SIZE: u16 = 32;
/// Chunks along a zone's side.
pub(crate) const CHUNKS_PER_SIDE: u16 = ZONE_SIZE / CHUNK_SIZE;

/// The tile kinds, indexed by kind number, as the glyphs world files and the
/// terminal client use: grass, water, sand, rock, forest, road.
pub(crate) const TILE_GLYPHS: [char; 6] = ['.', '~', ':', '^', 'T', '='];
/// Tile kind numbers.
pub(crate) mod tile {
    /// Grass.
    pub(crate) const GRASS: u8 = 0;
    /// Water.
    pub(crate) const WATER: u8 = 1;
    /// Sand.
    pub(crate) const SAND: u8 = 2;
    /// Rock.
    pub(crate) const ROCK: u8 = 3;
    /// Forest.
    pub(crate) const FOREST: u8 = 4;
    /// Road.
    pub(crate) const ROAD: u8 = 5;
}

/// A zone's description: its index (which numbers its shards) and the zones
/// beyond its edges. One per zone, in one of its shards.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ZoneInfo {
    /// The zone's index: its shards are numbered `index * 1000 + chunk`.
    pub(crate) index: u32,
    /// The zone beyond the top edge.
    #[serde(default)]
    pub(crate) north: Option<String>,
    /// The zone beyond the bottom edge.
    #[serde(default)]
    pub(crate) south: Option<String>,
    /// The zone beyond the right edge.
    #[serde(default)]
    pub(crate) east: Option<String>,
    /// The zone beyond the left edge.
    #[serde(default)]
    pub(crate) west: Option<String>,
}

/// One row of 32 terrain tiles of a chunk.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TerrainRow {
    /// Tile coordinates of the row's first tile.
    pub(crate) x: u16,
    /// Its row.
    pub(crate) y: u16,
    /// Tile kinds (indices into [`TILE_GLYPHS`]), written as a string of glyphs.
    #[serde(with = "glyphs")]
    pub(crate) tiles: Vec<u8>,
}

/// A house.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
        .publish::<ZoneInfo>("zone", 1)
        .publish::<TerrainRow>("terrain", 2)
        .publish::<House>("house", 1)
        .publish::<Item>("item", 1)
        .intent::<rules::Action>(rules::ACTION, 1)
        .intent::<chat::Say>(chat::SAY, 1)
        .build()
}

/// The demo's registry as a next build would have it after changing
/// `component` ("zone", "terrain", "house" or "item"): that component one
/// schema version up, its stored objects migrated unchanged. `None` for
/// another name.
pub(crate) fn registry_bumping(component: &str) -> Option<PublishRegistry> {
    use hoard_engine::registry::{RegistryBuilder, decode_old};
    use serde::de::DeserializeOwned;
    fn publish<C>(builder: RegistryBuilder, name: &str, version: u32, bump: bool) -> RegistryBuilder
    where
        C: Component<Mutability = bevy_ecs::component::Mutable> + Serialize + DeserializeOwned,
    {
        if bump {
            builder
                .publish::<C>(name, version + 1)
                .migrate::<C>(version, |bytes| decode_old::<C>(bytes))
        } else {
            builder.publish::<C>(name, version)
        }
    }
    if !["zone", "terrain", "house", "item"].contains(&component) {
        return None;
    }
    let builder = publish::<ZoneInfo>(PublishRegistry::builder(), "zone", 1, component == "zone");
    let builder = publish::<TerrainRow>(builder, "terrain", 2, component == "terrain");
    let builder = publish::<House>(builder, "house", 1, component == "house");
    let builder = publish::<Item>(builder, "item", 1, component == "item");
    Some(
        builder
            .intent::<rules::Action>(rules::ACTION, 1)
            .intent::<chat::Say>(chat::SAY, 1)
            .build(),
    )
}

/// Tiles as a string of [`TILE_GLYPHS`]: readable in a world file, and as
/// small as raw bytes on the wire.
mod glyphs {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::TILE_GLYPHS;

    pub(super) fn serialize<S: Serializer>(tiles: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let text: String = tiles
            .iter()
            .map(|&t| TILE_GLYPHS.get(usize::from(t)).copied().unwrap_or('?'))
            .collect();
        serializer.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.chars()
            .map(|c| match TILE_GLYPHS.iter().position(|&g| g == c) {
                Some(kind) => Ok(kind as u8),
                None => Err(D::Error::custom(format!(
                    "`{c}` is not a tile; tiles are . grass, ~ water, : sand, ^ rock, T forest, = road"
                ))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bumped_registry_differs_from_the_demos_in_that_component_alone() {
        let current: Vec<(String, u32)> = registry().components().map(|(n, v)| (n.to_owned(), v)).collect();
        for bumped in ["zone", "terrain", "house", "item"] {
            let next = registry_bumping(bumped).expect("a demo component");
            let expected: Vec<(String, u32)> = current
                .iter()
                .map(|(n, v)| (n.clone(), if n == bumped { v + 1 } else { *v }))
                .collect();
            let got: Vec<(String, u32)> = next.components().map(|(n, v)| (n.to_owned(), v)).collect();
            assert_eq!(got, expected);
            assert_eq!(next.intents().count(), registry().intents().count());
        }
        assert!(registry_bumping("sign").is_none());
    }

    #[test]
    fn terrain_tiles_round_trip_as_glyphs_in_ron_and_messagepack() {
        let row = TerrainRow {
            x: 32,
            y: 7,
            tiles: vec![0, 1, 2, 3, 4, 5],
        };
        let text = ron::to_string(&row).expect("ron");
        assert!(text.contains("\".~:^T=\""), "{text}");
        assert_eq!(ron::from_str::<TerrainRow>(&text).expect("parse"), row);
        let bytes = rmp_serde::to_vec(&row).expect("msgpack");
        assert_eq!(rmp_serde::from_slice::<TerrainRow>(&bytes).expect("decode"), row);
        let bad = ron::from_str::<TerrainRow>("(x: 0, y: 0, tiles: \"..x\")").expect_err("x is no tile");
        assert!(bad.to_string().contains("`x` is not a tile"), "{bad}");
        let typo = ron::from_str::<Item>("(kind: \"gold\", count: 1, x: 0, y: 0, colour: 3)").expect_err("typo");
        assert!(typo.to_string().contains("colour"), "{typo}");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes docs/PROTOCOL.md ("The demo game") gives a client written
    /// in another language.
    #[test]
    fn the_demo_registry_and_encodings_are_the_documented_ones() {
        use super::rules::Action;
        assert_eq!(
            registry().hash().to_string(),
            "c715021f49e6d261e3f3fd6cd986aea18b53008ca8f0232d9015cf5b59a163a4"
        );
        let moved = rmp_serde::to_vec(&Action::Move { zone: 2, x: 50, y: 50 }).expect("encode");
        assert_eq!(hex(&moved), "81a44d6f766593023232");
        let dropped = rmp_serde::to_vec(&Action::Drop { object: 2174 }).expect("encode");
        assert_eq!(hex(&dropped), "81a444726f7091cd087e");
        let item = Item {
            kind: "wood".into(),
            count: 3,
            x: 10,
            y: 12,
        };
        assert_eq!(hex(&rmp_serde::to_vec(&item).expect("encode")), "94a4776f6f64030a0c");
        let row = TerrainRow {
            x: 32,
            y: 7,
            tiles: vec![0, 1, 4],
        };
        assert_eq!(hex(&rmp_serde::to_vec(&row).expect("encode")), "932007a32e7e54");
    }
}
