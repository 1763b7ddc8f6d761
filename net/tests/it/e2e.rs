//! End to end on loopback: a real quinn server with a redb store and a ticking
//! world, real clients with disk caches: cold entry, live deltas from an
//! intent, a warm re-entry that reuses the cache, prefetch, pinning.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bevy_ecs::prelude::*;
use hoard_bevy::Replicated;
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{ObjectId, PublishRegistry, Published, Publisher, RedbStore, ServerIdentity, ShardId, ZoneId};
use hoard_net::quic::client::{ClientError, ClientEvent, ClientOptions, ClientUpdate, HoardClient};
use hoard_net::quic::server::{Game, ServerHandle, ServerOptions, start};
use hoard_proto::intents::{IncomingIntents, IntentRegistry};
use serde::{Deserialize, Serialize};

#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Crate {
    pub(crate) stones: u32,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct AddStones {
    pub(crate) object: u64,
    pub(crate) stones: u32,
}

/// Takes a crate out of the world (its shard records a tombstone).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct RemoveCrate {
    pub(crate) object: u64,
}

/// Sets every crate's stones to `stones` times its object id plus one
/// (one tick changing the whole zone, no two crates alike).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Refill {
    pub(crate) stones: u32,
}

pub(crate) fn refill(intents: Res<IncomingIntents>, mut crates: Query<(&Published, &mut Crate)>) {
    for (_, refill) in intents.read::<Refill>("refill") {
        for (p, mut c) in &mut crates {
            c.stones = refilled(refill.stones, p.object.0);
        }
    }
}

/// What a refill of `stones` leaves in crate `object`.
pub(crate) fn refilled(stones: u32, object: u64) -> u32 {
    stones.wrapping_mul(object as u32 + 1)
}

pub(crate) fn remove_crates(
    mut commands: Commands,
    intents: ResMut<IncomingIntents>,
    crates: Query<(Entity, &Published)>,
) {
    for (_, remove) in intents.read::<RemoveCrate>("remove_crate") {
        for (entity, p) in &crates {
            if p.object.0 == remove.object {
                commands.entity(entity).despawn();
            }
        }
    }
}

pub(crate) fn registry() -> PublishRegistry {
    PublishRegistry::builder().publish::<Crate>("crate", 1).build()
}

/// Stones added since the server started: the test game's transient state.
#[derive(Resource, Default)]
pub(crate) struct Added(u32);

pub(crate) fn add_stones(
    mut intents: ResMut<IncomingIntents>,
    mut added: ResMut<Added>,
    mut crates: Query<(&Published, &mut Crate)>,
    mut told: Option<ResMut<hoard_proto::messages::OutgoingMessages>>,
) {
    for (_, add) in intents.read::<AddStones>("add_stones") {
        added.0 += add.stones;
        // The zone's players hear of it (a message of the game).
        if let Some(told) = &mut told {
            let zone = hoard_proto::messages::Audience::Zone(ZoneId::new("meadow").expect("zone"));
            told.send(zone, "added", &add.stones).expect("encodes");
        }
        for (p, mut c) in &mut crates {
            if p.object.0 == add.object {
                c.stones += add.stones;
            }
        }
    }
    intents.0.clear();
}

pub(crate) async fn server(data: &Path, shards: u64, per_shard: u64) -> ServerHandle {
    server_with(data, shards, per_shard, |_| {}).await
}

/// [`server`] with its options changed by `configure` first.
pub(crate) async fn server_with(
    data: &Path,
    shards: u64,
    per_shard: u64,
    configure: impl FnOnce(&mut ServerOptions),
) -> ServerHandle {
    let store = Arc::new(RedbStore::open_dir(data).expect("store"));
    let zone = ZoneId::new("meadow").expect("zone");
    if store.zones().expect("zones").is_empty() {
        let specs: Vec<_> = (0..shards).map(|s| ShardSpec::shared(ShardId(s))).collect();
        store.create_zone(&zone, &specs).expect("zone");
    }
    let mut publisher = Publisher::new(registry());
    let mut world = World::new();
    let report = hoard_engine::load_world(
        &*store,
        &mut publisher,
        &mut world,
        &hoard_engine::HoardUrl::service("localhost", 1, "world"),
    )
    .expect("load");
    if report.objects == 0 {
        for s in 0..shards {
            for i in 0..per_shard {
                world.spawn((
                    Published::new(ObjectId(s * 1000 + i), ShardId(s)),
                    Crate { stones: i as u32 },
                ));
            }
        }
    }
    world.init_resource::<Added>();
    let mut schedule = Schedule::default();
    schedule.add_systems((remove_crates, refill, add_stones).chain());
    let mut game = Game::new(
        world,
        schedule,
        publisher,
        IntentRegistry::new()
            .intent::<AddStones>("add_stones")
            .intent::<RemoveCrate>("remove_crate")
            .intent::<Refill>("refill"),
    );
    game.transient = Some(Arc::new(|world: &mut World| {
        let added = world.resource::<Added>().0;
        vec![(ZoneId::new("meadow").expect("zone"), added.to_le_bytes().to_vec())]
    }));
    let mut options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.to_owned());
    options.tick_hz = 50;
    configure(&mut options);
    start(options, store, game).await.expect("server starts")
}

