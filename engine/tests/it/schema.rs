//! Schema evolution against a real redb store: objects written at version 1
//! are migrated on start to version 2 (a field added, a field renamed) and
//! committed with the new record in one transaction; loading then decodes
//! them; a version change without a migration, and a stored component no
//! longer registered, are refused naming the component and the count.

use bevy_ecs::prelude::*;
use hoard_engine::registry::decode_old;
use hoard_engine::schema::{SchemaError, prepare};
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{HoardUrl, ObjectId, PublishRegistry, Published, Publisher, RedbStore, ShardId, ZoneId, load_world};
use serde::{Deserialize, Serialize};

/// Version 1: an owner's name.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct HouseV1 {
    owner: String,
}

/// Version 2: `owner` renamed `builder`, and `floors` added.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct House {
    builder: String,
    floors: u8,
}

fn v1() -> PublishRegistry {
    PublishRegistry::builder().publish::<HouseV1>("house", 1).build()
}

fn v2_with_migration() -> PublishRegistry {
    PublishRegistry::builder()
        .publish::<House>("house", 2)
        .migrate::<House>(1, |bytes| {
            let old: HouseV1 = decode_old(bytes)?;
            Ok(House {
                builder: old.owner,
                floors: 1,
            })
        })
        .build()
}

/// A store with three version-1 houses, its schema recorded.
fn store_at_v1(dir: &std::path::Path) -> RedbStore {
    let store = RedbStore::open_dir(dir).expect("store");
    store
        .create_zone(&ZoneId::new("town").expect("zone"), &[ShardSpec::shared(ShardId(1))])
        .expect("zone");
    let registry = v1();
    assert!(prepare(&store, &registry).expect("record").recorded);
    let mut world = World::new();
    let mut publisher = Publisher::new(registry);
    for (id, owner) in [(1, "ann"), (2, "bob"), (3, "cleo")] {
        world.spawn((
            Published::new(ObjectId(id), ShardId(1)),
            HouseV1 { owner: owner.into() },
        ));
    }
    store.commit(&publisher.gather(&mut world).changes).expect("commit");
    store
}

#[test]
fn stored_objects_are_migrated_once_and_then_load_at_the_new_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at_v1(dir.path());
    let registry = v2_with_migration();
    let report = prepare(&store, &registry).expect("migrate");
    assert_eq!(report.migrated, vec![("house".to_owned(), 1, 2, 3)]);
    assert_eq!(store.schema().expect("schema").get("house"), Some(&2));
    assert!(
        hoard_engine::store::verify(&store).expect("verify").is_empty(),
        "digests follow"
    );
    // A second start has nothing to do.
    assert_eq!(prepare(&store, &registry).expect("again"), Default::default());
    drop(store);
    let store = RedbStore::open_dir(dir.path()).expect("reopen");
    let mut world = World::new();
    let mut publisher = Publisher::new(registry);
    let report = load_world(
        &store,
        &mut publisher,
        &mut world,
        &HoardUrl::service("localhost", 1, "world"),
    )
    .expect("load");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut houses: Vec<House> = world.query::<&House>().iter(&world).cloned().collect();
    houses.sort_by(|a, b| a.builder.cmp(&b.builder));
    assert_eq!(
        houses,
        ["ann", "bob", "cleo"]
            .map(|b| House {
                builder: b.into(),
                floors: 1
            })
            .to_vec()
    );
}

#[test]
fn a_version_change_without_a_migration_is_refused_naming_it_and_nothing_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at_v1(dir.path());
    let before = store.snapshot(ShardId(1)).expect("snapshot");
    let no_migration = PublishRegistry::builder().publish::<House>("house", 2).build();
    let err = prepare(&store, &no_migration).expect_err("refused");
    assert!(
        matches!(&err, SchemaError::NoMigration { component, from: 1, to: 2, objects: 3 } if component == "house"),
        "{err}"
    );
    assert!(
        err.to_string().contains("\"house\"") && err.to_string().contains("3 objects"),
        "{err}"
    );
    assert_eq!(store.snapshot(ShardId(1)).expect("snapshot"), before, "nothing written");
    assert_eq!(store.schema().expect("schema").get("house"), Some(&1));

    #[derive(Component, Serialize, Deserialize)]
    struct Tree;
    let dropped = PublishRegistry::builder().publish::<Tree>("tree", 1).build();
    let err = prepare(&store, &dropped).expect_err("refused");
    assert!(matches!(&err, SchemaError::Unregistered { objects: 3, .. }), "{err}");
}
