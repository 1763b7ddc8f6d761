//! An in-memory [`WorldStore`] for unit tests: the same logic as the redb
//! store over `BTreeMap`s behind a mutex. Nothing is durable.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::error::{CommitError, ReadError, StoreFault, WriteError};
use super::logic::{self, Tables, TablesMut};
use super::record::ShardRecord;
use super::{
    ChangesSince, CommitReceipt, ShardHead, ShardScope, ShardSnapshot, ShardSpec, StoredObject, Tombstone, TrimReport,
    WorldStore,
};
use crate::changeset::ChangeSet;
use crate::digest::{StateHash, state_hash};
use crate::ids::{Epoch, ObjectId, Seq, ShardId, ZoneId};
use crate::state::ObjectState;

#[derive(Default)]
struct Maps {
    zones: BTreeMap<ZoneId, Vec<ShardId>>,
    shards: BTreeMap<ShardId, ShardRecord>,
    objects: BTreeMap<(ShardId, ObjectId), (Seq, Vec<u8>)>,
    versions: BTreeMap<(ShardId, Seq, ObjectId), ()>,
    tombstones: BTreeMap<(ShardId, ObjectId), Seq>,
    tombstones_by_seq: BTreeMap<(ShardId, Seq, ObjectId), i64>,
    schema: BTreeMap<String, u32>,
    /// The next object id to reserve (`None`: past the largest held).
    next_object_id: Option<u64>,
}

/// A world store held in memory, for tests.
#[derive(Default)]
pub struct MemoryStore {
    maps: Mutex<Maps>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves the maps as consistent as the
        // last completed operation, because writes check before they mutate.
        crate::lock::lock(&self.maps)
    }
}

impl Tables for Maps {
    fn zones(&self) -> Result<Vec<ZoneId>, StoreFault> {
        Ok(self.zones.keys().cloned().collect())
    }

    fn zone_shards(&self, zone: &ZoneId) -> Result<Option<Vec<ShardId>>, StoreFault> {
        Ok(self.zones.get(zone).cloned())
    }

    fn scoped_zone_shards(&self, zone: &ZoneId, scope: &ShardScope) -> Result<Vec<ShardId>, StoreFault> {
        // A scan: the memory store serves tests, whose zones are small.
        let shards = self.zones.get(zone).map(Vec::as_slice).unwrap_or_default();
        Ok(shards
            .iter()
            .copied()
            .filter(|s| self.shards.get(s).is_some_and(|r| &r.scope == scope))
            .collect())
    }

    fn zone_exists(&self, zone: &ZoneId) -> Result<bool, StoreFault> {
        Ok(self.zones.contains_key(zone))
    }

    fn shard(&self, shard: ShardId) -> Result<Option<ShardRecord>, StoreFault> {
        Ok(self.shards.get(&shard).cloned())
    }

    fn objects_since(&self, shard: ShardId, after: Seq) -> Result<Vec<StoredObject>, StoreFault> {
        let range = (shard, after.next(), ObjectId(0))..=(shard, Seq(u64::MAX), ObjectId(u64::MAX));
        let ids: Vec<ObjectId> = if after.0 == u64::MAX {
            Vec::new()
        } else {
            self.versions.range(range).map(|((_, _, id), ())| *id).collect()
        };
        ids.into_iter().map(|id| self.stored(shard, id)).collect()
    }

    fn objects(&self, shard: ShardId) -> Result<Vec<StoredObject>, StoreFault> {
        self.objects
            .range((shard, ObjectId(0))..=(shard, ObjectId(u64::MAX)))
            .map(|((_, id), _)| self.stored(shard, *id))
            .collect()
    }

    fn manifest(&self, shard: ShardId) -> Result<Vec<(ObjectId, Seq)>, StoreFault> {
        Ok(self
            .objects
            .range((shard, ObjectId(0))..=(shard, ObjectId(u64::MAX)))
            .map(|((_, id), (v, _))| (*id, *v))
            .collect())
    }

    fn tombstone(&self, shard: ShardId, id: ObjectId) -> Result<Option<Seq>, StoreFault> {
        Ok(self.tombstones.get(&(shard, id)).copied())
    }

    fn tombstones_since(&self, shard: ShardId, after: Seq) -> Result<Vec<Tombstone>, StoreFault> {
        if after.0 == u64::MAX {
            return Ok(Vec::new());
        }
        Ok(self
            .tombstones_by_seq
            .range((shard, after.next(), ObjectId(0))..=(shard, Seq(u64::MAX), ObjectId(u64::MAX)))
            .map(|((_, seq, id), _)| Tombstone { id: *id, seq: *seq })
            .collect())
    }

    fn all_tombstones(&self) -> Result<Vec<(ShardId, Tombstone, i64)>, StoreFault> {
        Ok(self
            .tombstones_by_seq
            .iter()
            .map(|((shard, seq, id), at)| (*shard, Tombstone { id: *id, seq: *seq }, *at))
            .collect())
    }
}

impl Maps {
    fn stored(&self, shard: ShardId, id: ObjectId) -> Result<StoredObject, StoreFault> {
        let (version, bytes) = self
            .objects
            .get(&(shard, id))
            .ok_or_else(|| StoreFault::Corrupt(format!("shard {shard}: version index names missing object {id}")))?;
        Ok(StoredObject {
            id,
            version: *version,
            state: ObjectState::from_trusted_bytes(bytes.clone()),
        })
    }
}

