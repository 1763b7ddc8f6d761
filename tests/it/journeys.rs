//! The journeys a game relies on: a cold entry, a warm re-entry from the
//! cache, a live change seen by a second client, a refused intent, and a
//! client dropped without closing.

use hoard::prelude::*;

use super::apps::{AddStones, Crate, entered, meadow, ready, run_until, server, stones_of};

#[test]
fn cold_entry_then_a_warm_reentry_from_the_cache() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut server = server(data.path());
    let mut first = entered(&mut server, cache.path(), "ann");
    let cold = ready(first.world()).expect("ready");
    assert_eq!(
        (cold.objects, cold.shards_snapshot),
        (40, 4),
        "cold: every shard fetched whole"
    );
    let crates = first.world_mut().query::<&Crate>().iter(first.world()).count();
    assert_eq!(crates, 40, "the objects are entities");
    drop(first); // without close: the cache is released

    let again = entered(&mut server, cache.path(), "ann");
    let warm = ready(again.world()).expect("ready");
    assert_eq!(
        (warm.objects, warm.shards_fresh),
        (40, 4),
        "warm: every shard fresh from the cache"
    );
    // The cold answer comes compressed (these 40 crates pack into under
    // 300 bytes); the warm one is each shard's few confirming bytes.
    assert!(
        warm.bytes_rx < cold.bytes_rx / 2,
        "warm {} bytes vs cold {}",
        warm.bytes_rx,
        cold.bytes_rx
    );
}

#[test]
fn a_change_one_player_makes_is_seen_by_another() {
    let data = tempfile::tempdir().expect("tempdir");
    let (ann_cache, bob_cache) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let mut server = server(data.path());
    let (mut ann, mut bob) = super::apps::both_entered(&mut server, ann_cache.path(), bob_cache.path());
    // Sent by type: the registry knows its name.
    ann.world()
        .resource::<Hoard>()
        .send(&AddStones { object: 7, stones: 3 })
        .expect("queued");
    // Each client's App takes in what arrived at its own frames: both see it.
    run_until(&mut server, &mut [&mut bob, &mut ann], |w| stones_of(w, 7) == Some(3));
    run_until(&mut server, &mut [&mut ann, &mut bob], |w| stones_of(w, 7) == Some(3));
}

#[test]
fn an_intent_the_server_does_not_know_is_rejected_by_seq() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut server = server(data.path());
    let mut ann = entered(&mut server, cache.path(), "ann");
    let seq = ann
        .world()
        .resource::<Hoard>()
        .send_intent("teleport", &AddStones { object: 1, stones: 1 })
        .expect("queued");
    run_until(&mut server, &mut [&mut ann], |w| {
        w.resource::<super::apps::Seen>()
            .events
            .iter()
            .any(|e| matches!(e, HoardEvent::Client(ClientEvent::IntentRejected { seq: s, .. }) if *s == seq))
    });
    assert_eq!(stones_of(ann.world_mut(), 1), Some(0), "nothing applied");
}

/// How an older build stored a crate.
#[derive(bevy_ecs::prelude::Component, serde::Serialize, serde::Deserialize)]
struct CrateV1 {
    pebbles: u32,
}

#[test]
fn a_world_stored_by_an_older_schema_is_migrated_and_served() {
    use bevy_ecs::prelude::*;
    use hoard::engine::registry::decode_old;
    use hoard::engine::schema::prepare;

    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    {
        // The older build: crates of pebbles, at schema version 1.
        let store = RedbStore::open_dir(data.path()).expect("store");
        let shards: Vec<ShardSpec> = (0..4).map(|s| ShardSpec::shared(ShardId(s))).collect();
        store.create_zone(&super::apps::meadow(), &shards).expect("zone");
        let v1 = PublishRegistry::builder().publish::<CrateV1>("crate", 1).build();
        prepare(&store, &v1).expect("record");
        let mut world = World::new();
        let mut publisher = Publisher::new(v1);
        for i in 0..40u64 {
            world.spawn((Published::new(ObjectId(i), ShardId(i % 4)), CrateV1 { pebbles: 9 }));
        }
        store.commit(&publisher.gather(&mut world).changes).expect("commit");
    }
    // This build: `Crate { stones }` at version 2, migrated from pebbles.
    let v2 = PublishRegistry::builder()
        .publish::<Crate>("crate", 2)
        .migrate::<Crate>(1, |bytes| {
            let old: CrateV1 = decode_old(bytes)?;
            Ok(Crate { stones: old.pebbles })
        })
        .build();
    let store = std::sync::Arc::new(RedbStore::open_dir(data.path()).expect("store"));
    let report = prepare(&*store, &v2).expect("migrate");
    assert_eq!(report.migrated, vec![("crate".to_owned(), 1, 2, 40)]);
    let mut server = bevy_app::App::new();
    let mut publisher = Publisher::new(v2.clone());
    load_world(
        &*store,
        &mut publisher,
        server.world_mut(),
        &HoardUrl::service("localhost", 1, "world"),
    )
    .expect("load");
    let options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.path().to_owned());
    server.add_plugins(HoardServerPlugin::with_registry(options, store, v2.clone()).with_publisher(publisher));
    server.update();
    // A client of this build (an older one is refused: its registry differs).
    let mut ann = super::apps::entered_with(&mut server, cache.path(), "ann", Some(v2));
    assert_eq!(
        stones_of(ann.world_mut(), 5),
        Some(9),
        "the old pebbles arrive as stones"
    );
}