pub(crate) fn options(server: &ServerHandle, cache: &Path, player: &str) -> ClientOptions {
    let token = server
        .auth
        .issue(player, chrono::Utc::now().timestamp() + 3600)
        .expect("token");
    ClientOptions::new(server.addr, cache.to_owned(), token)
}

/// `player`'s client of `server`, connected with `cache` and in the meadow.
pub(crate) async fn in_meadow(server: &ServerHandle, cache: &Path, player: &str) -> HoardClient {
    let client = HoardClient::connect(options(server, cache, player), registry())
        .await
        .expect("connect");
    client
        .enter_zone(&ZoneId::new("meadow").expect("zone"))
        .await
        .expect("enter");
    client
}

pub(crate) fn stones(world: &mut World) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> = world
        .query::<(&Replicated, &Crate)>()
        .iter(world)
        .map(|(r, c)| (r.object.0, c.stones))
        .collect();
    v.sort_unstable();
    v
}

pub(crate) async fn wait_for(client: &HoardClient, world: &mut World, mut done: impl FnMut(&mut World) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        hoard_bevy::materialise::update(client, world);
        if done(world) {
            return;
        }
        tokio::time::timeout_at(deadline, client.changed())
            .await
            .expect("condition reached in time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_entry_live_delta_and_warm_reentry_over_quic() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 4, 25).await;
    let zone = ZoneId::new("meadow").expect("zone");

    let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("connect");
    assert_eq!(client.identity(), server.identity);
    assert_eq!(client.zones(), std::slice::from_ref(&zone));
    let stats = client.enter_zone(&zone).await.expect("enter");
    assert_eq!(
        (stats.shards, stats.shards_snapshot, stats.objects, stats.round_trips),
        (4, 4, 100, 1)
    );
    let mut world = World::new();
    hoard_bevy::materialise::update(&client, &mut world);
    assert_eq!(stones(&mut world).len(), 100);

    client
        .send_intent(
            "add_stones",
            &AddStones {
                object: 2005,
                stones: 10,
            },
        )
        .await
        .expect("intent");
    wait_for(&client, &mut world, |w| stones(w).contains(&(2005, 15))).await;
    client.close();
    drop(client);

    // A returning player: everything is in the cache and nothing changed.
    let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("reconnect");
    let stats = client.enter_zone(&zone).await.expect("enter again");
    assert_eq!(
        (stats.shards_fresh, stats.shards_snapshot, stats.round_trips),
        (4, 0, 1)
    );
    assert!(
        stats.bytes_rx + stats.bytes_tx < 2048,
        "warm entry cost {} bytes",
        stats.bytes_rx + stats.bytes_tx
    );
    let mut world = World::new();
    hoard_bevy::materialise::update(&client, &mut world);
    assert!(
        stones(&mut world).contains(&(2005, 15)),
        "the cached copy holds the live delta"
    );
    client.close();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_state_reaches_the_clients_in_the_zone_when_it_changes() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 2, 5).await;
    let zone = ZoneId::new("meadow").expect("zone");
    let (ann_cache, bob_cache) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let ann = HoardClient::connect(options(&server, ann_cache.path(), "ann"), registry())
        .await
        .expect("ann");
    let bob = HoardClient::connect(options(&server, bob_cache.path(), "bob"), registry())
        .await
        .expect("bob");
    ann.enter_zone(&zone).await.expect("enter");
    let transient_is = |client: &HoardClient, n: u32| client.transient(&zone) == Some(n.to_le_bytes().to_vec());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !transient_is(&ann, 0) {
        tokio::time::timeout_at(deadline, ann.changed())
            .await
            .expect("sent on entry");
    }
    ann.send_intent("add_stones", &AddStones { object: 1, stones: 7 })
        .await
        .expect("intent");
    while !transient_is(&ann, 7) {
        tokio::time::timeout_at(deadline, ann.changed())
            .await
            .expect("sent on change");
    }
    // Bob, not in the zone, hears nothing; entering, he gets the latest.
    assert_eq!(bob.transient(&zone), None);
    bob.enter_zone(&zone).await.expect("bob enters");
    while !transient_is(&bob, 7) {
        tokio::time::timeout_at(deadline, bob.changed())
            .await
            .expect("latest on entry");
    }
    ann.leave_zone(&zone).await.expect("leave");
    assert_eq!(ann.transient(&zone), None, "forgotten on leaving");
    // Transient state is never stored: the store holds only the crates.
    let game = server.shutdown().await.expect("game");
    assert_eq!(game.world.resource::<Added>().0, 7);
    let connected = game.world.resource::<hoard_proto::intents::ConnectedPlayers>();
    assert!(connected.contains("ann") && connected.contains("bob"), "{connected:?}");
    let store = RedbStore::open_dir(data.path()).expect("store");
    let stored: usize = (0..2)
        .map(|s| store.snapshot(ShardId(s)).expect("snapshot").objects.len())
        .sum();
    assert_eq!(stored, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_zone_enters_without_the_network() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 2, 10).await;
    let zone = ZoneId::new("meadow").expect("zone");
    let client = HoardClient::connect(options(&server, cache.path(), "bob"), registry())
        .await
        .expect("connect");
    client.prefetch(&zone).await.expect("prefetch");
    let mut world = World::new();
    // Wait for the prefetch to complete: both shards live in the client's
    // sync (their cache files are written a little before the sync marks
    // the zone live, so the files alone are not the sign). The completion
    // raises no event, so the wait re-checks at least every 20 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.zone_shards(&zone).len() < 2 || client.cache().inventory().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "prefetched in time");
        let _ = tokio::time::timeout(Duration::from_millis(20), client.changed()).await;
        hoard_bevy::materialise::update(&client, &mut world);
    }
    assert!(
        stones(&mut world).is_empty(),
        "prefetched objects are not shown before entry"
    );
    let stats = client.enter_zone(&zone).await.expect("enter");
    assert_eq!((stats.bytes_rx, stats.bytes_tx), (0, 0));
    hoard_bevy::materialise::update(&client, &mut world);
    assert_eq!(stones(&mut world).len(), 20);
    client.leave_zone(&zone).await.expect("leave");
    let events = hoard_bevy::materialise::update(&client, &mut world);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, hoard_net::quic::client::ClientEvent::ZoneLeft { .. }))
    );
    assert!(stones(&mut world).is_empty(), "a left zone's entities are despawned");
    client.close();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_server_identity_is_refused_with_a_remedy() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 1, 1).await;
    let mut opts = options(&server, cache.path(), "eve");
    opts.pin = Some(ServerIdentity([0xee; 32]));
    let err = HoardClient::connect(opts, registry()).await.expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, ClientError::Connect { .. }), "{text}");
    assert!(text.contains("is pinned"), "{text}");

    // Trust on first use records the identity; a different one later is refused.
    let client = HoardClient::connect(options(&server, cache.path(), "eve"), registry())
        .await
        .expect("first use");
    client.close();
    let known = std::fs::read_to_string(cache.path().join("known_servers")).expect("known_servers");
    assert!(known.contains(&server.identity.to_string()));
    std::fs::write(
        cache.path().join("known_servers"),
        format!("{} {}\n", server.addr, ServerIdentity([1; 32])),
    )
    .expect("tamper");
    let err = HoardClient::connect(options(&server, cache.path(), "eve"), registry())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("known_servers"), "{err}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_identity_survives_a_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = server(data.path(), 1, 1).await;
    let identity = first.identity;
    first.shutdown().await;
    let second = server(data.path(), 1, 1).await;
    assert_eq!(second.identity, identity);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_through_the_simulator_with_delay_and_loss() {
    use hoard_netsim::{LinkConfig, start as netsim};
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 4, 100).await;
    let link = LinkConfig {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(2),
        loss: 0.05,
        rate_bps: Some(50_000_000),
        queue_bytes: None,
    };
    let sim = netsim("127.0.0.1:0".parse().expect("addr"), server.addr, link)
        .await
        .expect("netsim");
    let mut opts = options(&server, cache.path(), "ann");
    opts.server = sim.addr;
    let client = HoardClient::connect(opts, registry())
        .await
        .expect("connect through the simulator");
    let stats = client
        .enter_zone(&ZoneId::new("meadow").expect("zone"))
        .await
        .expect("enter");
    assert_eq!(stats.objects, 400);
    assert!(
        stats.elapsed_ms >= 20,
        "at least one 20 ms round trip: {} ms",
        stats.elapsed_ms
    );
    let (up, down) = sim.stats.bytes();
    assert!(
        up > 0 && down > stats.bytes_rx,
        "the simulator counted the traffic: {up} up, {down} down"
    );
    let mut world = World::new();
    hoard_bevy::materialise::update(&client, &mut world);
    assert_eq!(stones(&mut world).len(), 400);
    client.close();
    server.shutdown().await;
}

