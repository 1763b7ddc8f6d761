//! The world as data a modder edits: zones as folders of RON files under
//! `assets/world/`, one file per shard, and mods as overlay folders under
//! `assets/mods/` that add, change or remove objects. This module reads and
//! writes those files ([`files`], [`scene`]), checks them ([`check`]),
//! moves them in and out of a server's store ([`store`]), draws a zone
//! ([`render`]) and generates worlds of any size ([`generate`]).

pub(crate) mod check;
pub(crate) mod files;
pub(crate) mod generate;
pub(crate) mod problems;
pub(crate) mod render;
pub(crate) mod scene;
pub(crate) mod store;

use std::collections::{BTreeMap, BTreeSet};

use hoard_engine::{ShardId, ZoneId};

use crate::game::{House, Item, TerrainRow, ZoneInfo};
use problems::{Problem, Problems, Source};

/// Reads and checks a world folder; every problem is in the error.
pub(crate) fn load_valid(dir: &std::path::Path, progress: &(dyn Fn(u64, u64) + Sync)) -> anyhow::Result<WorldData> {
    let mut problems = Problems::default();
    let world = files::read_world(dir, &mut problems, progress)?;
    if problems.is_empty() {
        check::check(&world, &mut problems);
    }
    problems.into_result(&dir.display().to_string())?;
    Ok(world)
}

/// Parses `bytes` as one world file of shard 0 of a zone and checks it,
/// as a world file and as a mod over an empty world (for the fuzzer).
pub(crate) fn fuzz_world_file(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let file: std::sync::Arc<std::path::Path> = std::sync::Arc::from(std::path::Path::new("meadow/0.scn.ron"));
    let mut problems = Problems::default();
    let scene = scene::parse(&file, text, &mut problems);
    let Ok(zone) = ZoneId::new("meadow") else { return };
    let mut world = WorldData::default();
    world.zones.insert(zone, (0..64).map(ShardId).collect());
    let mut overlay = Overlay::default();
    for (id, thing, source) in scene.objects {
        let object = WorldObject {
            id,
            shard: ShardId(id % 70),
            thing,
            source,
        };
        overlay.objects.push(object.clone());
        world.objects.insert(id, object);
    }
    overlay.removed = scene.removed.into_iter().map(|(id, at)| (id, ShardId(0), at)).collect();
    check::check(&world, &mut problems);
    world.overlay(overlay, &mut problems);
    check::check(&world, &mut problems);
    for problem in problems.iter() {
        let _ = problem.to_string();
    }
}

/// What an object of the demo world is: exactly one of its components.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Thing {
    /// A zone's description.
    Zone(ZoneInfo),
    /// A row of terrain.
    Terrain(TerrainRow),
    /// A house.
    House(House),
    /// An item.
    Item(Item),
}

impl Thing {
    /// The component's name in world files and the registry.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Thing::Zone(_) => "zone",
            Thing::Terrain(_) => "terrain",
            Thing::House(_) => "house",
            Thing::Item(_) => "item",
        }
    }

    /// The component as RON on one line, as world files write it.
    pub(crate) fn to_ron(&self) -> String {
        let config = ron::ser::PrettyConfig::new()
            .new_line("")
            .indentor("")
            .compact_structs(true)
            .compact_arrays(true)
            .compact_maps(true)
            .escape_strings(false);
        let text = match self {
            Thing::Zone(c) => ron::ser::to_string_pretty(c, config),
            Thing::Terrain(c) => ron::ser::to_string_pretty(c, config),
            Thing::House(c) => ron::ser::to_string_pretty(c, config),
            Thing::Item(c) => ron::ser::to_string_pretty(c, config),
        };
        text.unwrap_or_else(|e| format!("<{e}>"))
    }
}

/// One object of the world: its id, shard and component, and where it is written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WorldObject {
    /// The object id.
    pub(crate) id: u64,
    /// The shard holding it.
    pub(crate) shard: ShardId,
    /// What it is.
    pub(crate) thing: Thing,
    /// Where it was read from.
    pub(crate) source: Source,
}

