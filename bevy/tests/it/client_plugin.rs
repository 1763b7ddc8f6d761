//! A server App and a client App in one process on loopback: the client
//! enters a zone by writing a `ZoneRequest`, its objects are entities before
//! its `ZoneReady` is seen, an intent sent through `Hoard` comes back as
//! `IntentsProcessed` with its change, and dropping the client App releases
//! the cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard_bevy::Replicated;
use hoard_bevy::{Hoard, HoardClientPlugin, HoardConnection, HoardEvent, HoardServer, HoardServerPlugin, ZoneRequest};
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{RedbStore, ShardId, ZoneId};
use hoard_net::quic::client::{ClientEvent, ClientOptions};
use hoard_net::quic::server::ServerOptions;

use super::server_plugin::{AddStones, Crate, add_stones, registry, spawn_crates};

/// What the client App saw, for the test to check.
#[derive(Resource, Default)]
struct Seen {
    /// Crates in the world when `ZoneReady` was read.
    crates_at_ready: Option<usize>,
    processed: Vec<u32>,
    stones_of_3: Option<u32>,
}

fn enter_meadow(mut requests: MessageWriter<ZoneRequest>) {
    requests.write(ZoneRequest::Enter(ZoneId::new("meadow").expect("zone")));
}

fn watch(mut events: MessageReader<HoardEvent>, crates: Query<(&Replicated, &Crate)>, mut seen: ResMut<Seen>) {
    for event in events.read() {
        match event {
            HoardEvent::Client(ClientEvent::ZoneReady { .. }) => seen.crates_at_ready = Some(crates.iter().count()),
            HoardEvent::Client(ClientEvent::IntentsProcessed { seqs }) => seen.processed.extend(seqs),
            HoardEvent::Failed(e) => panic!("client failed: {e}"),
            _ => {}
        }
    }
    seen.stones_of_3 = crates.iter().find(|(r, _)| r.object.0 == 3).map(|(_, c)| c.stones);
}

#[test]
fn a_client_app_enters_sees_entities_before_ready_and_sends_intents() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open_dir(data.path()).expect("store"));
    store
        .create_zone(
            &ZoneId::new("meadow").expect("zone"),
            &[ShardSpec::shared(ShardId(0)), ShardSpec::shared(ShardId(1))],
        )
        .expect("zone");
    let options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.path().to_owned());
    let mut server = App::new();
    server
        .add_plugins(HoardServerPlugin::with_registry(options, store, registry()).intent::<AddStones>("add_stones"))
        .add_systems(Startup, spawn_crates)
        .add_systems(Update, add_stones);
    server.update();
    let (addr, token) = {
        let s = server.world().resource::<HoardServer>();
        let token = s
            .handle
            .auth
            .issue("ann", chrono::Utc::now().timestamp() + 600)
            .expect("token");
        (s.handle.addr, token)
    };

    let mut client = App::new();
    client
        .add_plugins(HoardClientPlugin::with_registry(
            ClientOptions::new(addr, cache.path().to_owned(), token),
            registry(),
        ))
        .init_resource::<Seen>()
        .add_systems(Startup, enter_meadow)
        .add_systems(Update, watch);

    // The connection's state is there from the start.
    assert_eq!(
        client.world().get_resource::<HoardConnection>(),
        Some(&HoardConnection::Connecting)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let frames = |server: &mut App, client: &mut App, done: &dyn Fn(&Seen) -> bool| {
        while !done(client.world().resource::<Seen>()) {
            assert!(Instant::now() < deadline, "reached in time");
            server.update();
            client.update();
            std::thread::sleep(Duration::from_millis(2)); // a frame's pace
        }
    };
    frames(&mut server, &mut client, &|s| s.crates_at_ready.is_some());
    assert_eq!(
        client.world().get_resource::<HoardConnection>(),
        Some(&HoardConnection::Connected {
            perspective: "ann".into()
        })
    );
    assert_eq!(
        client.world().resource::<Seen>().crates_at_ready,
        Some(10),
        "the zone's entities exist when ZoneReady is read"
    );
    let seq = client
        .world()
        .resource::<Hoard>()
        .send_intent("add_stones", &AddStones { object: 3, stones: 2 })
        .expect("queued");
    frames(&mut server, &mut client, &|s| {
        s.processed.contains(&seq) && s.stones_of_3 == Some(2)
    });

    // Dropping the client App closes its connection and releases the cache.
    drop(client);
    while hoard_world_cache::WorldCache::open(cache.path(), hoard_world_cache::LockPolicy::Fail).is_err() {
        assert!(Instant::now() < deadline, "the cache lock is released");
        server.update();
        std::thread::sleep(Duration::from_millis(2));
    }
}
