//! Store reads as values: [`StoreRead`] names one read, [`StoreRead::run`]
//! performs it against a [`WorldStore`], and [`StoreReply`] carries the
//! result back. The protocol's state machines never call the store; they
//! ask for a read with one of these and take the reply as an input, so a
//! driver decides where and when the store is touched (a blocking thread
//! for PostgreSQL, inline for an in-memory store, later for a simulated
//! slow one).

use super::{ChangesSince, CommitError, CommitReceipt, ReadError, ShardHead, ShardSnapshot, StoreFault, WorldStore};
use crate::changeset::ChangeSet;
use crate::ids::{Seq, ShardId, ZoneId};

/// Makes `changes` durable as every driver of the protocol's tick core runs
/// its commit jobs: the store brought back first when `recover_first` (the
/// previous attempt failed; a failure to reopen is logged, and the commit
/// then says what is wrong), then one durable commit.
pub fn run_commit(
    store: &dyn WorldStore,
    changes: &ChangeSet,
    recover_first: bool,
) -> Result<CommitReceipt, CommitError> {
    if recover_first && let Err(e) = store.recover() {
        tracing::warn!(error = %e, "reopening the world store failed");
    }
    store.commit(changes)
}

/// One read of the world store, as a protocol state machine asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreRead {
    /// Every zone ([`WorldStore::zones`]).
    Zones,
    /// The shards of `zone` that `perspective` may read
    /// ([`WorldStore::zone_shards_for`]).
    ZoneShardsFor {
        /// The zone.
        zone: ZoneId,
        /// Who reads.
        perspective: String,
    },
    /// A shard's head ([`WorldStore::shard_head`]).
    Head(ShardId),
    /// A shard's changes after `since` ([`WorldStore::changes_since`]).
    ChangesSince {
        /// The shard.
        shard: ShardId,
        /// The seq the reader is complete up to.
        since: Seq,
    },
    /// A shard's live objects with their head, in one read
    /// ([`WorldStore::snapshot`]).
    Snapshot(ShardId),
}

/// The result of one [`StoreRead`], of the matching variant.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreReply {
    /// For [`StoreRead::Zones`].
    Zones(Result<Vec<ZoneId>, ReadError>),
    /// For [`StoreRead::ZoneShardsFor`].
    Shards(Result<Vec<ShardId>, ReadError>),
    /// For [`StoreRead::Head`].
    Head(Result<ShardHead, ReadError>),
    /// For [`StoreRead::ChangesSince`].
    Changes(Result<ChangesSince, ReadError>),
    /// For [`StoreRead::Snapshot`].
    Snapshot(Result<ShardSnapshot, ReadError>),
}

impl StoreRead {
    /// Performs the read against `store` (blocking for as long as the store
    /// takes: a driver on an async runtime runs it off its workers).
    pub fn run(&self, store: &dyn WorldStore) -> StoreReply {
        match self {
            StoreRead::Zones => StoreReply::Zones(store.zones()),
            StoreRead::ZoneShardsFor { zone, perspective } => {
                StoreReply::Shards(store.zone_shards_for(zone, perspective))
            }
            StoreRead::Head(shard) => StoreReply::Head(store.shard_head(*shard)),
            StoreRead::ChangesSince { shard, since } => StoreReply::Changes(store.changes_since(*shard, *since)),
            StoreRead::Snapshot(shard) => StoreReply::Snapshot(store.snapshot(*shard)),
        }
    }

    /// The reply a failed read gives: `error` in the variant matching this
    /// read (a driver whose store could not be reached at all says so this
    /// way, and a simulated failing store too).
    pub fn failed(&self, error: ReadError) -> StoreReply {
        match self {
            StoreRead::Zones => StoreReply::Zones(Err(error)),
            StoreRead::ZoneShardsFor { .. } => StoreReply::Shards(Err(error)),
            StoreRead::Head(_) => StoreReply::Head(Err(error)),
            StoreRead::ChangesSince { .. } => StoreReply::Changes(Err(error)),
            StoreRead::Snapshot(_) => StoreReply::Snapshot(Err(error)),
        }
    }
}

/// A reply of another kind than the read asked for: the driver's mistake,
/// reported as a store fault so the read fails cleanly.
fn mismatched(wanted: &str, reply: &StoreReply) -> ReadError {
    ReadError::Fault(StoreFault::Corrupt(format!(
        "a {wanted} read was answered with {}",
        reply.kind()
    )))
}

impl StoreReply {
    fn kind(&self) -> &'static str {
        match self {
            StoreReply::Zones(_) => "zones",
            StoreReply::Shards(_) => "zone shards",
            StoreReply::Head(_) => "a head",
            StoreReply::Changes(_) => "changes",
            StoreReply::Snapshot(_) => "a snapshot",
        }
    }

    /// The zones, if this answers [`StoreRead::Zones`].
    pub fn into_zones(self) -> Result<Vec<ZoneId>, ReadError> {
        match self {
            StoreReply::Zones(r) => r,
            other => Err(mismatched("zones", &other)),
        }
    }

    /// The shards, if this answers [`StoreRead::ZoneShardsFor`].
    pub fn into_shards(self) -> Result<Vec<ShardId>, ReadError> {
        match self {
            StoreReply::Shards(r) => r,
            other => Err(mismatched("zone shards", &other)),
        }
    }

    /// The head, if this answers [`StoreRead::Head`].
    pub fn into_head(self) -> Result<ShardHead, ReadError> {
        match self {
            StoreReply::Head(r) => r,
            other => Err(mismatched("head", &other)),
        }
    }

    /// The changes, if this answers [`StoreRead::ChangesSince`].
    pub fn into_changes(self) -> Result<ChangesSince, ReadError> {
        match self {
            StoreReply::Changes(r) => r,
            other => Err(mismatched("changes", &other)),
        }
    }

    /// The snapshot, if this answers [`StoreRead::Snapshot`].
    pub fn into_snapshot(self) -> Result<ShardSnapshot, ReadError> {
        match self {
            StoreReply::Snapshot(r) => r,
            other => Err(mismatched("snapshot", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, ShardSpec};

    #[test]
    fn a_read_runs_against_the_store_and_a_reply_of_another_kind_is_an_error() {
        let store = MemoryStore::new();
        let zone = ZoneId::new("meadow").expect("zone");
        store
            .create_zone(&zone, &[ShardSpec::shared(ShardId(1))])
            .expect("zone");
        let zones = StoreRead::Zones.run(&store).into_zones().expect("zones");
        assert_eq!(zones, vec![zone.clone()]);
        let head = StoreRead::Head(ShardId(1)).run(&store).into_head().expect("head");
        assert_eq!(head.zone, zone);
        assert!(matches!(
            StoreRead::Head(ShardId(9)).run(&store).into_head(),
            Err(ReadError::UnknownShard(ShardId(9)))
        ));
        let wrong = StoreRead::Zones.run(&store).into_snapshot();
        assert!(
            matches!(wrong, Err(ReadError::Fault(StoreFault::Corrupt(_)))),
            "{wrong:?}"
        );
        let failed = StoreRead::Snapshot(ShardId(1)).failed(ReadError::UnknownShard(ShardId(1)));
        assert!(matches!(failed.into_snapshot(), Err(ReadError::UnknownShard(_))));
    }
}
