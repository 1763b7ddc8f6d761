//! Publishing from the ECS: the [`Published`] marker and the [`Publisher`]
//! that gathers, each tick, every change to published objects into one
//! [`ChangeSet`].
//!
//! How it stays cheap when little changes in a large world: one small system
//! per registered component type asks bevy_ecs for `Changed<C>` (a tick
//! comparison per entity, no encoding) and for removals, and only the entities
//! it reports are encoded. An encoded state whose hash equals the last
//! published one (a component written but not changed) is not republished.
//!
//! Works with a plain `World` and `Schedule`: call [`Publisher::gather`] after
//! running the game's schedule. By default `gather` calls
//! `World::clear_trackers`, so it marks the end of the world's frame, as
//! `bevy_app` does once per update; inside an App, which clears trackers
//! itself, build the publisher with [`Publisher::leave_trackers`] so that
//! `RemovedComponents` readers running later in the frame still see this
//! frame's removals.

use bevy_ecs::entity::{EntityHashMap, EntityHashSet};
use bevy_ecs::prelude::*;
use bevy_ecs::schedule::ScheduleLabel;
use bevy_platform::collections::HashMap;

use crate::changeset::ChangeSet;
use crate::digest::StateHash;
use crate::ids::{ObjectId, ShardId};
pub use crate::marker::Published;
use crate::marker::{DirtyEntities, mark_published};
use crate::registry::PublishRegistry;

#[derive(ScheduleLabel, Debug, Clone, PartialEq, Eq, Hash)]
struct GatherSchedule;

/// What the publisher last published for an entity.
#[derive(Clone, Copy)]
struct Tracked {
    object: ObjectId,
    shard: ShardId,
    state_hash: StateHash,
}

/// Something that kept an entity from being published this tick. The entity
/// is left unpublished (and the problem logged) rather than failing the tick.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatherProblem {
    /// Two live entities claim one object id.
    #[error(
        "object {object} is claimed by {entity:?} but already published by {owner:?} (loaded from the store, or spawned \
         earlier); {entity:?} is not published and the stored object is kept. Spawn a new world's objects in the \
         server plugin's seed hook, which runs only on an empty store, or give new objects ids no object holds"
    )]
    DuplicateObject {
        /// The id.
        object: ObjectId,
        /// The entity that was skipped.
        entity: Entity,
        /// The entity that keeps the id.
        owner: Entity,
    },
    /// A component failed to serialise.
    #[error("object {object}: component {component:?} failed to serialise: {message}")]
    Encode {
        /// The object.
        object: ObjectId,
        /// The component's registered name.
        component: String,
        /// The serialiser's message.
        message: String,
    },
    /// The encoded state is over the size limit.
    #[error(
        "object {object}: state of {len} bytes is over the {} byte limit",
        crate::state::MAX_STATE_BYTES
    )]
    TooLarge {
        /// The object.
        object: ObjectId,
        /// The encoded size.
        len: usize,
    },
}

/// One tick's gathered changes.
#[derive(Debug, Default)]
pub struct Gathered {
    /// The changes to commit.
    pub changes: ChangeSet,
    /// Entities that could not be published this tick.
    pub problems: Vec<GatherProblem>,
}

/// Gathers each tick's changes to published objects. One per world.
pub struct Publisher {
    registry: PublishRegistry,
    schedule: Schedule,
    by_entity: EntityHashMap<Tracked>,
    by_object: HashMap<ObjectId, Entity>,
    /// Whether `gather` ends the world's frame (`World::clear_trackers`).
    clears_trackers: bool,
}

impl Publisher {
    /// A publisher for the registry's component types.
    pub fn new(registry: PublishRegistry) -> Publisher {
        let mut schedule = Schedule::new(GatherSchedule);
        schedule.add_systems(mark_published);
        for entry in registry.entries() {
            entry.ops.add_change_system(&mut schedule);
        }
        Publisher {
            registry,
            schedule,
            by_entity: EntityHashMap::default(),
            by_object: HashMap::default(),
            clears_trackers: true,
        }
    }

    /// A publisher whose `gather` leaves `World::clear_trackers` to its
    /// caller: for a world run by `bevy_app`, which clears trackers once per
    /// frame itself. Call `gather` once per frame.
    #[must_use]
    pub fn leave_trackers(mut self) -> Publisher {
        self.clears_trackers = false;
        self
    }

    /// The registry this publisher encodes with.
    pub fn registry(&self) -> &PublishRegistry {
        &self.registry
    }

    /// How many objects are currently published.
    pub fn published_count(&self) -> usize {
        self.by_entity.len()
    }

    fn collect_dirty(&mut self, world: &mut World) -> Vec<Entity> {
        world.init_resource::<DirtyEntities>();
        self.schedule.run(world);
        let mut dirty = std::mem::take(&mut world.resource_mut::<DirtyEntities>().0);
        dirty.sort_unstable();
        dirty.dedup();
        dirty
    }

