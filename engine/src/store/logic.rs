//! The store's logic, written once over a small table interface that each
//! backend implements: how a commit assigns seqs and keeps digests and
//! tombstones, and how "changes since" and snapshots are read.
//!
//! Tables a backend keeps (all keyed so range scans are per shard):
//! - zones: zone → shard ids;
//! - shards: shard → [`ShardRecord`];
//! - objects: (shard, object) → version ‖ state;
//! - versions: (shard, version, object), an index of live objects by version;
//! - tombstones: (shard, object) → seq, at most one per object per shard;
//! - tombstones by seq: (shard, seq, object) → commit time (ms since the Unix epoch).
//!
//! Invariants kept by every commit: a shard's digest is the digest of its
//! objects table; every live object has exactly one versions entry; no object
//! is both live and tombstoned in one shard; every tombstone seq is greater
//! than the shard's horizon.

use chrono::{DateTime, Utc};

use super::error::{CommitError, ReadError, StoreFault, WriteError};
use super::record::ShardRecord;
use super::{ChangesSince, CommitReceipt, ShardHead, ShardScope, ShardSnapshot, ShardSpec, StoredObject, Tombstone};
use crate::changeset::{Change, ChangeSet};
use crate::digest::StateHash;
use crate::ids::{ObjectId, Seq, ShardId, ZoneId};

/// Read access to a backend's tables within one transaction.
pub(crate) trait Tables {
    fn zones(&self) -> Result<Vec<ZoneId>, StoreFault>;
    /// Every shard of the zone, in id order (`None`: no such zone).
    fn zone_shards(&self, zone: &ZoneId) -> Result<Option<Vec<ShardId>>, StoreFault>;
    /// The zone's shards of one scope, in id order, found by an index (not
    /// a scan of the zone).
    fn scoped_zone_shards(&self, zone: &ZoneId, scope: &ShardScope) -> Result<Vec<ShardId>, StoreFault>;
    /// Whether the zone exists.
    fn zone_exists(&self, zone: &ZoneId) -> Result<bool, StoreFault>;
    fn shard(&self, shard: ShardId) -> Result<Option<ShardRecord>, StoreFault>;
    /// Live objects with a version after `after`, in version order.
    fn objects_since(&self, shard: ShardId, after: Seq) -> Result<Vec<StoredObject>, StoreFault>;
    /// Every live object, in id order.
    fn objects(&self, shard: ShardId) -> Result<Vec<StoredObject>, StoreFault>;
    /// Every live `(id, version)`, in id order.
    fn manifest(&self, shard: ShardId) -> Result<Vec<(ObjectId, Seq)>, StoreFault>;
    fn tombstone(&self, shard: ShardId, id: ObjectId) -> Result<Option<Seq>, StoreFault>;
    /// Tombstones with a seq after `after`, in seq order.
    fn tombstones_since(&self, shard: ShardId, after: Seq) -> Result<Vec<Tombstone>, StoreFault>;
    /// Tombstones of every shard with their commit time (ms), in (shard, seq) order.
    fn all_tombstones(&self) -> Result<Vec<(ShardId, Tombstone, i64)>, StoreFault>;
}

/// Write access to a backend's tables within one transaction.
pub(crate) trait TablesMut: Tables {
    /// Adds a shard to a zone (creating the zone): one row, never a
    /// rewrite of the zone's list.
    fn add_zone_shard(&mut self, zone: &ZoneId, scope: &ShardScope, shard: ShardId) -> Result<(), StoreFault>;
    /// Creates a zone without shards.
    fn add_zone_marker(&mut self, zone: &ZoneId) -> Result<(), StoreFault>;
    fn put_shard(&mut self, shard: ShardId, record: &ShardRecord) -> Result<(), StoreFault>;
    /// Writes an object at `version`, moving its versions entry; returns
    /// the version and state hash of the live object it replaced, if any
    /// (read in the same step as the write: one lookup, not two).
    fn put_object(
        &mut self,
        shard: ShardId,
        id: ObjectId,
        version: Seq,
        state: &[u8],
    ) -> Result<Option<(Seq, StateHash)>, StoreFault>;
    /// Removes a live object and its versions entry; returns its version
    /// and state hash (`None`: it was not live).
    fn delete_object(&mut self, shard: ShardId, id: ObjectId) -> Result<Option<(Seq, StateHash)>, StoreFault>;
    fn put_tombstone(&mut self, shard: ShardId, id: ObjectId, seq: Seq, at_ms: i64) -> Result<(), StoreFault>;
    fn delete_tombstone(&mut self, shard: ShardId, id: ObjectId, seq: Seq) -> Result<(), StoreFault>;
}

pub(crate) fn create_zone<T: TablesMut>(t: &mut T, zone: &ZoneId, specs: &[ShardSpec]) -> Result<(), WriteError> {
    for spec in specs {
        if let Some(existing) = t.shard(spec.id)? {
            return Err(WriteError::ShardExists {
                shard: spec.id,
                zone: existing.zone,
            });
        }
        t.put_shard(spec.id, &ShardRecord::new(zone.clone(), spec.scope.clone()))?;
        t.add_zone_shard(zone, &spec.scope, spec.id)?;
    }
    if specs.is_empty() && t.zone_shards(zone)?.is_none() {
        // A zone with no shards yet still exists.
        t.add_zone_marker(zone)?;
    }
    Ok(())
}

