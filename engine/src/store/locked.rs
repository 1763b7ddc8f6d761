//! [`Locked`]: a store behind a read-write lock, for a store whose owner
//! changes it outside the [`WorldStore`] calls (a relay installing what its
//! upstream sends) while sessions read it. Every `WorldStore` call takes the
//! read lock for its duration; the owner takes the write lock with
//! [`Locked::write`]. The lock lives with the driver that shares the store,
//! so the store itself (`hoard_proto::relay::RelayStore`) is plain data.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};

use super::{
    ChangesSince, CommitError, CommitReceipt, ReadError, ShardHead, ShardSnapshot, ShardSpec, StoreFault, TrimReport,
    WorldStore, WriteError,
};
use crate::{ChangeSet, Epoch, ObjectId, Seq, ShardId, ZoneId};

/// `S` behind a read-write lock (see the module docs).
#[derive(Debug, Default)]
pub struct Locked<S>(RwLock<S>);

impl<S> Locked<S> {
    /// Puts `store` behind a lock.
    pub fn new(store: S) -> Locked<S> {
        Locked(RwLock::new(store))
    }

    /// The store, to read.
    pub fn read(&self) -> RwLockReadGuard<'_, S> {
        crate::lock::read(&self.0)
    }

    /// The store, to change.
    pub fn write(&self) -> RwLockWriteGuard<'_, S> {
        crate::lock::write(&self.0)
    }
}

impl<S: WorldStore> WorldStore for Locked<S> {
    fn create_zone(&self, zone: &ZoneId, shards: &[ShardSpec]) -> Result<(), WriteError> {
        self.read().create_zone(zone, shards)
    }
    fn zones(&self) -> Result<Vec<ZoneId>, ReadError> {
        self.read().zones()
    }
    fn zone_shards(&self, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
        self.read().zone_shards(zone)
    }
    fn zone_shards_for(&self, zone: &ZoneId, perspective: &str) -> Result<Vec<ShardId>, ReadError> {
        self.read().zone_shards_for(zone, perspective)
    }
    fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError> {
        self.read().shard_head(shard)
    }
    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        self.read().commit(changes)
    }
    fn changes_since(&self, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
        self.read().changes_since(shard, since)
    }
    fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
        self.read().manifest(shard)
    }
    fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
        self.read().snapshot(shard)
    }
    fn trim_tombstones(&self, older_than: DateTime<Utc>) -> Result<TrimReport, WriteError> {
        self.read().trim_tombstones(older_than)
    }
    fn reset_epoch(&self, shard: ShardId) -> Result<Epoch, WriteError> {
        self.read().reset_epoch(shard)
    }
    fn schema(&self) -> Result<BTreeMap<String, u32>, ReadError> {
        self.read().schema()
    }
    fn commit_with_schema(
        &self,
        changes: &ChangeSet,
        schema: &BTreeMap<String, u32>,
    ) -> Result<CommitReceipt, CommitError> {
        self.read().commit_with_schema(changes, schema)
    }
    fn recover(&self) -> Result<(), StoreFault> {
        self.read().recover()
    }
    fn reserve_object_ids(&self, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, WriteError> {
        self.read().reserve_object_ids(count, at_least)
    }
    fn scan(&self) -> Result<u64, ReadError> {
        self.read().scan()
    }
}
