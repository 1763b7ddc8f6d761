//! `hoard-bench kills`: a world on three `hoard-demo server` processes and
//! one PostgreSQL, with faults — the outside kill test, bounded and
//! repeatable. Servers `a` (meadow, forest) and `b` (desert, coast), and a
//! standby `c` (meadow, forest), with 2 s leases; players carry items
//! between the zones of both servers (a pick-up, then a move and a drop in
//! another zone, each a `hoard-demo client --headless --act …` process given
//! every server's address); meanwhile a zone owner is killed with SIGKILL,
//! or paused past its lease (SIGSTOP, then SIGCONT), every few seconds, and
//! restarted (as the standby of its zones once another server took them).
//!
//! Counted: the faults; actions confirmed (the client exited 0 on
//! `Processed`); **confirmed but not applied** (the store, read the moment
//! the client exits, does not hold the item where the action put it);
//! objects lost and duplicated (every object of the world in exactly one
//! shard at the end, the store verified); failover after a kill (from the
//! kill to another server holding the zone's lease).
//!
//! ```text
//! cargo run --release -p hoard-bench -- kills --demo-bin target/release/hoard-demo --seconds 240
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hoard_engine::store::{LeaseKey, PgOptions, PgStore, ShardScope, WorldStore};
use hoard_engine::{ObjectState, ShardId, ZoneId};

use crate::report::{ms, print_table, write_json};

/// Options of `kills`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `hoard-demo` binary the servers and players run.
    #[arg(long = "demo-bin", default_value = "target/release/hoard-demo")]
    demo: PathBuf,
    /// The PostgreSQL database (a schema of the run's own is made in it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    store: String,
    /// How long the players play and the faults go on.
    #[arg(long, default_value_t = 240)]
    seconds: u64,
    /// Players carrying items, each in a thread of its own.
    #[arg(long, default_value_t = 3)]
    players: usize,
    /// Keep the servers' logs and the players' caches under this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
}

const ZONES: [&str; 4] = ["meadow", "forest", "desert", "coast"];
const LEASE_SECS: &str = "2";

/// One server process of the world, restarted under the same name.
struct Node {
    name: &'static str,
    zones: &'static str,
    addr: String,
    child: Option<Child>,
}

/// What the run counted.
#[derive(Default)]
struct Counts {
    kills: AtomicU64,
    pauses: AtomicU64,
    confirmed: AtomicU64,
    unconfirmed: AtomicU64,
    not_applied: AtomicU64,
    /// From a kill to the standby holding the zone.
    failovers_ms: Mutex<Vec<f64>>,
    /// From a kill of a server without a standby to it holding its zone again.
    restarts_ms: Mutex<Vec<f64>>,
    /// From resuming a paused server whose zone was taken to its exit.
    fenced_exit_ms: Mutex<Vec<f64>>,
}

pub(crate) fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    // The servers' logs and the players' caches stay in `--keep DIR`.
    let dir = match &args.keep {
        Some(keep) => keep.join(format!("kills-{}", std::process::id())),
        None => scratch.path().to_owned(),
    };
    std::fs::create_dir_all(dir.join("logs"))?;
    let world = dir.join("world");
    crate::demo::generate_world(&args.demo, &world, 4, 300)?;
    let schema = format!("hoard_kills_{}", std::process::id());
    let world_store = Arc::new(PgStore::open(
        &PgOptions::new(args.store.clone()).with_schema(schema.clone()),
    )?);
    let result = play(args, &dir, &world, &schema, &world_store).and_then(|played| {
        let end = each_once(&*world_store)?;
        let problems = hoard_engine::store::verify(&*world_store)?.len();
        Ok((played, end, problems))
    });
    drop(world_store);
    drop_schema(&args.store, &schema);
    let ((counts, objects_before, seconds), (objects_after, dupes), problems) = result?;
    let lost = objects_before.saturating_sub(objects_after - dupes);
    let sorted = |m: &Mutex<Vec<f64>>| {
        let mut v = m.lock().map(|f| f.clone()).unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v
    };
    let (failovers, restarts, fenced) = (
        sorted(&counts.failovers_ms),
        sorted(&counts.restarts_ms),
        sorted(&counts.fenced_exit_ms),
    );
    let spread = |v: &[f64]| match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(a), Some(m), Some(b)) => format!("{a:.0} / {m:.0} / {b:.0}"),
        _ => "—".into(),
    };
    let rows = vec![vec![
        format!("{seconds}"),
        counts.kills.load(Ordering::SeqCst).to_string(),
        counts.pauses.load(Ordering::SeqCst).to_string(),
        counts.confirmed.load(Ordering::SeqCst).to_string(),
        counts.unconfirmed.load(Ordering::SeqCst).to_string(),
        counts.not_applied.load(Ordering::SeqCst).to_string(),
        lost.to_string(),
        dupes.to_string(),
        problems.to_string(),
        spread(&failovers),
        spread(&restarts),
        spread(&fenced),
    ]];
    print_table(
        "a world on three servers and one PostgreSQL under kills and pauses (2 s leases)",
        &[
            "s",
            "kills",
            "pauses",
            "confirmed",
            "not confirmed",
            "confirmed, not applied",
            "lost",
            "dupes",
            "verify problems",
            "failover to the standby ms (min / median / max)",
            "owner restarted ms",
            "fenced exit after resuming ms",
        ],
        &rows,
    );
    write_json(
        out,
        "kills",
        &serde_json::json!({
            "seconds": seconds,
            "kills": counts.kills.load(Ordering::SeqCst),
            "pauses": counts.pauses.load(Ordering::SeqCst),
            "confirmed": counts.confirmed.load(Ordering::SeqCst),
            "not_confirmed": counts.unconfirmed.load(Ordering::SeqCst),
            "confirmed_not_applied": counts.not_applied.load(Ordering::SeqCst),
            "objects": objects_before,
            "lost": lost,
            "dupes": dupes,
            "verify_problems": problems,
            "failover_ms": failovers,
            "restart_ms": restarts,
            "fenced_exit_ms": fenced,
        }),
    )
}