impl TablesMut for Maps {
    fn add_zone_shard(&mut self, zone: &ZoneId, _scope: &ShardScope, shard: ShardId) -> Result<(), StoreFault> {
        let shards = self.zones.entry(zone.clone()).or_default();
        if let Err(at) = shards.binary_search(&shard) {
            shards.insert(at, shard);
        }
        Ok(())
    }

    fn add_zone_marker(&mut self, zone: &ZoneId) -> Result<(), StoreFault> {
        self.zones.entry(zone.clone()).or_default();
        Ok(())
    }

    fn put_shard(&mut self, shard: ShardId, record: &ShardRecord) -> Result<(), StoreFault> {
        self.shards.insert(shard, record.clone());
        Ok(())
    }

    fn put_object(
        &mut self,
        shard: ShardId,
        id: ObjectId,
        version: Seq,
        state: &[u8],
    ) -> Result<Option<(Seq, StateHash)>, StoreFault> {
        let old = self
            .objects
            .insert((shard, id), (version, state.to_vec()))
            .map(|(old, bytes)| (old, state_hash(&bytes)));
        if let Some((old, _)) = old {
            self.versions.remove(&(shard, old, id));
        }
        self.versions.insert((shard, version, id), ());
        Ok(old)
    }

    fn delete_object(&mut self, shard: ShardId, id: ObjectId) -> Result<Option<(Seq, StateHash)>, StoreFault> {
        let old = self
            .objects
            .remove(&(shard, id))
            .map(|(old, bytes)| (old, state_hash(&bytes)));
        if let Some((version, _)) = old {
            self.versions.remove(&(shard, version, id));
        }
        Ok(old)
    }

    fn put_tombstone(&mut self, shard: ShardId, id: ObjectId, seq: Seq, at_ms: i64) -> Result<(), StoreFault> {
        self.tombstones.insert((shard, id), seq);
        self.tombstones_by_seq.insert((shard, seq, id), at_ms);
        Ok(())
    }

    fn delete_tombstone(&mut self, shard: ShardId, id: ObjectId, seq: Seq) -> Result<(), StoreFault> {
        self.tombstones.remove(&(shard, id));
        self.tombstones_by_seq.remove(&(shard, seq, id));
        Ok(())
    }
}

impl WorldStore for MemoryStore {
    fn create_zone(&self, zone: &ZoneId, shards: &[ShardSpec]) -> Result<(), WriteError> {
        let mut maps = self.lock();
        // Check before mutating so a failed call changes nothing.
        for spec in shards {
            if let Some(existing) = maps.shards.get(&spec.id) {
                return Err(WriteError::ShardExists {
                    shard: spec.id,
                    zone: existing.zone.clone(),
                });
            }
        }
        logic::create_zone(&mut *maps, zone, shards)
    }

    fn zones(&self) -> Result<Vec<ZoneId>, ReadError> {
        Ok(self.lock().zones()?)
    }

    fn zone_shards(&self, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
        logic::zone_shards(&*self.lock(), zone)
    }

    fn zone_shards_for(&self, zone: &ZoneId, perspective: &str) -> Result<Vec<ShardId>, ReadError> {
        logic::zone_shards_for(&*self.lock(), zone, perspective)
    }

    fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError> {
        logic::head(&*self.lock(), shard)
    }

    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        let mut maps = self.lock();
        if let Some((missing, _)) = changes.shards().find(|(s, _)| !maps.shards.contains_key(s)) {
            return Err(CommitError::UnknownShard(missing));
        }
        logic::commit(&mut *maps, changes, Utc::now())
    }

    fn changes_since(&self, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
        logic::changes_since(&*self.lock(), shard, since)
    }

    fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
        logic::manifest(&*self.lock(), shard)
    }

    fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
        logic::snapshot(&*self.lock(), shard)
    }

    fn trim_tombstones(&self, older_than: DateTime<Utc>) -> Result<TrimReport, WriteError> {
        logic::trim_tombstones(&mut *self.lock(), older_than)
    }

    fn reset_epoch(&self, shard: ShardId) -> Result<Epoch, WriteError> {
        logic::reset_epoch(&mut *self.lock(), shard)
    }

    fn reserve_object_ids(&self, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, WriteError> {
        let mut maps = self.lock();
        let past_held = (maps.objects.keys())
            .chain(maps.tombstones.keys())
            .map(|(_, id)| id.0.saturating_add(1))
            .max()
            .unwrap_or(0);
        let next = maps.next_object_id.unwrap_or(past_held);
        let range = super::id_range(next, count, at_least)?;
        maps.next_object_id = Some(range.end);
        Ok(range)
    }

    fn schema(&self) -> Result<BTreeMap<String, u32>, ReadError> {
        Ok(self.lock().schema.clone())
    }

    fn commit_with_schema(
        &self,
        changes: &ChangeSet,
        schema: &BTreeMap<String, u32>,
    ) -> Result<CommitReceipt, CommitError> {
        let mut maps = self.lock();
        if let Some((missing, _)) = changes.shards().find(|(s, _)| !maps.shards.contains_key(s)) {
            return Err(CommitError::UnknownShard(missing));
        }
        let receipt = logic::commit(&mut *maps, changes, Utc::now())?;
        maps.schema = schema.clone();
        Ok(receipt)
    }
}