/// A crate with a big published payload (up to the 1 MiB state limit).
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Boulder {
    #[serde(with = "serde_bytes")]
    pub(crate) bytes: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug)]
struct Regrow {
    fill: u8,
}

fn regrow(mut intents: ResMut<IncomingIntents>, mut boulders: Query<&mut Boulder>) {
    for (_, r) in intents.read::<Regrow>("regrow") {
        for mut b in &mut boulders {
            b.bytes.iter_mut().for_each(|x| *x = r.fill);
        }
    }
    intents.0.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_and_a_delta_over_the_frame_limit_arrive_in_parts() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RedbStore::open_dir(data.path()).expect("store"));
    let zone = ZoneId::new("quarry").expect("zone");
    store
        .create_zone(&zone, &[ShardSpec::shared(ShardId(0))])
        .expect("zone");
    let registry = || PublishRegistry::builder().publish::<Boulder>("boulder", 1).build();
    // 40 objects of nearly 1 MiB: a 40 MB shard, over the 32 MiB frame limit.
    let mut world = World::new();
    for i in 0..40u64 {
        world.spawn((
            Published::new(ObjectId(i), ShardId(0)),
            Boulder {
                bytes: vec![i as u8; 1_000_000],
            },
        ));
    }
    let mut schedule = Schedule::default();
    schedule.add_systems(regrow);
    let game = Game::new(
        world,
        schedule,
        Publisher::new(registry()),
        IntentRegistry::new().intent::<Regrow>("regrow"),
    );
    let mut options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.path().to_owned());
    options.tick_hz = 50;
    let server = start(options, store, game).await.expect("server starts");
    let client = HoardClient::connect(options_for(&server, cache.path()), registry())
        .await
        .expect("connect");
    let stats = tokio::time::timeout(Duration::from_secs(120), client.enter_zone(&zone))
        .await
        .expect("entered in time")
        .expect("enter");
    assert_eq!(stats.objects, 40);
    assert!(
        stats.bytes_rx > 40_000_000,
        "the whole shard came: {} bytes",
        stats.bytes_rx
    );
    let mut world = World::new();
    hoard_bevy::materialise::update(&client, &mut world);
    // One tick changes every object: a 40 MB delta, in parts too.
    client
        .send_intent("regrow", &Regrow { fill: 0xee })
        .await
        .expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        hoard_bevy::materialise::update(&client, &mut world);
        let grown = world
            .query::<&Boulder>()
            .iter(&world)
            .filter(|b| b.bytes.first() == Some(&0xee))
            .count();
        if grown == 40 {
            break;
        }
        tokio::time::timeout_at(deadline, client.changed())
            .await
            .expect("the big delta arrives in time");
    }
    client.close();
    server.shutdown().await;
}

