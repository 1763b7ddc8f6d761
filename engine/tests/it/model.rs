//! Model test: random sequences of spawns, mutations, shard moves, component
//! removals and despawns in an ECS world, gathered and committed each tick to
//! a redb store, must leave the store equal to a simple model (the world's
//! published objects by shard), with consistent digests, and must load back
//! into an equal world.

use std::collections::BTreeMap;

use bevy_ecs::prelude::*;
use hoard_engine::store::{ShardSpec, WorldStore, verify};
use hoard_engine::{HoardUrl, ObjectId, Published, Publisher, ShardId, ZoneId, load_world};
use proptest::prelude::*;

use super::support::{Item, Terrain, registry, temp_store};

const SHARDS: u64 = 4;

#[derive(Debug, Clone)]
enum Op {
    Spawn {
        id: u64,
        shard: u64,
        kind: u8,
        item: Option<u32>,
    },
    SetHeight {
        pick: usize,
        height: i16,
    },
    SetItem {
        pick: usize,
        count: u32,
    },
    RemoveItem {
        pick: usize,
    },
    Move {
        pick: usize,
        shard: u64,
    },
    Despawn {
        pick: usize,
    },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..40, 0..SHARDS, any::<u8>(), proptest::option::of(0u32..5))
            .prop_map(|(id, shard, kind, item)| Op::Spawn { id, shard, kind, item }),
        2 => (any::<usize>(), any::<i16>()).prop_map(|(pick, height)| Op::SetHeight { pick, height }),
        1 => (any::<usize>(), 0u32..5).prop_map(|(pick, count)| Op::SetItem { pick, count }),
        1 => any::<usize>().prop_map(|pick| Op::RemoveItem { pick }),
        2 => (any::<usize>(), 0..SHARDS).prop_map(|(pick, shard)| Op::Move { pick, shard }),
        1 => any::<usize>().prop_map(|pick| Op::Despawn { pick }),
        2 => Just(Op::Tick),
    ]
}

/// What the model says one object is.
type ModelObject = (Option<Terrain>, Option<Item>);

/// The published objects of the world, by shard then id.
fn model_of(world: &mut World) -> BTreeMap<ShardId, BTreeMap<ObjectId, ModelObject>> {
    let mut out: BTreeMap<ShardId, BTreeMap<ObjectId, ModelObject>> = BTreeMap::new();
    let mut query = world.query::<(&Published, Option<&Terrain>, Option<&Item>)>();
    for (p, t, i) in query.iter(world) {
        out.entry(p.shard)
            .or_default()
            .insert(p.object, (t.cloned(), i.cloned()));
    }
    out
}

fn stored(store: &dyn WorldStore) -> BTreeMap<ShardId, BTreeMap<ObjectId, ModelObject>> {
    let mut out: BTreeMap<ShardId, BTreeMap<ObjectId, ModelObject>> = BTreeMap::new();
    for shard in 0..SHARDS {
        for object in store.snapshot(ShardId(shard)).expect("snapshot").objects {
            let mut model: ModelObject = (None, None);
            for (name, bytes) in object.state.components().expect("canonical") {
                match name {
                    "terrain" => model.0 = Some(rmp_serde::from_slice(bytes).expect("terrain")),
                    "item" => model.1 = Some(rmp_serde::from_slice(bytes).expect("item")),
                    other => panic!("unexpected component {other}"),
                }
            }
            out.entry(ShardId(shard)).or_default().insert(object.id, model);
        }
    }
    out
}

fn run(ops: Vec<Op>) {
    let (_dir, store) = temp_store();
    let shards: Vec<_> = (0..SHARDS).map(|s| ShardSpec::shared(ShardId(s))).collect();
    store
        .create_zone(&ZoneId::new("z").expect("zone"), &shards)
        .expect("create");
    let mut world = World::new();
    let mut publisher = Publisher::new(registry());
    let mut live: Vec<(Entity, u64)> = Vec::new();

    let tick = |world: &mut World, publisher: &mut Publisher| {
        let gathered = publisher.gather(world);
        assert!(gathered.problems.is_empty(), "{:?}", gathered.problems);
        store.commit(&gathered.changes).expect("commit");
        assert_eq!(stored(&store), model_of(world));
    };

    for op in ops.into_iter().chain([Op::Tick]) {
        let pick = |p: usize| (!live.is_empty()).then(|| p % live.len());
        match op {
            Op::Spawn { id, shard, kind, item } => {
                if live.iter().any(|&(_, l)| l == id) {
                    continue;
                }
                let mut e = world.spawn((
                    Published::new(ObjectId(id), ShardId(shard)),
                    Terrain { kind, height: 0 },
                ));
                if let Some(count) = item {
                    e.insert(Item {
                        name: format!("item{id}"),
                        count,
                    });
                }
                live.push((e.id(), id));
            }
            Op::SetHeight { pick: p, height } => {
                if let Some(i) = pick(p) {
                    world.get_mut::<Terrain>(live[i].0).expect("terrain").height = height;
                }
            }
            Op::SetItem { pick: p, count } => {
                if let Some(i) = pick(p) {
                    world.entity_mut(live[i].0).insert(Item {
                        name: "set".into(),
                        count,
                    });
                }
            }
            Op::RemoveItem { pick: p } => {
                if let Some(i) = pick(p) {
                    world.entity_mut(live[i].0).remove::<Item>();
                }
            }
            Op::Move { pick: p, shard } => {
                if let Some(i) = pick(p) {
                    world.get_mut::<Published>(live[i].0).expect("published").shard = ShardId(shard);
                }
            }
            Op::Despawn { pick: p } => {
                if let Some(i) = pick(p) {
                    world.despawn(live.swap_remove(i).0);
                }
            }
            Op::Tick => tick(&mut world, &mut publisher),
        }
    }
    assert!(verify(&store).expect("verify").is_empty());

    // Reload into a fresh world: equal objects, and nothing to republish.
    let mut reloaded = World::new();
    let mut publisher2 = Publisher::new(registry());
    let report = load_world(
        &store,
        &mut publisher2,
        &mut reloaded,
        &HoardUrl::service("localhost", 1, "world"),
    )
    .expect("load");
    assert!(report.problems.is_empty());
    assert_eq!(model_of(&mut reloaded), model_of(&mut world));
    assert!(
        publisher2.gather(&mut reloaded).changes.is_empty(),
        "a loaded world is not republished"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn ecs_histories_commit_to_a_store_equal_to_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
