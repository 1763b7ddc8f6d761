//! `hoard-bench relay`: what a relay saves the origin and what its hop
//! costs. The origin runs as a child process (this binary, `relay-origin`)
//! so its CPU time is its own; clients and the relay run here.
//!
//! - Fan-out: N clients enter one zone cold and then follow `--changes`
//!   changes, all straight at the origin, then all through one relay: the
//!   origin's application bytes sent and CPU seconds, side by side.
//! - A relay hop: a warm entry straight vs through the relay (alternating,
//!   medians), and a live change's arrival at an observer straight vs one
//!   through the relay (the same changes, medians).
//! - The signature: signing and checking one head, the `HeadProof` frame,
//!   and the set root of one shard.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_ecs::prelude::*;
use hoard_bench::reference::{self, Item, ReferenceZone};
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{HoardUrl, ObjectId, Published, Publisher, RedbStore, ServerIdentity, ShardId, ZoneId};
use hoard_net::quic::client::{ClientOptions, ClientUpdate, HoardClient};
use hoard_net::quic::relay::{RelayHandle, RelayOptions, start_relay};
use hoard_net::quic::server::{Game, ServerOptions, start};
use hoard_proto::intents::{IncomingIntents, IntentRegistry};
use serde::{Deserialize, Serialize};

use crate::report::{median, ms, print_table, write_json};

/// Options of the relay bench.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Clients in the fan-out case.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Changes the clients follow in the fan-out case.
    #[arg(long, default_value_t = 50)]
    changes: u16,
    /// Repetitions of the hop measurements.
    #[arg(long, default_value_t = 15)]
    reps: usize,
    #[command(flatten)]
    zone: ZoneArgs,
}

/// The zone of this bench (smaller than the reference zone: every fan-out
/// client caches it whole).
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct ZoneArgs {
    /// Objects in the zone.
    #[arg(long, default_value_t = 4_000)]
    objects: u64,
    /// Shards in the zone.
    #[arg(long, default_value_t = 8)]
    shards: u64,
}

/// Options of the origin child process.
#[derive(clap::Args)]
pub(crate) struct OriginArgs {
    /// Its data directory.
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    zone: ZoneArgs,
}

/// Sets an item's count: the change the bench's writer makes.
#[derive(Serialize, Deserialize, Debug)]
struct Touch {
    object: u64,
    count: u16,
}

fn touch(mut intents: ResMut<IncomingIntents>, mut items: Query<(&Published, &mut Item)>) {
    let touches = intents.read::<Touch>("touch");
    intents.0.clear();
    for (_, t) in touches {
        for (p, mut item) in &mut items {
            if p.object.0 == t.object {
                item.count = t.count;
            }
        }
    }
}

/// The writer sets the touched item's count.
async fn touch_to(writer: &HoardClient, object: ObjectId, count: u16) -> anyhow::Result<()> {
    writer
        .send_intent(
            "touch",
            &Touch {
                object: object.0,
                count,
            },
        )
        .await?;
    Ok(())
}

fn zone_id() -> ZoneId {
    ZoneId::new("reference").expect("zone name")
}

fn generate(zone: ZoneArgs) -> ReferenceZone {
    reference::generate(zone.objects, zone.shards, 7)
}

/// The object the writer touches: the first item of the last shard.
fn touched(zone: &ReferenceZone) -> (ShardId, ObjectId) {
    zone.objects
        .iter()
        .rev()
        .filter(|(_, _, o)| matches!(o, reference::RefObject::Item(_)))
        .map(|(id, shard, _)| (*shard, *id))
        .next()
        .unwrap_or((ShardId(0), ObjectId(1)))
}