fn options_for(server: &ServerHandle, cache: &Path) -> ClientOptions {
    options(server, cache, "ann")
}

/// Two players' clients connected from one shared endpoint (one UDP
/// socket): each is its own session, each sees the other's change live, and
/// one closing leaves the other connected and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sharing_one_endpoint_are_separate_sessions() {
    let data = tempfile::tempdir().expect("tempdir");
    let caches = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let server = server(data.path(), 2, 25).await;
    let zone = ZoneId::new("meadow").expect("zone");
    let shared = hoard_net::quic::client::client_endpoint(server.addr).expect("endpoint");
    let socket = shared.local_addr().expect("local address");
    let connect = |cache: &Path, player: &str| {
        let options = ClientOptions {
            endpoint: Some(shared.clone()),
            ..options(&server, cache, player)
        };
        HoardClient::connect(options, registry())
    };
    let ann = connect(caches[0].path(), "ann").await.expect("ann connects");
    let bob = connect(caches[1].path(), "bob").await.expect("bob connects");
    assert_eq!(server.metrics.connected.get(), 2, "two sessions");
    for client in [&ann, &bob] {
        let stats = client.enter_zone(&zone).await.expect("enter");
        assert_eq!(stats.objects, 50);
    }
    let (mut ann_world, mut bob_world) = (World::new(), World::new());
    ann.send_intent(
        "add_stones",
        &AddStones {
            object: 1005,
            stones: 7,
        },
    )
    .await
    .expect("intent");
    wait_for(&bob, &mut bob_world, |w| stones(w).contains(&(1005, 12))).await;
    wait_for(&ann, &mut ann_world, |w| stones(w).contains(&(1005, 12))).await;

    ann.close_and_wait(Duration::from_secs(1)).await;
    drop(ann);
    bob.send_intent(
        "add_stones",
        &AddStones {
            object: 1006,
            stones: 1,
        },
    )
    .await
    .expect("bob still served");
    wait_for(&bob, &mut bob_world, |w| stones(w).contains(&(1006, 7))).await;
    assert_eq!(
        shared.local_addr().expect("local address"),
        socket,
        "still the one socket"
    );
    bob.close_and_wait(Duration::from_secs(1)).await;
    let idle = tokio::time::timeout(Duration::from_secs(5), shared.wait_idle()).await;
    assert!(idle.is_ok(), "the shared endpoint's connections all closed");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_entries_of_one_zone_at_once_both_complete() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 4, 25).await;
    let zone = ZoneId::new("meadow").expect("zone");
    let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("connect");
    let (a, b) = tokio::join!(client.enter_zone(&zone), client.enter_zone(&zone));
    let (a, b) = (a.expect("first entry"), b.expect("second entry"));
    assert_eq!((a.objects, b.objects), (100, 100));
    // What the zone holds, from the client API.
    let mut shards = client.zone_shards(&zone);
    shards.sort();
    assert_eq!(shards, (0..4).map(ShardId).collect::<Vec<_>>());
    assert!(client.zone_shards(&ZoneId::new("forest").expect("zone")).is_empty());
    client.close();
    server.shutdown().await;
}

