//! `hoard-bench net`: zone entry on the reference zone (100,000 objects, 64
//! shards, ~10 MB), hoard against the full-resend baseline that replicon,
//! lightyear and naia use on every join (a client that reuses nothing: a cold
//! entry every time), and a raw quinn bulk transfer of the same bytes as the
//! limit for the cold case. Everything runs through the project's UDP
//! simulator, at 0 ms (uncapped) and at 50 ms round trip with a 20 Mbit/s cap.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_ecs::prelude::*;
use hoard_bench::reference::{self, ReferenceZone};
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{ChangeSet, ObjectId, Publisher, RedbStore, ShardId, ZoneId};
use hoard_net::quic::client::{ClientOptions, HoardClient};
use hoard_net::quic::server::{Game, ServerHandle, ServerOptions, start};
use hoard_netsim::{self as netsim, LinkConfig};
use hoard_proto::intents::IntentRegistry;
use hoard_proto::sync::client::EntryStats;
use serde_json::json;

use crate::report::{median, ms, print_table};

/// Options of the network bench.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    zone: crate::report::ZoneArgs,
    /// Repetitions of each case.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Only the 0 ms condition (quick runs).
    #[arg(long)]
    fast_only: bool,
    /// Only the round trips from connecting to a verified zone.
    #[arg(long)]
    connect_only: bool,
    /// The server probes each path for packets over 1,200 bytes
    /// (`ServerOptions::mtu_discovery`; off by default).
    #[arg(long)]
    mtu_discovery: bool,
    /// The longest the server asks clients to hold their ACKs, in ms
    /// (`ServerOptions::ack_delay`; 0: the client's own 25 ms; default 100).
    #[arg(long, default_value_t = 100)]
    ack_delay_ms: u64,
}

struct Condition {
    name: &'static str,
    link: LinkConfig,
}

#[derive(Clone, Copy, Default)]
struct Sample {
    ms: f64,
    up: u64,
    down: u64,
    round_trips: u32,
}

fn median_sample(samples: &[Sample]) -> Sample {
    let mut by_time: Vec<Sample> = samples.to_vec();
    by_time.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    by_time.get(by_time.len() / 2).copied().unwrap_or_default()
}

/// The bench player's options for reaching `server` at `addr` (the
/// simulator in front of it) with the cache at `cache`, its identity pinned.
fn bench_client(server: &ServerHandle, addr: SocketAddr, cache: &Path) -> anyhow::Result<ClientOptions> {
    let token = server.auth.issue("bench", chrono::Utc::now().timestamp() + 3600)?;
    Ok(ClientOptions::new(addr, cache.to_owned(), token).with_pin(server.identity))
}

/// One measured zone entry through the simulator with the cache at `cache`.
async fn entry(
    server: &ServerHandle,
    link: LinkConfig,
    cache: &Path,
    zone: &ZoneId,
) -> anyhow::Result<(Sample, EntryStats)> {
    entry_with(server, link, cache, zone, true).await
}

/// [`entry`], with the client asking for compressed answers or not.
async fn entry_with(
    server: &ServerHandle,
    link: LinkConfig,
    cache: &Path,
    zone: &ZoneId,
    compression: bool,
) -> anyhow::Result<(Sample, EntryStats)> {
    let sim = netsim::start("127.0.0.1:0".parse()?, server.addr, link).await?;
    let mut options = bench_client(server, sim.addr, cache)?;
    options.compression = compression;
    let client = HoardClient::connect(options, reference::registry()).await?;
    // Zone entries happen on an established connection (one is kept across
    // zones): let the handshake's trailing traffic (path MTU probes, new
    // connection ids) pass before counting.
    tokio::time::sleep(link.delay * 8 + Duration::from_millis(100)).await;
    let (up0, down0) = sim.stats.bytes();
    let start = Instant::now();
    let stats = client.enter_zone(zone).await?;
    let elapsed = start.elapsed();
    let (up1, down1) = sim.stats.bytes();
    client.close();
    Ok((
        Sample {
            ms: elapsed.as_secs_f64() * 1e3,
            up: up1 - up0,
            down: down1 - down0,
            round_trips: stats.round_trips,
        },
        stats,
    ))
}