/// The child process: serves the zone (dev tokens), prints
/// `{"addr","identity"}`, and when its stdin closes prints
/// `{"sent_bytes"}` and exits.
pub(crate) fn origin(args: &OriginArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let zone = generate(args.zone);
        let store = Arc::new(RedbStore::open_dir(&args.dir)?);
        let specs: Vec<ShardSpec> = (0..zone.shards).map(|s| ShardSpec::shared(ShardId(s))).collect();
        store.create_zone(&zone_id(), &specs)?;
        let mut world = World::new();
        for (id, shard, object) in &zone.objects {
            object.spawn(&mut world, *id, *shard);
        }
        let mut schedule = Schedule::default();
        schedule.add_systems(touch);
        let game = Game::new(
            world,
            schedule,
            Publisher::new(reference::registry()),
            IntentRegistry::new().intent::<Touch>("touch"),
        );
        let mut options = ServerOptions::new("127.0.0.1:0".parse()?, args.dir.clone());
        options.dev_mode = true;
        options.max_connections_per_ip = 100_000;
        options.max_connections = 100_000;
        let server = start(options, store, game).await?;
        println!(
            "{}",
            serde_json::json!({"addr": server.addr.to_string(), "identity": server.identity.to_string()})
        );
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await?;
        let sent: u64 = ["control", "answer", "delta"]
            .iter()
            .map(|stream| {
                server
                    .metrics
                    .sent_bytes
                    .get_or_create(&hoard_metrics::StreamLabel { stream })
                    .get()
            })
            .sum();
        println!("{}", serde_json::json!({ "sent_bytes": sent }));
        server.shutdown().await;
        Ok(())
    })
}

/// The origin as a child process.
struct Origin {
    child: Child,
    addr: SocketAddr,
    identity: ServerIdentity,
    lines: BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Origin {
    fn start(zone: ZoneArgs) -> anyhow::Result<Origin> {
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["relay-origin", "--dir"])
            .arg(dir.path())
            .args([
                "--objects",
                &zone.objects.to_string(),
                "--shards",
                &zone.shards.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?);
        let mut line = String::new();
        lines.read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        Ok(Origin {
            child,
            addr: v["addr"].as_str().unwrap_or_default().parse()?,
            identity: v["identity"].as_str().unwrap_or_default().parse()?,
            lines,
            _dir: dir,
        })
    }

    /// CPU seconds the origin has used (user + system), from /proc.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        // The kernel's USER_HZ is 100 on Linux.
        Ok(ticks as f64 / 100.0)
    }

    /// Stops it; returns the application bytes it sent.
    fn stop(mut self) -> anyhow::Result<u64> {
        drop(self.child.stdin.take());
        let mut line = String::new();
        self.lines.read_line(&mut line)?;
        let _ = self.child.wait();
        let v: serde_json::Value = serde_json::from_str(&line)?;
        Ok(v["sent_bytes"].as_u64().unwrap_or(0))
    }
}

fn options(server: SocketAddr, world: Option<ServerIdentity>, cache: &Path, name: &str) -> ClientOptions {
    let mut options = ClientOptions::new(server, cache.to_owned(), format!("dev:{name}"));
    options.world = world;
    options
}

async fn relay_of(origin: &Origin, dir: &Path) -> anyhow::Result<RelayHandle> {
    Ok(start_relay(
        RelayOptions {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.to_owned(),
            upstream: origin.addr,
            upstream_pin: Some(origin.identity),
            world: None,
            token: "dev:relay".into(),
            service: "world".into(),
            zones: Vec::new(),
            dev_mode: true,
            max_connections: 1000,
            max_connections_per_ip: 1000,
            carry_actions: false,
            web_transport: None,
        },
        reference::registry(),
    )
    .await?)
}

/// The count the touched item has in `client`'s live copy.
async fn count_seen(client: &HoardClient, url: &HoardUrl) -> Option<u16> {
    match client.resolve(url).await.ok()? {
        hoard_net::quic::client::Resolved::Object(Some(o)) => item_count(&o.state),
        _ => None,
    }
}

/// The count of the item an object state holds.
fn item_count(state: &hoard_engine::ObjectState) -> Option<u16> {
    let components = state.components().ok()?;
    let (_, bytes) = components.into_iter().find(|(name, _)| *name == "item")?;
    rmp_serde::from_slice::<Item>(bytes).ok().map(|i| i.count)
}

