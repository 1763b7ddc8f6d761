//! [`StoreLayer`]: a store that wraps another and changes only what it
//! chooses — timing commits, counting them, refusing them in a test, lying
//! in a fault test. Every method it does not override goes to the inner
//! store, including those a new version of [`WorldStore`] adds, so a layer
//! never silently falls back to a default (an id allocator that refuses, a
//! scan that reads nothing) its inner store does not have.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{
    ChangesSince, CommitError, CommitReceipt, ReadError, ShardHead, ShardSnapshot, ShardSpec, StoreFault, TrimReport,
    WorldStore, WriteError,
};
use crate::{ChangeSet, Epoch, ObjectId, Seq, ShardId, ZoneId};

/// A store wrapping [`StoreLayer::inner`]: implement `inner` and override
/// what the layer changes; it is a [`WorldStore`] (every other call goes to
/// the inner store). Use it as a `dyn WorldStore` (as servers hold their
/// store): with both traits in scope, a method call on the layer itself is
/// ambiguous.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use hoard_engine::store::{CommitError, CommitReceipt, MemoryStore, StoreLayer, WorldStore};
/// use hoard_engine::ChangeSet;
///
/// struct Counted { inner: MemoryStore, commits: AtomicU64 }
///
/// impl StoreLayer for Counted {
///     fn inner(&self) -> &dyn WorldStore { &self.inner }
///     fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
///         self.commits.fetch_add(1, Ordering::SeqCst);
///         self.inner.commit(changes)
///     }
/// }
///
/// let counted = Counted { inner: MemoryStore::new(), commits: AtomicU64::new(0) };
/// let store: &dyn WorldStore = &counted; // as a server holds it
/// store.commit(&ChangeSet::default())?;
/// assert_eq!(counted.commits.load(Ordering::SeqCst), 1);
/// assert!(store.reserve_object_ids(10, 0).is_ok(), "the inner store's allocator, not a refusing default");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[allow(missing_docs)] // Each method is `WorldStore`'s of the same name.
pub trait StoreLayer: Send + Sync {
    /// The wrapped store.
    fn inner(&self) -> &dyn WorldStore;

    fn create_zone(&self, zone: &ZoneId, shards: &[ShardSpec]) -> Result<(), WriteError> {
        self.inner().create_zone(zone, shards)
    }
    fn zones(&self) -> Result<Vec<ZoneId>, ReadError> {
        self.inner().zones()
    }
    fn zone_shards(&self, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
        self.inner().zone_shards(zone)
    }
    fn zone_shards_for(&self, zone: &ZoneId, perspective: &str) -> Result<Vec<ShardId>, ReadError> {
        self.inner().zone_shards_for(zone, perspective)
    }
    fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError> {
        self.inner().shard_head(shard)
    }
    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        self.inner().commit(changes)
    }
    fn changes_since(&self, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
        self.inner().changes_since(shard, since)
    }
    fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
        self.inner().manifest(shard)
    }
    fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
        self.inner().snapshot(shard)
    }
    fn trim_tombstones(&self, older_than: DateTime<Utc>) -> Result<TrimReport, WriteError> {
        self.inner().trim_tombstones(older_than)
    }
    fn reset_epoch(&self, shard: ShardId) -> Result<Epoch, WriteError> {
        self.inner().reset_epoch(shard)
    }
    fn schema(&self) -> Result<BTreeMap<String, u32>, ReadError> {
        self.inner().schema()
    }
    fn commit_with_schema(
        &self,
        changes: &ChangeSet,
        schema: &BTreeMap<String, u32>,
    ) -> Result<CommitReceipt, CommitError> {
        self.inner().commit_with_schema(changes, schema)
    }
    fn recover(&self) -> Result<(), StoreFault> {
        self.inner().recover()
    }
    fn reserve_object_ids(&self, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, WriteError> {
        self.inner().reserve_object_ids(count, at_least)
    }
    fn scan(&self) -> Result<u64, ReadError> {
        self.inner().scan()
    }
}

impl<L: StoreLayer> WorldStore for L {
    fn create_zone(&self, zone: &ZoneId, shards: &[ShardSpec]) -> Result<(), WriteError> {
        StoreLayer::create_zone(self, zone, shards)
    }
    fn zones(&self) -> Result<Vec<ZoneId>, ReadError> {
        StoreLayer::zones(self)
    }
    fn zone_shards(&self, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
        StoreLayer::zone_shards(self, zone)
    }
    fn zone_shards_for(&self, zone: &ZoneId, perspective: &str) -> Result<Vec<ShardId>, ReadError> {
        StoreLayer::zone_shards_for(self, zone, perspective)
    }
    fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError> {
        StoreLayer::shard_head(self, shard)
    }
    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        StoreLayer::commit(self, changes)
    }
    fn changes_since(&self, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
        StoreLayer::changes_since(self, shard, since)
    }
    fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
        StoreLayer::manifest(self, shard)
    }
    fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
        StoreLayer::snapshot(self, shard)
    }
    fn trim_tombstones(&self, older_than: DateTime<Utc>) -> Result<TrimReport, WriteError> {
        StoreLayer::trim_tombstones(self, older_than)
    }
    fn reset_epoch(&self, shard: ShardId) -> Result<Epoch, WriteError> {
        StoreLayer::reset_epoch(self, shard)
    }
    fn schema(&self) -> Result<BTreeMap<String, u32>, ReadError> {
        StoreLayer::schema(self)
    }
    fn commit_with_schema(
        &self,
        changes: &ChangeSet,
        schema: &BTreeMap<String, u32>,
    ) -> Result<CommitReceipt, CommitError> {
        StoreLayer::commit_with_schema(self, changes, schema)
    }
    fn recover(&self) -> Result<(), StoreFault> {
        StoreLayer::recover(self)
    }
    fn reserve_object_ids(&self, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, WriteError> {
        StoreLayer::reserve_object_ids(self, count, at_least)
    }
    fn scan(&self) -> Result<u64, ReadError> {
        StoreLayer::scan(self)
    }
}