impl WorldObject {
    /// An object made by a program.
    pub(crate) fn new(id: u64, shard: ShardId, thing: Thing) -> WorldObject {
        WorldObject {
            id,
            shard,
            thing,
            source: Source::Made,
        }
    }
}

/// A whole world: its zones (each with its shards) and its objects.
#[derive(Default, Debug)]
pub(crate) struct WorldData {
    /// Zones by name, each with its shards.
    pub(crate) zones: BTreeMap<ZoneId, BTreeSet<ShardId>>,
    /// Objects by id.
    pub(crate) objects: BTreeMap<u64, WorldObject>,
    /// Ids used outside the world's zones (players' inventories), which a mod must not reuse.
    pub(crate) reserved: BTreeSet<u64>,
}

impl WorldData {
    /// The zone holding `shard`.
    pub(crate) fn zone_of(&self, shard: ShardId) -> Option<&ZoneId> {
        self.zones.iter().find(|(_, s)| s.contains(&shard)).map(|(z, _)| z)
    }

    /// The description of `zone`, from its `zone` object.
    #[cfg(test)]
    pub(crate) fn zone_info(&self, zone: &ZoneId) -> Option<&ZoneInfo> {
        let shards = self.zones.get(zone)?;
        self.objects.values().find_map(|o| match &o.thing {
            Thing::Zone(info) if shards.contains(&o.shard) => Some(info),
            _ => None,
        })
    }

    /// The objects of `zone`.
    pub(crate) fn objects_in_zone<'a>(&'a self, zone: &ZoneId) -> impl Iterator<Item = &'a WorldObject> + 'a {
        let shards = self.zones.get(zone).cloned().unwrap_or_default();
        self.objects.values().filter(move |o| shards.contains(&o.shard))
    }

    /// Applies `overlay`, returning what it changed; a removal of an object
    /// that is not there, or a change in a zone or shard the world does not
    /// have, is a problem.
    pub(crate) fn overlay(&mut self, overlay: Overlay, problems: &mut Problems) -> Vec<Change> {
        let mut changes = Vec::new();
        for (id, shard, at) in overlay.removed {
            match self.objects.get(&id) {
                Some(old) if old.shard == shard => {
                    changes.push(Change::Removed(self.objects.remove(&id).expect("present")));
                }
                Some(old) => problems.push(Problem::at(
                    &at,
                    format!(
                        "object {id} is not in shard {} but in shard {}; remove it from that shard's file",
                        shard.0, old.shard.0
                    ),
                )),
                None => problems.push(Problem::at(
                    &at,
                    format!("there is no object {id} to remove (was this mod applied already?)"),
                )),
            }
        }
        for object in overlay.objects {
            if self.zone_of(object.shard).is_none() {
                problems.push(Problem::at(
                    &object.source,
                    format!("shard {} is not in this world", object.shard.0),
                ));
                continue;
            }
            if self.reserved.contains(&object.id) {
                problems.push(Problem::at(
                    &object.source,
                    format!(
                        "object {} is in a player's inventory; pick an id no object uses",
                        object.id
                    ),
                ));
                continue;
            }
            match self.objects.insert(object.id, object.clone()) {
                Some(old) if old.thing == object.thing && old.shard == object.shard => {}
                Some(old) => changes.push(Change::Changed { old, new: object }),
                None => changes.push(Change::Added(object)),
            }
        }
        changes
    }
}

/// A mod: objects to add or change, and objects to remove.
#[derive(Default, Debug)]
pub(crate) struct Overlay {
    /// Objects added or changed.
    pub(crate) objects: Vec<WorldObject>,
    /// Objects removed: (id, the shard the file names, where).
    pub(crate) removed: Vec<(u64, ShardId, Source)>,
}

/// One change a mod makes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Change {
    /// A new object.
    Added(WorldObject),
    /// An object changed (or moved to another shard).
    Changed {
        /// Before.
        old: WorldObject,
        /// After.
        new: WorldObject,
    },
    /// An object removed.
    Removed(WorldObject),
}

impl Change {
    /// The object the change is about.
    pub(crate) fn id(&self) -> u64 {
        match self {
            Change::Added(o) | Change::Removed(o) | Change::Changed { new: o, .. } => o.id,
        }
    }
}
