//! Misbehaving clients on loopback: garbage, oversized frames, hostile
//! MessagePack, unknown types, too many shards, unknown and forbidden zones,
//! bogus cursors, bad tokens, a connection flood and a slow consumer. Each
//! gets a clear error or is disconnected with a reason, and a well-behaved
//! client on the same server keeps getting its answers and deltas.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bevy_ecs::prelude::*;
use hoard_bevy::Replicated;
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{Digest, Epoch, ObjectId, PublishRegistry, Published, Publisher, RedbStore, Seq, ShardId, ZoneId};
use hoard_net::quic::client::HoardClient;
use hoard_net::quic::server::{Game, ServerHandle, ServerOptions, start};
use hoard_net::testing::FrameReader;
use hoard_proto::intents::IntentRegistry;
use hoard_proto::sync::server::AccessPolicy;
use hoard_proto::wire::{
    EnterZone, ErrorCode, Hello, MAX_BULK_FRAME, MAX_CONTROL_FRAME, MAX_SHARDS_PER_ENTRY, Message, PROTOCOL_VERSION,
    ShardHave, encode_frame,
};
use hoard_trust::tls::{PinnedVerifier, SERVER_NAME, client_config};
use quinn::{Connection, RecvStream, SendStream, VarInt};

use super::e2e::{Crate, in_meadow, options};

/// `vault` is closed to everyone but `warden`.
struct Vault;
impl AccessPolicy for Vault {
    fn may_enter(&self, perspective: &str, zone: &ZoneId) -> bool {
        zone.as_str() != "vault" || perspective == "warden"
    }
}

/// When present, every crate gains a stone each tick: a stream of deltas.
#[derive(Resource)]
struct Churn;

fn churn(on: Option<Res<Churn>>, mut crates: Query<&mut Crate>) {
    if on.is_some() {
        for mut c in &mut crates {
            c.stones += 1;
        }
    }
}

pub(crate) fn registry() -> PublishRegistry {
    PublishRegistry::builder().publish::<Crate>("crate", 1).build()
}

async fn server(data: &Path, max_connections: usize, churning: bool) -> ServerHandle {
    server_with(data, max_connections, churning, 400, |_| {}).await
}

pub(crate) async fn server_with(
    data: &Path,
    max_connections: usize,
    churning: bool,
    objects: u64,
    tune: impl FnOnce(&mut ServerOptions),
) -> ServerHandle {
    let store = Arc::new(RedbStore::open_dir(data).expect("store"));
    for (zone, base) in [("meadow", 0u64), ("vault", 10)] {
        let specs: Vec<_> = (base..base + 2).map(|s| ShardSpec::shared(ShardId(s))).collect();
        store
            .create_zone(&ZoneId::new(zone).expect("zone"), &specs)
            .expect("zone");
    }
    let mut world = World::new();
    for i in 0..objects {
        world.spawn((Published::new(ObjectId(i), ShardId(i % 2)), Crate { stones: 0 }));
    }
    if churning {
        world.insert_resource(Churn);
    }
    let mut schedule = Schedule::default();
    schedule.add_systems(churn);
    let mut game = Game::new(world, schedule, Publisher::new(registry()), IntentRegistry::new());
    game.access = Arc::new(Vault);
    let mut options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.to_owned());
    options.tick_hz = 50;
    options.max_connections = max_connections;
    options.delta_queue = 4;
    tune(&mut options);
    start(options, store, game).await.expect("server")
}

/// A raw connection, with small receive windows (so it can stop reading).
async fn raw(server: &ServerHandle) -> (Connection, SendStream, RecvStream) {
    let verifier = Arc::new(PinnedVerifier::new("test", Some(server.identity), None));
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(client_config(verifier).expect("tls")).expect("quic tls");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(VarInt::from_u32(16 * 1024));
    transport.receive_window(VarInt::from_u32(32 * 1024));
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(server.addr, SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    let (send, recv) = conn.open_bi().await.expect("bi");
    (conn, send, recv)
}

fn hello(server: &ServerHandle, token: Option<String>) -> Vec<u8> {
    let token = token.unwrap_or_else(|| {
        server
            .auth
            .issue("mallory", chrono::Utc::now().timestamp() + 60)
            .expect("token")
    });
    Message::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        registry: registry().hash().0,
        service: "world".into(),
        token,
        codecs: Vec::new(),
        token_keys: false,
    })
    .to_frame()
}

