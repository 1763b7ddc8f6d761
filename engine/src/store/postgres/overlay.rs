//! The store's commit logic (`logic.rs`), run over rows fetched in bulk.
//!
//! The logic asks for one object or tombstone at a time, which against a
//! database would be one round trip each. Instead the PostgreSQL store
//! fetches, in one statement each, every row a commit can touch (the
//! records of the shards it changes, locked; the live objects and
//! tombstones of the ids it names), runs the unchanged logic over this
//! overlay, and writes what the overlay recorded back in a few batched
//! statements. The logic reads nothing else during a commit or trim; a
//! read outside what was fetched is a bug and fails the commit loudly
//! rather than answering "absent".

use std::collections::{BTreeMap, HashSet};

use super::super::error::StoreFault;
use super::super::logic::{Tables, TablesMut};
use super::super::record::ShardRecord;
use super::super::{ShardScope, StoredObject, Tombstone};
use crate::digest::StateHash;
use crate::ids::{ObjectId, Seq, ShardId, ZoneId};

/// A live object as the overlay knows it: version, state hash, and the
/// state bytes when the commit wrote it.
#[derive(Clone, Debug)]
pub(crate) struct LiveRow {
    pub(crate) version: Seq,
    pub(crate) hash: StateHash,
    pub(crate) state: Option<Vec<u8>>,
}

/// A tombstone: its seq and commit time (ms).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TombRow {
    pub(crate) seq: Seq,
    pub(crate) at_ms: i64,
}

/// Rows fetched for one write transaction, and the writes made to them.
#[derive(Default)]
pub(crate) struct Overlay {
    /// Shard records fetched (and locked); `None`: known not to exist.
    shards: BTreeMap<ShardId, Option<ShardRecord>>,
    /// Live objects of the fetched keys; a key fetched but absent is `None`.
    objects: BTreeMap<(ShardId, ObjectId), Option<LiveRow>>,
    /// Tombstones of the fetched keys, as `objects`.
    tombstones: BTreeMap<(ShardId, ObjectId), Option<TombRow>>,
    /// Every tombstone of the fetched shards, for a trim.
    all_tombstones: Vec<(ShardId, Tombstone, i64)>,
    /// What the logic changed, by key.
    pub(crate) dirty_shards: HashSet<ShardId>,
    pub(crate) dirty_objects: HashSet<(ShardId, ObjectId)>,
    pub(crate) dirty_tombstones: HashSet<(ShardId, ObjectId)>,
}

fn not_fetched(what: &str) -> StoreFault {
    StoreFault::Corrupt(format!(
        "the PostgreSQL store's commit read {what}, which it had not fetched"
    ))
}

impl Overlay {
    pub(crate) fn put_fetched_shard(&mut self, shard: ShardId, record: Option<ShardRecord>) {
        self.shards.insert(shard, record);
    }

    /// Marks `key` as fetched with no live object (rows found replace it).
    pub(crate) fn expect_object(&mut self, key: (ShardId, ObjectId)) {
        self.objects.entry(key).or_insert(None);
        self.tombstones.entry(key).or_insert(None);
    }

    pub(crate) fn put_fetched_object(&mut self, key: (ShardId, ObjectId), row: LiveRow) {
        self.objects.insert(key, Some(row));
    }

    pub(crate) fn put_fetched_tombstone(&mut self, key: (ShardId, ObjectId), row: TombRow) {
        self.tombstones.insert(key, Some(row));
    }

    pub(crate) fn put_all_tombstones(&mut self, rows: Vec<(ShardId, Tombstone, i64)>) {
        self.all_tombstones = rows;
    }

    /// The shard record as the logic left it.
    pub(crate) fn shard_record(&self, shard: ShardId) -> Option<&ShardRecord> {
        self.shards.get(&shard).and_then(Option::as_ref)
    }

    /// The object at `key` as the logic left it (`None`: not live).
    pub(crate) fn object(&self, key: (ShardId, ObjectId)) -> Option<&LiveRow> {
        self.objects.get(&key).and_then(Option::as_ref)
    }

    /// The tombstone at `key` as the logic left it (`None`: none).
    pub(crate) fn tombstone_row(&self, key: (ShardId, ObjectId)) -> Option<TombRow> {
        self.tombstones.get(&key).copied().flatten()
    }
}

impl Tables for Overlay {
    fn zones(&self) -> Result<Vec<ZoneId>, StoreFault> {
        Err(not_fetched("the zone list"))
    }

