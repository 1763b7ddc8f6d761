//! Relays on loopback: an origin, two chained relays and clients whose
//! caches stay valid whichever way the data came; live changes through the
//! chain; an upstream that goes away and comes back.

use std::path::Path;
use std::time::Duration;

use bevy_ecs::prelude::*;
use hoard_engine::{ServerIdentity, ZoneId};
use hoard_net::quic::client::ClientError;
use hoard_net::quic::client::{ClientEvent, ClientOptions, ClientUpdate, HoardClient};
use hoard_net::quic::relay::tamper::Tamper;
use hoard_net::quic::relay::{RelayHandle, RelayOptions, start_relay, start_tampering_relay};
use hoard_net::quic::server::ServerHandle;

use crate::e2e::{AddStones, options, registry, server, server_with, stones, wait_for};

fn zone() -> ZoneId {
    ZoneId::new("meadow").expect("zone")
}

fn relay_options(
    data: &Path,
    upstream: std::net::SocketAddr,
    pin: ServerIdentity,
    world: Option<ServerIdentity>,
    token: String,
) -> RelayOptions {
    RelayOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data.to_owned(),
        upstream,
        upstream_pin: Some(pin),
        world,
        token,
        service: "world".into(),
        zones: Vec::new(),
        dev_mode: true,
        max_connections: 1000,
        max_connections_per_ip: 1000,
        carry_actions: false,
        web_transport: None,
    }
}

async fn relay(
    data: &Path,
    upstream: std::net::SocketAddr,
    pin: ServerIdentity,
    world: Option<ServerIdentity>,
    token: String,
) -> RelayHandle {
    start_relay(relay_options(data, upstream, pin, world, token), registry())
        .await
        .expect("relay starts")
}

/// A player's options through `relay` of `world`.
fn via(relay: &RelayHandle, world: ServerIdentity, cache: &Path, player: &str) -> ClientOptions {
    let mut options =
        ClientOptions::new(relay.addr(), cache.to_owned(), format!("dev:{player}")).with_pin(relay.server.identity);
    options.world = Some(world);
    options
}

/// Closes a client and lets go of its cache (so the next one may write it).
async fn leave(client: HoardClient) {
    client.close_and_wait(Duration::from_secs(2)).await;
    drop(client);
}

