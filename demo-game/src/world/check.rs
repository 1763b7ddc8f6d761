//! The rules a world must keep beyond parsing: one `zone` object per zone
//! with a unique index and reciprocal neighbours; shards numbered after their
//! zone (`index * 1000 + chunk`); every object inside the chunk its shard
//! covers; terrain rows complete; sane houses and items.

use std::collections::{BTreeMap, BTreeSet};

use hoard_engine::{ShardId, ZoneId};

use super::problems::{Problem, Problems, Source};
use super::{Thing, WorldData, WorldObject};
use crate::game::{CHUNK_SIZE, CHUNKS_PER_SIDE, ZoneInfo};

/// Chunks in a zone.
const CHUNKS: u64 = CHUNKS_PER_SIDE as u64 * CHUNKS_PER_SIDE as u64;

/// The shard of chunk `chunk` of the zone with index `index`.
pub(crate) fn chunk_shard(index: u32, chunk: u64) -> ShardId {
    ShardId(u64::from(index) * 1000 + chunk)
}

/// The top-left tile of the chunk `shard` covers.
pub(crate) fn chunk_origin(shard: ShardId) -> (u16, u16) {
    let chunk = (shard.0 % 1000) as u16;
    (
        (chunk % CHUNKS_PER_SIDE) * CHUNK_SIZE,
        (chunk / CHUNKS_PER_SIDE) * CHUNK_SIZE,
    )
}

/// World files use ids below this; the ids above are left for the objects
/// the game creates (houses players build), so its counter never runs out
/// because of a world file.
pub(crate) const MAX_OBJECT_ID: u64 = 1 << 62;

/// The size of an object's stored state, exactly as import encodes it
/// (the registered component name and its MessagePack bytes).
fn state_len(thing: &Thing) -> Option<usize> {
    let (name, bytes) = match thing {
        Thing::Zone(c) => ("zone", rmp_serde::to_vec(c)),
        Thing::Terrain(c) => ("terrain", rmp_serde::to_vec(c)),
        Thing::House(c) => ("house", rmp_serde::to_vec(c)),
        Thing::Item(c) => ("item", rmp_serde::to_vec(c)),
    };
    let bytes = bytes.ok()?;
    Some(
        hoard_engine::state::StateBuilder::new()
            .component(name, bytes)
            .finish()
            .as_bytes()
            .len(),
    )
}

