//! The authoritative world store: the interface and its implementations.
//!
//! A world is a set of zones, each a set of shards; each shard holds live
//! objects, tombstones, and a head (epoch, seq, digest, horizon). The
//! [`WorldStore`] trait is what the server uses; [`RedbStore`] is the embedded,
//! durable default and [`MemoryStore`] serves unit tests. Both run the same
//! commit and read logic (`logic.rs`) over their own tables, so they cannot
//! drift apart.
//!
//! Commits are atomic across shards and durable when [`WorldStore::commit`]
//! returns: the server publishes a change only after that.

mod error;
mod layer;
mod locked;
mod logic;
mod memory;
// The record encoding of the redb store (the memory store keeps values).
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redb")]
mod quiet_panic;
#[cfg(feature = "redb")]
mod read_view;
#[cfg_attr(not(any(feature = "redb", feature = "postgres")), allow(dead_code))]
mod record;
#[cfg(feature = "redb")]
mod redb_store;
mod request;
#[cfg(feature = "redb")]
pub mod sim_disk;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::changeset::ChangeSet;
use crate::digest::Digest;
use crate::ids::{Epoch, ObjectId, Seq, ShardId, ZoneId};
use crate::state::ObjectState;

pub use error::{CommitError, OpenError, ReadError, StoreFault, WriteError};
pub use layer::StoreLayer;
pub use locked::Locked;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{Lease, LeaseError, LeaseHolder, LeaseKey, PgOptions, PgStore};
#[cfg(feature = "redb")]
pub use redb_store::{BackendFactory, RedbStore, STORE_FORMAT_VERSION};
pub use request::{StoreRead, StoreReply, run_commit};

/// Who may see a shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
// Deliberately exhaustive: every store (a custom one too) must handle each
// case, and a new one must fail its build rather than be ignored.
pub enum ShardScope {
    /// Every perspective that may enter the zone.
    Shared,
    /// Only the named perspective (a player's inventory, a private house).
    Perspective(String),
}

/// A shard to create in a zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// The shard's id, unique in the world.
    pub id: ShardId,
    /// Who may see it.
    pub scope: ShardScope,
}

impl ShardSpec {
    /// A shard every visitor of the zone sees.
    pub fn shared(id: ShardId) -> ShardSpec {
        ShardSpec {
            id,
            scope: ShardScope::Shared,
        }
    }
}

/// The state of a shard at some seq, without its objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardHead {
    /// The shard.
    pub shard: ShardId,
    /// The zone it belongs to.
    pub zone: ZoneId,
    /// Its history's id.
    pub epoch: Epoch,
    /// The seq of its last commit.
    pub seq: Seq,
    /// Digest (and count) of its live objects at `seq`.
    pub digest: Digest,
    /// Every tombstone newer than this seq is still kept.
    pub horizon: Seq,
    /// Who may see it.
    pub scope: ShardScope,
}

/// A live object as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Its id.
    pub id: ObjectId,
    /// The seq of its last change.
    pub version: Seq,
    /// Its canonical state.
    pub state: ObjectState,
}

/// The record that an object left a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The object.
    pub id: ObjectId,
    /// The seq at which it left.
    pub seq: Seq,
}

/// What changed in a shard after some seq.
#[derive(Clone, Debug, PartialEq, Eq)]
// Deliberately exhaustive: every store (a custom one too) must handle each
// case, and a new one must fail its build rather than be ignored.
pub enum ChangesSince {
    /// Every object changed after the seq, and every object that left.
    /// Applying the tombstones, then the upserts, to a copy that was complete
    /// at the seq yields exactly the live set at `head.seq`.
    Changes {
        /// The head the changes lead to.
        head: ShardHead,
        /// Live objects with a version after the seq.
        upserts: Vec<StoredObject>,
        /// Objects that left after the seq and are not live now.
        tombstones: Vec<Tombstone>,
    },
    /// The seq is older than the horizon: some tombstones are gone, so the
    /// caller needs the live manifest instead.
    BehindHorizon {
        /// The current head.
        head: ShardHead,
    },
}

/// A consistent copy of a whole shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// The head the objects belong to.
    pub head: ShardHead,
    /// All live objects, in id order.
    pub objects: Vec<StoredObject>,
}

/// The heads of the shards a commit touched, after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitReceipt {
    /// One head per changed shard, in shard order.
    pub heads: Vec<ShardHead>,
}

/// What a tombstone trim removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Tombstones removed.
    pub removed: u64,
    /// Shards whose horizon moved.
    pub shards: u64,
}