async fn add(origin: &ServerHandle, cache: &Path, object: u64, stones: u32) {
    let bob = HoardClient::connect(options(origin, cache, "bob"), registry())
        .await
        .expect("bob connects");
    let mut world = World::new();
    bob.enter_zone(&zone()).await.expect("bob enters");
    let before = {
        crate::e2e::wait_for(&bob, &mut world, |_| true).await;
        crate::e2e::stones(&mut world)
            .into_iter()
            .find(|(o, _)| *o == object)
            .map(|(_, s)| s)
    }
    .expect("object exists");
    bob.send_intent("add_stones", &AddStones { object, stones })
        .await
        .expect("intent");
    wait_for(&bob, &mut world, |w| {
        crate::e2e::stones(w).contains(&(object, before + stones))
    })
    .await;
    leave(bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_relays_serve_the_origins_world_and_a_cache_moves_between_routes() {
    let data = tempfile::tempdir().expect("tempdir");
    let (r1, r2) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (cache, bob_cache) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let origin = server(data.path(), 4, 25).await;
    let world_id = origin.identity;
    let token = origin
        .auth
        .issue("relay-one", chrono::Utc::now().timestamp() + 3600)
        .expect("token");
    let first = relay(r1.path(), origin.addr, origin.identity, None, token).await;
    assert_eq!(first.world, world_id);
    let second = relay(
        r2.path(),
        first.addr(),
        first.server.identity,
        Some(world_id),
        "dev:relay-two".into(),
    )
    .await;
    assert_eq!(second.world, world_id);

    // Cold through two relays: the origin's world, every shard checked
    // against the origin's signed head.
    let ann = HoardClient::connect(via(&second, world_id, cache.path(), "ann"), registry())
        .await
        .expect("ann connects through two relays");
    assert_eq!(ann.world(), world_id);
    assert_ne!(ann.identity(), world_id, "the transport is the relay's");
    let stats = ann.enter_zone(&zone()).await.expect("enter");
    assert_eq!((stats.shards, stats.shards_snapshot, stats.objects), (4, 4, 100));
    // The relay packs its answers as the origin does: a client that does
    // not ask gets the same entry in more bytes.
    let plain_cache = tempfile::tempdir().expect("tempdir");
    let mut uncompressed = via(&second, world_id, plain_cache.path(), "cleo");
    uncompressed.compression = false;
    let plain = HoardClient::connect(uncompressed, registry())
        .await
        .expect("cleo connects through two relays");
    let unpacked = plain.enter_zone(&zone()).await.expect("enter");
    assert_eq!((unpacked.shards_snapshot, unpacked.objects), (4, 100));
    assert!(
        stats.bytes_rx * 2 < unpacked.bytes_rx,
        "packed through the relay: {} B against {} B",
        stats.bytes_rx,
        unpacked.bytes_rx
    );
    leave(plain).await;
    let mut world = World::new();
    hoard_bevy::materialise::update(&ann, &mut world);
    assert_eq!(stones(&mut world).len(), 100);

    // A change at the origin reaches her through both relays.
    add(&origin, bob_cache.path(), 2005, 10).await;
    wait_for(&ann, &mut world, |w| stones(w).contains(&(2005, 15))).await;
    let intent = ann
        .send_intent("add_stones", &AddStones { object: 1, stones: 1 })
        .await
        .expect("sent");
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            ann.changed().await;
            for u in ann.take_updates() {
                if let ClientUpdate::Event(ClientEvent::IntentRejected { seq, message, .. }) = u
                    && seq == intent
                {
                    return message;
                }
            }
        }
    })
    .await
    .expect("the relay answers the intent");
    assert!(refused.contains("relay"), "{refused}");
    leave(ann).await;

    // The same cache through the other relay: up to date, nothing resent.
    let ann = HoardClient::connect(via(&first, world_id, cache.path(), "ann"), registry())
        .await
        .expect("ann connects through the first relay");
    let stats = ann.enter_zone(&zone()).await.expect("enter");
    assert_eq!((stats.shards_fresh, stats.shards_snapshot), (4, 0), "{stats:?}");
    leave(ann).await;

    // Something changes while she is away: through the far relay her entry
    // is a delta, not the shard again.
    add(&origin, bob_cache.path(), 2005, 10).await;
    let ann = HoardClient::connect(via(&second, world_id, cache.path(), "ann"), registry())
        .await
        .expect("ann connects through two relays again");
    let stats = ann.enter_zone(&zone()).await.expect("enter");
    assert_eq!(
        (stats.shards_fresh, stats.shards_delta, stats.shards_snapshot),
        (3, 1, 0),
        "{stats:?}"
    );
    let mut world = World::new();
    hoard_bevy::materialise::update(&ann, &mut world);
    assert!(stones(&mut world).contains(&(2005, 25)));
    leave(ann).await;

    // A URL names the object the same way whichever route the data took:
    // resolved through two relays by a client that never entered the zone
    // (one round trip), then from its live copy.
    let url: hoard_engine::HoardUrl = "hoard://world.example:7000/world/meadow/2/2005".parse().expect("url");
    let cid_cache = tempfile::tempdir().expect("tempdir");
    let cid = HoardClient::connect(via(&second, world_id, cid_cache.path(), "cid"), registry())
        .await
        .expect("cid connects");
    for _ in 0..2 {
        match cid.resolve(&url).await.expect("resolves") {
            hoard_net::quic::client::Resolved::Object(Some(o)) => assert_eq!(o.id.0, 2005),
            other => panic!("{other:?}"),
        }
    }
    let gone: hoard_engine::HoardUrl = "hoard://world.example:7000/world/meadow/2/2999".parse().expect("url");
    assert!(matches!(
        cid.resolve(&gone).await,
        Ok(hoard_net::quic::client::Resolved::Object(None))
    ));
    let elsewhere: hoard_engine::HoardUrl = "hoard://world.example:7000/arena/meadow".parse().expect("url");
    assert!(matches!(cid.resolve(&elsewhere).await, Err(ClientError::Url(_))));
    leave(cid).await;

    // And straight at the origin: the cache is the world's, not a relay's.
    let ann = HoardClient::connect(options(&origin, cache.path(), "ann"), registry())
        .await
        .expect("ann connects to the origin");
    let stats = ann.enter_zone(&zone()).await.expect("enter");
    assert_eq!((stats.shards_fresh, stats.shards_snapshot), (4, 0), "{stats:?}");
    leave(ann).await;

    // A message of the game to the zone's players reaches those who follow
    // the zone through two relays.
    let ann = HoardClient::connect(via(&second, world_id, cache.path(), "ann"), registry())
        .await
        .expect("ann connects through two relays");
    ann.enter_zone(&zone()).await.expect("enter");
    add(&origin, bob_cache.path(), 1001, 3).await;
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            for u in ann.take_updates() {
                if let ClientUpdate::Event(ClientEvent::GameMessage { kind, zone, payload }) = u {
                    return (kind, zone, payload);
                }
            }
            ann.changed().await;
        }
    })
    .await
    .expect("the zone's message comes through the relays");
    assert_eq!(
        heard,
        (
            "added".to_owned(),
            Some(zone()),
            rmp_serde::to_vec(&3u32).expect("encodes")
        )
    );
    leave(ann).await;

    second.shutdown().await;
    first.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_loses_its_upstream_keeps_serving_and_catches_up_when_it_returns() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let data = tempfile::tempdir().expect("tempdir");
    let r1 = tempfile::tempdir().expect("tempdir");
    let (cache, bob_cache) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let origin = server(data.path(), 4, 25).await;
    let (addr, world_id) = (origin.addr, origin.identity);
    let token = origin
        .auth
        .issue("relay-one", chrono::Utc::now().timestamp() + 3600)
        .expect("token");
    let relay = relay(r1.path(), addr, world_id, None, token).await;
    let ann = HoardClient::connect(via(&relay, world_id, cache.path(), "ann"), registry())
        .await
        .expect("ann connects");
    ann.enter_zone(&zone()).await.expect("enter");
    let mut world = World::new();
    hoard_bevy::materialise::update(&ann, &mut world);

    // The origin goes away: ann is told the relay's world may be stale.
    origin.shutdown().await;
    let status = |writable: bool| {
        let ann = &ann;
        async move {
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    ann.changed().await;
                    for u in ann.take_updates() {
                        if let ClientUpdate::Event(ClientEvent::ServerStatus { writable: w, message }) = u
                            && w == writable
                        {
                            return message;
                        }
                    }
                }
            })
            .await
            .expect("a status in time")
        }
    };
    let stale = status(false).await;
    assert!(stale.contains("stale"), "{stale}");
    // Still served meanwhile: a second player enters through the relay.
    let cid = tempfile::tempdir().expect("tempdir");
    let cid_client = HoardClient::connect(via(&relay, world_id, cid.path(), "cid"), registry())
        .await
        .expect("cid connects while the origin is away");
    assert_eq!(cid_client.enter_zone(&zone()).await.expect("enter").objects, 100);
    leave(cid_client).await;

    // Back on the same address, and changed while away.
    let origin = server_with(data.path(), 4, 25, |o| o.listen = addr).await;
    status(true).await;
    add(&origin, bob_cache.path(), 3007, 5).await;
    wait_for(&ann, &mut world, |w| stones(w).contains(&(3007, 12))).await;
    assert!(relay.stats.resyncs.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    leave(ann).await;
    relay.shutdown().await;
    origin.shutdown().await;
}