pub(crate) fn commit<T: TablesMut>(
    t: &mut T,
    changes: &ChangeSet,
    now: DateTime<Utc>,
) -> Result<CommitReceipt, CommitError> {
    let now_ms = now.timestamp_millis();
    let mut receipt = CommitReceipt::default();
    for (shard, shard_changes) in changes.shards() {
        if shard_changes.is_empty() {
            continue;
        }
        let mut record = t.shard(shard)?.ok_or(CommitError::UnknownShard(shard))?;
        let seq = record.seq.next();
        for (id, change) in shard_changes.iter() {
            match change {
                Change::Upsert(state) => {
                    let old = t.put_object(shard, id, seq, state.as_bytes())?;
                    match old {
                        Some((version, hash)) => record.digest.remove(id, version, &hash),
                        // A live object has no tombstone in its shard (a
                        // logic invariant), so only one that was not live
                        // needs the lookup.
                        None => {
                            if let Some(ts) = t.tombstone(shard, id)? {
                                t.delete_tombstone(shard, id, ts)?;
                            }
                        }
                    }
                    record.digest.add(id, seq, &state.hash());
                }
                Change::Remove => {
                    // Removing an object that is not live leaves no trace:
                    // there is nothing a client could hold to be told about.
                    if let Some((version, hash)) = t.delete_object(shard, id)? {
                        record.digest.remove(id, version, &hash);
                        t.put_tombstone(shard, id, seq, now_ms)?;
                    }
                }
            }
        }
        record.seq = seq;
        t.put_shard(shard, &record)?;
        receipt.heads.push(record.head(shard));
    }
    Ok(receipt)
}

pub(crate) fn head<T: Tables>(t: &T, shard: ShardId) -> Result<ShardHead, ReadError> {
    Ok(t.shard(shard)?.ok_or(ReadError::UnknownShard(shard))?.head(shard))
}

pub(crate) fn zone_shards<T: Tables>(t: &T, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
    t.zone_shards(zone)?.ok_or_else(|| ReadError::UnknownZone(zone.clone()))
}

/// The zone's shared shards and those of `perspective`, in id order.
pub(crate) fn zone_shards_for<T: Tables>(t: &T, zone: &ZoneId, perspective: &str) -> Result<Vec<ShardId>, ReadError> {
    if !t.zone_exists(zone)? {
        return Err(ReadError::UnknownZone(zone.clone()));
    }
    let mut out = t.scoped_zone_shards(zone, &ShardScope::Shared)?;
    out.extend(t.scoped_zone_shards(zone, &ShardScope::Perspective(perspective.to_owned()))?);
    out.sort_unstable();
    Ok(out)
}

pub(crate) fn changes_since<T: Tables>(t: &T, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
    let head = head(t, shard)?;
    if since > head.seq {
        return Err(ReadError::FutureSeq {
            shard,
            asked: since,
            head: head.seq,
        });
    }
    if since < head.horizon {
        return Ok(ChangesSince::BehindHorizon { head });
    }
    let upserts = t.objects_since(shard, since)?;
    let tombstones = t.tombstones_since(shard, since)?;
    Ok(ChangesSince::Changes {
        head,
        upserts,
        tombstones,
    })
}

pub(crate) fn snapshot<T: Tables>(t: &T, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
    let head = head(t, shard)?;
    let objects = t.objects(shard)?;
    Ok(ShardSnapshot { head, objects })
}

pub(crate) fn manifest<T: Tables>(t: &T, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
    let head = head(t, shard)?;
    Ok((head, t.manifest(shard)?))
}

/// Drops tombstones older than the cutoff, per shard in seq order, stopping
/// at the first younger one so the horizon stays a single seq below which
/// nothing is known and above which everything is.
pub(crate) fn trim_tombstones<T: TablesMut>(
    t: &mut T,
    older_than: DateTime<Utc>,
) -> Result<super::TrimReport, WriteError> {
    let cutoff = older_than.timestamp_millis();
    let mut report = super::TrimReport::default();
    let mut current: Option<(ShardId, Seq, bool)> = None;
    let mut new_horizons = Vec::new();
    for (shard, tomb, at) in t.all_tombstones()? {
        let (cur_shard, horizon, blocked) = current.get_or_insert((shard, Seq::ZERO, false));
        if *cur_shard != shard {
            if *horizon > Seq::ZERO {
                new_horizons.push((*cur_shard, *horizon));
            }
            *cur_shard = shard;
            *horizon = Seq::ZERO;
            *blocked = false;
        }
        if *blocked || at >= cutoff {
            *blocked = true;
            continue;
        }
        t.delete_tombstone(shard, tomb.id, tomb.seq)?;
        *horizon = tomb.seq;
        report.removed += 1;
    }
    if let Some((shard, horizon, _)) = current
        && horizon > Seq::ZERO
    {
        new_horizons.push((shard, horizon));
    }
    for (shard, horizon) in new_horizons {
        let mut record = t.shard(shard)?.ok_or(WriteError::UnknownShard(shard))?;
        if horizon > record.horizon {
            record.horizon = horizon;
            t.put_shard(shard, &record)?;
            report.shards += 1;
        }
    }
    Ok(report)
}

pub(crate) fn reset_epoch<T: TablesMut>(t: &mut T, shard: ShardId) -> Result<crate::ids::Epoch, WriteError> {
    let mut record = t.shard(shard)?.ok_or(WriteError::UnknownShard(shard))?;
    record.epoch = crate::ids::Epoch::random();
    t.put_shard(shard, &record)?;
    Ok(record.epoch)
}
