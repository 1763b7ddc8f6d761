//! Test helper for the cache crash tests: rewrites and journals shards in an
//! endless loop, printing `ok SHARD HWM` after each write or append returns,
//! so a parent can SIGKILL it at random moments and then check that every
//! shard loads as a complete old or new state, or is missing.
//!
//! Usage: `hoard-cache-crash-writer CACHE_ROOT`. Generation n of a shard holds
//! objects 0..40, each at version n with a state holding n, at hwm n; a step
//! either appends the delta n → n+1 to the journal or writes generation n+1
//! whole.

use std::io::Write;
use std::path::PathBuf;

use hoard_engine::state::StateBuilder;
use hoard_engine::{Epoch, ObjectId, RegistryHash, Seq, ServerIdentity, ShardId, ZoneId};
use hoard_world_cache::{CachedObject, LockPolicy, ShardKey, ShardUpdate, UpdateKind, WorldCache};

/// Shards the writer cycles through.
const SHARDS: u64 = 4;
/// Objects per shard.
const OBJECTS: u64 = 40;

/// The key of writer shard `s`.
fn key(s: u64) -> anyhow::Result<ShardKey> {
    Ok(ShardKey::new(
        ServerIdentity([7; 32]),
        "world",
        None,
        ZoneId::new("crash")?,
        ShardId(s),
    )?)
}

fn generation(n: u64, pad: usize) -> Vec<CachedObject> {
    (0..OBJECTS)
        .map(|id| CachedObject {
            id: ObjectId(id),
            version: Seq(n),
            state: StateBuilder::new()
                .component("n", n.to_le_bytes().to_vec())
                .component("pad", vec![0x5a; pad])
                .finish(),
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: hoard-cache-crash-writer CACHE_ROOT"))?;
    let cache = WorldCache::open(&root, LockPolicy::Wait)?;
    let registry = RegistryHash([1; 32]);
    let mut out = std::io::stdout().lock();
    let mut step = 0u64;
    loop {
        for s in 0..SHARDS {
            let key = key(s)?;
            let copy = cache.load(&key, registry);
            let n = copy.as_ref().map_or(0, |c| c.header.hwm.0) + 1;
            let objects = generation(n, ((n * 37 + s) % 300) as usize);
            let digest = hoard_world_cache::format::recompute_digest(&objects);
            match copy {
                Some(mut copy) if !step.is_multiple_of(3) => {
                    let update = ShardUpdate {
                        epoch: Epoch(1),
                        new_hwm: Seq(n),
                        digest,
                        kind: UpdateKind::Delta {
                            base: Seq(n - 1),
                            tombstones: vec![],
                        },
                        upserts: objects,
                    };
                    cache.append_delta(&mut copy, update)?;
                }
                copy => {
                    let update = ShardUpdate {
                        epoch: Epoch(1),
                        new_hwm: Seq(n),
                        digest,
                        kind: UpdateKind::Snapshot,
                        upserts: objects,
                    };
                    cache.apply_and_write(&key, registry, copy.as_ref(), update, chrono::Utc::now())?;
                }
            }
            writeln!(out, "ok {s} {n}")?;
            out.flush()?;
            step += 1;
        }
    }
}
