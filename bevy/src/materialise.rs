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
use bevy_platform::collections::HashMap;
use hoard_engine::batch::DecodedObjects;
use hoard_engine::load::ObjectDecodeError;
use hoard_engine::registry::DecodedComponent;
use hoard_engine::{ObjectId, PublishRegistry, ShardId, ZoneId};
use hoard_net::quic::client::{ClientEvent, ClientUpdate, HoardClient};
use hoard_world_cache::CachedObject;
use rayon::prelude::*;

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
                ClientUpdate::ZoneLoaded { zone, shards } => self.load_zone(world, &zone, &shards),
                ClientUpdate::Objects {
                    zone,
                    shard,
                    upserts,
                    removed,
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
    /// decoded on every core (a shard per task) and spawned by archetype;
    /// objects already there (a zone entered again before its entities
    /// were despawned) are updated in place.
    fn load_zone(&mut self, world: &mut World, zone: &ZoneId, shards: &[hoard_world_cache::CachedShard]) {
        let zone_index = self.zone_index(zone);
        let (registry, index) = (&self.registry, &self.index);
        let decoded: Vec<DecodedObjects<(ObjectId, ShardId)>> = shards
            .par_iter()
            .map(|s| {
                let shard = s.header.key.shard;
                let new = s.objects.iter().filter(|o| !index.contains_key(&o.id));
                registry.decode_objects(new.map(|o| ((o.id, shard), &o.state)))
            })
            .collect();
        let known: Vec<(ShardId, &CachedObject)> = shards
            .iter()
            .flat_map(|s| s.objects.iter().map(move |o| (s.header.key.shard, o)))
            .filter(|(_, o)| self.index.contains_key(&o.id))
            .collect();
        for (shard, o) in known {
            self.upsert(world, zone, shard, o);
        }
        self.index.reserve(decoded.iter().map(DecodedObjects::len).sum());
        for batch in decoded {
            let spawned = self
                .registry
                .spawn_decoded(world, batch, |&(object, shard)| Replicated { object, shard });
            for ((object, _), e) in &spawned.failed {
                tracing::warn!(%object, error = %e, "object does not decode with this client's components");
            }
            for ((object, shard), entity) in spawned.placed {
                self.index.insert(
                    object,
                    Placed {
                        entity,
                        shard,
                        zone: zone_index,
                    },
                );
            }
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