    /// Gathers every insert, change and removal of published components and
    /// every despawn since the last call, grouped by shard.
    pub fn gather(&mut self, world: &mut World) -> Gathered {
        let dirty = self.collect_dirty(world);
        let mut out = Gathered::default();

        // Release first: objects whose entity is gone, unpublished, or moved
        // to another id or shard leave their old shard. Doing all releases
        // before any upsert lets one entity take over an id another released
        // in the same tick.
        let mut current = Vec::with_capacity(dirty.len());
        for &entity in &dirty {
            let marker = world
                .get_entity(entity)
                .ok()
                .and_then(|e| e.get::<Published>().copied());
            if let Some(tracked) = self.by_entity.get(&entity).copied()
                && marker.is_none_or(|m| m.object != tracked.object || m.shard != tracked.shard)
            {
                out.changes.remove(tracked.shard, tracked.object);
                self.by_entity.remove(&entity);
                if self.by_object.get(&tracked.object) == Some(&entity) {
                    self.by_object.remove(&tracked.object);
                }
            }
            if let Some(marker) = marker {
                current.push((entity, marker));
            }
        }

        for (entity, marker) in current {
            if let Some(&owner) = self.by_object.get(&marker.object)
                && owner != entity
            {
                let problem = GatherProblem::DuplicateObject {
                    object: marker.object,
                    entity,
                    owner,
                };
                tracing::error!(%problem, "object not published");
                out.problems.push(problem);
                continue;
            }
            let state = match self.registry.encode(&world.entity(entity)) {
                Ok(state) => state,
                Err((component, e)) => {
                    let problem = GatherProblem::Encode {
                        object: marker.object,
                        component,
                        message: e.to_string(),
                    };
                    tracing::error!(%problem, "object not published");
                    out.problems.push(problem);
                    continue;
                }
            };
            if state.as_bytes().len() > crate::state::MAX_STATE_BYTES {
                let problem = GatherProblem::TooLarge {
                    object: marker.object,
                    len: state.as_bytes().len(),
                };
                tracing::error!(%problem, "object not published");
                out.problems.push(problem);
                continue;
            }
            let state_hash = state.hash();
            if self.by_entity.get(&entity).is_some_and(|t| t.state_hash == state_hash) {
                continue;
            }
            self.by_entity.insert(
                entity,
                Tracked {
                    object: marker.object,
                    shard: marker.shard,
                    state_hash,
                },
            );
            self.by_object.insert(marker.object, entity);
            out.changes.upsert(marker.shard, marker.object, state);
        }
        if self.clears_trackers {
            world.clear_trackers();
        }
        out
    }

    /// Despawns every published entity of `shard` without publishing their
    /// removal: the shard leaves this world's care (a player's inventory
    /// when the player moves to another server), not the store. Changes
    /// already gathered are not undone. Returns how many went.
    pub fn forget_shard(&mut self, world: &mut World, shard: ShardId) -> usize {
        let entities: Vec<Entity> = self
            .by_entity
            .iter()
            .filter(|(_, t)| t.shard == shard)
            .map(|(e, _)| *e)
            .collect();
        for entity in &entities {
            if let Some(tracked) = self.by_entity.remove(entity)
                && self.by_object.get(&tracked.object) == Some(entity)
            {
                self.by_object.remove(&tracked.object);
            }
            // Untracked now, so the despawn the next gather sees publishes nothing.
            let _ = world.try_despawn(*entity);
        }
        entities.len()
    }

