//! Materialising what a client receives as entities of a bevy_ecs `World`:
//! each published object becomes one entity carrying [`Replicated`] and its
//! decoded components; a live change updates that entity in place (or
//! despawns it), and leaving a zone despawns its entities.
//!
//! A zone that arrives whole (from the cache or an answer) is decoded on
//! every core, one shard per task, into typed columns, and spawned by
//! archetype: one `spawn_batch` of markers and one `insert_batch` per
//! component for each shard's objects of the same components
//! ([`PublishRegistry::spawn_decoded`]).
//!
//! [`HoardClientPlugin`](crate::client::HoardClientPlugin) keeps one
//! [`Materialiser`] as a resource of its App's world and calls [`update`]
//! each frame. A game on a bare `World` (no App) calls [`update`] itself.

use bevy_ecs::prelude::*;
use bevy_platform::collections::{HashMap, HashSet};
use hoard_engine::batch::DecodedObjects;
use hoard_engine::load::ObjectDecodeError;
use hoard_engine::registry::DecodedComponent;
use hoard_engine::{ObjectId, PublishRegistry, ShardId, ZoneId};
use hoard_net::quic::client::{ClientEvent, ClientUpdate, HoardClient};
use hoard_world_cache::CachedObject;

/// Marks an entity materialised from a published object.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicated {
    /// The object's id.
    pub object: ObjectId,
    /// Its shard.
    pub shard: ShardId,
}

/// Where a materialised object is.
struct Placed {
    entity: Entity,
    shard: ShardId,
    /// The zone, as its index in [`Materialiser::zones`] (a zone's name is
    /// not copied for each of its objects).
    zone: usize,
}

/// Turns a client's updates into entities, and remembers which entity
/// stands for which object.
#[derive(Resource)]
pub struct Materialiser {
    registry: PublishRegistry,
    index: HashMap<ObjectId, Placed>,
    /// Every zone materialised so far (bounded by the zones the game enters).
    zones: Vec<ZoneId>,
}

