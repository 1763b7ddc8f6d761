//! A synthetic but plausible world of any size, deterministic from a seed:
//! zones laid out on a grid (each knows its neighbours), terrain from smooth
//! noise continuous across zone borders (lakes with beaches, meadows, woods,
//! rocky heights, a crossroads), houses on free dry land and items lying
//! around. `hoard-demo world generate` writes it as files; the shipped
//! `assets/world` was made by it (`--zones 4 --seed 1`).

use hoard_engine::{ShardId, ZoneId};

use super::check::chunk_shard;
use super::{Thing, WorldData, WorldObject};
use crate::game::{CHUNK_SIZE, CHUNKS_PER_SIDE, House, Item, TerrainRow, ZONE_SIZE, ZoneInfo, tile};

/// The first zones' names; later zones are `zone-<n>`.
pub(crate) const ZONE_NAMES: [&str; 8] = [
    "meadow", "forest", "desert", "coast", "hills", "marsh", "tundra", "canyon",
];
const OWNERS: [&str; 6] = ["ann", "bob", "cleo", "dmitri", "eve", "farah"];
const HOUSE_KINDS: [&str; 6] = ["cottage", "barn", "mill", "hut", "hall", "workshop"];
const ITEM_KINDS: [&str; 8] = ["wood", "stone", "gold", "axe", "seed", "rope", "fish", "berries"];

/// What to generate.
#[derive(Clone, Debug)]
pub(crate) struct GenerateOptions {
    /// Zones (1 to 1000).
    pub(crate) zones: u32,
    /// Houses and items per zone (the zone's 2,048 terrain rows and its
    /// `zone` object come on top).
    pub(crate) objects_per_zone: u32,
    /// The seed: the same seed gives the same world, byte for byte.
    pub(crate) seed: u64,
}

/// The name of zone `index`.
pub(crate) fn zone_name(index: u32) -> String {
    ZONE_NAMES
        .get(index as usize)
        .map_or_else(|| format!("zone-{index}"), |n| (*n).to_owned())
}

