//! A server that is a Bevy App: its own schedules run the game, the plugin
//! serves the published entities on loopback. A client (the network client
//! on its own runtime) enters, sends a typed intent that a game system reads
//! as `FromClient<T>`, and sees the change — only after it is durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard_bevy::Replicated;
use hoard_bevy::{FromClient, HoardServer, HoardServerPlugin};
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{ObjectId, PublishRegistry, Published, RedbStore, ShardId, ZoneId};
use hoard_net::quic::client::{ClientEvent, ClientOptions, HoardClient};
use hoard_net::quic::server::ServerOptions;
use serde::{Deserialize, Serialize};

#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Crate {
    pub(crate) stones: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct AddStones {
    pub(crate) object: u64,
    pub(crate) stones: u32,
}

pub(crate) fn registry() -> PublishRegistry {
    PublishRegistry::builder().publish::<Crate>("crate", 1).build()
}

pub(crate) fn spawn_crates(mut commands: Commands) {
    for i in 0..10u64 {
        commands.spawn((Published::new(ObjectId(i), ShardId(i % 2)), Crate { stones: 0 }));
    }
}

/// The game's rule, an ordinary Update system reading typed intents.
pub(crate) fn add_stones(
    mut intents: MessageReader<FromClient<AddStones>>,
    mut crates: Query<(&Published, &mut Crate)>,
) {
    for FromClient { intent, .. } in intents.read() {
        for (p, mut c) in &mut crates {
            if p.object.0 == intent.object {
                c.stones += intent.stones;
            }
        }
    }
}

fn stones_of(world: &mut World, object: u64) -> Option<u32> {
    world
        .query::<(&Replicated, &Crate)>()
        .iter(world)
        .find(|(r, _)| r.object.0 == object)
        .map(|(_, c)| c.stones)
}

#[test]
fn a_bevy_app_serves_its_world_and_applies_typed_intents() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open_dir(data.path()).expect("store"));
    let zone = ZoneId::new("meadow").expect("zone");
    store
        .create_zone(&zone, &[ShardSpec::shared(ShardId(0)), ShardSpec::shared(ShardId(1))])
        .expect("zone");
    let options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.path().to_owned());
    let mut app = App::new();
    app.add_plugins(
        HoardServerPlugin::with_registry(options, store.clone(), registry()).intent::<AddStones>("add_stones"),
    )
    .add_systems(Startup, spawn_crates)
    .add_systems(Update, add_stones);
    // The first frame spawns the crates; its PostUpdate hands them to the
    // commit thread.
    app.update();
    hoard_bevy::server::flush(&mut app, Duration::from_secs(10)).expect("committed");
    assert_eq!(
        store.snapshot(ShardId(0)).expect("snapshot").objects.len(),
        5,
        "durable once flushed"
    );

    let (addr, token) = {
        let server = app.world().resource::<HoardServer>();
        let token = server
            .handle
            .auth
            .issue("ann", chrono::Utc::now().timestamp() + 600)
            .expect("token");
        (server.handle.addr, token)
    };
    let client_rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = client_rt
        .block_on(HoardClient::connect(
            ClientOptions::new(addr, cache.path().to_owned(), token),
            registry(),
        ))
        .expect("connect");
    // The App keeps running its frames while the client enters.
    let entry = client_rt.spawn({
        let client = Arc::new(client);
        let zone = zone.clone();
        async move {
            let stats = client.enter_zone(&zone).await;
            (client, stats)
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !entry.is_finished() {
        assert!(Instant::now() < deadline, "the entry completes while the App runs");
        app.update();
        std::thread::sleep(Duration::from_millis(5)); // a frame's pace
    }
    let (client, stats) = client_rt.block_on(entry).expect("join");
    assert_eq!(stats.expect("enter").objects, 10);
    let mut world = World::new();
    hoard_bevy::materialise::update(&client, &mut world);
    assert_eq!(stones_of(&mut world, 3), Some(0));

    let seq = client_rt
        .block_on(client.send_intent("add_stones", &AddStones { object: 3, stones: 4 }))
        .expect("send");
    let mut processed = false;
    while !(processed && stones_of(&mut world, 3) == Some(4)) {
        assert!(Instant::now() < deadline, "the intent is applied and published");
        app.update();
        std::thread::sleep(Duration::from_millis(5));
        for event in hoard_bevy::materialise::update(&client, &mut world) {
            if let ClientEvent::IntentsProcessed { seqs } = event {
                processed |= seqs.contains(&seq);
            }
        }
    }
    // Published only once durable.
    let snap = store.snapshot(ShardId(1)).expect("snapshot");
    let stored = snap.objects.iter().find(|o| o.id == ObjectId(3)).expect("object 3");
    let (_, bytes) = stored.state.components().expect("components")[0];
    let c: Crate = rmp_serde::from_slice(bytes).expect("crate");
    assert_eq!(c.stones, 4);
    client.close();
}

/// What the App registered, for the start-up checks below.
fn registered(app: &mut App) {
    use hoard_bevy::HoardAppExt;
    app.publish::<Crate>("crate", 1)
        .add_intent::<AddStones>("add_stones", 1);
}

#[test]
fn a_server_is_refused_at_start_when_its_registry_is_missing_doubled_or_names_an_intent_otherwise() {
    use hoard_bevy::{HoardAppExt, StartError};
    let data = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn WorldStore> = Arc::new(RedbStore::open_dir(data.path()).expect("store"));
    let options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.path().to_owned());
    let plugin = || HoardServerPlugin::new(options.clone(), store.clone());
    let error = |result: Result<&mut App, StartError>| match result {
        Ok(_) => panic!("the server started"),
        Err(StartError::Registry(reason)) => reason,
        Err(other) => panic!("another error: {other}"),
    };

    // Nothing registered: nothing to serve.
    let reason = error(App::new().add_hoard_server(plugin()));
    assert!(reason.contains("app.publish"), "{reason}");

    // Registered on the App and given by hand: which one?
    let mut app = App::new();
    app.add_plugins(registered);
    let given = HoardServerPlugin::with_registry(options.clone(), store.clone(), registry());
    let reason = error(app.add_hoard_server(given));
    assert!(reason.contains("use one"), "{reason}");

    // An intent accepted under a name the registry does not give it.
    let mut app = App::new();
    app.add_plugins(registered);
    let reason = error(app.add_hoard_server(plugin().intent::<AddStones>("stones")));
    assert!(reason.contains("registered as \"add_stones\""), "{reason}");

    // Accepted but not registered, while the registry lists intents.
    #[derive(Serialize, Deserialize)]
    struct Other;
    let mut app = App::new();
    app.add_plugins(registered);
    let reason = error(app.add_hoard_server(plugin().intent::<Other>("other")));
    assert!(reason.contains("not in the registry"), "{reason}");

    // Registered on the App alone: it starts, and reads the App's intents.
    let mut app = App::new();
    app.add_plugins(registered);
    app.add_hoard_server(plugin()).expect("starts");
    assert!(app.world().contains_resource::<Messages<FromClient<AddStones>>>());
    hoard_bevy::server::shutdown(&mut app);
}

#[test]
#[should_panic(expected = "registered after a hoard plugin was added")]
fn registering_after_the_plugin_was_added_is_caught_at_once() {
    use hoard_bevy::HoardAppExt;
    let data = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open_dir(data.path()).expect("store"));
    let options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.path().to_owned());
    let mut app = App::new();
    app.add_plugins(registered);
    app.add_hoard_server(HoardServerPlugin::new(options, store))
        .expect("starts");
    app.publish::<Crate>("late", 1);
}