impl std::fmt::Debug for Materialiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Materialiser")
            .field("objects", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl Materialiser {
    /// A materialiser decoding objects with `registry`'s components.
    pub fn new(registry: PublishRegistry) -> Materialiser {
        Materialiser {
            registry,
            index: HashMap::default(),
            zones: Vec::new(),
        }
    }

    fn zone_index(&mut self, zone: &ZoneId) -> usize {
        match self.zones.iter().position(|z| z == zone) {
            Some(i) => i,
            None => {
                self.zones.push(zone.clone());
                self.zones.len() - 1
            }
        }
    }

    /// The entity of `object`, if it is materialised.
    pub fn entity(&self, object: ObjectId) -> Option<Entity> {
        self.index.get(&object).map(|p| p.entity)
    }

    /// Applies `updates` to `world` in order and returns the events among
    /// them (a zone's objects are in the world before its `ZoneReady`).
    pub fn apply(&mut self, world: &mut World, updates: Vec<ClientUpdate>) -> Vec<ClientEvent> {
        let mut events = Vec::new();
        for update in updates {
            match update {
                ClientUpdate::ZoneLoaded { zone, shards, .. } => self.load_zone(world, &zone, shards),
                ClientUpdate::Objects {
                    zone,
                    shard,
                    upserts,
                    removed,
                    ..
                } => {
                    for id in removed {
                        // An object that moved may already be upserted in its
                        // new shard: only its old shard's removal despawns it.
                        if self.index.get(&id).is_some_and(|e| e.shard == shard)
                            && let Some(e) = self.index.remove(&id)
                        {
                            world.despawn(e.entity);
                        }
                    }
                    for o in &upserts {
                        self.upsert(world, &zone, shard, o);
                    }
                }
                ClientUpdate::ZoneLeft { zone } => {
                    let left = self.zone_index(&zone);
                    self.index.retain(|_, e| {
                        if e.zone == left {
                            world.despawn(e.entity);
                            false
                        } else {
                            true
                        }
                    });
                    events.push(ClientEvent::ZoneLeft { zone });
                }
                ClientUpdate::Event(e) => events.push(e),
                other => tracing::warn!(?other, "an update this materialiser does not know; ignored"),
            }
        }
        events
    }

    /// Puts a whole zone into the world: objects not yet materialised are
    /// decoded on rayon's threads (a shard per task) while this thread
    /// spawns each shard as soon as it is decoded, by archetype; objects
    /// already there (a zone entered again before its entities were
    /// despawned) are updated in place. The last references to the copies
    /// (the client usually keeps its own) are dropped on a rayon thread.
    fn load_zone(
        &mut self,
        world: &mut World,
        zone: &ZoneId,
        shards: Vec<std::sync::Arc<hoard_world_cache::CachedShard>>,
    ) {
        let zone_index = self.zone_index(zone);
        let known: HashSet<ObjectId> = if self.index.is_empty() {
            HashSet::default()
        } else {
            shards
                .iter()
                .flat_map(|s| &s.objects)
                .map(|o| o.id)
                .filter(|id| self.index.contains_key(id))
                .collect()
        };
        let registry = self.registry.clone();
        let (tx, rx) = std::sync::mpsc::channel::<DecodedObjects<(ObjectId, ShardId)>>();
        rayon::in_place_scope(|scope| {
            for s in &shards {
                let (tx, registry, known) = (tx.clone(), &registry, &known);
                scope.spawn(move |_| {
                    let shard = s.header.key.shard;
                    let new = s.objects.iter().filter(|o| !known.contains(&o.id));
                    // The receiver outlives the scope: sending cannot fail.
                    let _ = tx.send(registry.decode_objects(new.map(|o| ((o.id, shard), &o.state))));
                });
            }
            drop(tx);
            for batch in receive_all(&rx) {
                self.spawn_batch(world, batch, zone_index);
            }
        });
        for s in &shards {
            let shard = s.header.key.shard;
            for o in s.objects.iter().filter(|o| known.contains(&o.id)) {
                self.upsert(world, zone, shard, o);
            }
        }
        rayon::spawn(move || drop(shards));
    }

    /// Spawns one decoded shard and indexes its objects.
    fn spawn_batch(&mut self, world: &mut World, batch: DecodedObjects<(ObjectId, ShardId)>, zone: usize) {
        self.index.reserve(batch.len());
        let spawned = self
            .registry
            .spawn_decoded(world, batch, |&(object, shard)| Replicated { object, shard });
        for ((object, _), e) in &spawned.failed {
            tracing::warn!(%object, error = %e, "object does not decode with this client's components");
        }
        for ((object, shard), entity) in spawned.placed {
            self.index.insert(object, Placed { entity, shard, zone });
        }
    }

    fn upsert(&mut self, world: &mut World, zone: &ZoneId, shard: ShardId, o: &CachedObject) {
        let decoded = self.registry.decode_state(&o.state);
        self.place(world, zone, shard, o.id, decoded);
    }

    /// Puts a decoded object into the world: a new entity, or the existing
    /// one made equal to the new state.
    fn place(
        &mut self,
        world: &mut World,
        zone: &ZoneId,
        shard: ShardId,
        id: ObjectId,
        decoded: Result<Vec<DecodedComponent>, ObjectDecodeError>,
    ) {
        let components = match decoded {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(object = %id, error = %e, "object does not decode with this client's components");
                return;
            }
        };
        let marker = Replicated { object: id, shard };
        let existing = self
            .index
            .get(&id)
            .map(|p| p.entity)
            .filter(|e| world.get_entity(*e).is_ok());
        let entity = match existing {
            Some(e) => {
                let mut entity = world.entity_mut(e);
                entity.insert(marker);
                self.registry.apply_decoded(&mut entity, components);
                e
            }
            None => {
                let mut entity = world.spawn(marker);
                self.registry.insert(&mut entity, components);
                entity.id()
            }
        };
        let zone = self.zone_index(zone);
        self.index.insert(id, Placed { entity, shard, zone });
    }
}

/// Everything `rx` receives until every sender is gone. On a rayon worker
/// (a game that materialises from inside a rayon task) this thread runs
/// pending rayon work while it waits, so the senders' tasks always run.
fn receive_all<T>(rx: &std::sync::mpsc::Receiver<T>) -> impl Iterator<Item = T> + '_ {
    std::iter::from_fn(move || {
        loop {
            match rx.try_recv() {
                Ok(item) => return Some(item),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) => match rayon::yield_now() {
                    // Not a rayon thread: block until the next item.
                    None => return rx.recv().ok(),
                    Some(rayon::Yield::Executed) => {}
                    Some(rayon::Yield::Idle) => std::thread::yield_now(),
                },
            }
        }
    })
}