/// Generates the world.
pub(crate) fn generate(options: &GenerateOptions) -> anyhow::Result<WorldData> {
    anyhow::ensure!(
        (1..=1000).contains(&options.zones),
        "--zones must be 1 to 1000, got {}",
        options.zones
    );
    let columns = (1..).find(|c| c * c >= options.zones).unwrap_or(1);
    let mut world = WorldData::default();
    let mut next_id = 1u64;
    let mut add = |world: &mut WorldData, shard: ShardId, thing: Thing| {
        world.objects.insert(next_id, WorldObject::new(next_id, shard, thing));
        next_id += 1;
    };
    for index in 0..options.zones {
        let (gx, gy) = (index % columns, index / columns);
        let neighbour = |dx: i64, dy: i64| -> Option<String> {
            let (x, y) = (i64::from(gx) + dx, i64::from(gy) + dy);
            let n = y * i64::from(columns) + x;
            (x >= 0 && x < i64::from(columns) && y >= 0 && n < i64::from(options.zones)).then(|| zone_name(n as u32))
        };
        let zone = ZoneId::new(zone_name(index))?;
        let chunks = u64::from(CHUNKS_PER_SIDE) * u64::from(CHUNKS_PER_SIDE);
        world
            .zones
            .insert(zone, (0..chunks).map(|c| chunk_shard(index, c)).collect());
        let info = ZoneInfo {
            index,
            north: neighbour(0, -1),
            south: neighbour(0, 1),
            east: neighbour(1, 0),
            west: neighbour(-1, 0),
        };
        add(&mut world, chunk_shard(index, 0), Thing::Zone(info));
        let origin = (
            u64::from(gx) * u64::from(ZONE_SIZE),
            u64::from(gy) * u64::from(ZONE_SIZE),
        );
        let tiles = terrain(options.seed, origin);
        for chunk in 0..chunks {
            let (cx, cy) = chunk_xy(chunk);
            for y in cy..cy + CHUNK_SIZE {
                let row = (cx..cx + CHUNK_SIZE)
                    .map(|x| tiles[usize::from(y) * 256 + usize::from(x)])
                    .collect();
                add(
                    &mut world,
                    chunk_shard(index, chunk),
                    Thing::Terrain(TerrainRow { x: cx, y, tiles: row }),
                );
            }
        }
        let mut rng =
            fastrand::Rng::with_seed(options.seed ^ (u64::from(index) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut taken = vec![false; tiles.len()];
        let wanted_houses = options.objects_per_zone / 6;
        let mut houses = 0;
        for _ in 0..wanted_houses {
            if let Some((x, y, size)) = place_house(&mut rng, &tiles, &mut taken) {
                houses += 1;
                let owner = OWNERS[rng.usize(..OWNERS.len())];
                let kind = HOUSE_KINDS[rng.usize(..HOUSE_KINDS.len())];
                let thing = Thing::House(House {
                    owner: owner.to_owned(),
                    name: format!("{owner}'s {kind}"),
                    x,
                    y,
                    size,
                    colour: (rng.u8(90..=230), rng.u8(50..=200), rng.u8(40..=180)),
                });
                add(&mut world, shard_at(index, x, y), thing);
            }
        }
        if houses < wanted_houses {
            // The count asked for is kept: the houses that found no room
            // become items, and the user is told.
            eprintln!(
                "{}: room for {houses} of {wanted_houses} houses; the other {} objects are items",
                zone_name(index),
                wanted_houses - houses
            );
        }
        for _ in houses..options.objects_per_zone {
            let (mut x, mut y) = (rng.u16(..ZONE_SIZE), rng.u16(..ZONE_SIZE));
            for _ in 0..4 {
                if tiles[usize::from(y) * 256 + usize::from(x)] != tile::WATER {
                    break;
                }
                (x, y) = (rng.u16(..ZONE_SIZE), rng.u16(..ZONE_SIZE));
            }
            let kind = ITEM_KINDS[rng.usize(..ITEM_KINDS.len())];
            let count = if kind == "gold" {
                rng.u16(1..=5)
            } else {
                rng.u16(1..=20)
            };
            let thing = Thing::Item(Item {
                kind: kind.to_owned(),
                count,
                x,
                y,
            });
            add(&mut world, shard_at(index, x, y), thing);
        }
    }
    Ok(world)
}

fn chunk_xy(chunk: u64) -> (u16, u16) {
    let chunk = chunk as u16;
    (
        (chunk % CHUNKS_PER_SIDE) * CHUNK_SIZE,
        (chunk / CHUNKS_PER_SIDE) * CHUNK_SIZE,
    )
}

fn shard_at(index: u32, x: u16, y: u16) -> ShardId {
    chunk_shard(
        index,
        u64::from(y / CHUNK_SIZE) * u64::from(CHUNKS_PER_SIDE) + u64::from(x / CHUNK_SIZE),
    )
}

/// A free spot on dry land for a house, marking it taken; `None` after a
/// few misses (a crowded zone simply gets fewer houses).
fn place_house(rng: &mut fastrand::Rng, tiles: &[u8], taken: &mut [bool]) -> Option<(u16, u16, (u8, u8))> {
    for _ in 0..12 {
        let size = (rng.u8(2..=4), rng.u8(2..=4));
        let (x, y) = (rng.u16(..ZONE_SIZE - 4), rng.u16(..ZONE_SIZE - 4));
        let cells = || {
            (y..y + u16::from(size.1))
                .flat_map(move |ty| (x..x + u16::from(size.0)).map(move |tx| usize::from(ty) * 256 + usize::from(tx)))
        };
        if cells().all(|i| !taken[i] && matches!(tiles[i], tile::GRASS | tile::SAND)) {
            cells().for_each(|i| taken[i] = true);
            return Some((x, y, size));
        }
    }
    None
}

/// The 256×256 tiles of the zone whose top-left tile is `origin` in world
/// coordinates: two octaves of value noise, so terrain runs on across zones.
fn terrain(seed: u64, origin: (u64, u64)) -> Vec<u8> {
    let mut tiles = Vec::with_capacity(256 * 256);
    for y in 0..u64::from(ZONE_SIZE) {
        for x in 0..u64::from(ZONE_SIZE) {
            let (wx, wy) = (origin.0 + x, origin.1 + y);
            let e = 0.7 * noise(seed, wx, wy, 48) + 0.3 * noise(seed ^ 0xA5A5, wx, wy, 11);
            let kind = if x == 128 || y == 128 {
                tile::ROAD
            } else if e < 0.33 {
                tile::WATER
            } else if e < 0.38 {
                tile::SAND
            } else if e < 0.60 {
                tile::GRASS
            } else if e < 0.74 {
                tile::FOREST
            } else {
                tile::ROCK
            };
            tiles.push(kind);
        }
    }
    tiles
}

/// Smooth value noise in [0, 1) with lattice spacing `cell`.
fn noise(seed: u64, x: u64, y: u64, cell: u64) -> f64 {
    let (lx, ly) = (x / cell, y / cell);
    let (fx, fy) = ((x % cell) as f64 / cell as f64, (y % cell) as f64 / cell as f64);
    let smooth = |t: f64| t * t * (3.0 - 2.0 * t);
    let (sx, sy) = (smooth(fx), smooth(fy));
    let at = |x: u64, y: u64| (mix(seed, x, y) >> 11) as f64 / (1u64 << 53) as f64;
    let top = at(lx, ly) * (1.0 - sx) + at(lx + 1, ly) * sx;
    let bottom = at(lx, ly + 1) * (1.0 - sx) + at(lx + 1, ly + 1) * sx;
    top * (1.0 - sy) + bottom * sy
}

/// SplitMix64 of the seed and a lattice point.
fn mix(seed: u64, x: u64, y: u64) -> u64 {
    let mut z = seed ^ x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ y.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_world_and_another_seed_another() {
        let options = GenerateOptions {
            zones: 2,
            objects_per_zone: 300,
            seed: 7,
        };
        let a = generate(&options).expect("a");
        let b = generate(&options).expect("b");
        assert_eq!(a.objects, b.objects);
        let c = generate(&GenerateOptions { seed: 8, ..options }).expect("c");
        assert_ne!(a.objects, c.objects);
        // 2 zones × (1 zone object + 2,048 terrain rows) plus up to 300
        // houses and items each (houses that find no free spot are skipped).
        let n = a.objects.len();
        assert!(n > 2 * 2049 + 2 * 250 && n <= 2 * 2049 + 600, "{n}");
    }

    #[test]
    fn zones_are_laid_out_on_a_grid_with_reciprocal_neighbours() {
        let world = generate(&GenerateOptions {
            zones: 4,
            objects_per_zone: 0,
            seed: 1,
        })
        .expect("generate");
        let meadow = world.zone_info(&ZoneId::new("meadow").expect("zone")).expect("info");
        assert_eq!(meadow.east.as_deref(), Some("forest"));
        assert_eq!(meadow.south.as_deref(), Some("desert"));
        assert_eq!(meadow.north, None);
        let coast = world.zone_info(&ZoneId::new("coast").expect("zone")).expect("info");
        assert_eq!(coast.west.as_deref(), Some("desert"));
        assert_eq!(coast.north.as_deref(), Some("forest"));
    }
}