#[test]
fn a_client_on_a_current_thread_runtime_enters_and_dropping_it_releases_the_cache() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    // The server on its own multi-threaded runtime, as a server would be;
    // the client on a current-thread one, as a game's main loop might be.
    let server_rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = server_rt.block_on(server(data.path(), 2, 10));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    client_rt.block_on(async {
        let zone = ZoneId::new("meadow").expect("zone");
        let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
            .await
            .expect("connect");
        let stats = client.enter_zone(&zone).await.expect("enter");
        assert_eq!(stats.objects, 20);
        let mut world = World::new();
        hoard_bevy::materialise::update(&client, &mut world);
        assert_eq!(stones(&mut world).len(), 20);
        // Dropped without close: the connection closes and the cache lock
        // goes, well before the 10 s idle timeout would have ended it.
        drop(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match hoard_world_cache::WorldCache::open(cache.path(), hoard_world_cache::LockPolicy::Fail) {
                Ok(_) => break,
                Err(_) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the cache lock was not released"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    server_rt.block_on(server.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_entered_as_part_of_connecting_is_cold_then_fresh() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 4, 25).await;
    let zone = ZoneId::new("meadow").expect("zone");

    // `EnterZone` goes behind `Hello`, under the perspective the token names.
    let (client, entry) = HoardClient::connect_and_enter(options(&server, cache.path(), "ann"), registry(), &zone)
        .await
        .expect("connect");
    assert_eq!(client.perspective(), "ann");
    let stats = entry.wait().await.expect("enter");
    assert_eq!((stats.shards, stats.shards_snapshot, stats.objects), (4, 4, 100));
    let mut world = World::new();
    let events = hoard_bevy::materialise::update(&client, &mut world);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::ZoneReady { zone: z, .. } if *z == zone))
    );
    assert_eq!(stones(&mut world).len(), 100);
    drop(client);

    // A returning process: the same cache, every shard fresh, one round trip.
    let (client, entry) = HoardClient::connect_and_enter(options(&server, cache.path(), "ann"), registry(), &zone)
        .await
        .expect("reconnect");
    let stats = entry.wait().await.expect("enter again");
    assert_eq!(
        (stats.shards_fresh, stats.shards_snapshot, stats.round_trips),
        (4, 0, 1)
    );
    let mut world = World::new();
    hoard_bevy::materialise::update(&client, &mut world);
    assert_eq!(stones(&mut world).len(), 100);
    // The connection is whole afterwards: intents and live deltas work.
    client
        .send_intent(
            "add_stones",
            &AddStones {
                object: 2005,
                stones: 10,
            },
        )
        .await
        .expect("intent");
    wait_for(&client, &mut world, |w| stones(w).contains(&(2005, 15))).await;
    drop(client);

    // A token of no known form: refused as before, whichever way it connects.
    let mut bad = options(&server, cache.path(), "ann");
    bad.token = "not-a-token".into();
    let refused = HoardClient::connect_and_enter(bad, registry(), &zone).await;
    assert!(matches!(refused, Err(ClientError::Refused { .. })), "{refused:?}");
    server.shutdown().await;
}