/// A relay that alters what it serves, consistently (digests recomputed),
/// is caught by the origin's signatures: a bit flipped, an object that left
/// kept (a dropped tombstone), an old signed head replayed. Nothing of it is
/// cached, and the client goes on through an honest route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampering_relay_is_caught_and_the_client_takes_another_route() {
    let data = tempfile::tempdir().expect("tempdir");
    let bob_cache = tempfile::tempdir().expect("tempdir");
    let origin = server(data.path(), 4, 25).await;
    let world_id = origin.identity;
    let token = |name: &str| {
        origin
            .auth
            .issue(name, chrono::Utc::now().timestamp() + 3600)
            .expect("token")
    };
    let honest_dir = tempfile::tempdir().expect("tempdir");
    let honest = relay(honest_dir.path(), origin.addr, world_id, None, token("honest")).await;
    let mut liars = Vec::new();
    for (i, how) in [Tamper::FlipByte, Tamper::DropTombstone, Tamper::ReplayOldHead]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = relay_options(dir.path(), origin.addr, world_id, None, token(&format!("liar-{i}")));
        let liar = start_tampering_relay(options, registry(), how)
            .await
            .expect("liar starts");
        liars.push((how, liar, dir));
    }
    // The world moves on after the liars took their first copies: a crate
    // leaves shard 2, another gets stones.
    let bob = HoardClient::connect(options(&origin, bob_cache.path(), "bob"), registry())
        .await
        .expect("bob");
    bob.enter_zone(&zone()).await.expect("bob enters");
    let mut bob_world = World::new();
    bob.send_intent("remove_crate", &crate::e2e::RemoveCrate { object: 2003 })
        .await
        .expect("remove");
    bob.send_intent(
        "add_stones",
        &AddStones {
            object: 1004,
            stones: 3,
        },
    )
    .await
    .expect("add");
    wait_for(&bob, &mut bob_world, |w| {
        let s = stones(w);
        s.len() == 99 && s.contains(&(1004, 7))
    })
    .await;
    leave(bob).await;
    // The honest relay has the change before anyone asks it.
    tokio::time::timeout(Duration::from_secs(10), async {
        while honest.stats.changes.load(std::sync::atomic::Ordering::Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the honest relay follows");

    for (how, liar, _) in &liars {
        // A player with an up-to-date cache (the replay needs one newer
        // than what it replays; the others catch a cold entry too).
        let cache = tempfile::tempdir().expect("tempdir");
        if *how == Tamper::ReplayOldHead {
            let warm = HoardClient::connect(via(&honest, world_id, cache.path(), "ann"), registry())
                .await
                .expect("ann warms up");
            warm.enter_zone(&zone()).await.expect("enter");
            leave(warm).await;
        }
        let caught = match HoardClient::connect(via(liar, world_id, cache.path(), "ann"), registry()).await {
            Ok(client) => {
                let result = client.enter_zone(&zone()).await;
                leave(client).await;
                result
            }
            Err(e) => Err(e),
        };
        let Err(ClientError::Forged(why)) = caught else {
            panic!("{how:?}: {caught:?}");
        };
        // The shard caught was not kept (shards the liar served faithfully
        // may be).
        let shard = why
            .strip_prefix("shard ")
            .and_then(|r| r.split(':').next())
            .expect("the error names the shard");
        let kept = walk(cache.path())
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy() == format!("{shard}.shard"))
            })
            .count();
        if *how != Tamper::ReplayOldHead {
            assert_eq!(kept, 0, "{how:?}: the forged shard {shard} was cached");
        }
        // Routes in order: the liar, then the honest relay.
        let routes = [
            via(liar, world_id, cache.path(), "ann"),
            via(&honest, world_id, cache.path(), "ann"),
        ];
        let (client, stats, taken) = HoardClient::connect_and_enter_any(&routes, registry(), &zone())
            .await
            .expect("an honest route");
        assert_eq!(taken, 1, "{how:?}");
        assert_eq!(stats.objects, 99, "{how:?}");
        let mut world = World::new();
        hoard_bevy::materialise::update(&client, &mut world);
        let s = stones(&mut world);
        assert!(s.contains(&(1004, 7)) && !s.iter().any(|(o, _)| *o == 2003), "{how:?}");
        leave(client).await;
    }
    for (_, liar, _) in liars {
        liar.shutdown().await;
    }
    honest.shutdown().await;
    origin.shutdown().await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A trusted relay (it holds the world's token secret) carries a player's
/// actions to the origin: the player's intent is processed there, the
/// `Processed` comes back through the relay, and the change reaches the
/// player through the relay's followed shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_relay_carries_a_players_actions_to_the_origin() {
    let data = tempfile::tempdir().expect("tempdir");
    let (r1, cache) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let origin = server(data.path(), 4, 25).await;
    std::fs::copy(data.path().join("token.secret"), r1.path().join("token.secret")).expect("the world's secret");
    let token = |name: &str| {
        origin
            .auth
            .issue(name, chrono::Utc::now().timestamp() + 3600)
            .expect("token")
    };
    let mut options = relay_options(r1.path(), origin.addr, origin.identity, None, token("relay-one"));
    options.carry_actions = true;
    options.dev_mode = false;
    let relay = start_relay(options, registry()).await.expect("relay");
    let mut player = via(&relay, origin.identity, cache.path(), "ann");
    player.token = token("ann");
    let ann = HoardClient::connect(player, registry())
        .await
        .expect("ann connects with the world's token");
    ann.enter_zone(&zone()).await.expect("enter");
    let seq = ann
        .send_intent(
            "add_stones",
            &AddStones {
                object: 2005,
                stones: 10,
            },
        )
        .await
        .expect("sent");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            ann.changed().await;
            for u in ann.take_updates() {
                match u {
                    ClientUpdate::Event(ClientEvent::IntentsProcessed { seqs }) if seqs.contains(&seq) => return,
                    ClientUpdate::Event(ClientEvent::IntentRejected { message, .. }) => panic!("rejected: {message}"),
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("processed at the origin, answered through the relay");
    // The change comes through the relay's shards (it may trail `Processed`).
    let url: hoard_engine::HoardUrl = "hoard://127.0.0.1:1/world/meadow/2/2005".parse().expect("url");
    let stones = |o: &hoard_world_cache::CachedObject| {
        let components = o.state.components().expect("components");
        let (_, bytes) = components.into_iter().find(|(n, _)| *n == "crate").expect("a crate");
        rmp_serde::from_slice::<crate::e2e::Crate>(bytes)
            .expect("decodes")
            .stones
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(hoard_net::quic::client::Resolved::Object(Some(o))) = ann.resolve(&url).await
                && stones(&o) == 15
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the change reaches the player through the relay");
    leave(ann).await;
    relay.shutdown().await;
    origin.shutdown().await;
}