/// A raw quinn transfer of `bytes` bytes on one stream, with hoard's transport settings.
async fn raw_quinn(link: LinkConfig, bytes: usize, dir: &Path) -> anyhow::Result<Sample> {
    transfer(link, Arc::new(vec![0x5au8; bytes]), dir, |got| {
        anyhow::ensure!(got.len() == bytes, "raw transfer incomplete");
        Ok(())
    })
    .await
}

/// What the peers do on every join, and nothing more: the server streams
/// the zone's objects (`[id, state]` pairs, MessagePack) on one quinn
/// stream; the client decodes every object's components into memory. No
/// cache, no digests, no fsync, no entities.
async fn peers_resend(link: LinkConfig, payload: Arc<Vec<u8>>, objects: usize, dir: &Path) -> anyhow::Result<Sample> {
    let registry = reference::registry();
    transfer(link, payload, dir, move |got| {
        let pairs: Vec<(u64, serde_bytes::ByteBuf)> = rmp_serde::from_slice(got)?;
        let mut decoded = 0;
        for (_, state) in pairs {
            let state = hoard_engine::ObjectState::from_bytes(state.into_vec())?;
            decoded += usize::from(registry.decode_state(&state).is_ok());
        }
        anyhow::ensure!(decoded == objects, "every object decoded");
        Ok(())
    })
    .await
}

/// Sends `payload` on one quinn stream through the simulator and times it
/// until `consume` has handled what arrived.
async fn transfer(
    link: LinkConfig,
    payload: Arc<Vec<u8>>,
    dir: &Path,
    consume: impl FnOnce(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<Sample> {
    let bytes = payload.len();
    let keys = hoard_trust::tls::ServerKeys::load_or_create(dir)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(keys.rustls_config()?)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(hoard_net::testing::server_transport()));
    let server = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
    let server_addr = server.local_addr()?;
    let serve = tokio::spawn(async move {
        if let Some(incoming) = server.accept().await
            && let Ok(conn) = incoming.await
        {
            // The client asks with one byte on a bidirectional stream.
            if let Ok((_, mut recv)) = conn.accept_bi().await {
                let _ = recv.read_to_end(16).await;
                if let Ok(mut send) = conn.open_uni().await {
                    let _ = send.write_all(&payload).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                }
            }
            conn.closed().await;
        }
    });
    let sim = netsim::start("127.0.0.1:0".parse()?, server_addr, link).await?;
    let verifier = Arc::new(hoard_trust::tls::PinnedVerifier::new("raw", Some(keys.identity), None));
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(hoard_trust::tls::client_config(verifier)?)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(hoard_net::testing::client_transport()));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(config);
    let conn = endpoint.connect(sim.addr, hoard_trust::tls::SERVER_NAME)?.await?;
    let (up0, down0) = sim.stats.bytes();
    let start = Instant::now();
    let (mut send, _recv) = conn.open_bi().await?;
    send.write_all(&[1]).await?;
    send.finish()?;
    let mut recv = conn.accept_uni().await?;
    let got = recv.read_to_end(bytes + 1).await?;
    consume(&got)?;
    let elapsed = start.elapsed();
    let (up1, down1) = sim.stats.bytes();
    conn.close(0u32.into(), b"");
    serve.abort();
    Ok(Sample {
        ms: elapsed.as_secs_f64() * 1e3,
        up: up1 - up0,
        down: down1 - down0,
        round_trips: 1,
    })
}