/// The authoritative store of a world.
///
/// Every method is a transaction of its own: reads see one consistent
/// snapshot, writes are atomic and durable when they return.
pub trait WorldStore: Send + Sync {
    /// Creates a zone with new, empty shards, each given a fresh epoch.
    /// Adding shards to an existing zone is allowed; a shard already in any
    /// zone is an error.
    fn create_zone(&self, zone: &ZoneId, shards: &[ShardSpec]) -> Result<(), WriteError>;

    /// All zones, in name order.
    fn zones(&self) -> Result<Vec<ZoneId>, ReadError>;

    /// The shards of a zone, in id order.
    fn zone_shards(&self, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError>;

    /// The shards of a zone that `perspective` may see: the shared ones and
    /// those scoped to it, in id order. The stores hoard ships find them by
    /// an index (a zone of 100,000 players' inventories costs the same as
    /// one of ten); the default reads every shard's head, for a store that
    /// keeps no index.
    fn zone_shards_for(&self, zone: &ZoneId, perspective: &str) -> Result<Vec<ShardId>, ReadError> {
        let mut out = Vec::new();
        for shard in self.zone_shards(zone)? {
            match self.shard_head(shard)?.scope {
                ShardScope::Shared => out.push(shard),
                ShardScope::Perspective(p) if p == perspective => out.push(shard),
                ShardScope::Perspective(_) => {}
            }
        }
        Ok(out)
    }

    /// A shard's head.
    fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError>;

    /// Commits one tick's changes atomically across shards: each changed shard
    /// gets its next seq, which becomes the version of every object upserted
    /// in it; digests and tombstones follow. Durable when it returns.
    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError>;

    /// What changed in `shard` after `since`.
    fn changes_since(&self, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError>;

    /// The live `(id, version)` list of a shard.
    fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError>;

    /// Every live object of a shard.
    fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError>;

    /// Drops tombstones recorded before `older_than`, moving each affected
    /// shard's horizon up to the newest seq dropped.
    fn trim_tombstones(&self, older_than: DateTime<Utc>) -> Result<TrimReport, WriteError>;

    /// Gives a shard a fresh epoch (its history was broken: a restore, a
    /// re-import). Clients holding the old epoch discard their copy.
    fn reset_epoch(&self, shard: ShardId) -> Result<Epoch, WriteError>;

    /// The schema version each published component's stored bytes are at
    /// (empty for a store that has recorded none yet).
    fn schema(&self) -> Result<std::collections::BTreeMap<String, u32>, ReadError>;

    /// Commits `changes` and records `schema` in one atomic, durable
    /// transaction: a migration is either wholly applied and recorded, or
    /// not at all, so stored bytes are never read with the wrong decoder.
    fn commit_with_schema(
        &self,
        changes: &ChangeSet,
        schema: &std::collections::BTreeMap<String, u32>,
    ) -> Result<CommitReceipt, CommitError>;

    /// Tries to bring a store that failed a write back into service (redb
    /// refuses every write after one failed I/O until it is reopened). The
    /// server calls it before retrying a failed commit. Stores that need
    /// nothing keep the default.
    fn recover(&self) -> Result<(), StoreFault> {
        Ok(())
    }

    /// Reserves `count` object ids for new objects, none below `at_least`,
    /// and none any object of the store holds or any earlier reservation
    /// gave: the reservation is durable before it returns, so ids a crashed
    /// server had reserved but not used are skipped, never given twice.
    /// Returns the ids, ascending. The server plugin hands them out to
    /// objects spawned without an id (`NewObject`). Stores that cannot keep
    /// a counter keep the default, which refuses.
    fn reserve_object_ids(&self, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, WriteError> {
        let _ = (count, at_least);
        Err(WriteError::Fault(StoreFault::Backend {
            context: "reserving object ids".into(),
            source: "this store keeps no object id counter".into(),
        }))
    }

    /// Reads every record of every table once, so damage anywhere in the
    /// store is found at start-up ([`verify`] calls it) rather than by a
    /// player's request while serving. Returns the records read. Stores
    /// whose backend checks itself keep the default (nothing to read).
    fn scan(&self) -> Result<u64, ReadError> {
        Ok(0)
    }
}

/// The ids a reservation of `count` from the counter at `next` gives, none
/// below `at_least`; refused if they would pass 2^63 (PostgreSQL keeps the
/// counter as a signed 64-bit integer, and every store agrees).
#[cfg_attr(not(any(feature = "redb", feature = "postgres")), allow(dead_code))]
pub(crate) fn id_range(next: u64, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, WriteError> {
    let start = next.max(at_least);
    match start.checked_add(count) {
        Some(end) if end <= 1 << 63 => Ok(start..end),
        _ => Err(WriteError::Fault(StoreFault::Corrupt(format!(
            "no {count} object ids are left past {start} (ids stay below 2^63)"
        )))),
    }
}

/// What [`verify`] found in one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardDamage {
    /// The shard.
    pub shard: ShardId,
    /// What is wrong.
    pub problem: String,
}

/// Checks the whole store: every record of every table reads
/// ([`WorldStore::scan`]), and in every shard of every zone each object's
/// state is canonical, no version is newer than the head, and the stored
/// digest equals the digest recomputed from the stored objects. Returns the damage found (empty when
/// the store is sound).
pub fn verify(store: &dyn WorldStore) -> Result<Vec<ShardDamage>, ReadError> {
    // Every table, not only the shards' objects: the indexes that changes
    // and tombstones are read from while serving are checked here too.
    let records = store.scan()?;
    tracing::debug!(records, "every table of the store read");
    let mut shards = Vec::new();
    for zone in store.zones()? {
        shards.extend(store.zone_shards(&zone)?);
    }
    // Shards are independent: check them on every core (a server runs this
    // on each start, before it serves anyone).
    use rayon::prelude::*;
    let found: Vec<Vec<ShardDamage>> = shards
        .par_iter()
        .map(|&shard| verify_shard(store, shard))
        .collect::<Result<_, _>>()?;
    Ok(found.into_iter().flatten().collect())
}

fn verify_shard(store: &dyn WorldStore, shard: ShardId) -> Result<Vec<ShardDamage>, ReadError> {
    let mut damage = Vec::new();
    let snapshot = store.snapshot(shard)?;
    let mut digest = Digest::EMPTY;
    for object in &snapshot.objects {
        if let Err(e) = ObjectState::validate(object.state.as_bytes()) {
            damage.push(ShardDamage {
                shard,
                problem: format!("object {}: {e}", object.id),
            });
        }
        if object.version > snapshot.head.seq {
            damage.push(ShardDamage {
                shard,
                problem: format!(
                    "object {} has version {} past the head {}",
                    object.id, object.version, snapshot.head.seq
                ),
            });
        }
        digest.add(object.id, object.version, &object.state.hash());
    }
    if digest != snapshot.head.digest {
        damage.push(ShardDamage {
            shard,
            problem: format!("stored digest {} but objects give {}", snapshot.head.digest, digest),
        });
    }
    // The indexes changes are read from (versions, tombstones) agree with
    // the objects: every live object changed since the horizon is listed at
    // its version, and no tombstone names a live object.
    let horizon = snapshot.head.horizon;
    if let ChangesSince::Changes {
        upserts, tombstones, ..
    } = store.changes_since(shard, horizon)?
    {
        let indexed: std::collections::BTreeSet<(ObjectId, Seq)> = upserts.iter().map(|o| (o.id, o.version)).collect();
        let live: std::collections::BTreeSet<(ObjectId, Seq)> = snapshot
            .objects
            .iter()
            .filter(|o| o.version > horizon)
            .map(|o| (o.id, o.version))
            .collect();
        if indexed != live {
            damage.push(ShardDamage {
                shard,
                problem: format!(
                    "the version index lists {} objects changed since seq {}, the shard holds {}",
                    indexed.len(),
                    horizon.0,
                    live.len()
                ),
            });
        }
        let ids: std::collections::BTreeSet<ObjectId> = snapshot.objects.iter().map(|o| o.id).collect();
        if let Some(t) = tombstones.iter().find(|t| ids.contains(&t.id)) {
            damage.push(ShardDamage {
                shard,
                problem: format!("a tombstone at seq {} names object {}, which is live", t.seq.0, t.id),
            });
        }
    }
    Ok(damage)
}

/// Entry points for the fuzz targets in `fuzz/`: the store's record decoders.
#[doc(hidden)]
pub mod fuzzing {
    use crate::ids::{ObjectId, ShardId};

    /// Runs every record decoder on `data`, discarding the results.
    pub fn decode_records(data: &[u8]) {
        let _ = super::record::ShardRecord::decode(ShardId(1), data);
        let _ = super::record::split_object(ShardId(1), ObjectId(1), data);
        #[cfg(feature = "redb")]
        if let Ok(zone) = crate::ids::ZoneId::new("fuzz") {
            let _ = super::redb_store::decode_zone(&zone, data);
        }
    }
}
