//! One tick's changes, grouped by shard: what the publisher gathers from the
//! ECS and the store commits atomically.
//!
//! Within a shard each object appears once: the last change recorded for it
//! wins (an upsert after a removal replaces the object; a removal after an
//! upsert removes it). Objects are kept in id order so commits are
//! deterministic.

use std::collections::BTreeMap;

use crate::ids::{ObjectId, ShardId};
use crate::state::ObjectState;

/// What happens to one object in one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
// Deliberately exhaustive: every store (a custom one too) must handle each
// case, and a new one must fail its build rather than be ignored.
pub enum Change {
    /// The object is created or replaced with this state.
    Upsert(ObjectState),
    /// The object leaves the shard (deleted, or moved to another shard).
    Remove,
}

/// The changes to one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardChanges {
    ops: BTreeMap<ObjectId, Change>,
}

impl ShardChanges {
    /// The changes in object-id order.
    pub fn iter(&self) -> impl Iterator<Item = (ObjectId, &Change)> {
        self.ops.iter().map(|(id, c)| (*id, c))
    }

    /// How many objects change.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A set of changes across shards, committed as one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    shards: BTreeMap<ShardId, ShardChanges>,
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> ChangeSet {
        ChangeSet::default()
    }

    /// Records that `object` in `shard` now has `state`.
    pub fn upsert(&mut self, shard: ShardId, object: ObjectId, state: ObjectState) {
        self.shards
            .entry(shard)
            .or_default()
            .ops
            .insert(object, Change::Upsert(state));
    }

    /// Records that `object` leaves `shard`.
    pub fn remove(&mut self, shard: ShardId, object: ObjectId) {
        self.shards.entry(shard).or_default().ops.insert(object, Change::Remove);
    }

    /// The shards that change, in id order.
    pub fn shards(&self) -> impl Iterator<Item = (ShardId, &ShardChanges)> {
        self.shards.iter().map(|(id, c)| (*id, c))
    }

    /// The changes to one shard, if any.
    pub fn shard(&self, shard: ShardId) -> Option<&ShardChanges> {
        self.shards.get(&shard)
    }

    /// Total number of object changes across shards.
    pub fn len(&self) -> usize {
        self.shards.values().map(ShardChanges::len).sum()
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.shards.values().all(ShardChanges::is_empty)
    }

    /// Takes one shard's changes out of the set.
    pub fn take_shard(&mut self, shard: ShardId) -> Option<ShardChanges> {
        self.shards.remove(&shard)
    }

    /// Drops every change of `object`, in every shard (so a move is never
    /// half-applied).
    pub fn forget(&mut self, object: ObjectId) {
        for changes in self.shards.values_mut() {
            changes.ops.remove(&object);
        }
    }

    /// Adds every change of `other`, its changes winning over this set's.
    pub fn extend(&mut self, other: ChangeSet) {
        for (shard, changes) in other.shards {
            self.shards.entry(shard).or_default().ops.extend(changes.ops);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_an_object_drops_its_move_everywhere() {
        let mut set = ChangeSet::new();
        set.remove(ShardId(1), ObjectId(5));
        set.upsert(ShardId(2), ObjectId(5), ObjectState::empty());
        set.upsert(ShardId(2), ObjectId(6), ObjectState::empty());
        set.forget(ObjectId(5));
        assert_eq!(set.len(), 1);
        assert!(set.shard(ShardId(1)).is_some_and(ShardChanges::is_empty));
        assert!(set.take_shard(ShardId(2)).is_some_and(|c| c.len() == 1));
        assert!(set.is_empty());
    }

    #[test]
    fn last_change_to_an_object_wins() {
        let mut set = ChangeSet::new();
        set.remove(ShardId(1), ObjectId(5));
        set.upsert(ShardId(1), ObjectId(5), ObjectState::empty());
        set.upsert(ShardId(2), ObjectId(5), ObjectState::empty());
        set.remove(ShardId(2), ObjectId(5));
        assert_eq!(set.len(), 2);
        assert!(matches!(
            set.shard(ShardId(1)).and_then(|s| s.iter().next()),
            Some((ObjectId(5), Change::Upsert(_)))
        ));
        assert!(matches!(
            set.shard(ShardId(2)).and_then(|s| s.iter().next()),
            Some((ObjectId(5), Change::Remove))
        ));
    }
}