    fn zone_shards(&self, _zone: &ZoneId) -> Result<Option<Vec<ShardId>>, StoreFault> {
        Err(not_fetched("a zone's shards"))
    }

    fn scoped_zone_shards(&self, _zone: &ZoneId, _scope: &ShardScope) -> Result<Vec<ShardId>, StoreFault> {
        Err(not_fetched("a zone's shards"))
    }

    fn zone_exists(&self, _zone: &ZoneId) -> Result<bool, StoreFault> {
        Err(not_fetched("a zone"))
    }

    fn shard(&self, shard: ShardId) -> Result<Option<ShardRecord>, StoreFault> {
        match self.shards.get(&shard) {
            Some(record) => Ok(record.clone()),
            None => Err(not_fetched(&format!("shard {shard}"))),
        }
    }

    fn objects_since(&self, _shard: ShardId, _after: Seq) -> Result<Vec<StoredObject>, StoreFault> {
        Err(not_fetched("objects by version"))
    }

    fn objects(&self, _shard: ShardId) -> Result<Vec<StoredObject>, StoreFault> {
        Err(not_fetched("a shard's objects"))
    }

    fn manifest(&self, _shard: ShardId) -> Result<Vec<(ObjectId, Seq)>, StoreFault> {
        Err(not_fetched("a manifest"))
    }

    fn tombstone(&self, shard: ShardId, id: ObjectId) -> Result<Option<Seq>, StoreFault> {
        match self.tombstones.get(&(shard, id)) {
            Some(row) => Ok(row.map(|t| t.seq)),
            None => Err(not_fetched(&format!("the tombstone of object {id} in shard {shard}"))),
        }
    }

    fn tombstones_since(&self, _shard: ShardId, _after: Seq) -> Result<Vec<Tombstone>, StoreFault> {
        Err(not_fetched("tombstones by seq"))
    }

    fn all_tombstones(&self) -> Result<Vec<(ShardId, Tombstone, i64)>, StoreFault> {
        Ok(self.all_tombstones.clone())
    }
}

impl TablesMut for Overlay {
    fn add_zone_shard(&mut self, _zone: &ZoneId, _scope: &ShardScope, _shard: ShardId) -> Result<(), StoreFault> {
        Err(not_fetched("a zone, to add a shard"))
    }

    fn add_zone_marker(&mut self, _zone: &ZoneId) -> Result<(), StoreFault> {
        Err(not_fetched("a zone, to create it"))
    }

    fn put_shard(&mut self, shard: ShardId, record: &ShardRecord) -> Result<(), StoreFault> {
        self.shards.insert(shard, Some(record.clone()));
        self.dirty_shards.insert(shard);
        Ok(())
    }

    fn put_object(
        &mut self,
        shard: ShardId,
        id: ObjectId,
        version: Seq,
        state: &[u8],
    ) -> Result<Option<(Seq, StateHash)>, StoreFault> {
        let slot = self
            .objects
            .get_mut(&(shard, id))
            .ok_or_else(|| not_fetched(&format!("object {id} in shard {shard}")))?;
        let old = slot.as_ref().map(|row| (row.version, row.hash));
        *slot = Some(LiveRow {
            version,
            hash: crate::digest::state_hash(state),
            state: Some(state.to_vec()),
        });
        self.dirty_objects.insert((shard, id));
        Ok(old)
    }

    fn delete_object(&mut self, shard: ShardId, id: ObjectId) -> Result<Option<(Seq, StateHash)>, StoreFault> {
        let slot = self
            .objects
            .get_mut(&(shard, id))
            .ok_or_else(|| not_fetched(&format!("object {id} in shard {shard}")))?;
        let old = slot.take().map(|row| (row.version, row.hash));
        if old.is_some() {
            self.dirty_objects.insert((shard, id));
        }
        Ok(old)
    }

    fn put_tombstone(&mut self, shard: ShardId, id: ObjectId, seq: Seq, at_ms: i64) -> Result<(), StoreFault> {
        self.tombstones.insert((shard, id), Some(TombRow { seq, at_ms }));
        self.dirty_tombstones.insert((shard, id));
        Ok(())
    }

    fn delete_tombstone(&mut self, shard: ShardId, id: ObjectId, _seq: Seq) -> Result<(), StoreFault> {
        self.tombstones.insert((shard, id), None);
        self.dirty_tombstones.insert((shard, id));
        Ok(())
    }
}
