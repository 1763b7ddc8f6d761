//! Materialising what a client receives as entities of a bevy_ecs `World`:
//! each published object becomes one entity carrying [`Replicated`] and its
//! decoded components; a live change updates that entity in place (or
//! despawns it), and leaving a zone despawns its entities.
//!
//! A zone that arrives whole (from the cache or an answer) is decoded on
//! every core, one shard per task, into typed columns, and spawned by
//! archetype: for all the zone's objects of the same components, one
//! `spawn_batch` of markers beside the first component (its table grows
//! once) and one `insert_batch` per further component
//! ([`PublishRegistry::spawn_decoded_with`]).
//!
//! A warm entry's cached copies are decoded *before* the server confirms
//! them ([`ClientUpdate::ZoneCached`], while the request is in flight): the
//! columns wait, unseen, until the entry's `ZoneLoaded` names each copy as
//! current (the same `Arc`), and only the spawn is left once the answer is
//! in. Columns of a copy that turned out stale are dropped unused.
//!
//! [`HoardClientPlugin`](crate::client::HoardClientPlugin) keeps one
//! [`Materialiser`] as a resource of its App's world and calls [`update`]
//! each frame. A game on a bare `World` (no App) calls [`update`] itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};

use bevy_ecs::prelude::*;
use bevy_platform::collections::{HashMap, HashSet};
use hoard_engine::batch::DecodedObjects;
use hoard_engine::load::ObjectDecodeError;
use hoard_engine::registry::DecodedComponent;
use hoard_engine::shard::{CachedObject, CachedShard};
use hoard_engine::{ObjectId, PublishRegistry, ShardId, ZoneId};
use hoard_net::quic::client::{ClientEvent, ClientUpdate, HoardClient};

pub use hoard_engine::Replicated;

/// Zones whose cached copies are decoded ahead of their answer at once; a
/// further one drops the oldest (an entry that never completes cannot hold
/// decoded copies for ever).
const MAX_PREPARED_ZONES: usize = 2;

/// One shard's objects decoded into columns, tagged for spawning.
type Decoded = DecodedObjects<(ObjectId, ShardId)>;

/// A zone's cached copies being decoded on rayon's threads before the
/// server confirms them.
struct Prepared {
    zone: ZoneId,
    /// The copies, by the index their decodings are sent with.
    copies: Vec<Arc<CachedShard>>,
    /// Whether each copy's decoding is still wanted: a task that starts
    /// after its flag went down decodes nothing and sends nothing.
    wanted: Arc<Vec<AtomicBool>>,
    /// In a mutex only to make the materialiser `Sync` (a resource); only
    /// the materialiser's owner receives.
    decoded: Mutex<Receiver<(usize, Decoded)>>,
}

impl Prepared {
    /// Stops the decodings that have not started.
    fn abandon(&self) {
        for flag in self.wanted.iter() {
            flag.store(false, Ordering::Relaxed);
        }
    }
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
    /// Zones decoded ahead of their answer, oldest first.
    prepared: Vec<Prepared>,
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
            prepared: Vec::new(),
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
                ClientUpdate::ZoneCached { zone, shards } => self.prepare(zone, shards),
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
                    self.take_prepared(&zone).inspect(Prepared::abandon);
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

    /// Starts decoding a zone's cached copies on rayon's threads, one task a
    /// shard, ahead of the entry's answer. Nothing enters the world here.
    fn prepare(&mut self, zone: ZoneId, copies: Vec<Arc<CachedShard>>) {
        self.take_prepared(&zone).inspect(Prepared::abandon);
        if self.prepared.len() >= MAX_PREPARED_ZONES {
            self.prepared.remove(0).abandon();
        }
        let wanted: Arc<Vec<AtomicBool>> = Arc::new(copies.iter().map(|_| AtomicBool::new(true)).collect());
        let (tx, decoded) = channel();
        for (i, copy) in copies.iter().enumerate() {
            let (tx, registry, wanted, copy) = (tx.clone(), self.registry.clone(), wanted.clone(), copy.clone());
            rayon::spawn(move || {
                if !wanted[i].load(Ordering::Relaxed) {
                    return;
                }
                let shard = copy.header.key.shard;
                let batch = registry.decode_objects(copy.objects.iter().map(|o| ((o.id, shard), &o.state)));
                // The receiver may be gone (the zone was left): nothing to do.
                let _ = tx.send((i, batch));
            });
        }
        self.prepared.push(Prepared {
            zone,
            copies,
            wanted,
            decoded: Mutex::new(decoded),
        });
    }