/// The error the server reports: the `Error` frame's code, or the close code.
async fn refusal(conn: &Connection, recv: RecvStream) -> u16 {
    refusal_on(conn, FrameReader::new(recv, MAX_CONTROL_FRAME)).await
}

async fn refusal_on(conn: &Connection, mut reader: FrameReader) -> u16 {
    let deadline = Duration::from_secs(10);
    loop {
        match tokio::time::timeout(deadline, reader.next())
            .await
            .expect("server answers in time")
        {
            Ok(Some((Message::Error(e), _))) => return e.code,
            Ok(Some(_)) => continue,
            _ => {
                return match tokio::time::timeout(deadline, conn.closed())
                    .await
                    .expect("closed in time")
                {
                    quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner() as u16,
                    other => panic!("closed without a reason: {other}"),
                };
            }
        }
    }
}

async fn send_raw(send: &mut SendStream, bytes: &[u8]) {
    send.write_all(bytes).await.expect("write");
}

/// A healthy client still gets a whole zone.
async fn healthy(server: &ServerHandle, cache: &Path) {
    let client = HoardClient::connect(options(server, cache, "alice"), registry())
        .await
        .expect("connect");
    let stats = client
        .enter_zone(&ZoneId::new("meadow").expect("zone"))
        .await
        .expect("enter");
    assert_eq!(stats.objects, 400);
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_streams_get_a_protocol_error_and_others_carry_on() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 100, false).await;
    let mut deep = vec![0x91u8; 10_000];
    deep.push(0xc0);
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("garbage", b"GARBAGE! not a frame at all".to_vec(), ErrorCode::Protocol),
        (
            "frame over the limit",
            ((MAX_CONTROL_FRAME + 1) as u32).to_be_bytes().to_vec(),
            ErrorCode::Protocol,
        ),
        (
            "array of 2^32 elements",
            encode_frame(0x01, &[0xdd, 0xff, 0xff, 0xff, 0xff]),
            ErrorCode::Protocol,
        ),
        ("nesting 10,000 deep", encode_frame(0x01, &deep), ErrorCode::Protocol),
        ("unknown message type", encode_frame(0x7f, &[0x90]), ErrorCode::Protocol),
        (
            "enter before hello",
            Message::EnterZone(EnterZone {
                request: 1,
                zone: ZoneId::new("meadow").expect("z"),
                subscribe: false,
                have: vec![],
                held: Vec::new(),
                proofs: false,
            })
            .to_frame(),
            ErrorCode::Protocol,
        ),
    ];
    for (name, bytes, want) in cases {
        let (conn, mut send, recv) = raw(&server).await;
        send_raw(&mut send, &bytes).await;
        assert_eq!(refusal(&conn, recv).await, want as u16, "{name}");
    }
    healthy(&server, cache.path()).await;
    server.shutdown().await;
}

