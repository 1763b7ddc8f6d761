//! World data in and out of a server's store, always through the ECS and the
//! publisher, the same path the running server takes: `import` spawns the
//! objects and commits them zone by zone; `read` loads a store back into
//! [`WorldData`]; `apply` makes a mod's changes to the entities of the
//! loaded store and commits them, so every touched shard's seq and digest advance
//! and a client that connects later receives just those objects as a delta.

use std::collections::{HashMap, HashSet};

use bevy_ecs::prelude::*;
use hoard_engine::store::{CommitReceipt, ShardSpec, WorldStore};
use hoard_engine::{HoardUrl, ObjectId, Published, Publisher, ShardId, ZoneId, load_world};

use super::problems::Source;
use super::{Change, Thing, WorldData, WorldObject};
use crate::game::rules::INVENTORY_ZONE;
use crate::game::{House, Item, TerrainRow, ZoneInfo};

/// The URL load problems are reported under.
fn url() -> HoardUrl {
    HoardUrl::service("localhost", 1, "world")
}

/// Spawns `object` into `world`.
fn spawn(world: &mut World, object: &WorldObject) -> Entity {
    let marker = Published::new(ObjectId(object.id), object.shard);
    match object.thing.clone() {
        Thing::Zone(c) => world.spawn((marker, c)).id(),
        Thing::Terrain(c) => world.spawn((marker, c)).id(),
        Thing::House(c) => world.spawn((marker, c)).id(),
        Thing::Item(c) => world.spawn((marker, c)).id(),
    }
}

/// Gathers `world`'s changes and commits them.
fn commit(store: &dyn WorldStore, publisher: &mut Publisher, world: &mut World) -> anyhow::Result<CommitReceipt> {
    let gathered = publisher.gather(world);
    if let Some(problem) = gathered.problems.first() {
        anyhow::bail!(
            "{} object(s) could not be published, the first: {problem}",
            gathered.problems.len()
        );
    }
    Ok(store.commit(&gathered.changes)?)
}

/// The zone whose presence marks a finished first import: the players'
/// inventories, created last. A store that holds zones but not this one is
/// an import that was cut short.
fn completion_marker() -> anyhow::Result<ZoneId> {
    Ok(ZoneId::new(INVENTORY_ZONE)?)
}

