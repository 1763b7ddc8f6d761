//! Model test: random snapshots, deltas, journalled deltas, evictions,
//! reopenings and injected crashes against a simple model of what each shard
//! may hold. After every step each shard loads as exactly a state the model
//! allows (or missing where the model allows it), with a correct digest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hoard_engine::{Epoch, ObjectId, Seq};
use hoard_world_cache::format::recompute_digest;
use hoard_world_cache::{CachedObject, LockPolicy, ShardUpdate, UpdateKind, WorldCache};
use proptest::prelude::*;

use super::faults::FailingStorage;
use super::support::{REGISTRY, key, object};

const SHARDS: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Snapshot {
        shard: u64,
        ids: Vec<u64>,
    },
    Delta {
        shard: u64,
        upsert: Vec<u64>,
        remove: Vec<u64>,
        journal: bool,
    },
    CrashDuringWrite {
        shard: u64,
        ids: Vec<u64>,
        fail_at: u64,
    },
    EvictAll,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let ids = proptest::collection::vec(0u64..30, 0..12);
    prop_oneof![
        2 => (0..SHARDS, ids.clone()).prop_map(|(shard, ids)| Op::Snapshot { shard, ids }),
        4 => (0..SHARDS, ids.clone(), ids.clone(), any::<bool>())
            .prop_map(|(shard, upsert, remove, journal)| Op::Delta { shard, upsert, remove, journal }),
        1 => (0..SHARDS, ids, 0u64..6).prop_map(|(shard, ids, fail_at)| Op::CrashDuringWrite { shard, ids, fail_at }),
        1 => Just(Op::EvictAll),
        1 => Just(Op::Reopen),
    ]
}

/// What a shard may be: its hwm and objects. Several candidates after a crash.
type State = Option<(u64, Vec<CachedObject>)>;

fn snapshot_update(hwm: u64, ids: &[u64]) -> ShardUpdate {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let objects: Vec<CachedObject> = ids.iter().map(|&i| object(i, hwm, i + hwm)).collect();
    ShardUpdate {
        epoch: Epoch(1),
        new_hwm: Seq(hwm),
        digest: recompute_digest(&objects),
        kind: UpdateKind::Snapshot,
        upserts: objects,
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
    let mut model: BTreeMap<u64, Vec<State>> = (0..SHARDS).map(|s| (s, vec![None])).collect();
    let mut next_hwm = 1u64;
    for op in ops {
        match op {
            Op::Snapshot { shard, ids } => {
                let update = snapshot_update(next_hwm, &ids);
                let (s, _) = cache
                    .apply_and_write(&key(shard), REGISTRY, None, update, chrono::Utc::now())
                    .expect("snapshot");
                model.insert(shard, vec![Some((next_hwm, s.objects))]);
            }
            Op::Delta {
                shard,
                upsert,
                remove,
                journal,
            } => {
                let Some(mut copy) = cache.load(&key(shard), REGISTRY) else {
                    continue;
                };
                let mut objects: BTreeMap<u64, CachedObject> =
                    copy.objects.iter().map(|o| (o.id.0, o.clone())).collect();
                let removed: Vec<ObjectId> = remove
                    .iter()
                    .filter(|i| !upsert.contains(i))
                    .map(|&i| ObjectId(i))
                    .collect();
                for id in &removed {
                    objects.remove(&id.0);
                }
                let mut ups: Vec<CachedObject> =
                    upsert.iter().map(|&i| object(i, next_hwm, i * 7 + next_hwm)).collect();
                ups.sort_by_key(|o| o.id);
                ups.dedup_by_key(|o| o.id);
                for o in &ups {
                    objects.insert(o.id.0, o.clone());
                }
                let want: Vec<CachedObject> = objects.into_values().collect();
                let update = ShardUpdate {
                    epoch: Epoch(1),
                    new_hwm: Seq(next_hwm),
                    digest: recompute_digest(&want),
                    kind: UpdateKind::Delta {
                        base: copy.header.hwm,
                        tombstones: removed,
                    },
                    upserts: ups,
                };
                if journal {
                    cache.append_delta(&mut copy, update).expect("append");
                } else {
                    cache
                        .apply_and_write(&key(shard), REGISTRY, Some(&copy), update, chrono::Utc::now())
                        .expect("apply");
                }
                model.insert(shard, vec![Some((next_hwm, want))]);
            }
            Op::CrashDuringWrite { shard, ids, fail_at } => {
                drop(cache);
                let failing = Arc::new(FailingStorage {
                    ops: AtomicU64::new(0),
                    fail_at,
                });
                let faulty = WorldCache::open_with(dir.path(), LockPolicy::Wait, failing).expect("open faulty");
                let update = snapshot_update(next_hwm, &ids);
                let result = faulty.apply_and_write(&key(shard), REGISTRY, None, update, chrono::Utc::now());
                let new = (next_hwm, snapshot_update(next_hwm, &ids).upserts);
                let candidates = model.entry(shard).or_default();
                if result.is_ok() {
                    *candidates = vec![Some(new)];
                } else {
                    candidates.push(Some(new));
                }
                drop(faulty);
                cache = WorldCache::open(dir.path(), LockPolicy::Wait).expect("reopen");
            }
            Op::EvictAll => {
                cache.evict(0, Duration::from_secs(3600)).expect("evict");
                for candidates in model.values_mut() {
                    *candidates = vec![None];
                }
            }
            Op::Reopen => {
                drop(cache);
                cache = WorldCache::open(dir.path(), LockPolicy::Wait).expect("reopen");
            }
        }
        next_hwm += 1;
        for s in 0..SHARDS {
            let loaded = cache.load(&key(s), REGISTRY);
            let actual: State = loaded.as_ref().map(|c| (c.header.hwm.0, c.objects.clone()));
            if let Some(c) = &loaded {
                assert_eq!(
                    c.header.digest,
                    recompute_digest(&c.objects),
                    "shard {s}: header digest"
                );
            }
            let candidates = model.get_mut(&s).expect("model shard");
            assert!(
                candidates.contains(&actual),
                "shard {s}: {actual:?} not among {} allowed states",
                candidates.len()
            );
            *candidates = vec![actual];
        }
    }
    assert!(cache.verify().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn the_cache_always_holds_a_state_the_model_allows(ops in proptest::collection::vec(op(), 1..25)) {
        run(ops);
    }
}