/// `token` with one character of its signed claims changed (a world token's
/// claims are base64url: the 21st character is inside them).
fn altered(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ascii")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_by_reason() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 100, false).await;
    let now = chrono::Utc::now().timestamp();
    let expired = server.auth.issue("mallory", now - 1).expect("token");
    let forged = altered(&server.auth.issue("mallory", now + 60).expect("token"));
    for (token, want) in [
        (expired, ErrorCode::Expired),
        (forged, ErrorCode::BadToken),
        ("dev:mallory".to_owned(), ErrorCode::BadToken),
        ("x".repeat(100_000), ErrorCode::BadToken),
    ] {
        let (conn, mut send, recv) = raw(&server).await;
        send_raw(&mut send, &hello(&server, Some(token))).await;
        assert_eq!(refusal(&conn, recv).await, want as u16);
    }
    // The same token signing in again (a restarted client, or a replayed
    // token) takes over; the older connection is closed with the reason.
    let token = server.auth.issue("mallory", now + 60).expect("token");
    let (conn1, mut send1, recv1) = raw(&server).await;
    send_raw(&mut send1, &hello(&server, Some(token.clone()))).await;
    let mut reader = FrameReader::new(recv1, MAX_CONTROL_FRAME);
    assert!(matches!(reader.next().await, Ok(Some((Message::Welcome(_), _)))));
    let (_conn2, mut send2, recv2) = raw(&server).await;
    send_raw(&mut send2, &hello(&server, Some(token))).await;
    let mut reader2 = FrameReader::new(recv2, MAX_CONTROL_FRAME);
    assert!(matches!(reader2.next().await, Ok(Some((Message::Welcome(_), _)))));
    assert_eq!(refusal_on(&conn1, reader).await, ErrorCode::TokenInUse as u16);
    healthy(&server, cache.path()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reports_the_servers_refusal_not_a_lost_stream() {
    // `connect_and_enter` writes `EnterZone` right behind `Hello`; a
    // server that refuses the token stops reading, so that write can fail
    // before the refusal is read. The client must still say why.
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 100, false).await;
    let other_data = tempfile::tempdir().expect("tempdir");
    let other = self::server(other_data.path(), 100, false).await;
    let now = chrono::Utc::now().timestamp();
    let meadow = ZoneId::new("meadow").expect("zone");
    for round in 0..8 {
        let expired = server.auth.issue("mallory", now - 1).expect("token");
        let altered = altered(&server.auth.issue("mallory", now + 60).expect("token"));
        let foreign = other.auth.issue("mallory", now + 60).expect("token");
        for (token, want) in [
            (expired, ErrorCode::Expired),
            (altered, ErrorCode::BadToken),
            (foreign, ErrorCode::BadToken),
        ] {
            let mut opts = options(&server, cache.path(), "mallory");
            opts.token = token;
            let result = HoardClient::connect_and_enter(opts, registry(), &meadow).await;
            match result {
                Err(hoard_net::quic::client::ClientError::Refused { code, .. }) => {
                    assert_eq!(code, want as u16, "round {round}");
                }
                Err(other) => panic!("round {round}: the refusal was lost: {other}"),
                Ok(_) => panic!("round {round}: a bad token was accepted"),
            }
        }
    }
    // An older session replaced by a newer one is told so.
    let (older, entry) = HoardClient::connect_and_enter(options(&server, cache.path(), "alice"), registry(), &meadow)
        .await
        .expect("older");
    entry.wait().await.expect("entered");
    older.take_updates();
    let newer = HoardClient::connect(options(&server, cache.path(), "alice"), registry())
        .await
        .expect("newer");
    let reason = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            for update in older.take_updates() {
                if let hoard_net::quic::client::ClientUpdate::Event(
                    hoard_net::quic::client::ClientEvent::Disconnected { reason },
                ) = update
                {
                    return reason;
                }
            }
            older.changed().await;
        }
    })
    .await
    .expect("the older session hears it was replaced");
    assert!(reason.contains("signed in again"), "{reason}");
    newer.close();
    other.shutdown().await;
    server.shutdown().await;
}

async fn after_hello(server: &ServerHandle, player: &str) -> (Connection, SendStream, FrameReader) {
    let (conn, mut send, recv) = raw(server).await;
    let token = server
        .auth
        .issue(player, chrono::Utc::now().timestamp() + 60)
        .expect("token");
    send_raw(&mut send, &hello(server, Some(token))).await;
    let mut reader = FrameReader::new(recv, MAX_CONTROL_FRAME);
    assert!(matches!(reader.next().await, Ok(Some((Message::Welcome(_), _)))));
    (conn, send, reader)
}