/// Applies what `client` received to `world` (entities before the events
/// that announce them) and returns the events. The [`Materialiser`] lives in
/// `world` as a resource, created on first use.
pub fn update(client: &HoardClient, world: &mut World) -> Vec<ClientEvent> {
    if !world.contains_resource::<Materialiser>() {
        world.insert_resource(Materialiser::new(client.registry().clone()));
    }
    let updates = client.take_updates();
    world.resource_scope(|world, mut materialiser: Mut<Materialiser>| materialiser.apply(world, updates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_engine::state::StateBuilder;
    use hoard_engine::{Epoch, Seq, ServerIdentity};
    use hoard_world_cache::format::recompute_digest;
    use hoard_world_cache::{CachedShard, ShardHeader, ShardKey};
    use serde::{Deserialize, Serialize};

    #[derive(Component, Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    struct N(u32);

    #[derive(Component, Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Label(String);

    fn registry() -> PublishRegistry {
        PublishRegistry::builder()
            .publish::<N>("n", 1)
            .publish::<Label>("label", 1)
            .build()
    }

    fn object(id: u64, n: u32, label: Option<&str>) -> CachedObject {
        let mut state = StateBuilder::new();
        state.component("n", rmp_serde::to_vec(&N(n)).unwrap_or_default());
        if let Some(label) = label {
            state.component("label", rmp_serde::to_vec(&Label(label.into())).unwrap_or_default());
        }
        CachedObject {
            id: ObjectId(id),
            version: Seq(1),
            state: state.finish(),
        }
    }

    fn shard(zone: &ZoneId, shard: u64, objects: Vec<CachedObject>) -> CachedShard {
        let key = ShardKey::new(ServerIdentity([1; 32]), "world", None, zone.clone(), ShardId(shard)).expect("key");
        CachedShard {
            header: ShardHeader {
                key,
                epoch: Epoch(1),
                hwm: Seq(1),
                digest: recompute_digest(&objects),
                registry: registry().hash(),
                snapshot_time: chrono::DateTime::UNIX_EPOCH,
            },
            objects,
        }
    }

    fn loaded(zone: &ZoneId, shards: Vec<CachedShard>) -> ClientUpdate {
        ClientUpdate::ZoneLoaded {
            zone: zone.clone(),
            shards: shards.into_iter().map(std::sync::Arc::new).collect(),
            proofs: Vec::new(),
        }
    }

    fn contents(world: &mut World) -> Vec<(u64, u64, Option<N>, Option<Label>)> {
        let mut v: Vec<_> = world
            .query::<(&Replicated, Option<&N>, Option<&Label>)>()
            .iter(world)
            .map(|(r, n, l)| (r.object.0, r.shard.0, n.copied(), l.cloned()))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// A zone loaded whole spawns every object with exactly its components
    /// (two archetypes over two shards); loaded again while its entities
    /// stand, the objects it still has are updated in place (same entity),
    /// new ones spawn, and leaving despawns them all.
    #[test]
    fn a_zone_loads_by_archetype_and_loading_it_again_updates_in_place() {
        let zone = ZoneId::new("meadow").expect("zone");
        let mut world = World::new();
        let mut m = Materialiser::new(registry());
        let first = vec![
            shard(&zone, 0, vec![object(1, 10, None), object(2, 20, Some("two"))]),
            shard(&zone, 1, vec![object(3, 30, Some("three"))]),
        ];
        m.apply(&mut world, vec![loaded(&zone, first)]);
        assert_eq!(
            contents(&mut world),
            vec![
                (1, 0, Some(N(10)), None),
                (2, 0, Some(N(20)), Some(Label("two".into()))),
                (3, 1, Some(N(30)), Some(Label("three".into()))),
            ]
        );
        let two = m.entity(ObjectId(2)).expect("materialised");

        let again = vec![
            shard(&zone, 0, vec![object(1, 10, None), object(2, 21, None)]),
            shard(&zone, 1, vec![object(3, 30, Some("three")), object(4, 40, None)]),
        ];
        m.apply(&mut world, vec![loaded(&zone, again)]);
        assert_eq!(
            contents(&mut world),
            vec![
                (1, 0, Some(N(10)), None),
                (2, 0, Some(N(21)), None),
                (3, 1, Some(N(30)), Some(Label("three".into()))),
                (4, 1, Some(N(40)), None),
            ]
        );
        assert_eq!(m.entity(ObjectId(2)), Some(two), "updated in place");

        m.apply(&mut world, vec![ClientUpdate::ZoneLeft { zone }]);
        assert!(contents(&mut world).is_empty());
        assert_eq!(m.entity(ObjectId(1)), None);
    }
}