/// Refuses a store whose first import did not finish (it has zones but not
/// the completion marker `import` writes last): serving, exporting or
/// changing it would pass a part of a world off as the whole. `label` names
/// the store in the message.
pub(crate) fn ensure_import_finished(store: &dyn WorldStore, label: &str) -> anyhow::Result<()> {
    let zones = store.zones()?;
    let marker = completion_marker()?;
    anyhow::ensure!(
        zones.is_empty() || zones.contains(&marker),
        "the first import into {label} did not finish (it holds zones {} but not its completion marker); \
         delete it and import the world afresh",
        zones.iter().map(ZoneId::as_str).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// A world's first import, whole: creates `data`'s zones in the (empty)
/// store and commits its objects, one commit per zone, spawning them into
/// `world` as it goes; records the registry's schema versions; and writes
/// the completion marker last, so a store cut short anywhere before it is
/// refused rather than served in part. The server's first start and
/// `hoard-demo world import` both come here, so a store either made is
/// served the same. `progress` is called after each zone with (objects
/// done, objects in all).
pub(crate) fn import(
    store: &dyn WorldStore,
    data: &WorldData,
    publisher: &mut Publisher,
    world: &mut World,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<usize> {
    let existing = store.zones()?;
    anyhow::ensure!(
        existing.is_empty(),
        "this store already holds a world (zones {}); change it with `world apply`, or import into an empty data directory",
        existing.iter().map(ZoneId::as_str).collect::<Vec<_>>().join(", ")
    );
    let total = data.objects.len() as u64;
    let mut done = 0;
    for (zone, shards) in &data.zones {
        let specs: Vec<ShardSpec> = shards.iter().map(|s| ShardSpec::shared(*s)).collect();
        store.create_zone(zone, &specs)?;
        for object in data.objects_in_zone(zone) {
            spawn(world, object);
            done += 1;
        }
        commit(store, publisher, world)?;
        progress(done, total);
    }
    hoard_engine::schema::prepare(store, publisher.registry())?;
    let marker = completion_marker()?;
    if !store.zones()?.contains(&marker) {
        store.create_zone(&marker, &[])?;
    }
    Ok(done as usize)
}

/// A store loaded into an ECS world once: the entities (to change), the
/// publisher that knows them (to commit), and the world data read from them
/// (to check and compare).
pub(crate) struct Loaded {
    world: World,
    publisher: Publisher,
    /// The world: every zone but the players' inventories.
    pub(crate) data: WorldData,
}

/// Reads the world (every zone but the players' inventories) out of `store`.
pub(crate) fn read(store: &dyn WorldStore) -> anyhow::Result<WorldData> {
    Ok(load(store)?.data)
}

/// Loads `store` into an ECS world and reads its world data.
pub(crate) fn load(store: &dyn WorldStore) -> anyhow::Result<Loaded> {
    let mut publisher = Publisher::new(crate::game::registry());
    let mut world = World::new();
    let report = load_world(store, &mut publisher, &mut world, &url())?;
    if let Some(problem) = report.problems.first() {
        anyhow::bail!(
            "{} stored object(s) could not be read, the first: {problem}",
            report.problems.len()
        );
    }
    let mut data = WorldData::default();
    for zone in store.zones()? {
        if zone.as_str() != INVENTORY_ZONE {
            data.zones
                .insert(zone.clone(), store.zone_shards(&zone)?.into_iter().collect());
        }
    }
    let world_shards: HashSet<ShardId> = data.zones.values().flatten().copied().collect();
    let mut query = world.query::<(
        &Published,
        Option<&ZoneInfo>,
        Option<&TerrainRow>,
        Option<&House>,
        Option<&Item>,
    )>();
    for (published, zone, terrain, house, item) in query.iter(&world) {
        let id = published.object.0;
        if !world_shards.contains(&published.shard) {
            data.reserved.insert(id);
            continue;
        }
        let thing = match (zone, terrain, house, item) {
            (Some(c), ..) => Thing::Zone(c.clone()),
            (_, Some(c), ..) => Thing::Terrain(c.clone()),
            (_, _, Some(c), _) => Thing::House(c.clone()),
            (.., Some(c)) => Thing::Item(c.clone()),
            _ => continue,
        };
        data.objects.insert(
            id,
            WorldObject {
                id,
                shard: published.shard,
                thing,
                source: Source::Store(published.shard),
            },
        );
    }
    Ok(Loaded { world, publisher, data })
}

/// Makes `changes` to the objects of `loaded` (as loaded from `store`) and
/// commits them to `store` in one commit.
pub(crate) fn apply(store: &dyn WorldStore, loaded: Loaded, changes: &[Change]) -> anyhow::Result<CommitReceipt> {
    let Loaded {
        mut world,
        mut publisher,
        ..
    } = loaded;
    let entities: HashMap<u64, Entity> = world
        .query::<(Entity, &Published)>()
        .iter(&world)
        .map(|(e, p)| (p.object.0, e))
        .collect();
    for change in changes {
        let entity = entities.get(&change.id()).copied();
        match (change, entity) {
            (Change::Removed(_), Some(entity)) => {
                world.despawn(entity);
            }
            (Change::Changed { new, .. }, Some(entity)) => {
                let mut entity = world.entity_mut(entity);
                if let Some(mut published) = entity.get_mut::<Published>() {
                    published.shard = new.shard;
                }
                // Only a component of another kind is removed: replacing one
                // of the same kind is an ordinary change the publisher sees.
                match new.thing.clone() {
                    Thing::Zone(c) => entity.remove::<(TerrainRow, House, Item)>().insert(c),
                    Thing::Terrain(c) => entity.remove::<(ZoneInfo, House, Item)>().insert(c),
                    Thing::House(c) => entity.remove::<(ZoneInfo, TerrainRow, Item)>().insert(c),
                    Thing::Item(c) => entity.remove::<(ZoneInfo, TerrainRow, House)>().insert(c),
                };
            }
            (Change::Added(new) | Change::Changed { new, .. }, _) => {
                spawn(&mut world, new);
            }
            (Change::Removed(_), None) => {}
        }
    }
    commit(store, &mut publisher, &mut world)
}

#[cfg(test)]
mod tests {
    use hoard_engine::MemoryStore;

    use super::*;
    use crate::world::generate::{GenerateOptions, generate};

    #[test]
    fn a_store_is_whole_only_once_its_import_wrote_the_marker() {
        let data = generate(&GenerateOptions {
            zones: 1,
            objects_per_zone: 10,
            seed: 3,
        })
        .expect("generate");
        // An import cut short: a zone created, its objects and the marker not.
        let cut = MemoryStore::new();
        let (zone, shards) = data.zones.iter().next().expect("a zone");
        let specs: Vec<ShardSpec> = shards.iter().map(|s| ShardSpec::shared(*s)).collect();
        cut.create_zone(zone, &specs).expect("zone");
        let refused = ensure_import_finished(&cut, "the store").expect_err("refused");
        assert!(refused.to_string().contains("did not finish"), "{refused}");

        let whole = MemoryStore::new();
        ensure_import_finished(&whole, "the store").expect("an empty store is not a cut import");
        let mut publisher = Publisher::new(crate::game::registry());
        import(&whole, &data, &mut publisher, &mut World::new(), &|_, _| {}).expect("import");
        ensure_import_finished(&whole, "the store").expect("a finished import");
        assert!(
            !whole.schema().expect("schema").is_empty(),
            "the import records the schema"
        );
        let again = import(&whole, &data, &mut publisher, &mut World::new(), &|_, _| {});
        assert!(again.is_err(), "a second import is refused");
    }
}
