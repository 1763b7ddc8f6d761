//! The server on a failing store and with a panicking game, end to end on
//! loopback: the store runs on the simulated disk, whose writes and fsyncs
//! fail on demand.
//!
//! A failed commit keeps its changes, pauses actions (intents rejected with
//! `Unavailable`, every client told), and once the disk works again the
//! store is reopened, the kept changes are committed and published, and
//! actions resume. A store that stays broken, or a game system that panics,
//! ends the server with a reason.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bevy_ecs::prelude::*;
use hoard_bevy::Replicated;
use hoard_engine::store::sim_disk::SimDisk;
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{ObjectId, Published, Publisher, RedbStore, ShardId, ZoneId};
use hoard_net::quic::client::{ClientEvent, HoardClient};
use hoard_net::quic::server::{Game, ServerHandle, ServerOptions, start};
use hoard_proto::intents::{IncomingIntents, IntentRegistry};

use super::e2e::{AddStones, Added, Crate, add_stones, in_meadow, options, registry};

fn store_on(disk: &SimDisk) -> Arc<RedbStore> {
    let store = RedbStore::open_with_backend(Path::new("sim://world.redb"), disk.factory()).expect("store");
    let specs: Vec<_> = (0..2).map(|s| ShardSpec::shared(ShardId(s))).collect();
    store
        .create_zone(&ZoneId::new("meadow").expect("zone"), &specs)
        .expect("zone");
    Arc::new(store)
}

/// A server at 50 Hz over `store`, whose world holds 20 crates over two
/// shards and takes `add_stones` intents.
pub(crate) async fn server(
    data: &Path,
    store: Arc<dyn WorldStore>,
    retry_for: Duration,
    schedule: Schedule,
) -> ServerHandle {
    let mut world = World::new();
    for i in 0..20u64 {
        world.spawn((Published::new(ObjectId(i), ShardId(i % 2)), Crate { stones: 0 }));
    }
    world.init_resource::<Added>();
    let game = Game::new(
        world,
        schedule,
        Publisher::new(registry()),
        IntentRegistry::new().intent::<AddStones>("add_stones"),
    );
    let mut options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.to_owned());
    options.tick_hz = 50;
    options.store_retry_for = retry_for;
    start(options, store, game).await.expect("server starts")
}

pub(crate) fn stones_of(world: &mut World, object: u64) -> Option<u32> {
    world
        .query::<(&Replicated, &Crate)>()
        .iter(world)
        .find(|(r, _)| r.object.0 == object)
        .map(|(_, c)| c.stones)
}

/// Updates the client's world until `done` says so; returns the events seen.
pub(crate) async fn until(
    client: &HoardClient,
    world: &mut World,
    events: &mut Vec<ClientEvent>,
    mut done: impl FnMut(&mut World, &[ClientEvent]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        events.extend(hoard_bevy::materialise::update(client, world));
        if done(world, events) {
            return;
        }
        tokio::time::timeout_at(deadline, client.changed())
            .await
            .expect("condition reached in time");
    }
}

