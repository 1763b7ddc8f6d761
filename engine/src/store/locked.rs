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
    super::layer::forward_world_store!(self => WorldStore, &*self.read());
}