    fn take_prepared(&mut self, zone: &ZoneId) -> Option<Prepared> {
        let i = self.prepared.iter().position(|p| &p.zone == zone)?;
        Some(self.prepared.remove(i))
    }

    /// Puts a whole zone into the world: objects not yet materialised are
    /// decoded on rayon's threads (a shard per task), then spawned together
    /// by archetype; copies
    /// decoded ahead ([`ClientUpdate::ZoneCached`]) that the answer kept are
    /// spawned from their columns. Objects already there (a zone entered
    /// again before its entities were despawned) are updated in place. The
    /// last references to the copies (the client usually keeps its own) are
    /// dropped on a rayon thread.
    fn load_zone(&mut self, world: &mut World, zone: &ZoneId, shards: Vec<Arc<CachedShard>>) {
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
        // Which shards were decoded ahead: the answer kept their copies as
        // they were (the same `Arc`). Objects already materialised are
        // updated in place below, so with any of those nothing is reused.
        let prepared = self.take_prepared(zone);
        // One growth of the index for the whole zone, not one per shard.
        self.index.reserve(shards.iter().map(|s| s.objects.len()).sum());
        let mut ahead = vec![false; shards.len()];
        if let Some(p) = &prepared {
            for (i, copy) in p.copies.iter().enumerate() {
                match shards.iter().position(|s| Arc::ptr_eq(s, copy)) {
                    Some(j) if known.is_empty() => ahead[j] = true,
                    _ => p.wanted[i].store(false, Ordering::Relaxed),
                }
            }
        }
        let registry = self.registry.clone();
        let (tx, rx) = channel::<Decoded>();
        rayon::in_place_scope(|scope| {
            for (s, _) in shards.iter().zip(&ahead).filter(|(_, ahead)| !**ahead) {
                let (tx, registry, known) = (tx.clone(), &registry, &known);
                scope.spawn(move |_| {
                    let shard = s.header.key.shard;
                    let new = s.objects.iter().filter(|o| !known.contains(&o.id));
                    // The receiver outlives the scope: sending cannot fail.
                    let _ = tx.send(registry.decode_objects(new.map(|o| ((o.id, shard), &o.state))));
                });
            }
            drop(tx);
            let mut batches = Vec::with_capacity(shards.len());
            if let Some(p) = prepared {
                // Every wanted decoding arrives before the last sender goes.
                let (wanted, decoded) = (p.wanted, p.decoded.into_inner().unwrap_or_else(|e| e.into_inner()));
                batches.extend(
                    receive_all(&decoded)
                        .filter(|(i, _)| wanted[*i].load(Ordering::Relaxed))
                        .map(|(_, batch)| batch),
                );
            }
            batches.extend(receive_all(&rx));
            // All at once: each archetype's table grows once for the zone.
            self.spawn_batches(world, batches, zone_index);
        });
        for s in &shards {
            let shard = s.header.key.shard;
            for o in s.objects.iter().filter(|o| known.contains(&o.id)) {
                self.upsert(world, zone, shard, o);
            }
        }
        rayon::spawn(move || drop(shards));
    }