struct FanOut {
    origin_cpu_s: f64,
    origin_sent: u64,
    wall: Duration,
}

/// N clients enter cold and follow the writer's changes, straight or through a relay.
async fn fan_out(args: &Args, through_relay: bool) -> anyhow::Result<FanOut> {
    let origin = Origin::start(args.zone)?;
    let zone = generate(args.zone);
    let (shard, object) = touched(&zone);
    let url = HoardUrl::service("127.0.0.1", origin.addr.port(), "world").object(zone_id(), shard, object);
    let scratch = tempfile::tempdir()?;
    let relay = match through_relay {
        true => Some(relay_of(&origin, &scratch.path().join("relay")).await?),
        false => None,
    };
    let (addr, world) = match &relay {
        Some(r) => (r.addr(), Some(origin.identity)),
        None => (origin.addr, None),
    };
    let cpu0 = origin.cpu_seconds()?;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(args.clients);
    for batch in (0..args.clients).collect::<Vec<_>>().chunks(16) {
        let mut entries = tokio::task::JoinSet::new();
        for &i in batch {
            let options = options(addr, world, &scratch.path().join(format!("c{i}")), &format!("bot{i}"));
            entries.spawn(async move {
                let (client, pending) =
                    HoardClient::connect_and_enter(options, reference::registry(), &zone_id()).await?;
                pending.wait().await?;
                anyhow::Ok(client)
            });
        }
        while let Some(client) = entries.join_next().await {
            clients.push(client?.map_err(|e| {
                e.context(format!(
                    "client {} of {} ({})",
                    clients.len() + 1,
                    args.clients,
                    if through_relay { "through the relay" } else { "straight" }
                ))
            })?);
        }
    }
    let writer = HoardClient::connect(
        options(origin.addr, None, &scratch.path().join("w"), "writer"),
        reference::registry(),
    )
    .await?;
    for count in 1..=args.changes {
        touch_to(&writer, object, count).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every client has the last change (each reads its live copy).
    let deadline = Instant::now() + Duration::from_secs(120);
    for client in &clients {
        while count_seen(client, &url).await != Some(args.changes) {
            anyhow::ensure!(Instant::now() < deadline, "clients did not all see the changes in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let wall = started.elapsed();
    let cpu = origin.cpu_seconds()? - cpu0;
    for client in clients {
        client.close();
    }
    writer.close();
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    let sent = origin.stop()?;
    Ok(FanOut {
        origin_cpu_s: cpu,
        origin_sent: sent,
        wall,
    })
}

struct Hop {
    warm_direct: Duration,
    warm_relay: Duration,
    delta_direct: Duration,
    delta_relay: Duration,
}

/// Waits until `client` sees the touched object at `count`; when.
async fn seen_at(client: &HoardClient, object: ObjectId, count: u16) -> Instant {
    loop {
        client.changed().await;
        for update in client.take_updates() {
            if let ClientUpdate::Objects { upserts, .. } = update
                && upserts
                    .iter()
                    .any(|o| o.id == object && item_count(&o.state) == Some(count))
            {
                return Instant::now();
            }
        }
    }
}

async fn hop(args: &Args) -> anyhow::Result<Hop> {
    let origin = Origin::start(args.zone)?;
    let zone = generate(args.zone);
    let (_, object) = touched(&zone);
    let scratch = tempfile::tempdir()?;
    let relay = relay_of(&origin, &scratch.path().join("relay")).await?;
    let direct = options(origin.addr, None, &scratch.path().join("direct"), "ann");
    let relayed = options(
        relay.addr(),
        Some(origin.identity),
        &scratch.path().join("relayed"),
        "ann",
    );
    let (mut warm_direct, mut warm_relay) = (Vec::new(), Vec::new());
    for rep in 0..=args.reps {
        for (route, samples) in [(&direct, &mut warm_direct), (&relayed, &mut warm_relay)] {
            let start = Instant::now();
            let (client, pending) =
                HoardClient::connect_and_enter(route.clone(), reference::registry(), &zone_id()).await?;
            pending.wait().await?;
            // The first entry of each route fills its cache: not counted.
            if rep > 0 {
                samples.push(start.elapsed());
            }
            client.close_and_wait(Duration::from_secs(1)).await;
        }
    }
    let observer = HoardClient::connect(direct.clone(), reference::registry()).await?;
    observer.enter_zone(&zone_id()).await?;
    let far = HoardClient::connect(relayed.clone(), reference::registry()).await?;
    far.enter_zone(&zone_id()).await?;
    let writer = HoardClient::connect(
        options(origin.addr, None, &scratch.path().join("w"), "writer"),
        reference::registry(),
    )
    .await?;
    let (mut delta_direct, mut delta_relay) = (Vec::new(), Vec::new());
    for count in 1..=args.reps as u16 {
        let sent = Instant::now();
        touch_to(&writer, object, count).await?;
        let (a, b) = tokio::join!(seen_at(&observer, object, count), seen_at(&far, object, count));
        delta_direct.push(a - sent);
        delta_relay.push(b - sent);
    }
    for c in [observer, far, writer] {
        c.close();
    }
    relay.shutdown().await;
    origin.stop()?;
    Ok(Hop {
        warm_direct: median(warm_direct),
        warm_relay: median(warm_relay),
        delta_direct: median(delta_direct),
        delta_relay: median(delta_relay),
    })
}

/// Signing, checking and the set root, for a head of a shard of `objects` objects.
fn signature(objects: u64) -> anyhow::Result<serde_json::Value> {
    use hoard_proto::proof::{HeadSigner, HeadVerifier, ProofSource};
    let dir = tempfile::tempdir()?;
    let keys = hoard_trust::tls::ServerKeys::load_or_create(dir.path())?;
    let signer = Arc::new(hoard_trust::heads::KeySigner::new(&keys.key).map_err(anyhow::Error::msg)?);
    let verifier = hoard_trust::heads::KeyVerifier::new(keys.identity, &keys.world_key().map_err(anyhow::Error::msg)?)
        .map_err(anyhow::Error::msg)?;
    let zone = reference::generate(objects, 1, 7);
    let snap = hoard_engine::store::ShardSnapshot {
        head: hoard_engine::store::ShardHead {
            shard: ShardId(0),
            zone: zone_id(),
            epoch: hoard_engine::Epoch(1),
            seq: hoard_engine::Seq(1),
            digest: hoard_engine::Digest::EMPTY,
            horizon: hoard_engine::Seq(0),
            scope: hoard_engine::store::ShardScope::Shared,
        },
        objects: zone
            .objects
            .iter()
            .map(|(id, _, o)| hoard_engine::store::StoredObject {
                id: *id,
                version: hoard_engine::Seq(1),
                state: o.state(),
            })
            .collect(),
    };
    let origin = hoard_proto::proof::OriginProofs::new(keys.identity, "world", signer.clone());
    let proof = origin.prove(&snap).map_err(anyhow::Error::msg)?;
    let statement = hoard_proto::proof::signed_statement(
        &keys.identity,
        "world",
        proof.shard,
        proof.epoch,
        proof.seq,
        &proof.digest,
        &proof.root,
    );
    let reps = 300;
    let (mut sign, mut verify, mut root) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let signature = signer.sign(&statement).map_err(anyhow::Error::msg)?;
        sign.push(t.elapsed());
        let t = Instant::now();
        anyhow::ensure!(
            verifier.verify(signer.scheme(), &statement, &signature),
            "a signature did not verify"
        );
        verify.push(t.elapsed());
    }
    for _ in 0..30 {
        let t = Instant::now();
        let _ = hoard_engine::set_root::set_root(snap.objects.iter().map(|o| (o.id, o.version, o.state.as_bytes())));
        root.push(t.elapsed());
    }
    let frame = hoard_proto::wire::Message::HeadProof(proof.clone()).to_frame().len();
    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    Ok(serde_json::json!({
        "scheme": format!("0x{:04x}", proof.scheme),
        "signature_bytes": proof.signature.len(),
        "head_proof_frame_bytes": frame,
        "sign_us": us(median(sign)),
        "verify_us": us(median(verify)),
        "set_root_objects": objects,
        "set_root_us": us(median(root)),
    }))
}

pub(crate) fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let sig = signature(args.zone.objects / args.zone.shards)?;
    print_table(
        "signed shard head (median)",
        &[
            "scheme",
            "signature B",
            "HeadProof frame B",
            "sign µs",
            "verify µs",
            "set root µs (objects)",
        ],
        &[vec![
            sig["scheme"].as_str().unwrap_or_default().to_owned(),
            sig["signature_bytes"].to_string(),
            sig["head_proof_frame_bytes"].to_string(),
            sig["sign_us"].to_string(),
            sig["verify_us"].to_string(),
            format!("{} ({})", sig["set_root_us"], sig["set_root_objects"]),
        ]],
    );
    let hop = runtime.block_on(hop(args))?;
    print_table(
        &format!("a relay hop on loopback (median of {})", args.reps),
        &["case", "straight ms", "through a relay ms", "added ms"],
        &[
            vec![
                "warm entry (connect to ready)".into(),
                format!("{:.2}", ms(hop.warm_direct)),
                format!("{:.2}", ms(hop.warm_relay)),
                format!("{:.2}", ms(hop.warm_relay) - ms(hop.warm_direct)),
            ],
            vec![
                "live change (intent to arrival)".into(),
                format!("{:.2}", ms(hop.delta_direct)),
                format!("{:.2}", ms(hop.delta_relay)),
                format!("{:.2}", ms(hop.delta_relay) - ms(hop.delta_direct)),
            ],
        ],
    );
    std::io::stdout().flush()?;
    let direct = runtime.block_on(fan_out(args, false))?;
    let relayed = runtime.block_on(fan_out(args, true))?;
    print_table(
        &format!(
            "{} clients in one zone ({} objects, {} shards), cold entry then {} changes: the origin's cost",
            args.clients, args.zone.objects, args.zone.shards, args.changes
        ),
        &["case", "origin sent MB", "origin CPU s", "wall s"],
        &[
            vec![
                "straight at the origin".into(),
                format!("{:.2}", direct.origin_sent as f64 / 1e6),
                format!("{:.2}", direct.origin_cpu_s),
                format!("{:.1}", direct.wall.as_secs_f64()),
            ],
            vec![
                "through one relay".into(),
                format!("{:.2}", relayed.origin_sent as f64 / 1e6),
                format!("{:.2}", relayed.origin_cpu_s),
                format!("{:.1}", relayed.wall.as_secs_f64()),
            ],
            vec![
                "relay / straight".into(),
                format!("{:.3}", relayed.origin_sent as f64 / direct.origin_sent.max(1) as f64),
                format!("{:.3}", relayed.origin_cpu_s / direct.origin_cpu_s.max(0.01)),
                String::new(),
            ],
        ],
    );
    write_json(
        out,
        "relay",
        &serde_json::json!({
            "signature": sig,
            "hop": {
                "reps": args.reps,
                "warm_entry_direct_ms": ms(hop.warm_direct),
                "warm_entry_relay_ms": ms(hop.warm_relay),
                "delta_direct_ms": ms(hop.delta_direct),
                "delta_relay_ms": ms(hop.delta_relay),
            },
            "fan_out": {
                "clients": args.clients,
                "objects": args.zone.objects,
                "shards": args.zone.shards,
                "changes": args.changes,
                "direct": {"origin_sent_bytes": direct.origin_sent, "origin_cpu_s": direct.origin_cpu_s, "wall_s": direct.wall.as_secs_f64()},
                "relay": {"origin_sent_bytes": relayed.origin_sent, "origin_cpu_s": relayed.origin_cpu_s, "wall_s": relayed.wall.as_secs_f64()},
            },
        }),
    )
}
