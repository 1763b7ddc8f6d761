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
/// Every [`WorldStore`] method, each calling `$via::method($target, ..)`:
/// the one list of forwarders the store wrappers share ([`StoreLayer`]'s
/// defaults and its blanket impl, [`Locked`](super::Locked)). `$this` is the
/// caller's `self`, so `$target` may use it.
macro_rules! forward_world_store {
    ($this:ident => $via:ident, $target:expr) => {
        fn create_zone(&$this, zone: &ZoneId, shards: &[ShardSpec]) -> Result<(), WriteError> {
            $via::create_zone($target, zone, shards)
        }
        fn zones(&$this) -> Result<Vec<ZoneId>, ReadError> {
            $via::zones($target)
        }
        fn zone_shards(&$this, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
            $via::zone_shards($target, zone)
        }
        fn zone_shards_for(&$this, zone: &ZoneId, perspective: &str) -> Result<Vec<ShardId>, ReadError> {
            $via::zone_shards_for($target, zone, perspective)
        }
        fn shard_head(&$this, shard: ShardId) -> Result<ShardHead, ReadError> {
            $via::shard_head($target, shard)
        }
        fn commit(&$this, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
            $via::commit($target, changes)
        }
        fn changes_since(&$this, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
            $via::changes_since($target, shard, since)
        }
        fn manifest(&$this, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
            $via::manifest($target, shard)
        }
        fn snapshot(&$this, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
            $via::snapshot($target, shard)
        }
        fn trim_tombstones(&$this, older_than: DateTime<Utc>) -> Result<TrimReport, WriteError> {
            $via::trim_tombstones($target, older_than)
        }
        fn reset_epoch(&$this, shard: ShardId) -> Result<Epoch, WriteError> {
            $via::reset_epoch($target, shard)
        }
        fn schema(&$this) -> Result<BTreeMap<String, u32>, ReadError> {
            $via::schema($target)
        }
        fn commit_with_schema(
            &$this,
            changes: &ChangeSet,
            schema: &BTreeMap<String, u32>,
        ) -> Result<CommitReceipt, CommitError> {
            $via::commit_with_schema($target, changes, schema)
        }
        fn recover(&$this) -> Result<(), StoreFault> {
            $via::recover($target)
        }
        fn reserve_object_ids(&$this, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, WriteError> {
            $via::reserve_object_ids($target, count, at_least)
        }
        fn scan(&$this) -> Result<u64, ReadError> {
            $via::scan($target)
        }
    };
}
pub(super) use forward_world_store;

#[allow(missing_docs)] // Each method is `WorldStore`'s of the same name.
pub trait StoreLayer: Send + Sync {
    /// The wrapped store.
    fn inner(&self) -> &dyn WorldStore;

    forward_world_store!(self => WorldStore, self.inner());
}

impl<L: StoreLayer> WorldStore for L {
    forward_world_store!(self => StoreLayer, self);
}