#[test]
fn a_restarted_server_keeps_what_its_players_changed() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    {
        let mut server = server(data.path());
        let mut ann = entered(&mut server, cache.path(), "ann");
        ann.world()
            .resource::<Hoard>()
            .send_intent("add_stones", &AddStones { object: 7, stones: 5 })
            .expect("queued");
        // Seen by the client only once it is durable on the server.
        run_until(&mut server, &mut [&mut ann], |w| stones_of(w, 7) == Some(5));
    }
    // The same server, started again as the docs show: it loads the stored
    // world, and its seed does not run again over it.
    let mut server = server(data.path());
    let stored = {
        let world = server.world_mut();
        world
            .query::<(&Published, &Crate)>()
            .iter(world)
            .map(|(p, c)| (p.object.0, c.stones))
            .collect::<std::collections::BTreeMap<u64, u32>>()
    };
    assert_eq!(stored.len(), 40, "every stored crate loaded, none twice");
    assert_eq!(stored.get(&7), Some(&5), "the change survived the restart");
    let fresh_cache = tempfile::tempdir().expect("tempdir");
    let mut bob = entered(&mut server, fresh_cache.path(), "bob");
    assert_eq!(
        stones_of(bob.world_mut(), 7),
        Some(5),
        "a new player sees the stored world"
    );
}

#[test]
fn objects_spawned_without_an_id_get_one_from_the_store_never_twice() {
    let data = tempfile::tempdir().expect("tempdir");
    // Spawns `n` crates of `stones` without ids; returns the ids they got.
    let spawn = |server: &mut bevy_app::App, stones: u32, n: usize| -> Vec<u64> {
        for _ in 0..n {
            server
                .world_mut()
                .spawn((NewObject::in_shard(ShardId(2)), Crate { stones }));
        }
        server.update();
        hoard::bevy::server::flush(server, std::time::Duration::from_secs(10)).expect("durable");
        let world = server.world_mut();
        let mut ids: Vec<u64> = world
            .query::<(&Published, &Crate)>()
            .iter(world)
            .filter(|(_, c)| c.stones == stones)
            .map(|(p, _)| p.object.0)
            .collect();
        ids.sort_unstable();
        ids
    };
    let first = {
        let mut server = server(data.path());
        spawn(&mut server, 1_000, 3)
    };
    assert_eq!(first.len(), 3);
    assert!(
        first.iter().all(|&id| id >= 40),
        "past the seeded crates 0..40: {first:?}"
    );
    // A restart (the rest of the first block is never given out again).
    let mut server = server(data.path());
    let second = spawn(&mut server, 2_000, 3);
    assert_eq!(second.len(), 3);
    assert!(
        second.iter().all(|id| id > first.iter().max().expect("ids")),
        "never an id given before: {first:?} then {second:?}"
    );
    let world = server.world_mut();
    let all: std::collections::BTreeSet<u64> = world.query::<&Published>().iter(world).map(|p| p.object.0).collect();
    assert_eq!(
        all.len(),
        46,
        "40 seeded, 3 and 3 new, each once, all stored and loaded again"
    );
}

