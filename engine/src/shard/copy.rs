//! A client's copy of a shard: its header (which shard, which history, how
//! fresh, the digest) and its objects in id order. Held in memory by the
//! client's sync, written to disk by the world cache (`hoard-world-cache`),
//! kept by a relay: the shard model every holder of a copy shares.

use chrono::{DateTime, Utc};

use super::key::ShardKey;
use crate::{Digest, Epoch, ObjectId, ObjectState, RegistryHash, Seq};

/// What a shard file's header says: which shard this is and how fresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    /// The shard's identity (server, service, perspective, zone, shard).
    pub key: ShardKey,
    /// The history the copy belongs to.
    pub epoch: Epoch,
    /// The seq the copy is complete up to.
    pub hwm: Seq,
    /// Digest and count of the objects.
    pub digest: Digest,
    /// The component registry the objects were encoded with.
    pub registry: RegistryHash,
    /// When this copy was written (display and age-based eviction only).
    pub snapshot_time: DateTime<Utc>,
}

/// One cached object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedObject {
    /// Its id.
    pub id: ObjectId,
    /// Its version.
    pub version: Seq,
    /// Its canonical state.
    pub state: ObjectState,
}

/// A whole cached shard: header and objects in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedShard {
    /// The header.
    pub header: ShardHeader,
    /// Objects, strictly ascending by id.
    pub objects: Vec<CachedObject>,
}

/// The digest of a set of cached objects, computed from their bytes.
pub fn recompute_digest(objects: &[CachedObject]) -> Digest {
    let mut digest = Digest::EMPTY;
    for o in objects {
        digest.add(o.id, o.version, &o.state.hash());
    }
    digest
}
