//! [`RelayWorld`]: what a relay holds ([`RelayStore`]) as a server's
//! sessions read a world store — its reads, and every write refused (a
//! relay's world is written by its origin only) — so the relay answers
//! entries with the same machinery as an origin. Memory only: no I/O.

use std::collections::BTreeMap;

use hoard_engine::store::{
    ChangesSince, CommitError, CommitReceipt, ReadError, ShardHead, ShardSnapshot, ShardSpec, StoreFault, TrimReport,
    WorldStore, WriteError,
};
use hoard_engine::{ChangeSet, Epoch, ObjectId, Seq, ShardId, ZoneId};

use super::RelayStore;
use crate::proof::ProofSource;
use crate::wire::HeadProof;

/// What the relay holds, as the server machinery reads a world store:
/// [`RelayStore`]'s reads, and every write refused (a relay's world is
/// written by its origin only).
#[derive(Debug, Default)]
pub struct RelayWorld(RelayStore);

impl std::ops::Deref for RelayWorld {
    type Target = RelayStore;
    fn deref(&self) -> &RelayStore {
        &self.0
    }
}

impl std::ops::DerefMut for RelayWorld {
    fn deref_mut(&mut self) -> &mut RelayStore {
        &mut self.0
    }
}

fn read_only() -> StoreFault {
    StoreFault::Corrupt("a relay's world is written by its origin only".into())
}

impl WorldStore for RelayWorld {
    fn create_zone(&self, _: &ZoneId, _: &[ShardSpec]) -> Result<(), WriteError> {
        Err(read_only().into())
    }
    fn zones(&self) -> Result<Vec<ZoneId>, ReadError> {
        Ok(self.0.zones())
    }
    fn zone_shards(&self, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
        self.0.zone_shards(zone)
    }
    fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError> {
        self.0.shard_head(shard)
    }
    fn commit(&self, _: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        Err(read_only().into())
    }
    fn changes_since(&self, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
        self.0.changes_since(shard, since)
    }
    fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
        self.0.manifest(shard)
    }
    fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
        self.0.snapshot(shard)
    }
    fn trim_tombstones(&self, _: chrono::DateTime<chrono::Utc>) -> Result<TrimReport, WriteError> {
        Ok(TrimReport::default())
    }
    fn reset_epoch(&self, _: ShardId) -> Result<Epoch, WriteError> {
        Err(read_only().into())
    }
    fn schema(&self) -> Result<BTreeMap<String, u32>, ReadError> {
        Ok(BTreeMap::new())
    }
    fn commit_with_schema(&self, _: &ChangeSet, _: &BTreeMap<String, u32>) -> Result<CommitReceipt, CommitError> {
        Err(read_only().into())
    }
}

impl ProofSource for RelayWorld {
    fn prove(&self, snap: &ShardSnapshot) -> Result<HeadProof, String> {
        self.0.prove(snap)
    }
    fn held(&self, shard: ShardId, seq: Seq) -> Option<HeadProof> {
        self.0.held(shard, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relays_world_reads_what_it_holds_and_refuses_every_write() {
        let world = RelayWorld::default();
        assert_eq!(world.zones().expect("zones"), Vec::<ZoneId>::new());
        let zone = ZoneId::new("meadow").expect("zone");
        assert!(world.create_zone(&zone, &[]).is_err());
        assert!(world.commit(&ChangeSet::default()).is_err());
        assert!(world.reset_epoch(ShardId(1)).is_err());
        let refused = world.commit(&ChangeSet::default()).expect_err("read-only").to_string();
        assert!(refused.contains("origin only"), "{refused}");
    }
}