async fn start_server(zone: &ReferenceZone, dir: &Path, args: &Args) -> anyhow::Result<(ServerHandle, Arc<RedbStore>)> {
    let store = Arc::new(RedbStore::open_dir(&dir.join("server"))?);
    let specs: Vec<ShardSpec> = (0..zone.shards).map(|s| ShardSpec::shared(ShardId(s))).collect();
    store.create_zone(&ZoneId::new("reference")?, &specs)?;
    let mut world = World::new();
    for (id, shard, object) in &zone.objects {
        object.spawn(&mut world, *id, *shard);
    }
    let game = Game::new(
        world,
        Schedule::default(),
        Publisher::new(reference::registry()),
        IntentRegistry::new(),
    );
    let mut options = ServerOptions::new("127.0.0.1:0".parse::<SocketAddr>()?, dir.join("server"));
    options.mtu_discovery = args.mtu_discovery;
    options.ack_delay = hoard_net::quic::server::ack_delay_from_millis(args.ack_delay_ms);
    let server = start(options, store.clone(), game).await?;
    Ok((server, store))
}

/// Changes `count` random objects of the zone, directly in the store.
fn change(store: &RedbStore, zone: &ReferenceZone, count: usize, rng: &mut fastrand::Rng) -> anyhow::Result<usize> {
    let mut tick = ChangeSet::new();
    let mut bytes = 0;
    for _ in 0..count {
        let (id, shard, object) = &zone.objects[rng.usize(..zone.objects.len())];
        let state = object.mutated(rng).state();
        bytes += state.as_bytes().len();
        tick.upsert(*shard, *id, state);
    }
    store.commit(&tick)?;
    Ok(bytes)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if entry.file_name() != ".lock" {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// One connection from nothing to a verified zone through `sim`: connect,
/// `Hello` and `EnterZone` pipelined (as 0-RTT data when the process holds a
/// ticket for the server), answer applied. Times it and counts the UDP bytes
/// both ways, handshake included.
async fn connect_and_enter(
    server: &ServerHandle,
    sim: &netsim::NetSim,
    cache: &Path,
    zone: &ZoneId,
    linger: Duration,
) -> anyhow::Result<(Sample, Option<bool>)> {
    let options = bench_client(server, sim.addr, cache)?;
    let (up0, down0) = sim.stats.bytes();
    let start = Instant::now();
    let (client, entry) = HoardClient::connect_and_enter(options, reference::registry(), zone).await?;
    let stats = entry.wait().await?;
    let elapsed = start.elapsed();
    let (up1, down1) = sim.stats.bytes();
    let early = client.early_data();
    // A player stays: the server's ticket for the next connection comes
    // after the handshake (a round trip after a 0-RTT entry is ready), and
    // a client that leaves at once never receives it.
    tokio::time::sleep(linger).await;
    client.close();
    drop(client);
    Ok((
        Sample {
            ms: elapsed.as_secs_f64() * 1e3,
            up: up1 - up0,
            down: down1 - down0,
            round_trips: stats.round_trips,
        },
        early,
    ))
}

/// Round trips on the critical path from connecting to a verified zone —
/// cold, warm without a ticket (a new process), warm with one (a client
/// that connected before from this process) — from wall times at 0 and at
/// 300 ms round trip (uncapped): (t₃₀₀ − t₀) / 300 ms.
async fn connect_round_trips(
    server: &ServerHandle,
    zone: &ZoneId,
    template: &Path,
    mut fresh_dir: impl FnMut() -> std::path::PathBuf,
    reps: usize,
) -> anyhow::Result<serde_json::Value> {
    const RTTS: [u64; 2] = [0, 300];
    let cases = ["cold", "warm, no ticket", "warm, with a ticket"];
    let mut medians: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    for rtt in RTTS {
        let link = LinkConfig {
            delay: Duration::from_millis(rtt / 2),
            ..LinkConfig::default()
        };
        let sim = netsim::start("127.0.0.1:0".parse()?, server.addr, link).await?;
        let linger = Duration::from_millis(rtt + 100);
        // One cache for the ticket case: its first connection (untimed)
        // leaves the ticket each later one resumes with (and gets a new one).
        let ticketed = fresh_dir();
        copy_dir(template, &ticketed)?;
        connect_and_enter(server, &sim, &ticketed, zone, linger).await?;
        for (i, case) in cases.iter().enumerate() {
            let mut samples = Vec::new();
            for _ in 0..reps {
                let (sample, early) = match *case {
                    "cold" => connect_and_enter(server, &sim, &fresh_dir(), zone, Duration::ZERO).await?,
                    "warm, no ticket" => {
                        // A copy of the warm cache elsewhere: a client this
                        // process never connected with, as a new process is.
                        let cache = fresh_dir();
                        copy_dir(template, &cache)?;
                        connect_and_enter(server, &sim, &cache, zone, Duration::ZERO).await?
                    }
                    _ => connect_and_enter(server, &sim, &ticketed, zone, linger).await?,
                };
                let expected = (*case == "warm, with a ticket").then_some(true);
                anyhow::ensure!(early == expected, "{case}: early data {early:?}, expected {expected:?}");
                samples.push(sample);
            }
            medians[i].push(median_sample(&samples));
        }
        let dropped = sim.stats.down.dropped.load(std::sync::atomic::Ordering::Relaxed)
            + sim.stats.up.dropped.load(std::sync::atomic::Ordering::Relaxed);
        println!("  ({rtt} ms round trip: the simulator dropped {dropped} packets)");
    }
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for (case, m) in cases.iter().zip(&medians) {
        let (at0, at300) = (m[0], m[1]);
        let round_trips = (at300.ms - at0.ms) / 300.0;
        rows.push(vec![
            (*case).to_owned(),
            format!("{:.0}", at0.ms),
            format!("{:.0}", at300.ms),
            format!("{round_trips:.2}"),
            at300.up.to_string(),
            at300.down.to_string(),
        ]);
        results.push(
            json!({ "case": case, "ms_at_0": at0.ms, "ms_at_300": at300.ms, "round_trips": round_trips,
                             "udp_up": at300.up, "udp_down": at300.down }),
        );
    }
    print_table(
        &format!(
            "from connecting to a verified zone (median of {reps}; round trips = (t300 - t0) / 300 ms; UDP bytes with the handshake)"
        ),
        &[
            "case",
            "ms at 0 ms",
            "ms at 300 ms",
            "round trips",
            "UDP up B",
            "UDP down B",
        ],
        &rows,
    );
    Ok(serde_json::Value::Array(results))
}

pub(crate) fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, out))
}

