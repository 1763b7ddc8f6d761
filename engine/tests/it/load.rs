//! Loading a stored world into an ECS world, including objects whose stored
//! bytes no longer decode with the registered schema.

use bevy_ecs::prelude::*;
use hoard_engine::state::StateBuilder;
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{ChangeSet, HoardUrl, ObjectId, Published, Publisher, ShardId, ZoneId, load_world};

use super::support::{Item, Terrain, registry, temp_store};

#[test]
fn undecodable_objects_are_reported_by_url_and_the_rest_loads() {
    let (_dir, store) = temp_store();
    let zone = ZoneId::new("meadow").expect("zone");
    store
        .create_zone(&zone, &[ShardSpec::shared(ShardId(1)), ShardSpec::shared(ShardId(2))])
        .expect("create");

    let mut world = World::new();
    let mut publisher = Publisher::new(registry());
    for i in 0..10u64 {
        world.spawn((
            Published::new(ObjectId(i), ShardId(1 + i % 2)),
            Terrain {
                kind: 1,
                height: i as i16,
            },
            Item {
                name: "stone".into(),
                count: 1,
            },
        ));
    }
    store.commit(&publisher.gather(&mut world).changes).expect("commit");

    // Object 3 gets an "item" written by an older schema (a bare number),
    // object 4 a component nobody registers any more.
    let mut tick = ChangeSet::new();
    tick.upsert(
        ShardId(2),
        ObjectId(3),
        StateBuilder::new().component("item", vec![0x07]).finish(),
    );
    tick.upsert(
        ShardId(1),
        ObjectId(4),
        StateBuilder::new().component("weather", vec![0xc0]).finish(),
    );
    store.commit(&tick).expect("commit");

    let mut loaded = World::new();
    let mut publisher = Publisher::new(registry());
    let service = HoardUrl::service("example.org", 7878, "world");
    let report = load_world(&store, &mut publisher, &mut loaded, &service).expect("load");
    assert_eq!(report.shards, 2);
    assert_eq!(report.objects, 8);
    let mut urls: Vec<String> = report.problems.iter().map(|p| p.url.to_string()).collect();
    urls.sort();
    assert_eq!(
        urls,
        vec![
            "hoard://example.org:7878/world/meadow/1/4",
            "hoard://example.org:7878/world/meadow/2/3"
        ]
    );
    let messages: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        messages.iter().any(|m| m.contains("\"weather\" is not registered")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("\"item\" (schema v1) does not decode")),
        "{messages:?}"
    );

    let mut heights: Vec<i16> = loaded.query::<&Terrain>().iter(&loaded).map(|t| t.height).collect();
    heights.sort_unstable();
    assert_eq!(heights, vec![0, 1, 2, 5, 6, 7, 8, 9]);
}