fn enter(zone: &str, have: Vec<ShardHave>) -> Vec<u8> {
    Message::EnterZone(EnterZone {
        request: 7,
        zone: ZoneId::new(zone).expect("zone"),
        subscribe: false,
        have,
        held: Vec::new(),
        proofs: false,
    })
    .to_frame()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_zone_requests_are_denied_or_answered_safely() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 100, false).await;

    // Unknown and forbidden zones: a denial, and the session goes on.
    let (conn, mut send, mut reader) = after_hello(&server, "mallory").await;
    for (zone, want) in [("atlantis", ErrorCode::UnknownZone), ("vault", ErrorCode::Forbidden)] {
        send_raw(&mut send, &enter(zone, vec![])).await;
        match reader.next().await {
            Ok(Some((Message::ZoneDenied(d), _))) => assert_eq!(d.code, want as u16, "{zone}"),
            other => panic!("{zone}: expected a denial, got {other:?}"),
        }
    }
    // A hwm in the future and an epoch never issued: a full, correct snapshot.
    let bogus = vec![
        ShardHave {
            shard: ShardId(0),
            epoch: Epoch(12345),
            hwm: Seq(1),
            digest: Digest::EMPTY,
        },
        ShardHave {
            shard: ShardId(1),
            epoch: Epoch(1),
            hwm: Seq(u64::MAX),
            digest: Digest::EMPTY,
        },
        ShardHave {
            shard: ShardId(99),
            epoch: Epoch(1),
            hwm: Seq(1),
            digest: Digest::EMPTY,
        },
    ];
    send_raw(&mut send, &enter("meadow", bogus)).await;
    let answer = conn.accept_uni().await.expect("answer stream");
    let mut answer = FrameReader::new(answer, MAX_BULK_FRAME);
    let mut snapshots = 0;
    while let Some((msg, _)) = answer.next().await.expect("answer") {
        if let Message::Snapshot(s) = msg {
            assert_eq!(s.objects.len(), 200);
            snapshots += 1;
        }
    }
    assert_eq!(
        snapshots, 2,
        "both known shards answered whole; the unknown one ignored"
    );

    // Too many shards: a limit error and a close.
    let many: Vec<ShardHave> = (0..=MAX_SHARDS_PER_ENTRY as u64)
        .map(|s| ShardHave {
            shard: ShardId(s),
            epoch: Epoch(1),
            hwm: Seq(1),
            digest: Digest::EMPTY,
        })
        .collect();
    send_raw(&mut send, &enter("meadow", many)).await;
    let code = refusal_on(&conn, reader).await;
    assert_eq!(code, ErrorCode::Limit as u16);

    // A million shards does not even fit a frame.
    let (conn, mut send, recv) = raw(&server).await;
    let len = (1_000_000u32 * 55).to_be_bytes();
    send_raw(&mut send, &len).await;
    assert_eq!(refusal(&conn, recv).await, ErrorCode::Protocol as u16);
    healthy(&server, cache.path()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_is_capped_and_a_player_still_gets_in() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    // The total cap alone: no per-address cap, and no hello deadline that
    // would free slots while the thousand attempts are still arriving.
    let server = server_with(data.path(), 50, false, 400, |o| {
        o.max_connections_per_ip = 10_000;
        o.hello_timeout = Duration::from_secs(120);
    })
    .await;
    let verifier = Arc::new(PinnedVerifier::new("test", Some(server.identity), None));
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(client_config(verifier).expect("tls")).expect("quic tls");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let attempts: Vec<_> = (0..1000)
        .map(|_| {
            let connecting = endpoint.connect(server.addr, SERVER_NAME).expect("connect");
            tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(20), connecting).await })
        })
        .collect();
    let mut held = Vec::new();
    for a in attempts {
        if let Ok(Ok(Ok(conn))) = a.await {
            held.push(conn);
        }
    }
    assert!(
        held.len() <= 50,
        "{} connections accepted over a limit of 50",
        held.len()
    );
    assert!(server.stats.refused.load(std::sync::atomic::Ordering::Relaxed) >= 950);
    // Free one slot and a real player gets in and through.
    for c in &held {
        c.close(VarInt::from_u32(0), b"");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.stats.connections.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        tokio::time::timeout_at(deadline, tokio::task::yield_now())
            .await
            .expect("connections drain");
    }
    healthy(&server, cache.path()).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_others_keep_their_deltas() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path(), 100, true).await;
    let (conn, mut send, _reader) = after_hello(&server, "sloth").await;
    let msg = Message::EnterZone(EnterZone {
        request: 1,
        zone: ZoneId::new("meadow").expect("zone"),
        subscribe: true,
        have: vec![],
        held: Vec::new(),
        proofs: false,
    });
    send_raw(&mut send, &msg.to_frame()).await;
    // Never accept or read a stream again.
    let reason = tokio::time::timeout(Duration::from_secs(30), conn.closed())
        .await
        .expect("disconnected in time");
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), ErrorCode::SlowConsumer as u64)
        }
        other => panic!("unexpected close: {other}"),
    }
    assert!(server.stats.slow_consumers.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    // A reading client keeps receiving live deltas.
    let client = in_meadow(&server, cache.path(), "alice").await;
    let mut world = World::new();
    hoard_bevy::materialise::update(&client, &mut world);
    let first: u32 = world
        .query::<(&Replicated, &Crate)>()
        .iter(&world)
        .map(|(_, c)| c.stones)
        .max()
        .unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::timeout_at(deadline, client.changed())
            .await
            .expect("deltas keep coming");
        hoard_bevy::materialise::update(&client, &mut world);
        let now: u32 = world
            .query::<(&Replicated, &Crate)>()
            .iter(&world)
            .map(|(_, c)| c.stones)
            .max()
            .unwrap_or(0);
        if now >= first + 5 {
            break;
        }
    }
    client.close();
    server.shutdown().await;
}