fn stored_stones(store: &RedbStore, object: u64) -> u32 {
    let snap = store.snapshot(ShardId(object % 2)).expect("snapshot");
    let o = snap.objects.iter().find(|o| o.id.0 == object).expect("object");
    let (_, bytes) = o.state.components().expect("components")[0];
    let c: Crate = rmp_serde::from_slice(bytes).expect("crate");
    c.stones
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_pauses_actions_keeps_changes_and_resumes_when_it_recovers() {
    for fault in ["write", "fsync"] {
        let data = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let disk = SimDisk::new();
        let store = store_on(&disk);
        let mut schedule = Schedule::default();
        schedule.add_systems(add_stones);
        let server = server(data.path(), store.clone(), Duration::from_secs(60), schedule).await;
        let zone = ZoneId::new("meadow").expect("zone");
        let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
            .await
            .expect("connect");
        client.enter_zone(&zone).await.expect("enter");
        let mut world = World::new();
        let mut events = Vec::new();
        until(&client, &mut world, &mut events, |w, _| stones_of(w, 3) == Some(0)).await;

        // The disk fails from the next write (or fsync) on.
        match fault {
            "write" => disk.fail_write_after(1, true),
            _ => disk.fail_sync_after(1, true),
        }
        let kept = client
            .send_intent("add_stones", &AddStones { object: 3, stones: 5 })
            .await
            .expect("send");
        // Every client is told; the change is not published while unsaved.
        until(&client, &mut world, &mut events, |_, ev| {
            ev.iter()
                .any(|e| matches!(e, ClientEvent::ServerStatus { writable: false, .. }))
        })
        .await;
        assert_eq!(
            stones_of(&mut world, 3),
            Some(0),
            "{fault}: nothing unsaved was published"
        );
        let processed = |ev: &[ClientEvent], seq: u32| {
            ev.iter()
                .any(|e| matches!(e, ClientEvent::IntentsProcessed { seqs } if seqs.contains(&seq)))
        };
        assert!(!processed(&events, kept), "{fault}: not confirmed while unsaved");
        // An action now is refused, not silently dropped.
        let seq = client
            .send_intent("add_stones", &AddStones { object: 4, stones: 1 })
            .await
            .expect("send");
        until(&client, &mut world, &mut events, |_, ev| {
            ev.iter()
                .any(|e| matches!(e, ClientEvent::IntentRejected { seq: s, .. } if *s == seq))
        })
        .await;
        assert!(server.stats.failed_commits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        if fault == "write" {
            // A player entering now is answered from what is durable: the
            // unsaved change is not in it.
            let late_cache = tempfile::tempdir().expect("tempdir");
            let late = HoardClient::connect(options(&server, late_cache.path(), "bob"), registry())
                .await
                .expect("connect while the store fails");
            late.enter_zone(&zone)
                .await
                .expect("an entry is answered while the store fails");
            let mut late_world = World::new();
            let mut late_events = Vec::new();
            until(&late, &mut late_world, &mut late_events, |w, _| {
                stones_of(w, 3).is_some()
            })
            .await;
            assert_eq!(stones_of(&mut late_world, 3), Some(0), "only what is durable");
            late.close();
        }

        // Space returns: the kept change is committed and published, actions resume.
        disk.clear_faults();
        until(&client, &mut world, &mut events, |w, ev| {
            stones_of(w, 3) == Some(5)
                && ev
                    .iter()
                    .any(|e| matches!(e, ClientEvent::ServerStatus { writable: true, .. }))
                && processed(ev, kept)
        })
        .await;
        assert_eq!(
            stones_of(&mut world, 4),
            Some(0),
            "{fault}: the refused action was not applied"
        );
        client
            .send_intent("add_stones", &AddStones { object: 4, stones: 2 })
            .await
            .expect("send");
        until(&client, &mut world, &mut events, |w, _| stones_of(w, 4) == Some(2)).await;
        assert_eq!(stored_stones(&store, 3), 5, "{fault}: the kept change is durable");
        assert_eq!(stored_stones(&store, 4), 2);
        client.close();
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stays_broken_ends_the_server_with_a_reason() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let disk = SimDisk::new();
    let store = store_on(&disk);
    let mut schedule = Schedule::default();
    schedule.add_systems(add_stones);
    let server = server(data.path(), store, Duration::from_secs(1), schedule).await;
    let client = in_meadow(&server, cache.path(), "ann").await;
    disk.fail_write_after(1, true);
    client
        .send_intent("add_stones", &AddStones { object: 3, stones: 5 })
        .await
        .expect("send");
    let reason = tokio::time::timeout(Duration::from_secs(20), server.failed())
        .await
        .expect("the server gives up in time");
    assert!(reason.contains("world store has failed"), "{reason}");
    assert!(
        reason.contains("1 changed objects were never confirmed saved"),
        "{reason}"
    );
    // Its clients are disconnected, not left hanging.
    let mut world = World::new();
    let mut events = Vec::new();
    until(&client, &mut world, &mut events, |_, ev| {
        ev.iter().any(|e| matches!(e, ClientEvent::Disconnected { .. }))
    })
    .await;
    server.shutdown().await;
}

fn panic_on_intent(intents: ResMut<IncomingIntents>) {
    if !intents.read::<AddStones>("add_stones").is_empty() {
        panic!("the game's rule broke");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_game_system_ends_the_server_with_a_reason() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let store = store_on(&SimDisk::new());
    let mut schedule = Schedule::default();
    schedule.add_systems(panic_on_intent);
    let server = server(data.path(), store, Duration::from_secs(60), schedule).await;
    let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("connect");
    client
        .send_intent("add_stones", &AddStones { object: 3, stones: 5 })
        .await
        .expect("send");
    let reason = tokio::time::timeout(Duration::from_secs(20), server.failed())
        .await
        .expect("the server reports the panic");
    assert!(
        reason.contains("a game system panicked: the game's rule broke"),
        "{reason}"
    );
    server.shutdown().await;
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Misplace {
    object: u64,
}

/// Moves an object into a shard no zone has (a game bug), and adds a stone
/// to object 4 in the same tick.
fn misplace(mut intents: ResMut<IncomingIntents>, mut crates: Query<(&mut Published, &mut Crate)>) {
    for (_, m) in intents.read::<Misplace>("misplace") {
        for (mut p, mut c) in &mut crates {
            if p.object.0 == m.object {
                p.shard = ShardId(999);
            }
            if p.object.0 == 4 {
                c.stones += 1;
            }
        }
    }
    intents.0.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_placed_in_an_unknown_shard_does_not_fail_the_rest_of_the_tick() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let store = store_on(&SimDisk::new());
    let mut world = World::new();
    for i in 0..20u64 {
        world.spawn((Published::new(ObjectId(i), ShardId(i % 2)), Crate { stones: 0 }));
    }
    let mut schedule = Schedule::default();
    schedule.add_systems(misplace);
    let game = Game::new(
        world,
        schedule,
        Publisher::new(registry()),
        IntentRegistry::new().intent::<Misplace>("misplace"),
    );
    let mut options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.path().to_owned());
    options.tick_hz = 50;
    let server = start(options, store.clone(), game).await.expect("server starts");
    let client = in_meadow(&server, cache.path(), "ann").await;
    let seq = client
        .send_intent("misplace", &Misplace { object: 3 })
        .await
        .expect("send");
    let mut world = World::new();
    let mut events = Vec::new();
    until(&client, &mut world, &mut events, |w, ev| {
        stones_of(w, 4) == Some(1)
            && ev
                .iter()
                .any(|e| matches!(e, ClientEvent::IntentsProcessed { seqs } if seqs.contains(&seq)))
    })
    .await;
    assert_eq!(stored_stones(&store, 4), 1, "the rest of the tick is durable");
    assert_eq!(
        server.stats.failed_commits.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The misplaced object's move is not half-applied: the store keeps it
    // where it was, exactly once.
    let holders: Vec<u64> = (0..2)
        .filter(|&s| {
            store
                .snapshot(ShardId(s))
                .expect("snapshot")
                .objects
                .iter()
                .any(|o| o.id.0 == 3)
        })
        .collect();
    assert_eq!(holders, vec![1], "object 3 stays in shard 1, once");
    client.close();
    server.shutdown().await;
}