    /// Records entities that already hold stored state (spawned by the
    /// loader), so the next gather does not republish them.
    pub(crate) fn adopt(&mut self, world: &mut World, loaded: &[(Entity, ObjectId, ShardId, StateHash)]) {
        for &(entity, object, shard, state_hash) in loaded {
            self.by_entity.insert(
                entity,
                Tracked {
                    object,
                    shard,
                    state_hash,
                },
            );
            self.by_object.insert(object, entity);
        }
        // Consume the change ticks the spawning produced, keeping any other
        // dirty entities for the next gather.
        let dirty = self.collect_dirty(world);
        let loaded: EntityHashSet = loaded.iter().map(|l| l.0).collect();
        world
            .resource_mut::<DirtyEntities>()
            .0
            .extend(dirty.into_iter().filter(|e| !loaded.contains(e)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::Change;
    use serde::{Deserialize, Serialize};

    #[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Health(u32);
    #[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Name(String);
    #[derive(Component)]
    struct NotPublished;

    fn publisher() -> Publisher {
        Publisher::new(
            PublishRegistry::builder()
                .publish::<Health>("health", 1)
                .publish::<Name>("name", 1)
                .build(),
        )
    }

    fn ops(g: &Gathered) -> Vec<(u64, u64, bool)> {
        g.changes
            .shards()
            .flat_map(|(s, c)| c.iter().map(move |(o, ch)| (s.0, o.0, matches!(ch, Change::Upsert(_)))))
            .collect()
    }

    #[test]
    fn spawn_change_move_and_despawn() {
        let mut world = World::new();
        let mut p = publisher();
        let e = world.spawn((Published::new(ObjectId(1), ShardId(10)), Health(5))).id();
        assert_eq!(ops(&p.gather(&mut world)), vec![(10, 1, true)]);
        assert!(p.gather(&mut world).changes.is_empty(), "nothing changed");

        world.get_mut::<Health>(e).expect("has health").0 = 6;
        assert_eq!(ops(&p.gather(&mut world)), vec![(10, 1, true)]);

        world.entity_mut(e).insert(Published::new(ObjectId(1), ShardId(11)));
        assert_eq!(ops(&p.gather(&mut world)), vec![(10, 1, false), (11, 1, true)]);

        world.entity_mut(e).remove::<Health>();
        assert_eq!(ops(&p.gather(&mut world)), vec![(11, 1, true)]);

        world.despawn(e);
        assert_eq!(ops(&p.gather(&mut world)), vec![(11, 1, false)]);
        assert_eq!(p.published_count(), 0);
    }

    #[test]
    fn a_forgotten_shard_leaves_the_world_but_publishes_no_removal() {
        let mut world = World::new();
        let mut p = publisher();
        world.spawn((Published::new(ObjectId(1), ShardId(10)), Health(5)));
        world.spawn((Published::new(ObjectId(2), ShardId(10)), Health(6)));
        let kept = world.spawn((Published::new(ObjectId(3), ShardId(11)), Health(7))).id();
        p.gather(&mut world);
        assert_eq!(p.forget_shard(&mut world, ShardId(10)), 2);
        assert!(
            p.gather(&mut world).changes.is_empty(),
            "the store keeps what was forgotten"
        );
        assert_eq!(p.published_count(), 1);
        assert_eq!(world.query::<&Published>().iter(&world).count(), 1);
        // The id is free again: a fresh load of the shard takes it without a clash.
        world.spawn((Published::new(ObjectId(1), ShardId(10)), Health(5)));
        assert_eq!(ops(&p.gather(&mut world)), vec![(10, 1, true)]);
        world.despawn(kept);
        assert_eq!(ops(&p.gather(&mut world)), vec![(11, 3, false)]);
    }

    #[test]
    fn unchanged_writes_and_unpublished_components_are_ignored() {
        let mut world = World::new();
        let mut p = publisher();
        let e = world
            .spawn((Published::new(ObjectId(1), ShardId(1)), Health(5), NotPublished))
            .id();
        p.gather(&mut world);
        world.get_mut::<Health>(e).expect("has health").0 = 5;
        world.entity_mut(e).remove::<NotPublished>();
        assert!(p.gather(&mut world).changes.is_empty());
    }

    #[derive(Resource, Default)]
    struct SeenRemovals(usize);

    fn read_removals(mut removed: RemovedComponents<Health>, mut seen: ResMut<SeenRemovals>) {
        seen.0 += removed.read().count();
    }

    #[test]
    fn a_publisher_that_leaves_trackers_keeps_removals_for_later_readers() {
        let mut world = World::new();
        world.init_resource::<SeenRemovals>();
        let mut later = Schedule::default();
        later.add_systems(read_removals);
        let mut p = publisher().leave_trackers();
        let e = world.spawn((Published::new(ObjectId(1), ShardId(1)), Health(5))).id();
        assert_eq!(ops(&p.gather(&mut world)), vec![(1, 1, true)]);
        world.clear_trackers(); // the App's end of frame
        world.entity_mut(e).remove::<Health>();
        assert_eq!(
            ops(&p.gather(&mut world)),
            vec![(1, 1, true)],
            "the removal is published"
        );
        later.run(&mut world);
        assert_eq!(
            world.resource::<SeenRemovals>().0,
            1,
            "a reader after gather still sees it"
        );
        world.clear_trackers();
        // The next frame's changes are still found.
        world.entity_mut(e).insert(Health(9));
        assert_eq!(ops(&p.gather(&mut world)), vec![(1, 1, true)]);
        world.clear_trackers();
        assert!(p.gather(&mut world).changes.is_empty(), "nothing new");
    }

    #[test]
    fn duplicate_ids_are_reported_not_published() {
        let mut world = World::new();
        let mut p = publisher();
        world.spawn((Published::new(ObjectId(1), ShardId(1)), Health(1)));
        world.spawn((Published::new(ObjectId(1), ShardId(2)), Health(2)));
        let g = p.gather(&mut world);
        assert_eq!(g.changes.len(), 1);
        assert!(matches!(g.problems.as_slice(), [GatherProblem::DuplicateObject { .. }]));
    }

    #[test]
    fn an_id_released_and_claimed_in_one_tick_moves() {
        let mut world = World::new();
        let mut p = publisher();
        let a = world.spawn((Published::new(ObjectId(7), ShardId(1)), Health(1))).id();
        p.gather(&mut world);
        world.despawn(a);
        world.spawn((Published::new(ObjectId(7), ShardId(2)), Health(1)));
        let g = p.gather(&mut world);
        assert!(g.problems.is_empty());
        assert_eq!(ops(&g), vec![(1, 7, false), (2, 7, true)]);
    }
}