/// Memory is measured per process, and the other tests of this binary run
/// in parallel in it: a test that measures memory runs its body alone in a
/// child process of this binary. Returns true in that child (run the body),
/// false in the parent (which has checked that the child passed).
fn alone(test: &str) -> bool {
    if std::env::var_os("HOARD_TEST_ALONE").is_some() {
        return true;
    }
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("HOARD_TEST_ALONE", "1")
        .status()
        .expect("run the test alone");
    assert!(status.success(), "{test}, run alone, failed: {status}");
    false
}

/// The process's resident memory, in bytes (server and clients share it
/// here, so this over-counts the server).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// The bound the silent flood must stay under: 200 handshaken connections
/// and their quinn state.
const SILENT_RSS_BOUND: u64 = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_say_hello_are_closed_and_hold_no_slot() {
    if !alone("bad_input::connections_that_never_say_hello_are_closed_and_hold_no_slot") {
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server_with(data.path(), 1000, false, 400, |o| {
        o.max_connections_per_ip = 8;
        o.hello_timeout = Duration::from_secs(5);
    })
    .await;
    let verifier = Arc::new(PinnedVerifier::new("test", Some(server.identity), None));
    let crypto = Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_config(verifier).expect("tls")).expect("quic tls"),
    );
    let before = rss();
    // 25 loopback addresses, 8 silent connections each: the handshake, then
    // nothing. The first address first, to check its limit while its
    // connections are surely still open.
    let endpoint_on = |host: u8| {
        let bind = std::net::SocketAddr::from(([127, 0, 0, host], 0));
        let mut endpoint = quinn::Endpoint::client(bind).expect("endpoint");
        endpoint.set_default_client_config(quinn::ClientConfig::new(crypto.clone()));
        endpoint
    };
    let first = endpoint_on(2);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            first
                .connect(server.addr, SERVER_NAME)
                .expect("connect")
                .await
                .expect("handshake"),
        );
    }
    let ninth = first.connect(server.addr, SERVER_NAME).expect("connect").await;
    assert!(ninth.is_err(), "a ninth connection from one address is refused");
    let mut endpoints = vec![first];
    let mut connecting = Vec::new();
    for host in 3..27u8 {
        let endpoint = endpoint_on(host);
        for _ in 0..8 {
            connecting.push(endpoint.connect(server.addr, SERVER_NAME).expect("connect"));
        }
        endpoints.push(endpoint);
    }
    for c in connecting {
        held.push(c.await.expect("handshake"));
    }
    let peak = rss();
    // Each silent one is closed for its silence, with the reason.
    for conn in &held {
        match tokio::time::timeout(Duration::from_secs(20), conn.closed())
            .await
            .expect("closed in time")
        {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code.into_inner(), ErrorCode::Timeout as u64)
            }
            other => panic!("closed without the timeout reason: {other}"),
        }
    }
    assert!(server.stats.hello_timeouts.load(std::sync::atomic::Ordering::Relaxed) >= 200);
    let growth = peak.saturating_sub(before);
    println!(
        "silent flood: {} connections held, RSS +{:.1} MB (bound {:.0} MB), all closed for silence",
        held.len(),
        growth as f64 / 1e6,
        SILENT_RSS_BOUND as f64 / 1e6
    );
    assert!(growth < SILENT_RSS_BOUND, "memory grew by {growth} bytes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.stats.connections.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        tokio::time::timeout_at(deadline, tokio::task::yield_now())
            .await
            .expect("connections drain");
    }
    // The slots are free again: a player gets in.
    healthy(&server, cache.path()).await;
    server.shutdown().await;
}

