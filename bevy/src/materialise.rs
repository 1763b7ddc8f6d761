//! Materialising what a client receives as entities of a bevy_ecs `World`:
//! each published object becomes one entity carrying [`Replicated`] and its
//! decoded components; a live change updates that entity in place (or
//! despawns it), and leaving a zone despawns its entities.
//!
//! [`HoardClientPlugin`](crate::client::HoardClientPlugin) keeps one
//! [`Materialiser`] as a resource of its App's world and calls [`update`]
//! each frame. A game on a bare `World` (no App) calls [`update`] itself.

use std::collections::HashMap;

use bevy_ecs::prelude::*;
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
    zone: ZoneId,
}

/// Turns a client's updates into entities, and remembers which entity
/// stands for which object.
#[derive(Resource)]
pub struct Materialiser {
    registry: PublishRegistry,
    index: HashMap<ObjectId, Placed>,
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
            index: HashMap::new(),
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
                ClientUpdate::ZoneLoaded { zone, shards } => {
                    // Decode on every core, then spawn on this thread.
                    let registry = &self.registry;
                    let decoded: Vec<_> = shards
                        .par_iter()
                        .flat_map_iter(|s| {
                            s.objects
                                .iter()
                                .map(move |o| (s.header.key.shard, o.id, registry.decode_state(&o.state)))
                        })
                        .collect();
                    for (shard, id, components) in decoded {
                        self.place(world, &zone, shard, id, components);
                    }
                }
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
                    self.index.retain(|_, e| {
                        if e.zone == zone {
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
        self.index.insert(
            id,
            Placed {
                entity,
                shard,
                zone: zone.clone(),
            },
        );
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