/// Checks `world`, adding every problem found to `problems`.
pub(crate) fn check(world: &WorldData, problems: &mut Problems) {
    let infos = zone_infos(world, problems);
    for (zone, shards) in &world.zones {
        let Some((index, _)) = infos.get(zone) else { continue };
        for shard in shards {
            if shard.0 / 1000 != u64::from(*index) || shard.0 % 1000 >= CHUNKS {
                let first = world.objects.values().find(|o| o.shard == *shard);
                let message = format!(
                    "shard {} cannot be in zone {zone}: its shards are {} to {} (index * 1000 + chunk)",
                    shard.0,
                    chunk_shard(*index, 0).0,
                    chunk_shard(*index, CHUNKS - 1).0
                );
                match first {
                    Some(o) => problems.push(Problem::at(&o.source, message)),
                    None => problems.push(Problem::at(&Source::Store(*shard), message)),
                }
            }
        }
    }
    let mut terrain_rows: BTreeMap<ShardId, BTreeSet<u16>> = BTreeMap::new();
    for object in world.objects.values() {
        if object.id >= MAX_OBJECT_ID {
            problems.push(Problem::at(
                &object.source,
                format!(
                    "object id {} is too high: ids are below {MAX_OBJECT_ID}, the rest are kept for objects the game creates",
                    object.id
                ),
            ));
        }
        if let Some(len) = state_len(&object.thing)
            && len > hoard_engine::state::MAX_STATE_BYTES
        {
            problems.push(Problem::at(
                &object.source,
                format!(
                    "object {} is {len} bytes when stored; an object is at most {} bytes",
                    object.id,
                    hoard_engine::state::MAX_STATE_BYTES
                ),
            ));
        }
        let (cx, cy) = chunk_origin(object.shard);
        let in_chunk = |x: u16, y: u16| x >= cx && x < cx + CHUNK_SIZE && y >= cy && y < cy + CHUNK_SIZE;
        let at = &object.source;
        let id = object.id;
        match &object.thing {
            Thing::Zone(_) => {}
            Thing::Terrain(row) => {
                if row.x != cx || !in_chunk(row.x, row.y) {
                    problems.push(Problem::at(
                        at,
                        format!(
                            "terrain row {id} at ({}, {}) is outside its chunk: rows of shard {} start at x {cx}, y {cy} to {}",
                            row.x,
                            row.y,
                            object.shard.0,
                            cy + CHUNK_SIZE - 1
                        ),
                    ));
                } else if !terrain_rows.entry(object.shard).or_default().insert(row.y) {
                    problems.push(Problem::at(
                        at,
                        format!("row {} of shard {} is written twice", row.y, object.shard.0),
                    ));
                }
                if row.tiles.len() != usize::from(CHUNK_SIZE) {
                    problems.push(Problem::at(
                        at,
                        format!("terrain row {id} has {} tiles; a row has {CHUNK_SIZE}", row.tiles.len()),
                    ));
                }
            }
            Thing::House(house) => {
                if !in_chunk(house.x, house.y) {
                    problems.push(outside_chunk(object, "house", (house.x, house.y)));
                }
                if !(1..=8).contains(&house.size.0) || !(1..=8).contains(&house.size.1) {
                    problems.push(Problem::at(
                        at,
                        format!("house {id} is {:?} tiles; a side is 1 to 8", house.size),
                    ));
                }
                if house.owner.is_empty() || house.name.is_empty() || house.name.len() > 32 {
                    problems.push(Problem::at(
                        at,
                        format!("house {id} needs an owner and a name of 1 to 32 bytes"),
                    ));
                }
            }
            Thing::Item(item) => {
                if !in_chunk(item.x, item.y) {
                    problems.push(outside_chunk(object, "item", (item.x, item.y)));
                }
                if item.count == 0 || item.kind.is_empty() {
                    problems.push(Problem::at(
                        at,
                        format!("item {id} needs a kind and a count of at least 1"),
                    ));
                }
            }
        }
    }
    for (zone, shards) in &world.zones {
        for shard in shards {
            let rows = terrain_rows.get(shard).map_or(0, BTreeSet::len);
            if rows != usize::from(CHUNK_SIZE) && infos.contains_key(zone) {
                let at = world
                    .objects
                    .values()
                    .find(|o| o.shard == *shard)
                    .map_or(Source::Store(*shard), |o| o.source.clone());
                problems.push(Problem::at(
                    &at,
                    format!("shard {} has {rows} terrain rows; a chunk has {CHUNK_SIZE}", shard.0),
                ));
            }
        }
    }
}

/// The problem of a house or item at `at`, outside its shard's chunk.
fn outside_chunk(object: &WorldObject, kind: &str, at: (u16, u16)) -> Problem {
    let (cx, cy) = chunk_origin(object.shard);
    Problem::at(
        &object.source,
        format!(
            "{kind} {} at ({}, {}) is outside the chunk of shard {} ({cx}..{}, {cy}..{}); move it to the right shard's file",
            object.id,
            at.0,
            at.1,
            object.shard.0,
            cx + CHUNK_SIZE,
            cy + CHUNK_SIZE
        ),
    )
}