/// The bound the EnterZone flood must stay under: two answers in flight and
/// one being built (about 0.3 MB each here), the client's windows, and the
/// allocator's slack. Unbounded, the same flood grows by over 100 MB.
const FLOOD_RSS_BOUND: u64 = 48 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_zone_entries_and_never_reads_is_bounded_and_disconnected() {
    if !alone("bad_input::a_client_that_floods_zone_entries_and_never_reads_is_bounded_and_disconnected") {
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let server = server_with(data.path(), 1000, false, 20_000, |o| {
        o.answer_stall = Duration::from_secs(2);
    })
    .await;
    let before = rss();
    let (conn, mut send, _reader) = after_hello(&server, "mallory").await;
    let mut peak = before;
    let mut sent = 0;
    // Sustained: 40 entries a second (under the 50 messages a second
    // allowed), for up to 4 s.
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    while start.elapsed() < Duration::from_secs(4) && conn.close_reason().is_none() {
        tick.tick().await;
        if send.write_all(&enter("meadow", vec![])).await.is_err() {
            break;
        }
        sent += 1;
        peak = peak.max(rss());
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the flooding client is disconnected");
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), ErrorCode::SlowConsumer as u64, "{c:?}")
        }
        other => panic!("closed for another reason: {other}"),
    }
    let growth = peak.saturating_sub(before);
    println!(
        "EnterZone flood: {sent} entries sent, RSS {:.1} MB before, peak {:.1} MB (+{:.1} MB, bound {:.0} MB)",
        before as f64 / 1e6,
        peak as f64 / 1e6,
        growth as f64 / 1e6,
        FLOOD_RSS_BOUND as f64 / 1e6
    );
    assert!(sent >= 20, "the flood was sent ({sent} entries)");
    assert!(growth < FLOOD_RSS_BOUND, "memory grew by {growth} bytes");
    // Another player is not held up.
    let client = HoardClient::connect(options(&server, cache.path(), "alice"), registry())
        .await
        .expect("connect");
    let stats = client
        .enter_zone(&ZoneId::new("meadow").expect("zone"))
        .await
        .expect("enter");
    assert_eq!(stats.objects, 20_000);
    client.close();
    server.shutdown().await;
}
