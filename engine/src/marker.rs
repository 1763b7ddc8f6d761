//! The [`Published`] marker (a server's objects), the [`Replicated`] marker
//! (a client's copies of them) and change tracking: which entities are
//! published objects, and the small systems that note, each frame, the
//! entities whose published state may have changed (`Changed<C>` and
//! removals per registered component, changes and removals of the marker).
//!
//! The registry adds one tracking system per component it registers; the
//! publisher runs them and encodes only the entities they noted. Both depend
//! on this module, and it on neither.

use bevy_ecs::prelude::*;

use crate::ids::{ObjectId, ShardId};

/// Marks an entity as a published object: its id and the shard it lives in.
///
/// Changing `shard` moves the object: a tombstone in the old shard and an
/// upsert in the new one, in the same commit. Removing the marker or despawning
/// the entity deletes the object.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Published {
    /// The object's stable id.
    pub object: ObjectId,
    /// The shard it belongs to.
    pub shard: ShardId,
}

impl Published {
    /// Marks an object.
    pub fn new(object: ObjectId, shard: ShardId) -> Published {
        Published { object, shard }
    }
}

/// An object to publish that has no id yet: a server running the hoard
/// server plugin gives it the next id of the store's allocator
/// ([`WorldStore::reserve_object_ids`](crate::store::WorldStore::reserve_object_ids),
/// reserved in blocks, never given twice, also after a crash) and replaces
/// this with [`Published`] in the same frame, before its changes are
/// gathered. Hand-picked ids ([`Published::new`]) still work beside it.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NewObject {
    /// The shard it will live in.
    pub shard: ShardId,
}

impl NewObject {
    /// An object of `shard` whose id the server will choose.
    pub fn in_shard(shard: ShardId) -> NewObject {
        NewObject { shard }
    }
}

/// Marks an entity a client materialised from a published object: its id and
/// the shard it came in. The client's copy of [`Published`]; it is read, not
/// published (changing it on a client changes nothing on the server).
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Replicated {
    /// The object's id.
    pub object: ObjectId,
    /// Its shard.
    pub shard: ShardId,
}

/// Entities whose published state may have changed since the last gather.
#[derive(Resource, Default)]
pub(crate) struct DirtyEntities(pub(crate) Vec<Entity>);

pub(crate) fn mark_changed<C: Component>(
    changed: Query<Entity, (With<Published>, Changed<C>)>,
    mut removed: RemovedComponents<C>,
    mut dirty: ResMut<DirtyEntities>,
) {
    dirty.0.extend(changed.iter());
    dirty.0.extend(removed.read());
}

pub(crate) fn mark_published(
    changed: Query<Entity, Changed<Published>>,
    mut removed: RemovedComponents<Published>,
    mut dirty: ResMut<DirtyEntities>,
) {
    dirty.0.extend(changed.iter());
    dirty.0.extend(removed.read());
}