    /// Spawns decoded shards together and indexes their objects.
    fn spawn_batches(&mut self, world: &mut World, batches: Vec<Decoded>, zone: usize) {
        let index = &mut self.index;
        let failed = self.registry.spawn_decoded_with(
            world,
            batches,
            |&(object, shard)| Replicated { object, shard },
            |(object, shard), entity| {
                index.insert(object, Placed { entity, shard, zone });
            },
        );
        for ((object, _), e) in &failed {
            tracing::warn!(%object, error = %e, "object does not decode with this client's components");
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
    apply_updates(client.registry(), client.take_updates(), world)
}

/// Applies `updates` (decoded with `registry`) to `world`, entities before
/// the events that announce them, and returns the events; the
/// [`Materialiser`] lives in `world` as a resource, created on first use.
pub fn apply_updates(registry: &PublishRegistry, updates: Vec<ClientUpdate>, world: &mut World) -> Vec<ClientEvent> {
    if !world.contains_resource::<Materialiser>() {
        world.insert_resource(Materialiser::new(registry.clone()));
    }
    world.resource_scope(|world, mut materialiser: Mut<Materialiser>| materialiser.apply(world, updates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_engine::shard::recompute_digest;
    use hoard_engine::shard::{CachedShard, ShardHeader, ShardKey};
    use hoard_engine::state::StateBuilder;
    use hoard_engine::{Epoch, Seq, ServerIdentity};
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

    /// Copies decoded ahead of their answer show nothing; once the answer
    /// is in, a copy it kept (the same `Arc`) spawns from its columns and a
    /// copy it replaced spawns from the replacement, never from the stale
    /// columns. Leaving a zone whose copies are being decoded drops them,
    /// and no more than `MAX_PREPARED_ZONES` zones are decoded ahead.
    #[test]
    fn copies_decoded_ahead_show_only_what_the_answer_confirms() {
        let zone = ZoneId::new("meadow").expect("zone");
        let mut world = World::new();
        let mut m = Materialiser::new(registry());
        let kept = Arc::new(shard(&zone, 0, vec![object(1, 10, None), object(2, 20, Some("two"))]));
        let stale = Arc::new(shard(&zone, 1, vec![object(3, 30, Some("old"))]));
        m.apply(
            &mut world,
            vec![ClientUpdate::ZoneCached {
                zone: zone.clone(),
                shards: vec![kept.clone(), stale.clone()],
            }],
        );
        assert!(contents(&mut world).is_empty(), "nothing shown before the answer");
        assert_eq!(m.prepared.len(), 1);

        let replaced = Arc::new(shard(&zone, 1, vec![object(3, 31, Some("new")), object(4, 40, None)]));
        m.apply(
            &mut world,
            vec![ClientUpdate::ZoneLoaded {
                zone: zone.clone(),
                shards: vec![kept, replaced],
                proofs: Vec::new(),
            }],
        );
        assert_eq!(
            contents(&mut world),
            vec![
                (1, 0, Some(N(10)), None),
                (2, 0, Some(N(20)), Some(Label("two".into()))),
                (3, 1, Some(N(31)), Some(Label("new".into()))),
                (4, 1, Some(N(40)), None),
            ]
        );
        assert!(m.prepared.is_empty(), "the decoded copies were taken");

        let zones: Vec<ZoneId> = ["a", "b", "c"].iter().map(|z| ZoneId::new(*z).expect("zone")).collect();
        for z in &zones {
            let copy = Arc::new(shard(z, 0, vec![object(100, 1, None)]));
            m.apply(
                &mut world,
                vec![ClientUpdate::ZoneCached {
                    zone: z.clone(),
                    shards: vec![copy],
                }],
            );
        }
        assert_eq!(m.prepared.len(), MAX_PREPARED_ZONES, "the oldest is dropped");
        assert!(m.prepared.iter().all(|p| p.zone != zones[0]));
        m.apply(&mut world, vec![ClientUpdate::ZoneLeft { zone: zones[2].clone() }]);
        assert!(m.prepared.iter().all(|p| p.zone != zones[2]));
        assert_eq!(contents(&mut world).len(), 4, "no copy decoded ahead was shown");
    }
}
