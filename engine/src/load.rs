//! Loading a stored world into an ECS `World`.
//!
//! Shards are read and decoded in parallel (rayon, one task per shard), then
//! spawned on the calling thread, since spawning needs `&mut World`. An object
//! whose stored bytes no longer decode with the registered schema is left out
//! and reported with its URL; the rest of the world still loads.

use bevy_ecs::world::World;
use rayon::prelude::*;

use crate::digest::StateHash;
use crate::ids::{ObjectId, ShardId, ZoneId};
use crate::publish::{Published, Publisher};
use crate::registry::DecodedComponent;
pub use crate::registry::ObjectDecodeError;
use crate::store::{ReadError, WorldStore};
use crate::url::HoardUrl;

/// An object that did not load.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {error}")]
pub struct LoadProblem {
    /// The object's URL.
    pub url: HoardUrl,
    /// Why it did not load.
    pub error: ObjectDecodeError,
}

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Shards read.
    pub shards: usize,
    /// Objects spawned.
    pub objects: usize,
    /// Objects left out.
    pub problems: Vec<LoadProblem>,
}

struct DecodedObject {
    id: ObjectId,
    shard: ShardId,
    state_hash: StateHash,
    components: Vec<DecodedComponent>,
}

/// Loads every zone of `store` into `world`, spawning one entity per object
/// with its [`Published`] marker and components, and tells `publisher` about
/// them so they are not republished. `service` is the URL problems are named under.
pub fn load_world(
    store: &dyn WorldStore,
    publisher: &mut Publisher,
    world: &mut World,
    service: &HoardUrl,
) -> Result<LoadReport, ReadError> {
    let zones = store.zones()?;
    load_zones(store, publisher, world, &zones, service)
}

/// Loads the named zones of `store` into `world`, as [`load_world`] does for
/// all of them: a server serving some of a world's zones loads only those.
pub fn load_zones(
    store: &dyn WorldStore,
    publisher: &mut Publisher,
    world: &mut World,
    zones: &[ZoneId],
    service: &HoardUrl,
) -> Result<LoadReport, ReadError> {
    let mut shards: Vec<(ZoneId, ShardId)> = Vec::new();
    for zone in zones {
        for shard in store.zone_shards(zone)? {
            shards.push((zone.clone(), shard));
        }
    }
    load_shards(store, publisher, world, &shards, service)
}

/// Loads the given shards (each with the zone it belongs to) into `world`,
/// as [`load_world`] does: for a shard that comes into a server's care
/// while it runs, such as a player's inventory when the player arrives
/// (first [`Publisher::forget_shard`] any older copy of it).
pub fn load_shards(
    store: &dyn WorldStore,
    publisher: &mut Publisher,
    world: &mut World,
    shards: &[(ZoneId, ShardId)],
    service: &HoardUrl,
) -> Result<LoadReport, ReadError> {
    let registry = publisher.registry().clone();
    let decoded: Vec<(Vec<DecodedObject>, Vec<LoadProblem>)> = shards
        .par_iter()
        .map(|(zone, shard)| {
            let snapshot = store.snapshot(*shard)?;
            let mut objects = Vec::with_capacity(snapshot.objects.len());
            let mut problems = Vec::new();
            for object in snapshot.objects {
                match registry.decode_state(&object.state) {
                    Ok(components) => objects.push(DecodedObject {
                        id: object.id,
                        shard: *shard,
                        state_hash: object.state.hash(),
                        components,
                    }),
                    Err(error) => problems.push(LoadProblem {
                        url: service.object(zone.clone(), *shard, object.id),
                        error,
                    }),
                }
            }
            Ok((objects, problems))
        })
        .collect::<Result<_, ReadError>>()?;

    let mut report = LoadReport {
        shards: shards.len(),
        ..LoadReport::default()
    };
    let mut adopted = Vec::new();
    for (objects, problems) in decoded {
        for problem in &problems {
            tracing::warn!(%problem, "object not loaded");
        }
        report.problems.extend(problems);
        for object in objects {
            let entity = registry.spawn(world, Published::new(object.id, object.shard), object.components);
            adopted.push((entity, object.id, object.shard, object.state_hash));
        }
    }
    report.objects = adopted.len();
    publisher.adopt(world, &adopted);
    Ok(report)
}