#[test]
fn a_seed_may_leave_ids_to_the_store_beside_hand_picked_ones() {
    let data = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(RedbStore::open_dir(data.path()).expect("store"));
    let options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.path().to_owned());
    let plugin =
        HoardServerPlugin::with_registry(options, store.clone(), super::apps::registry()).seed(|world, store| {
            store
                .create_zone(&meadow(), &[ShardSpec::shared(ShardId(0))])
                .map_err(|e| e.to_string())?;
            world.spawn((Published::new(ObjectId(500), ShardId(0)), Crate { stones: 5 }));
            for stones in 1..=3 {
                world.spawn((NewObject::in_shard(ShardId(0)), Crate { stones }));
            }
            Ok(())
        });
    let mut server = bevy_app::App::new();
    server.add_plugins(plugin.start().expect("the server starts"));
    let stored: Vec<u64> = store
        .snapshot(ShardId(0))
        .expect("snapshot")
        .objects
        .iter()
        .map(|o| o.id.0)
        .collect();
    assert_eq!(stored.len(), 4, "every seeded object is stored: {stored:?}");
    assert!(stored.contains(&500));
    assert!(
        stored.iter().filter(|&&id| id != 500).all(|&id| id > 500),
        "ids from the store stay clear of the hand-picked one: {stored:?}"
    );
    let world = server.world_mut();
    assert_eq!(
        world.query::<&Published>().iter(world).count(),
        4,
        "and loaded into the App"
    );
}

#[test]
fn the_game_refuses_an_intent_with_its_reason_and_confirms_a_deferred_one_once_applied() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut server = server(data.path());
    let mut ann = entered(&mut server, cache.path(), "ann");
    let hoard = |app: &bevy_app::App| app.world().resource::<Hoard>().clone();
    let events = |w: &bevy_ecs::world::World| w.resource::<super::apps::Seen>().events.clone();
    let refused = hoard(&ann)
        .send_intent("add_stones", &AddStones { object: 3, stones: 500 })
        .expect("queued");
    run_until(&mut server, &mut [&mut ann], |w| {
        events(w).iter().any(|e| {
            matches!(e, HoardEvent::Client(ClientEvent::IntentRejected { seq, code, message })
                if seq == &refused && *code == super::apps::TOO_MANY && message.contains("100 stones at most"))
        })
    });
    let deferred = hoard(&ann)
        .send_intent("add_stones", &AddStones { object: 3, stones: 13 })
        .expect("queued");
    run_until(&mut server, &mut [&mut ann], |w| {
        events(w).iter().any(
            |e| matches!(e, HoardEvent::Client(ClientEvent::IntentsProcessed { seqs }) if seqs.contains(&deferred)),
        )
    });
    // Confirmed only once applied and durable: the change came first.
    assert_eq!(
        stones_of(ann.world_mut(), 3),
        Some(13),
        "the refused 500 were not applied"
    );
    let never = events(ann.world())
        .iter()
        .any(|e| matches!(e, HoardEvent::Client(ClientEvent::IntentsProcessed { seqs }) if seqs.contains(&refused)));
    assert!(!never, "a refused intent is never confirmed");
}

#[test]
fn the_game_tells_a_zone_and_a_player_after_the_change_is_durable() {
    let data = tempfile::tempdir().expect("tempdir");
    let (ann_cache, bob_cache) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let mut server = server(data.path());
    let (mut ann, mut bob) = super::apps::both_entered(&mut server, ann_cache.path(), bob_cache.path());
    ann.world()
        .resource::<Hoard>()
        .send_intent("add_stones", &AddStones { object: 7, stones: 4 })
        .expect("queued");
    let notices = |w: &bevy_ecs::world::World| w.resource::<super::apps::Seen>().notices.clone();
    run_until(&mut server, &mut [&mut bob, &mut ann], |w| !notices(w).is_empty());
    run_until(&mut server, &mut [&mut ann, &mut bob], |w| notices(w).len() >= 2);
    // Bob, in the meadow, hears what happened there — after the change
    // reached his world (messages follow their frame's deltas).
    assert_eq!(
        notices(bob.world()),
        vec![(Some(meadow()), "4 stones went into crate 7".to_owned(), Some(4))]
    );
    // Ann hears it too, and her own thanks, which nobody else gets.
    let ann_heard = notices(ann.world());
    assert!(
        ann_heard.contains(&(Some(meadow()), "4 stones went into crate 7".to_owned(), Some(4))),
        "{ann_heard:?}"
    );
    assert!(
        ann_heard.contains(&(None, "thank you".to_owned(), Some(4))),
        "{ann_heard:?}"
    );
}

/// A sign, as an older build stored it (schema version 1).
#[derive(bevy_ecs::prelude::Component, serde::Serialize, serde::Deserialize, Clone)]
struct SignV1 {
    text: String,
}

/// A sign, as this build stores it (schema version 2).
#[derive(bevy_ecs::prelude::Component, serde::Serialize, serde::Deserialize, Clone)]
struct Sign {
    text: String,
    lit: bool,
}