async fn run_async(args: &Args, out: &Path) -> anyhow::Result<()> {
    let zone_data = args.zone.generate();
    let state_bytes: usize = zone_data
        .objects
        .iter()
        .map(|(_, _, o)| o.state().as_bytes().len())
        .sum();
    let peers_payload = Arc::new(rmp_serde::to_vec(
        &zone_data
            .objects
            .iter()
            .map(|(id, _, o)| (id.0, serde_bytes::ByteBuf::from(o.state().as_bytes().to_vec())))
            .collect::<Vec<_>>(),
    )?);
    let dir = hoard_bench::scratch_dir()?;
    let (server, store) = start_server(&zone_data, dir.path(), args).await?;
    let zone = ZoneId::new("reference")?;
    println!(
        "reference zone: {} objects in {} shards, {:.2} MB of state",
        zone_data.objects.len(),
        zone_data.shards,
        state_bytes as f64 / 1e6
    );
    let mut conditions = vec![Condition {
        name: "0 ms",
        link: LinkConfig::default(),
    }];
    if args.connect_only {
        conditions.clear();
    } else if !args.fast_only {
        conditions.push(Condition {
            name: "50 ms, 20 Mbit/s",
            link: LinkConfig {
                delay: Duration::from_millis(25),
                rate_bps: Some(20_000_000),
                ..LinkConfig::default()
            },
        });
    }
    let mut rng = fastrand::Rng::with_seed(args.zone.seed);
    let mut results = Vec::new();
    let mut n = 0u64;
    let mut fresh_dir = || {
        n += 1;
        dir.path().join(format!("cache-{n}"))
    };
    // A warm cache of the current zone, kept as a template.
    let template = fresh_dir();
    entry(&server, LinkConfig::default(), &template, &zone).await?;
    for cond in &conditions {
        let mut rows = Vec::new();
        let mut baseline = Vec::new();
        let mut raw = Vec::new();
        for _ in 0..args.reps {
            raw.push(raw_quinn(cond.link, state_bytes, &dir.path().join("raw")).await?);
        }
        let raw = median_sample(&raw);
        let mut peers = Vec::new();
        for _ in 0..args.reps {
            let raw_dir = dir.path().join("raw");
            let sample = peers_resend(cond.link, peers_payload.clone(), zone_data.objects.len(), &raw_dir);
            peers.push(sample.await?);
        }
        let peers = median_sample(&peers);
        for case in [
            "cold",
            "cold, uncompressed",
            "warm, nothing changed",
            "warm, 1% changed",
            "warm, 1% changed, uncompressed",
            "warm, one shard corrupted",
            "past the horizon",
        ] {
            let compression = !case.ends_with("uncompressed");
            let mut hoard = Vec::new();
            let mut changed_bytes = 0;
            let mut kinds = EntryStats::default();
            for _ in 0..args.reps {
                let cache = fresh_dir();
                match case {
                    "cold" | "cold, uncompressed" => {}
                    _ => {
                        // Bring the template up to date, then copy it.
                        entry(&server, LinkConfig::default(), &template, &zone).await?;
                        copy_dir(&template, &cache)?;
                    }
                }
                match case {
                    "warm, 1% changed" | "warm, 1% changed, uncompressed" => {
                        changed_bytes = change(&store, &zone_data, zone_data.objects.len() / 100, &mut rng)?
                    }
                    "warm, one shard corrupted" => {
                        let server_dir = std::fs::read_dir(&cache)?
                            .filter_map(Result::ok)
                            .find(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                            .map(|e| e.path())
                            .ok_or_else(|| anyhow::anyhow!("cache has no server folder"))?;
                        let file = server_dir.join("world/shared/reference/5.shard");
                        let mut bytes = std::fs::read(&file)?;
                        let at = bytes.len() / 2;
                        bytes[at] ^= 0x20;
                        std::fs::write(&file, bytes)?;
                    }
                    "past the horizon" => {
                        let mut tick = ChangeSet::new();
                        // Objects not removed before, so each rep makes tombstones to trim.
                        for _ in 0..100 {
                            let (id, shard, _) = &zone_data.objects[rng.usize(..zone_data.objects.len())];
                            tick.remove(*shard, ObjectId(id.0));
                        }
                        store.commit(&tick)?;
                        changed_bytes = change(&store, &zone_data, zone_data.objects.len() / 100, &mut rng)?;
                        store.trim_tombstones(chrono::Utc::now() + chrono::Duration::seconds(1))?;
                    }
                    _ => {}
                }
                let (sample, stats) = entry_with(&server, cond.link, &cache, &zone, compression).await?;
                kinds = stats;
                hoard.push(sample);
                baseline.push(entry(&server, cond.link, &fresh_dir(), &zone).await?.0);
            }
            let h = median_sample(&hoard);
            let b = median_sample(&baseline);
            rows.push(vec![
                case.to_owned(),
                format!("{:.0}", h.ms),
                format!("{}", h.up),
                format!("{}", h.down),
                h.round_trips.to_string(),
                format!(
                    "{}/{}/{}/{}",
                    kinds.shards_fresh, kinds.shards_delta, kinds.shards_snapshot, kinds.shards_repaired
                ),
                format!("{:.0}", b.ms),
                format!("{}", b.up + b.down),
                format!("{:.1}×", b.ms / h.ms.max(0.001)),
                format!("{:.1}×", peers.ms / h.ms.max(0.001)),
                format!("{:.2}", (h.up + h.down) as f64 / (peers.up + peers.down).max(1) as f64),
            ]);
            results.push(json!({
                "condition": cond.name, "case": case,
                "hoard": { "ms": h.ms, "bytes_up": h.up, "bytes_down": h.down, "round_trips": h.round_trips,
                           "fresh": kinds.shards_fresh, "delta": kinds.shards_delta, "snapshot": kinds.shards_snapshot, "repaired": kinds.shards_repaired },
                "baseline_full_resend": { "ms": b.ms, "bytes_up": b.up, "bytes_down": b.down },
                "baseline_peers_resend": { "ms": peers.ms, "bytes_up": peers.up, "bytes_down": peers.down },
                "changed_state_bytes": changed_bytes,
                "speedup": b.ms / h.ms.max(0.001),
                "speedup_over_peers": peers.ms / h.ms.max(0.001),
                "bytes_over_peers": (h.up + h.down) as f64 / (peers.up + peers.down).max(1) as f64,
                "compression": compression,
            }));
            baseline.clear();
            if changed_bytes > 0 {
                println!(
                    "  ({case}: the changed objects' state is {changed_bytes} bytes; hoard moved {} bytes on the wire ({:.2}×), {} in frames)",
                    h.up + h.down,
                    (h.up + h.down) as f64 / changed_bytes as f64,
                    kinds.bytes_rx + kinds.bytes_tx
                );
            }
        }
        println!(
            "\n{}: the peers' resend (objects streamed and decoded into memory, nothing else): {:.0} ms, {} B",
            cond.name,
            peers.ms,
            peers.up + peers.down
        );
        print_table(
            &format!(
                "zone entry, {} (median of {}; kinds = fresh/delta/snapshot/repaired shards; full resend = hoard's own cold entry)",
                cond.name, args.reps
            ),
            &[
                "case",
                "hoard ms",
                "up B",
                "down B",
                "RTs",
                "kinds",
                "full-resend ms",
                "full-resend B",
                "speedup",
                "vs peers",
                "B ÷ peers",
            ],
            &rows,
        );
        let cold_ms = results
            .iter()
            .rev()
            .find(|r| r["case"] == "cold" && r["condition"] == cond.name)
            .and_then(|r| r["hoard"]["ms"].as_f64())
            .unwrap_or(f64::NAN);
        println!(
            "  raw quinn, {} bytes on one stream: {:.0} ms ({:.1} MB/s); hoard cold: {:.1} MB/s of state = {:.2} of raw quinn",
            state_bytes,
            raw.ms,
            state_bytes as f64 / raw.ms / 1e3,
            state_bytes as f64 / cold_ms / 1e3,
            raw.ms / cold_ms
        );
        results.push(json!({ "condition": cond.name, "case": "raw quinn bulk", "ms": raw.ms, "bytes_up": raw.up, "bytes_down": raw.down, "payload": state_bytes }));
    }

    let codec = codec_cost(&zone_data, args.reps.max(5));

    // Round trips from connecting (the template brought up to date first).
    entry(&server, LinkConfig::default(), &template, &zone).await?;
    let connect = if args.fast_only {
        serde_json::Value::Null
    } else {
        connect_round_trips(&server, &zone, &template, &mut fresh_dir, args.reps).await?
    };

    // Cache → ECS: materialising the warm zone into a world.
    let client = HoardClient::connect(bench_client(&server, server.addr, &template)?, reference::registry()).await?;
    let mut times = Vec::new();
    for _ in 0..args.reps {
        let stats = client.enter_zone(&zone).await?;
        let mut world = World::new();
        let t = Instant::now();
        hoard_bevy::materialise::update(&client, &mut world);
        times.push(t.elapsed());
        anyhow::ensure!(
            world.query::<&hoard_bevy::Replicated>().iter(&world).count() as u64 >= stats.objects,
            "materialised every object"
        );
        client.leave_zone(&zone).await?;
    }
    let materialise = median(times);
    println!(
        "\ncache → ECS world: {} objects materialised in {:.1} ms (median of {})",
        zone_data.objects.len(),
        ms(materialise),
        args.reps
    );
    client.close();
    server.shutdown().await;
    crate::report::write_json(
        out,
        "net",
        &json!({ "state_bytes": state_bytes, "results": results, "from_connect": connect, "materialise_ms": ms(materialise), "codec": codec }),
    )
}

/// What compression costs each side, on one core: the reference zone's
/// cold answer (one `Snapshot` a shard, in frames under the limit) packed
/// in ~1 MiB runs as the server sends it, and read back as the client's
/// stream decoder does — against reading the same answer unpacked. The
/// client's CPU per MB received is the decoder's time over the bytes that
/// crossed the wire.
fn codec_cost(zone: &ReferenceZone, reps: usize) -> serde_json::Value {
    use hoard_proto::wire::{CODEC_ZSTD, Packer, Snapshot, StreamDecoder, WireObject, split};
    let mut shards: Vec<Vec<WireObject>> = vec![Vec::new(); zone.shards as usize];
    for (id, shard, object) in &zone.objects {
        shards[shard.0 as usize].push(WireObject {
            id: *id,
            version: hoard_engine::Seq(1),
            state: object.state().as_bytes().to_vec(),
        });
    }
    let mut runs: Vec<Vec<u8>> = vec![Vec::new()];
    for (shard, objects) in shards.into_iter().enumerate() {
        let message = hoard_proto::wire::Message::Snapshot(Snapshot {
            shard: ShardId(shard as u64),
            epoch: hoard_engine::Epoch(1),
            seq: hoard_engine::Seq(1),
            digest: hoard_engine::Digest::EMPTY,
            perspective: None,
            objects,
        });
        for part in split(message, hoard_proto::wire::PART_BYTES) {
            if runs.last().is_some_and(|r| r.len() >= 1 << 20) {
                runs.push(Vec::new());
            }
            if let Some(run) = runs.last_mut() {
                run.extend(part.to_frame());
            }
        }
    }
    let plain: Vec<u8> = runs.concat();
    let Some(mut packer) = Packer::new(CODEC_ZSTD) else {
        return serde_json::Value::Null;
    };
    let mut packed = Vec::new();
    let mut pack_times = Vec::new();
    for _ in 0..reps {
        packed.clear();
        let t = Instant::now();
        for run in &runs {
            packer.pack_into(run, &mut packed);
        }
        pack_times.push(t.elapsed());
    }
    let read = |bytes: &[u8]| {
        let t = Instant::now();
        let mut decoder = StreamDecoder::bulk();
        let mut messages = 0;
        for chunk in bytes.chunks(256 * 1024) {
            decoder.push(chunk);
            while let Ok(Some(_)) = decoder.next_message() {
                messages += 1;
            }
        }
        (t.elapsed(), messages)
    };
    let mut plain_times = Vec::new();
    let mut packed_times = Vec::new();
    for _ in 0..reps {
        let (t, a) = read(&plain);
        plain_times.push(t);
        let (t, b) = read(&packed);
        packed_times.push(t);
        assert_eq!(a, b, "the packed answer reads as the same messages");
    }
    let (pack, plain_read, packed_read) = (median(pack_times), median(plain_times), median(packed_times));
    let mb = |n: usize| n as f64 / 1e6;
    println!(
        "\ncompression (zstd level {}), the cold answer on one core: {:.2} MB of frames packed into {:.2} MB ({:.3}) in {:.1} ms ({:.1} ms/MB, the server); \
         the client reads it in {:.1} ms = {:.1} ms per MB received ({:.1} ms unpacked: {:.1} ms/MB; decompression adds {:.1} ms per MB of state)",
        hoard_proto::wire::PACK_LEVEL,
        mb(plain.len()),
        mb(packed.len()),
        packed.len() as f64 / plain.len() as f64,
        ms(pack),
        ms(pack) / mb(plain.len()),
        ms(packed_read),
        ms(packed_read) / mb(packed.len()),
        ms(plain_read),
        ms(plain_read) / mb(plain.len()),
        (ms(packed_read) - ms(plain_read)) / mb(plain.len()),
    );
    json!({
        "level": hoard_proto::wire::PACK_LEVEL,
        "frames_bytes": plain.len(), "packed_bytes": packed.len(),
        "pack_ms": ms(pack), "read_packed_ms": ms(packed_read), "read_plain_ms": ms(plain_read),
        "client_ms_per_mb_received": ms(packed_read) / mb(packed.len()),
        "client_ms_per_mb_received_unpacked": ms(plain_read) / mb(plain.len()),
    })
}