/// Runs the servers, players and faults; returns the counts, the objects
/// of the world at the start, and how long it played.
fn play(
    args: &Args,
    dir: &Path,
    world: &Path,
    schema: &str,
    store: &Arc<PgStore>,
) -> anyhow::Result<(Arc<Counts>, usize, u64)> {
    let data = dir.join("data");
    let mut nodes: Vec<Node> = [("a", "meadow,forest"), ("b", "desert,coast"), ("c", "meadow,forest")]
        .into_iter()
        .map(|(name, zones)| Node {
            name,
            zones,
            addr: format!("127.0.0.1:{}", free_port()),
            child: None,
        })
        .collect();
    for node in &mut nodes {
        let (child, first) = spawn_server(args, world, &data, schema, node)?;
        println!("{}: {}", node.name, first["event"]);
        node.child = Some(child);
    }
    let objects_before = each_once(&**store)?.0;
    let addresses = nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
    let items = ground_items(&**store)?;
    anyhow::ensure!(items.len() >= args.players, "the world has too few items");
    let counts = Arc::new(Counts::default());
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);

    let players: Vec<_> = (0..args.players)
        .map(|p| {
            let name = format!("player{p}");
            let token = token(&args.demo, &data, &name)?;
            let cache = dir.join(format!("cache-{p}"));
            let (demo, addresses, store) = (args.demo.clone(), addresses.clone(), store.clone());
            let (counts, done) = (counts.clone(), done.clone());
            let (item, spots) = (items[p].0, spots(&items));
            Ok(std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(p as u64);
                while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let Ok(now) = whereabouts(&*store, item) else { continue };
                    let (zone, acts, expect) = match now.as_slice() {
                        [(zone, None)] => {
                            let Some((x, y)) = position(&*store, item, zone) else {
                                continue;
                            };
                            let acts = vec![moving(zone, x, y), format!(r#"{{"PickUp":{{"object":{item}}}}}"#)];
                            (zone.clone(), acts, (zone.clone(), Some(name.clone())))
                        }
                        [(_, Some(holder))] if *holder == name => {
                            let zone = ZONES[rng.usize(..ZONES.len())].to_owned();
                            let (x, y) = spots[&zone];
                            let acts = vec![moving(&zone, x, y), format!(r#"{{"Drop":{{"object":{item}}}}}"#)];
                            (zone.clone(), acts, (zone, None))
                        }
                        other => {
                            eprintln!("{name}: item {item} is {other:?}");
                            return;
                        }
                    };
                    let confirmed = act(&demo, &addresses, &token, &cache, &zone, &acts);
                    if !confirmed {
                        counts.unconfirmed.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    counts.confirmed.fetch_add(1, Ordering::SeqCst);
                    // `Processed` means applied and durable: the store holds
                    // it now, whichever server it was.
                    let held = whereabouts(&*store, item).unwrap_or_default();
                    let expected_zone = if expect.1.is_some() {
                        "inventory".to_owned()
                    } else {
                        expect.0.clone()
                    };
                    if held != [(expected_zone, expect.1.clone())] {
                        counts.not_applied.fetch_add(1, Ordering::SeqCst);
                        eprintln!("{name}: confirmed {acts:?} but the store has item {item} at {held:?}");
                    }
                }
            }))
        })
        .collect::<anyhow::Result<_>>()?;

    // The faults, until the deadline.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut faults = 0u64;
    while Instant::now() + Duration::from_secs(8) < deadline {
        std::thread::sleep(Duration::from_millis(rng.u64(2000..5000)));
        faults += 1;
        // The owner of a random zone.
        let zone = ZONES[rng.usize(..ZONES.len())];
        let Some(owner) = lease_owner(store, zone) else {
            println!(
                "  {:>5.1} s: nobody serves {zone} right now",
                started.elapsed().as_secs_f64()
            );
            continue;
        };
        let Some(index) = nodes.iter().position(|n| n.name == owner) else {
            continue;
        };
        println!(
            "  {:>5.1} s: {} {owner} (serving {zone})",
            started.elapsed().as_secs_f64(),
            if faults.is_multiple_of(4) { "pausing" } else { "killing" }
        );
        let pid = nodes[index].child.as_ref().map(Child::id);
        if faults.is_multiple_of(4) {
            // Paused past its lease: its standby (if any) takes over; on
            // waking it finds itself fenced and stops.
            let Some(pid) = pid else { continue };
            signal(pid, "STOP");
            std::thread::sleep(Duration::from_secs(3));
            signal(pid, "CONT");
            let resumed = Instant::now();
            counts.pauses.fetch_add(1, Ordering::SeqCst);
            // Fenced (its zones were taken meanwhile), it stops at once.
            let child = nodes[index].child.as_mut();
            if let Some(child) = child
                && wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some())
                && let Ok(mut f) = counts.fenced_exit_ms.lock()
            {
                f.push(ms(resumed.elapsed()));
            }
        } else {
            let killed = Instant::now();
            if let Some(mut child) = nodes[index].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            counts.kills.fetch_add(1, Ordering::SeqCst);
            // Another server of the world takes the zone: its standby; or,
            // for b's zones (no standby), b itself, restarted at once.
            let standby = nodes
                .iter_mut()
                .filter(|n| n.name != owner && n.zones.contains(zone))
                .any(|n| n.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none()));
            if !standby {
                let (child, _) = spawn_server(args, world, &data, schema, &nodes[index])?;
                nodes[index].child = Some(child);
            }
            let taken = wait_for(Duration::from_secs(10), || {
                lease_owner(store, zone).is_some_and(|o| o != owner || !standby)
            });
            let times = if standby {
                &counts.failovers_ms
            } else {
                &counts.restarts_ms
            };
            if taken && let Ok(mut f) = times.lock() {
                f.push(ms(killed.elapsed()));
            }
        }
        // Every server that is not running comes back (a standby, or the
        // owner again); a fenced one has exited by itself.
        for node in &mut nodes {
            let exited = match node.child.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited {
                let (child, first) = spawn_server(args, world, &data, schema, node)?;
                println!(
                    "  {:>5.1} s: {} back as {}",
                    started.elapsed().as_secs_f64(),
                    node.name,
                    first["event"]
                );
                node.child = Some(child);
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    for player in players {
        let _ = player.join();
    }
    let played = started.elapsed().as_secs();
    for node in &mut nodes {
        if let Some(mut child) = node.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }
    Ok((counts, objects_before, played))
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Starts `node`'s server and waits for its first line (`listening`, or
/// `standby` while another holds its zones).
fn spawn_server(
    args: &Args,
    world: &Path,
    data: &Path,
    schema: &str,
    node: &Node,
) -> anyhow::Result<(Child, serde_json::Value)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_file_name("logs").join(format!("{}.log", node.name)))?;
    let mut child = Command::new(&args.demo)
        .args(["server", "--listen", &node.addr, "--tick-hz", "20", "--world"])
        .arg(world)
        .arg("--data")
        .arg(data)
        .args(["--store", &args.store, "--store-schema", schema])
        .args(["--zones", node.zones, "--name", node.name, "--lease-secs", LEASE_SECS])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let first: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("{}'s first line {line:?}", node.name))?;
    // Its later lines (a standby's `listening`) are read too: a closed
    // stdout would end the server at its next line.
    std::thread::spawn(move || for _ in stdout.lines().map_while(Result::ok) {});
    Ok((child, first))
}