/// Each zone's index and description; problems for zones without exactly
/// one, duplicate indices and neighbours that do not lead back.
fn zone_infos<'a>(world: &'a WorldData, problems: &mut Problems) -> BTreeMap<ZoneId, (u32, &'a ZoneInfo)> {
    let mut infos: BTreeMap<ZoneId, (u32, &ZoneInfo)> = BTreeMap::new();
    let mut sources: BTreeMap<ZoneId, Source> = BTreeMap::new();
    for object in world.objects.values() {
        let Thing::Zone(info) = &object.thing else { continue };
        let Some(zone) = world.zone_of(object.shard) else {
            continue;
        };
        if let Some(first) = sources.get(zone) {
            problems.push(Problem::at(
                &object.source,
                format!("zone {zone} is already described at {first}; a zone has one `zone` object"),
            ));
            continue;
        }
        if let Some((other, _)) = infos.iter().find(|(_, (i, _))| *i == info.index) {
            problems.push(Problem::at(
                &object.source,
                format!("index {} is already zone {other}'s", info.index),
            ));
            continue;
        }
        sources.insert(zone.clone(), object.source.clone());
        infos.insert(zone.clone(), (info.index, info));
    }
    for zone in world.zones.keys() {
        if !infos.contains_key(zone) {
            problems.push(Problem::at(
                &Source::File {
                    file: std::sync::Arc::from(std::path::Path::new(zone.as_str())),
                    line: 1,
                    col: 1,
                },
                format!("zone {zone} has no `zone` object saying its index and neighbours"),
            ));
        }
    }
    for (zone, (_, info)) in &infos {
        let sides = [
            ("north", &info.north, "south"),
            ("south", &info.south, "north"),
            ("east", &info.east, "west"),
            ("west", &info.west, "east"),
        ];
        for (side, neighbour, back) in sides {
            let Some(name) = neighbour else { continue };
            let at = &sources[zone];
            let Some((_, other)) = ZoneId::new(name).ok().and_then(|n| infos.get(&n)) else {
                problems.push(Problem::at(
                    at,
                    format!("the {side} neighbour `{name}` is not a zone of this world"),
                ));
                continue;
            };
            let returns = match back {
                "south" => &other.south,
                "north" => &other.north,
                "west" => &other.west,
                _ => &other.east,
            };
            if returns.as_deref() != Some(zone.as_str()) {
                problems.push(Problem::at(
                    at,
                    format!("{name} is {zone}'s {side} neighbour, but {name}'s {back} neighbour is not {zone}"),
                ));
            }
        }
    }
    infos
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::generate::{GenerateOptions, generate};

    fn messages(world: &WorldData) -> Vec<String> {
        let mut problems = Problems::default();
        check(world, &mut problems);
        problems.iter().map(|p| p.message.clone()).collect()
    }

    #[test]
    fn a_generated_world_is_valid_and_each_broken_rule_is_named() {
        let mut world = generate(&GenerateOptions {
            zones: 2,
            objects_per_zone: 100,
            seed: 3,
        })
        .expect("generate");
        assert_eq!(messages(&world), Vec::<String>::new());
        let item = world
            .objects
            .values_mut()
            .find(|o| matches!(o.thing, Thing::Item(_)))
            .expect("an item");
        if let Thing::Item(i) = &mut item.thing {
            i.x = (i.x + 100) % 256;
            i.count = 0;
        }
        let zone = world
            .objects
            .values_mut()
            .find(|o| matches!(o.thing, Thing::Zone(_)))
            .expect("a zone");
        if let Thing::Zone(info) = &mut zone.thing {
            info.east = Some("nowhere".into());
        }
        let found = messages(&world);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found
                .iter()
                .any(|m| m.contains("meadow's east neighbour is not forest")),
            "{found:#?}"
        );
        assert!(found.iter().any(|m| m.contains("outside the chunk")), "{found:#?}");
        assert!(found.iter().any(|m| m.contains("count of at least 1")), "{found:#?}");
        assert!(
            found.iter().any(|m| m.contains("`nowhere` is not a zone")),
            "{found:#?}"
        );
    }
}
