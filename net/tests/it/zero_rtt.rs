//! 0-RTT: a client that connects again to a server it met in this process
//! resumes its TLS session and sends `Hello` and `EnterZone` as early data;
//! a replayed early `Hello` cannot sign the real player out, and no intent
//! is acted on before the handshake completes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bevy_ecs::prelude::*;
use hoard_engine::ZoneId;
use hoard_net::quic::client::{ClientEvent, HoardClient};
use tokio::net::UdpSocket;

use super::e2e::{AddStones, options, registry, server_with, stones, wait_for};

/// A UDP relay on loopback in front of the server, one upstream socket per
/// client. Once `cut` is set, the server's replies to clients that appear
/// afterwards are dropped: the server sees their first flight (ClientHello
/// and 0-RTT data) exactly as it would see a replay of it by someone who
/// captured it, and their handshake can never complete.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let addr = front.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let cut_new = cut.clone();
        let task = tokio::spawn(async move {
            let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                let up = match upstreams.get(&from) {
                    Some(up) => up.clone(),
                    None => {
                        let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
                        let (reply, front, blackholed) = (up.clone(), front.clone(), cut_new.load(Ordering::SeqCst));
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok(n) = reply.recv(&mut buf).await {
                                if !blackholed {
                                    let _ = front.send_to(&buf[..n], from).await;
                                }
                            }
                        });
                        up.connect(server).await.expect("connect");
                        upstreams.insert(from, up.clone());
                        up
                    }
                };
                let _ = up.send(&buf[..n]).await;
            }
        });
        Relay { addr, cut, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The first connection to a server makes a full handshake; the next one
/// from the same process sends `Hello` and `EnterZone` as 0-RTT data, which
/// the server takes, and the zone is ready and warm as ever. A client that
/// then only connects (no pipelined entry) also resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connecting_again_sends_its_first_messages_as_early_data() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server_with(data.path(), 4, 25, |_| {}).await;
    let zone = ZoneId::new("meadow").expect("zone");

    let (first, entry) = HoardClient::connect_and_enter(options(&server, cache.path(), "ann"), registry(), &zone)
        .await
        .expect("connect");
    let stats = entry.wait().await.expect("cold entry");
    assert_eq!(stats.shards_snapshot, 4);
    assert_eq!(first.early_data(), None, "the first connection is a full handshake");
    drop(first);

    let (again, entry) = HoardClient::connect_and_enter(options(&server, cache.path(), "ann"), registry(), &zone)
        .await
        .expect("connect again");
    let stats = entry.wait().await.expect("warm entry");
    assert_eq!(again.early_data(), Some(true), "hello and the entry went as 0-RTT data");
    assert_eq!((stats.shards_fresh, stats.round_trips), (4, 1));
    let mut world = World::new();
    hoard_bevy::materialise::update(&again, &mut world);
    assert_eq!(stones(&mut world).len(), 100);
    // Intents go after the handshake, and are processed.
    let seq = again
        .send_intent("add_stones", &AddStones { object: 1, stones: 5 })
        .await
        .expect("intent");
    wait_for(&again, &mut world, |w| stones(w).contains(&(1, 6))).await;
    assert!(seq > 0);
    drop(again);

    let plain = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("connect a third time");
    assert_eq!(plain.early_data(), Some(true));
    let stats = plain.enter_zone(&zone).await.expect("entry");
    assert_eq!(stats.shards_fresh, 4);
    drop(plain);
    server.shutdown().await;
}

/// The player is connected; someone delivers a copy of a later 0-RTT first
/// flight of theirs (here: a connection whose replies are dropped, which
/// the server cannot tell from a replay). The server answers the early
/// `Hello` and `EnterZone` — pure reads, encrypted to keys the replayer
/// lacks — but the session does not take over the player's live one: the
/// handshake never completes, the early connection is closed at the hello
/// deadline, and the player is never signed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_early_hello_does_not_sign_the_player_out() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server_with(data.path(), 2, 10, |o| o.hello_timeout = Duration::from_secs(1)).await;
    let relay = Relay::start(server.addr).await;
    let zone = ZoneId::new("meadow").expect("zone");
    let mut through_relay = options(&server, cache.path(), "ann");
    through_relay.server = relay.addr;
    through_relay.pin = Some(server.identity);

    // A first connection leaves a ticket; the second is the live session.
    let (first, entry) = HoardClient::connect_and_enter(through_relay.clone(), registry(), &zone)
        .await
        .expect("connect");
    entry.wait().await.expect("entry");
    drop(first);
    let (live, entry) = HoardClient::connect_and_enter(through_relay.clone(), registry(), &zone)
        .await
        .expect("connect the live session");
    entry.wait().await.expect("entry");
    assert_eq!(live.early_data(), Some(true));
    let timeouts = server.stats.hello_timeouts.load(Ordering::SeqCst);

    // The live session's client connects once more, and that flight is all
    // the server ever gets of it.
    // (The same cache, so the same tickets: it opens read-only, since the
    // live client holds it.)
    relay.cut.store(true, Ordering::SeqCst);
    let replayed = through_relay.clone();
    let stuck_zone = zone.clone();
    let stuck = tokio::spawn(async move { HoardClient::connect_and_enter(replayed, registry(), &stuck_zone).await });
    // Polled: the server has no event for a connection it closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.stats.hello_timeouts.load(Ordering::SeqCst) == timeouts {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the early connection was closed in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stuck.abort();

    // The live session was never signed out: its actions still work.
    let mut world = World::new();
    hoard_bevy::materialise::update(&live, &mut world);
    live.send_intent("add_stones", &AddStones { object: 3, stones: 1 })
        .await
        .expect("intent");
    wait_for(&live, &mut world, |w| stones(w).contains(&(3, 4))).await;
    let events = hoard_bevy::materialise::update(&live, &mut world);
    assert!(
        !events.iter().any(|e| matches!(e, ClientEvent::Disconnected { .. })),
        "{events:?}"
    );
    drop(live);
    server.shutdown().await;
}

/// A restarted server (same address, same identity) no longer knows the
/// ticket: it refuses the early data, and the client sends `Hello` and its
/// `EnterZone` again on a new control stream once the handshake completes —
/// the zone still comes in warm, and actions work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_data_a_restarted_server_refuses_is_sent_again() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let zone = ZoneId::new("meadow").expect("zone");
    let first = server_with(data.path(), 4, 25, |_| {}).await;
    let addr = first.addr;
    let (client, entry) = HoardClient::connect_and_enter(options(&first, cache.path(), "ann"), registry(), &zone)
        .await
        .expect("connect");
    entry.wait().await.expect("cold entry");
    drop(client);
    first.shutdown().await;

    let server = server_with(data.path(), 4, 25, |o| o.listen = addr).await;
    let (client, entry) = HoardClient::connect_and_enter(options(&server, cache.path(), "ann"), registry(), &zone)
        .await
        .expect("connect to the restarted server");
    let stats = entry.wait().await.expect("warm entry");
    assert_eq!(
        client.early_data(),
        Some(false),
        "the restarted server refused the early data"
    );
    assert_eq!((stats.shards_fresh, stats.shards_snapshot), (4, 0));
    let mut world = World::new();
    hoard_bevy::materialise::update(&client, &mut world);
    client
        .send_intent("add_stones", &AddStones { object: 2, stones: 1 })
        .await
        .expect("intent");
    wait_for(&client, &mut world, |w| stones(w).contains(&(2, 3))).await;
    drop(client);
    server.shutdown().await;
}