fn token(demo: &Path, data: &Path, player: &str) -> anyhow::Result<String> {
    let out = Command::new(demo)
        .args(["server", "token", "--data"])
        .arg(data)
        .args(["--player", player])
        .output()?;
    anyhow::ensure!(out.status.success(), "minting a token");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Runs one player's actions; whether the client saw them all `Processed`.
fn act(demo: &Path, addresses: &str, token: &str, cache: &Path, zone: &str, acts: &[String]) -> bool {
    let mut cmd = Command::new(demo);
    cmd.args([
        "client",
        "--headless",
        "--exit-after-ready",
        "--server",
        addresses,
        "--zone",
        zone,
        "--token",
        token,
    ])
    .arg("--cache-dir")
    .arg(cache)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for a in acts {
        cmd.args(["--act", a]);
    }
    let Ok(mut child) = cmd.spawn() else { return false };
    // Bounded: a client that hangs counts as not confirmed.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

fn moving(zone: &str, x: u16, y: u16) -> String {
    let index = ZONES.iter().position(|z| *z == zone).unwrap_or(0);
    format!(r#"{{"Move":{{"zone":{index},"x":{x},"y":{y}}}}}"#)
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// The server holding `zone`'s live lease.
fn lease_owner(store: &PgStore, zone: &str) -> Option<String> {
    let zone = ZoneId::new(zone).ok()?;
    store
        .live_leases()
        .ok()?
        .into_iter()
        .find(|l| l.key == LeaseKey::Zone(zone.clone()) && l.expires_at > chrono::Utc::now())
        .map(|l| l.owner)
}

/// An item's `(kind, count, x, y)`, as the demo stores it.
fn item_of(state: &ObjectState) -> Option<(String, u16, u16, u16)> {
    let components = state.components().ok()?;
    let (_, bytes) = components.into_iter().find(|(name, _)| *name == "item")?;
    rmp_serde::from_slice(bytes).ok()
}

/// Items on the ground: (id, zone, x, y), in id order.
fn ground_items(store: &dyn WorldStore) -> anyhow::Result<Vec<(u64, String, u16, u16)>> {
    let mut items = Vec::new();
    for zone in ZONES {
        for shard in store.zone_shards(&ZoneId::new(zone)?)? {
            for object in store.snapshot(shard)?.objects {
                if let Some((_, _, x, y)) = item_of(&object.state) {
                    items.push((object.id.0, zone.to_owned(), x, y));
                }
            }
        }
    }
    // Spread the players' items over the zones.
    items.sort_by_key(|(id, _, _, _)| id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    Ok(items)
}

/// A standing spot per zone: where one of its items lies.
fn spots(items: &[(u64, String, u16, u16)]) -> std::collections::HashMap<String, (u16, u16)> {
    let mut spots = std::collections::HashMap::new();
    for (_, zone, x, y) in items.iter().rev() {
        spots.insert(zone.clone(), (*x, *y));
    }
    spots
}

/// Where the store has object `id`: (zone, the player whose inventory).
fn whereabouts(store: &dyn WorldStore, id: u64) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut found = Vec::new();
    for zone in store.zones()? {
        for shard in store.zone_shards(&zone)? {
            let (head, live) = store.manifest(shard)?;
            if live.iter().any(|(o, _)| o.0 == id) {
                let owner = match head.scope {
                    ShardScope::Perspective(p) => Some(p),
                    ShardScope::Shared => None,
                };
                found.push((zone.to_string(), owner));
            }
        }
    }
    Ok(found)
}

/// Where object `id` lies in `zone`'s shards.
fn position(store: &dyn WorldStore, id: u64, zone: &str) -> Option<(u16, u16)> {
    for shard in store.zone_shards(&ZoneId::new(zone).ok()?).ok()? {
        let snapshot = store.snapshot(shard).ok()?;
        if let Some(object) = snapshot.objects.iter().find(|o| o.id.0 == id) {
            return item_of(&object.state).map(|(_, _, x, y)| (x, y));
        }
    }
    None
}

/// Every object of the world: how many distinct, and how many were found
/// in a second shard.
fn each_once(store: &dyn WorldStore) -> anyhow::Result<(usize, usize)> {
    let mut seen = std::collections::HashMap::<u64, ShardId>::new();
    let mut dupes = 0;
    for zone in store.zones()? {
        for shard in store.zone_shards(&zone)? {
            for (object, _) in store.manifest(shard)?.1 {
                if seen.insert(object.0, shard).is_some() {
                    dupes += 1;
                }
            }
        }
    }
    Ok((seen.len() + dupes, dupes))
}

/// Drops the run's schema with its tables.
fn drop_schema(url: &str, schema: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    rt.block_on(async {
        if let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            if let Err(e) = client.batch_execute(&sql).await {
                eprintln!("could not drop schema {schema}: {e}");
            }
        }
    });
}