#[test]
fn a_schema_change_refetches_only_the_shards_holding_the_changed_component() {
    use hoard::engine::registry::decode_old;

    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    // Crates in all four shards; one sign, in shard 3.
    let start = |registry: PublishRegistry| {
        let store = std::sync::Arc::new(RedbStore::open_dir(data.path()).expect("store"));
        let options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.path().to_owned());
        let plugin = HoardServerPlugin::with_registry(options, store, registry).seed(|world, store| {
            let shards: Vec<ShardSpec> = (0..4).map(|s| ShardSpec::shared(ShardId(s))).collect();
            store.create_zone(&meadow(), &shards).map_err(|e| e.to_string())?;
            for i in 0..40u64 {
                world.spawn((Published::new(ObjectId(i), ShardId(i % 4)), Crate { stones: 0 }));
            }
            world.spawn((Published::new(ObjectId(100), ShardId(3)), SignV1 { text: "inn".into() }));
            Ok(())
        });
        let mut server = bevy_app::App::new();
        server.add_plugins(plugin.start().expect("the server starts"));
        server.update();
        server
    };
    let v1 = PublishRegistry::builder()
        .publish::<Crate>("crate", 1)
        .publish::<SignV1>("sign", 1)
        .build();
    {
        let mut server = start(v1.clone());
        let ann = super::apps::entered_with(&mut server, cache.path(), "ann", Some(v1));
        assert_eq!(ready(ann.world()).expect("ready").shards_snapshot, 4, "cold");
    }
    // This build: signs at version 2 (migrated on start), crates unchanged.
    let v2 = PublishRegistry::builder()
        .publish::<Crate>("crate", 1)
        .publish::<Sign>("sign", 2)
        .migrate::<Sign>(1, |bytes| {
            let old: SignV1 = decode_old(bytes)?;
            Ok(Sign {
                text: old.text,
                lit: false,
            })
        })
        .build();
    let mut server = start(v2.clone());
    let mut ann = super::apps::entered_with(&mut server, cache.path(), "ann", Some(v2));
    let warm = ready(ann.world()).expect("ready");
    assert_eq!(
        (warm.shards_fresh, warm.shards_delta, warm.shards_snapshot),
        (3, 1, 0),
        "only the shard holding a sign is fetched again, as a delta: {warm:?}"
    );
    let world = ann.world_mut();
    let signs: Vec<(String, bool)> = world
        .query::<&Sign>()
        .iter(world)
        .map(|s| (s.text.clone(), s.lit))
        .collect();
    assert_eq!(
        signs,
        vec![("inn".to_owned(), false)],
        "the sign arrives at its new schema"
    );
}

#[test]
fn a_client_of_another_intent_schema_is_told_at_hello_what_to_update() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut server = server(data.path());
    // An older client: the same components, its intent at version 0.
    let older = PublishRegistry::builder()
        .publish::<Crate>("crate", 1)
        .intent::<AddStones>("add_stones", 0)
        .build();
    let mut ann = super::apps::client_of(&server, cache.path(), "ann", Some(older));
    run_until(&mut server, &mut [&mut ann], |w| {
        matches!(w.resource::<HoardConnection>(), HoardConnection::Failed { .. })
    });
    let HoardConnection::Failed { reason } = ann.world().resource::<HoardConnection>().clone() else {
        unreachable!("matched above")
    };
    assert!(reason.contains("registry"), "{reason}");
    assert!(
        reason.contains(&super::apps::registry().hash().to_string()),
        "names the registry the server expects: {reason}"
    );
}

/// Counts frames; adds a stone to crate 5 in each, and ends the App after 10.
fn ten_frames(
    mut frames: bevy_ecs::prelude::Local<u32>,
    mut crates: bevy_ecs::prelude::Query<(&Published, &mut Crate)>,
    mut exit: bevy_ecs::prelude::MessageWriter<bevy_app::AppExit>,
) {
    *frames += 1;
    for (p, mut c) in &mut crates {
        if p.object.0 == 5 {
            c.stones += 1;
        }
    }
    if *frames == 10 {
        exit.write(bevy_app::AppExit::Success);
    }
}

#[test]
fn a_server_app_runs_with_app_run_and_its_last_changes_are_durable_when_it_returns() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut app = server(data.path());
    app.add_systems(bevy_app::Update, ten_frames);
    let exit = app.run();
    assert_eq!(exit, bevy_app::AppExit::Success);
    drop(app);
    // The store holds every frame's stone.
    let store = RedbStore::open_dir(data.path()).expect("store");
    let snapshot = store.snapshot(ShardId(1)).expect("shard 1");
    let five = snapshot.objects.iter().find(|o| o.id == ObjectId(5)).expect("crate 5");
    let (_, bytes) = five.state.components().expect("components")[0];
    let stored: Crate = hoard::engine::registry::decode_old(bytes).expect("a crate");
    assert_eq!(stored.stones, 10, "every frame's change is durable once run returns");
}