/// A cache file whose checksums hold but whose objects do not give the
/// digest its header states (what only a writer's bug could leave) is taken
/// on trust at entry — the zone is ready without recomputing digests — and
/// the background audit then finds it and has the server repair it: the
/// world ends with the server's objects, and the cache counts the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_file_that_lies_about_its_digest_is_audited_and_repaired() {
    use hoard_engine::state::StateBuilder;
    use hoard_world_cache::cache::DiscardReason;
    use hoard_world_cache::{LockPolicy, ShardKey, WorldCache};

    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 2, 25).await;
    let zone = ZoneId::new("meadow").expect("zone");
    let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("connect");
    client.enter_zone(&zone).await.expect("cold entry");
    drop(client);

    // Object 1003 (3 stones) now claims 999, under the server's digest,
    // with checksums recomputed: self-consistent bytes, a lying header.
    {
        let writer = WorldCache::open(cache.path(), LockPolicy::WaitUpTo(Duration::from_secs(5))).expect("cache");
        let key = ShardKey::new(server.identity, "world", None, zone.clone(), ShardId(1)).expect("key");
        let mut copy = writer.load(&key, registry().hash()).expect("cached copy");
        let lie = copy
            .objects
            .iter_mut()
            .find(|o| o.id == ObjectId(1003))
            .expect("object");
        let mut state = StateBuilder::new();
        state.component("crate", rmp_serde::to_vec(&Crate { stones: 999 }).expect("encode"));
        lie.state = state.finish();
        writer.write(&copy).expect("write");
    }

    let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("reconnect");
    let stats = client.enter_zone(&zone).await.expect("warm entry");
    assert_eq!(
        (stats.shards_fresh, stats.round_trips),
        (2, 1),
        "taken on trust: {stats:?}"
    );
    let mut world = World::new();
    wait_for(&client, &mut world, |w| {
        stones(w).contains(&(1003, 3)) && stones(w).len() == 50
    })
    .await;
    assert!(
        client.cache().discards().contains(&(DiscardReason::Digest, 1)),
        "{:?}",
        client.cache().discards()
    );
    let key = ShardKey::new(server.identity, "world", None, zone.clone(), ShardId(1)).expect("key");
    // The repair rewrote the file before its objects reached the world.
    assert_eq!(client.cache().audit(&key, registry().hash()), Some(true));
    client.close();
    server.shutdown().await;
}

/// A warm entry whose answer changes a few objects records them in the
/// shard's journal instead of rewriting the shard file (the file keeps its
/// old, self-consistent contents); the next load folds the journal in and
/// holds the changed objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_entry_with_changes_journals_them_and_the_next_load_has_them() {
    use hoard_world_cache::{LockPolicy, ShardKey, WorldCache};

    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 2, 25).await;
    let zone = ZoneId::new("meadow").expect("zone");
    let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("connect");
    client.enter_zone(&zone).await.expect("cold entry");
    drop(client);

    // Someone else changes an object while ann is away.
    let bob = HoardClient::connect(options(&server, other.path(), "bob"), registry())
        .await
        .expect("bob connects");
    bob.enter_zone(&zone).await.expect("bob enters");
    let mut world = World::new();
    hoard_bevy::materialise::update(&bob, &mut world);
    bob.send_intent(
        "add_stones",
        &AddStones {
            object: 1007,
            stones: 100,
        },
    )
    .await
    .expect("intent");
    wait_for(&bob, &mut world, |w| stones(w).contains(&(1007, 107))).await;
    drop(bob);

    let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("ann again");
    let stats = client.enter_zone(&zone).await.expect("warm entry");
    assert_eq!((stats.shards_fresh, stats.shards_delta), (1, 1), "{stats:?}");
    // The game was handed the copies before the answer, and the answer
    // kept the current one as it was (the same `Arc`) and replaced the
    // changed one; materialised, the world holds the change.
    let updates = client.take_updates();
    let cached = updates
        .iter()
        .position(|u| matches!(u, ClientUpdate::ZoneCached { .. }));
    let loaded = updates
        .iter()
        .position(|u| matches!(u, ClientUpdate::ZoneLoaded { .. }));
    assert!(cached.is_some() && cached < loaded, "copies before the answer");
    let (Some(ClientUpdate::ZoneCached { shards: before, .. }), Some(ClientUpdate::ZoneLoaded { shards: after, .. })) =
        (cached.map(|i| &updates[i]), loaded.map(|i| &updates[i]))
    else {
        unreachable!("found above")
    };
    let kept: Vec<u64> = after
        .iter()
        .filter(|a| before.iter().any(|b| Arc::ptr_eq(a, b)))
        .map(|a| a.header.key.shard.0)
        .collect();
    assert_eq!(kept, vec![0], "the unchanged shard is the copy as loaded");
    let mut world = World::new();
    let mut materialiser = hoard_bevy::Materialiser::new(registry());
    materialiser.apply(&mut world, updates);
    assert!(
        stones(&mut world).contains(&(1007, 107)),
        "the changed copy is shown, not the stale one"
    );
    assert_eq!(stones(&mut world).len(), 50);
    let key = ShardKey::new(server.identity, "world", None, zone.clone(), ShardId(1)).expect("key");
    let journal = cache.path().join(key.journal());
    assert!(journal.exists(), "the change went to the journal");
    drop(client);

    let reader = WorldCache::open(cache.path(), LockPolicy::WaitUpTo(Duration::from_secs(5))).expect("cache");
    let copy = reader.load(&key, registry().hash()).expect("loads");
    let state = &copy
        .objects
        .iter()
        .find(|o| o.id == ObjectId(1007))
        .expect("object")
        .state;
    let parts = state.components().expect("state");
    let stored: Crate = rmp_serde::from_slice(parts[0].1).expect("crate");
    assert_eq!(stored, Crate { stones: 107 });
    server.shutdown().await;
}

