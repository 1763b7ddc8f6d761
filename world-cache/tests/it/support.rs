//! Shared fixtures: keys, objects, and writing a shard through the public API.

use chrono::{TimeZone, Utc};
use hoard_engine::state::StateBuilder;
use hoard_engine::{Epoch, ObjectId, RegistryHash, Seq, ServerIdentity, ShardId, ZoneId};
use hoard_world_cache::format::recompute_digest;
use hoard_world_cache::{CachedObject, CachedShard, ShardHeader, ShardKey};

pub(crate) const REGISTRY: RegistryHash = RegistryHash([1; 32]);

pub(crate) fn key(shard: u64) -> ShardKey {
    ShardKey::new(
        ServerIdentity([7; 32]),
        "world",
        None,
        ZoneId::new("meadow").expect("zone"),
        ShardId(shard),
    )
    .expect("key")
}

pub(crate) fn object(id: u64, version: u64, value: u64) -> CachedObject {
    CachedObject {
        id: ObjectId(id),
        version: Seq(version),
        state: StateBuilder::new()
            .component("v", value.to_le_bytes().to_vec())
            .finish(),
    }
}

/// A shard holding `objects` objects at `hwm`, with a fixed snapshot time.
pub(crate) fn shard(key: ShardKey, hwm: u64, objects: u64) -> CachedShard {
    let objects: Vec<CachedObject> = (0..objects).map(|i| object(i, hwm, i * hwm)).collect();
    CachedShard {
        header: ShardHeader {
            key,
            epoch: Epoch(0x1234),
            hwm: Seq(hwm),
            digest: recompute_digest(&objects),
            registry: REGISTRY,
            snapshot_time: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("time"),
        },
        objects,
    }
}