/// Path MTU discovery is off unless the server asks for it: a client never
/// probes, a server with the defaults never does, and one with
/// `mtu_discovery` probes each connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_server_that_asks_for_it_probes_the_path_mtu() {
    for probing in [false, true] {
        let data = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let server = server_with(data.path(), 2, 10, |o| o.mtu_discovery = probing).await;
        let client = in_meadow(&server, cache.path(), "ann").await;
        let path = client.path_stats();
        assert_eq!(path.sent_plpmtud_probes, 0, "the client never probes");
        client.close_and_wait(Duration::from_secs(2)).await;
        // The server counts a connection's probes when it ends.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while server.stats.connections.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the connection ended on the server"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let probes = server.stats.mtu_probes.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(probes > 0, probing, "server probes: {probes} (mtu_discovery {probing})");
        server.shutdown().await;
    }
}

/// The server asks its clients to acknowledge a bulk answer every
/// `ACK_EVERY` packets rather than every other one (the QUIC ACK frequency
/// extension): a cold entry's client sends a small fraction of the
/// datagrams it receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_acknowledges_a_bulk_answer_sparingly() {
    use hoard_netsim::{LinkConfig, start as netsim};
    use std::sync::atomic::Ordering;
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 40, 1_000).await;
    // Packets spaced as a real link spaces them (on bare loopback they
    // arrive in bursts, acknowledged a burst at a time anyway).
    let link = LinkConfig {
        delay: Duration::from_millis(5),
        rate_bps: Some(50_000_000),
        ..LinkConfig::default()
    };
    let sim = netsim("127.0.0.1:0".parse().expect("addr"), server.addr, link)
        .await
        .expect("netsim");
    let mut opts = options(&server, cache.path(), "ann");
    opts.server = sim.addr;
    let client = HoardClient::connect(opts, registry()).await.expect("connect");
    let stats = client
        .enter_zone(&ZoneId::new("meadow").expect("zone"))
        .await
        .expect("enter");
    assert_eq!(stats.objects, 40_000);
    let down = sim.stats.down.packets.load(Ordering::Relaxed);
    let up = sim.stats.up.packets.load(Ordering::Relaxed);
    assert!(down > 100, "a bulk answer: {down} datagrams down");
    // Without the request a client here sends one datagram per five it
    // receives (acknowledging every other packet, a received batch at a
    // time); asked for one per ten, about that.
    assert!(up * 8 < down, "{up} datagrams up for {down} down");
    client.close();
    server.shutdown().await;
}

/// A server that asks its clients to hold their acknowledgments longer
/// (`ack_delay`) gets fewer of them on a slow path: over a 200 ms round
/// trip, a client receiving a change every 50 ms acknowledges each one
/// within its own 25 ms otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asked_to_hold_its_acks_sends_fewer_on_a_slow_path() {
    use hoard_netsim::{LinkConfig, start as netsim};
    const CHANGES: u32 = 30;
    let mut acks = Vec::new();
    for ack_delay in [None, Some(Duration::from_millis(200))] {
        let data = tempfile::tempdir().expect("tempdir");
        let (ann_cache, bob_cache) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let server = server_with(data.path(), 1, 4, |o| o.ack_delay = ack_delay).await;
        let link = LinkConfig {
            delay: Duration::from_millis(100),
            ..LinkConfig::default()
        };
        let sim = netsim("127.0.0.1:0".parse().expect("addr"), server.addr, link)
            .await
            .expect("netsim");
        let mut opts = options(&server, ann_cache.path(), "ann");
        opts.server = sim.addr;
        let ann = HoardClient::connect(opts, registry()).await.expect("connect");
        let zone = ZoneId::new("meadow").expect("zone");
        ann.enter_zone(&zone).await.expect("enter");
        let bob = in_meadow(&server, bob_cache.path(), "bob").await;
        let mut world = World::new();
        wait_for(&ann, &mut world, |w| stones(w).len() == 4).await;
        let before = ann.connection_stats().frame_tx.acks;
        // A change a tick, as a busy zone makes them.
        for _ in 0..CHANGES {
            bob.send_intent("add_stones", &AddStones { object: 1, stones: 1 })
                .await
                .expect("intent");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_for(&ann, &mut world, |w| {
            stones(w).iter().any(|&(id, n)| id == 1 && n == 1 + CHANGES)
        })
        .await;
        acks.push(ann.connection_stats().frame_tx.acks - before);
        ann.close();
        bob.close();
        server.shutdown().await;
    }
    let (own, held) = (acks[0], acks[1]);
    println!("ACKs for {CHANGES} changes over a 200 ms round trip: {own} at the client's own delay, {held} held");
    assert!(
        own >= u64::from(CHANGES) / 2,
        "each change acknowledged on its own: {own} ACKs for {CHANGES} changes"
    );
    assert!(held * 2 < own, "held: {held} ACKs against {own}");
}

/// A client that asks for compression gets its answers and deltas packed
/// (zstd) and the same world as one that does not; each is verified by the
/// same digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_deltas_travel_packed_to_a_client_that_asks() {
    let data = tempfile::tempdir().expect("tempdir");
    let caches = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let server = server(data.path(), 4, 250).await;
    let zone = ZoneId::new("meadow").expect("zone");
    let connect = |cache: &Path, compression: bool| {
        let mut options = options(&server, cache, "ann");
        options.compression = compression;
        HoardClient::connect(options, registry())
    };
    // Each in turn: one tick changing all 1,000 crates, and the bytes the
    // server's delta streams carried for it.
    let mut results = Vec::new();
    for (cache, compression, fill) in [(&caches[0], false, 77), (&caches[1], true, 78)] {
        let client = connect(cache.path(), compression).await.expect("connect");
        let entry = client.enter_zone(&zone).await.expect("cold entry");
        assert_eq!((entry.objects, entry.shards_snapshot), (1000, 4));
        let mut world = World::new();
        let before = server.metrics.sent_bytes("delta");
        client
            .send_intent("refill", &Refill { stones: fill })
            .await
            .expect("intent");
        wait_for(&client, &mut world, |w| {
            let s = stones(w);
            s.len() == 1000 && s.iter().all(|&(id, n)| n == refilled(fill, id))
        })
        .await;
        let deltas = server.metrics.sent_bytes("delta") - before;
        client.close_and_wait(Duration::from_secs(1)).await;
        results.push((entry.bytes_rx, deltas));
    }
    let [(plain_answer, plain_deltas), (packed_answer, packed_deltas)] = results[..] else {
        unreachable!()
    };
    assert!(
        packed_answer * 2 < plain_answer,
        "the cold answer packed: {packed_answer} B against {plain_answer} B"
    );
    assert!(
        packed_deltas * 2 < plain_deltas,
        "the tick's deltas packed: {packed_deltas} B against {plain_deltas} B"
    );
    // The first cache, brought up to date through a packed connection, is
    // the world the second holds: every shard fresh or a delta, digests checked.
    let client = connect(caches[0].path(), true).await.expect("connect");
    let warm = client.enter_zone(&zone).await.expect("warm entry");
    assert_eq!((warm.shards_snapshot, warm.shards_repaired), (0, 0));
    let mut world = World::new();
    wait_for(&client, &mut world, |w| {
        stones(w).iter().all(|&(id, n)| n == refilled(78, id))
    })
    .await;
    client.close();
    server.shutdown().await;
}
