//! A world on several servers sharing one PostgreSQL store: each serves the
//! zones it holds leases on, sends clients entering other zones to their
//! server, and a player's cache stays valid across them (one world, one
//! identity). A server SIGKILLed mid-play has its zone taken over by a
//! standby once the lease lapses, and a returning player re-enters there
//! with their cache: fresh shards, not snapshots. An item a player carries
//! from one server's zone to another's exists exactly once at every step.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::postgres::{PgSchema, pg_url};
use super::server_client::{demo, generate_world, token};

/// A loopback port free right now (for a server that must advertise its
/// address before it binds).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// A server process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server serving `zones` under `name` on its own port; its
/// `listening` line arrives on the returned channel once it serves (a
/// standby's only after it has taken its zones over).
fn start(
    data: &Path,
    schema: &PgSchema,
    name: &str,
    zones: &str,
) -> (Proc, String, std::sync::mpsc::Receiver<serde_json::Value>) {
    let addr = format!("127.0.0.1:{}", free_port());
    let (proc, rx) = start_at(&addr, data, schema, name, zones);
    (proc, addr, rx)
}

/// [`start`] on a given address (a server restarted where it was).
fn start_at(
    addr: &str,
    data: &Path,
    schema: &PgSchema,
    name: &str,
    zones: &str,
) -> (Proc, std::sync::mpsc::Receiver<serde_json::Value>) {
    let mut child = demo()
        .args(["server", "--listen", addr, "--tick-hz", "50", "--world"])
        .arg(data.join("world-files"))
        .arg("--data")
        .arg(data)
        .args(["--store", &pg_url(), "--store-schema", &schema.0])
        .args(["--zones", zones, "--name", name, "--lease-secs", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Its JSON lines: `standby` (while another server holds its zones),
        // then `listening`.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    (Proc(child), rx)
}

fn listening(rx: &std::sync::mpsc::Receiver<serde_json::Value>, within: Duration) -> serde_json::Value {
    let v = rx.recv_timeout(within).expect("the server serves in time");
    assert_eq!(v["event"], "listening");
    v
}

/// Enters `zone` through the server at `addr`, retrying while no server
/// serves it (a takeover under way), at most `within`.
fn enter_via(addr: &str, cache: &Path, token: &str, zone: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let out = super::server_client::headless(addr, zone, token)
            .arg("--cache-dir")
            .arg(cache)
            .output()
            .expect("client");
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).expect("one json line");
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            Instant::now() < deadline,
            "entering {zone} via {addr} kept failing: {err}"
        );
        // Unavailable while the lease lapses, or the dead owner's address.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_player_moves_between_servers_with_a_warm_cache_and_a_killed_servers_zone_is_taken_over() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let schema = PgSchema::new();
    generate_world(&data.path().join("world-files"));
    // The world's key and token secret, shared by its servers.
    let ann = token(data.path(), "ann");

    let (alpha, alpha_addr, alpha_rx) = start(data.path(), &schema, "alpha", "meadow");
    let v = listening(&alpha_rx, Duration::from_secs(60));
    assert_eq!(v["serving"], serde_json::json!(["meadow"]));
    let (_beta, beta_addr, beta_rx) = start(data.path(), &schema, "beta", "forest");
    let v = listening(&beta_rx, Duration::from_secs(60));
    assert_eq!(v["serving"], serde_json::json!(["forest"]));

    // Each zone through either server: the one not serving it sends the
    // client on; one identity, so one cache for both.
    let meadow = enter_via(&beta_addr, cache.path(), &ann, "meadow", Duration::from_secs(10));
    assert_eq!(meadow["shards_snapshot"], 64, "{meadow}");
    let forest = enter_via(&alpha_addr, cache.path(), &ann, "forest", Duration::from_secs(10));
    assert_eq!(forest["shards_snapshot"], 64, "{forest}");
    let forest = enter_via(&alpha_addr, cache.path(), &ann, "forest", Duration::from_secs(10));
    assert_eq!(forest["shards_fresh"], 64, "warm through the other server: {forest}");
    let meadow = enter_via(&alpha_addr, cache.path(), &ann, "meadow", Duration::from_secs(10));
    assert_eq!(meadow["shards_fresh"], 64, "{meadow}");

    // A standby for meadow says so, and sends a player who comes to it on
    // to alpha (the cache stays warm); then alpha dies mid-play.
    let (_gamma, gamma_addr, gamma_rx) = start(data.path(), &schema, "gamma", "meadow");
    let v = gamma_rx.recv_timeout(Duration::from_secs(30)).expect("a line");
    assert_eq!(
        v["event"], "standby",
        "the standby must not serve meadow while alpha holds it: {v}"
    );
    assert_eq!(v["served_by"]["meadow"], serde_json::json!(alpha_addr), "{v}");
    let meadow = enter_via(&gamma_addr, cache.path(), &ann, "meadow", Duration::from_secs(10));
    assert_eq!(meadow["shards_fresh"], 64, "through the standby to alpha: {meadow}");
    assert!(
        gamma_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "still a standby while alpha holds meadow"
    );
    let killed = Instant::now();
    drop(alpha);
    let v = listening(&gamma_rx, Duration::from_secs(30));
    let served = killed.elapsed();
    let taken_after_expiry = v["taken_after_expiry_ms"].as_u64().expect("a takeover");
    let loaded_in = v["serving_after_leases_ms"].as_u64().expect("serving after the leases");
    assert_eq!(v["serving"], serde_json::json!(["meadow"]));
    // The returning player asks beta, which sends them to gamma: fresh.
    let meadow = enter_via(&beta_addr, cache.path(), &ann, "meadow", Duration::from_secs(20));
    let ready = killed.elapsed();
    assert_eq!(meadow["shards_fresh"], 64, "a delta entry after the takeover: {meadow}");
    assert_eq!(meadow["shards_snapshot"], 0);
    // A player given the world's servers, the dead one first, gets in
    // through the next (which sends them on to gamma).
    let out = super::server_client::headless(&format!("{alpha_addr},{beta_addr}"), "meadow", &ann)
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .expect("client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meadow: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one json line");
    assert_eq!(meadow["shards_fresh"], 64, "{meadow}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trying the next"),
        "says it left the dead server for the next"
    );
    println!(
        "handover: alpha killed → gamma serving meadow {} ms (lease 2 s) → first client's zone ready {} ms \
         (via {gamma_addr}); lease lapsed → taken {taken_after_expiry} ms, taken → serving {loaded_in} ms, \
         serving → first zone ready {} ms",
        served.as_millis(),
        ready.as_millis(),
        ready.saturating_sub(served).as_millis()
    );
}

/// Polls `look` until it differs from `before` (an action applied and
/// durable), at most `within`; returns the last value seen.
fn settle<T: PartialEq>(before: &T, within: Duration, look: impl Fn() -> T) -> T {
    let deadline = Instant::now() + within;
    loop {
        let now = look();
        if &now != before || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every copy of object `id` in the store of `schema`: (zone, shard).
fn copies(schema: &PgSchema, id: u64) -> Vec<(String, u64)> {
    use hoard_engine::store::WorldStore;
    let store = hoard_engine::store::PgStore::open(
        &hoard_engine::store::PgOptions::new(pg_url()).with_schema(schema.0.clone()),
    )
    .expect("the store");
    let mut found = Vec::new();
    for zone in store.zones().expect("zones") {
        for shard in store.zone_shards(&zone).expect("shards") {
            let (_, live) = store.manifest(shard).expect("manifest");
            found.extend(
                live.iter()
                    .filter(|(o, _)| o.0 == id)
                    .map(|_| (zone.to_string(), shard.0)),
            );
        }
    }
    found
}

#[test]
fn an_item_carried_from_one_servers_zone_to_anothers_exists_exactly_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let schema = PgSchema::new();
    generate_world(&data.path().join("world-files"));
    let ann = token(data.path(), "ann");
    let (_alpha, alpha_addr, alpha_rx) = start(data.path(), &schema, "alpha", "meadow");
    listening(&alpha_rx, Duration::from_secs(60));
    let (_beta, _, beta_rx) = start(data.path(), &schema, "beta", "forest");
    listening(&beta_rx, Duration::from_secs(60));

    enter_via(&alpha_addr, cache.path(), &ann, "meadow", Duration::from_secs(10));
    let (id, x, y, _) = super::server_client::some_item(cache.path());
    let lying = copies(&schema, id);
    assert_eq!(lying.len(), 1);
    // Picked up in meadow, on alpha: into ann's inventory.
    let out = super::server_client::headless(&alpha_addr, "meadow", &ann)
        .args(["--act", &format!(r#"{{"Move":{{"zone":0,"x":{x},"y":{y}}}}}"#)])
        .args(["--act", &format!(r#"{{"PickUp":{{"object":{id}}}}}"#)])
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .expect("client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let held = settle(&lying, Duration::from_secs(5), || copies(&schema, id));
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, "inventory", "picked up: {held:?}");
    // Carried to forest, which beta serves (the client asks alpha and is
    // sent on), and dropped there. Beta does not host ann yet (alpha lets
    // her lease go a moment after she leaves), so it holds her actions
    // back; the client exits once both are confirmed, and `Processed`
    // means applied and durable: the item is in the forest, in the store,
    // the moment the client is done — not some time later.
    let out = super::server_client::headless(&alpha_addr, "forest", &ann)
        .args(["--act", r#"{"Move":{"zone":1,"x":20,"y":21}}"#])
        .args(["--act", &format!(r#"{{"Drop":{{"object":{id}}}}}"#)])
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .expect("client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dropped = copies(&schema, id);
    assert_eq!(dropped.len(), 1, "exactly once: {dropped:?}");
    assert_eq!(dropped[0].0, "forest", "dropped when confirmed: {dropped:?}");
}

/// Where the store has object `id`: its zone and, for an inventory, whose.
fn whereabouts(schema: &PgSchema, id: u64) -> Vec<(String, Option<String>)> {
    use hoard_engine::store::{ShardScope, WorldStore};
    let store = hoard_engine::store::PgStore::open(
        &hoard_engine::store::PgOptions::new(pg_url()).with_schema(schema.0.clone()),
    )
    .expect("the store");
    let mut found = Vec::new();
    for zone in store.zones().expect("zones") {
        for shard in store.zone_shards(&zone).expect("shards") {
            let (head, live) = store.manifest(shard).expect("manifest");
            if live.iter().any(|(o, _)| o.0 == id) {
                let owner = match head.scope {
                    ShardScope::Perspective(p) => Some(p),
                    ShardScope::Shared => None,
                };
                found.push((zone.to_string(), owner));
            }
        }
    }
    found
}

/// Every object of the world, asserting none is in two shards: how many.
fn each_once(schema: &PgSchema) -> usize {
    use hoard_engine::store::WorldStore;
    let store = hoard_engine::store::PgStore::open(
        &hoard_engine::store::PgOptions::new(pg_url()).with_schema(schema.0.clone()),
    )
    .expect("the store");
    let mut seen = std::collections::HashMap::new();
    for zone in store.zones().expect("zones") {
        for shard in store.zone_shards(&zone).expect("shards") {
            for (object, _) in store.manifest(shard).expect("manifest").1 {
                if let Some(other) = seen.insert(object.0, shard.0) {
                    panic!("object {} is in shards {other} and {}", object.0, shard.0);
                }
            }
        }
    }
    assert!(hoard_engine::store::verify(&store).expect("verify").is_empty());
    seen.len()
}

#[test]
fn players_trade_an_item_across_servers_while_the_servers_are_killed_and_it_exists_exactly_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let schema = PgSchema::new();
    generate_world(&data.path().join("world-files"));
    let players: Vec<(String, String, tempfile::TempDir)> = ["ann", "bob"]
        .iter()
        .map(|p| {
            (
                p.to_string(),
                token(data.path(), p),
                tempfile::tempdir().expect("tempdir"),
            )
        })
        .collect();
    let addrs = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let names = [("alpha", "meadow"), ("beta", "forest")];
    let servers: Vec<std::sync::Arc<std::sync::Mutex<Proc>>> = names
        .iter()
        .zip(&addrs)
        .map(|((name, zone), addr)| {
            let (proc, rx) = start_at(addr, data.path(), &schema, name, zone);
            listening(&rx, Duration::from_secs(60));
            std::sync::Arc::new(std::sync::Mutex::new(proc))
        })
        .collect();
    enter_via(
        &addrs[0],
        players[0].2.path(),
        &players[0].1,
        "meadow",
        Duration::from_secs(10),
    );
    let (id, x, y, _) = super::server_client::some_item(players[0].2.path());
    let objects = each_once(&schema);

    // A killer SIGKILLs one server at a random moment, restarts it where it
    // was (it takes its zone back at once: same name), and again, while the
    // players carry the item back and forth.
    const KILLS: usize = 4;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (servers, stop, addrs) = (servers.clone(), stop.clone(), addrs.clone());
        let (data, schema_name) = (data.path().to_owned(), schema.0.clone());
        std::thread::spawn(move || {
            let schema = PgSchema(schema_name);
            let mut rng = fastrand::Rng::new();
            for _ in 0..KILLS {
                std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let which = rng.usize(..2);
                let (name, zone) = names[which];
                let mut server = servers[which].lock().expect("server");
                let _ = server.0.kill();
                let _ = server.0.wait();
                let (proc, rx) = start_at(&addrs[which], &data, &schema, name, zone);
                *server = proc;
                listening(&rx, Duration::from_secs(60));
            }
            // The schema is the test's: not dropped here.
            std::mem::forget(schema);
        })
    };

    let zone_index = |zone: &str| u64::from(zone == "forest");
    let spot = |zone: &str| if zone == "forest" { (20, 21) } else { (x, y) };
    let mut moves = 0;
    let mut last_ground = "meadow".to_owned();
    for step in 0..12 {
        let now = whereabouts(&schema, id);
        assert_eq!(now.len(), 1, "step {step}: the item must exist exactly once: {now:?}");
        let (zone, holder) = now[0].clone();
        // On the ground: the next player picks it up. Carried: its carrier
        // drops it in the other zone.
        let (player, target, acts) = match &holder {
            None => {
                last_ground = zone.clone();
                let (px, py) = spot(&zone);
                let player = &players[step % 2];
                (
                    player,
                    zone.clone(),
                    vec![
                        format!(r#"{{"Move":{{"zone":{},"x":{px},"y":{py}}}}}"#, zone_index(&zone)),
                        format!(r#"{{"PickUp":{{"object":{id}}}}}"#),
                    ],
                )
            }
            Some(carrier) => {
                let other = if last_ground == "meadow" { "forest" } else { "meadow" };
                let (px, py) = spot(other);
                let player = players.iter().find(|p| &p.0 == carrier).expect("a player carries it");
                (
                    player,
                    other.to_owned(),
                    vec![
                        format!(r#"{{"Move":{{"zone":{},"x":{px},"y":{py}}}}}"#, zone_index(other)),
                        format!(r#"{{"Drop":{{"object":{id}}}}}"#),
                    ],
                )
            }
        };
        // Through either server: the wrong one sends the client on. A
        // server being killed fails the step; the next one looks again.
        let mut cmd = super::server_client::headless(&addrs[step % 2], &target, &player.1);
        for act in &acts {
            cmd.args(["--act", act]);
        }
        let out = cmd.arg("--cache-dir").arg(player.2.path()).output().expect("client");
        if out.status.success() {
            // Confirmed (`Processed`) means applied and durable, even with
            // servers dying around it: the store holds the effect now.
            let expected = match &holder {
                None => ("inventory".to_owned(), Some(player.0.clone())),
                Some(_) => (target.clone(), None),
            };
            assert_eq!(
                whereabouts(&schema, id),
                vec![expected],
                "step {step}: confirmed {acts:?} but not applied"
            );
        }
        if settle(&now, Duration::from_secs(2), || whereabouts(&schema, id)) != now {
            moves += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    killer.join().expect("killer");
    let end = whereabouts(&schema, id);
    assert_eq!(end.len(), 1, "the item exists exactly once at the end: {end:?}");
    assert_eq!(each_once(&schema), objects, "no object was lost or made twice");
    assert!(moves >= 2, "the players carried the item around: {moves} moves");
    println!("{moves} moves of the item across two servers, {KILLS} kills at most");
}

#[test]
fn bots_walking_round_the_world_follow_it_from_server_to_server() {
    let data = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let schema = PgSchema::new();
    // The bots walk round all four zones: meadow, forest, coast, desert.
    let status = demo()
        .args([
            "world",
            "generate",
            "--zones",
            "4",
            "--objects-per-zone",
            "300",
            "--out",
        ])
        .arg(data.path().join("world-files"))
        .stdout(Stdio::null())
        .status()
        .expect("generate");
    assert!(status.success());
    let _ = token(data.path(), "keys");
    let (_alpha, alpha_addr, alpha_rx) = start(data.path(), &schema, "alpha", "meadow,forest");
    listening(&alpha_rx, Duration::from_secs(60));
    let (_beta, _, beta_rx) = start(data.path(), &schema, "beta", "coast,desert");
    listening(&beta_rx, Duration::from_secs(60));
    let out = demo()
        .args(["bots", "--server", &alpha_addr, "--clients", "4", "--duration", "8"])
        .args([
            "--zone-change-every",
            "1.5-2",
            "--actions-per-sec",
            "4",
            "--json",
            "--server-data",
        ])
        .arg(data.path())
        .arg("--work")
        .arg(work.path())
        .output()
        .expect("bots");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one json line");
    let bots = &v["bots"];
    assert!(bots["errors"].as_object().expect("errors").is_empty(), "{v}");
    let count = |kind: &str| bots["entries"][kind]["count"].as_f64().unwrap_or(0.0);
    // Every bot entered once, then changed zones several times, half of
    // them onto the other server.
    assert!(count("cold") + count("warm") >= 8.0, "{v}");
}

#[test]
fn offline_world_tools_refuse_to_write_a_world_its_servers_are_serving() {
    let data = tempfile::tempdir().expect("tempdir");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let schema = PgSchema::new();
    generate_world(&data.path().join("world-files"));
    let _ = token(data.path(), "keys");
    let (mut alpha, _, alpha_rx) = start(data.path(), &schema, "alpha", "meadow");
    listening(&alpha_rx, Duration::from_secs(60));
    let store_args = ["--store", &pg_url(), "--store-schema", &schema.0];
    // Reading is fine while it runs.
    let export = demo()
        .args(["world", "export", "--out"])
        .arg(out_dir.path().join("exported"))
        .args(store_args)
        .output()
        .expect("export");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    // Writing is refused, naming who serves what.
    let import = || {
        demo()
            .args(["world", "import", "--world"])
            .arg(data.path().join("world-files"))
            .args(store_args)
            .output()
            .expect("import")
    };
    let refused = import();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("zone meadow is leased to alpha"), "{err}");
    // Stopped cleanly — by Ctrl-C (SIGINT), then, started again, by the
    // SIGTERM of systemd, docker or Kubernetes — alpha gives its leases back
    // at once.
    for signal in ["-INT", "-TERM"] {
        if signal == "-TERM" {
            let (again, _, again_rx) = start(data.path(), &schema, "alpha", "meadow");
            alpha = again;
            listening(&again_rx, Duration::from_secs(60));
        }
        let interrupted = std::process::Command::new("kill")
            .args([signal, &alpha.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(interrupted.success());
        let status = alpha.0.wait().expect("alpha stops");
        assert!(status.success(), "{signal}: a clean stop: {status}");
        let again = import();
        let err = String::from_utf8_lossy(&again.stderr);
        assert!(
            !err.contains("leased to"),
            "{signal}: the leases were given back: {err}"
        );
    }
}

#[test]
fn two_servers_started_together_on_an_empty_store_import_the_world_once_and_both_serve() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let schema = PgSchema::new();
    generate_world(&data.path().join("world-files"));
    let ann = token(data.path(), "ann");
    // Started at the same moment: one imports, the other waits for it.
    let (_alpha, alpha_addr, alpha_rx) = start(data.path(), &schema, "alpha", "meadow");
    let (_beta, _, beta_rx) = start(data.path(), &schema, "beta", "forest");
    assert_eq!(
        listening(&alpha_rx, Duration::from_secs(60))["serving"],
        serde_json::json!(["meadow"])
    );
    assert_eq!(
        listening(&beta_rx, Duration::from_secs(60))["serving"],
        serde_json::json!(["forest"])
    );
    // The world is whole: every zone enters, through either server.
    let forest = enter_via(&alpha_addr, cache.path(), &ann, "forest", Duration::from_secs(10));
    assert_eq!(forest["shards"], 64, "{forest}");
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn an_owner_paused_past_its_lease_exits_within_two_seconds_of_resuming() {
    let data = tempfile::tempdir().expect("tempdir");
    let caches = tempfile::tempdir().expect("tempdir");
    let schema = PgSchema::new();
    generate_world(&data.path().join("world-files"));
    let (mut alpha, alpha_addr, alpha_rx) = start(data.path(), &schema, "alpha", "meadow");
    listening(&alpha_rx, Duration::from_secs(60));
    let (_gamma, _, gamma_rx) = start(data.path(), &schema, "gamma", "meadow");
    let v = gamma_rx.recv_timeout(Duration::from_secs(30)).expect("a line");
    assert_eq!(v["event"], "standby", "{v}");
    // Players in meadow on alpha, their connections busy when it pauses.
    let mut players: Vec<Proc> = ["ann", "bob", "cid"]
        .iter()
        .map(|p| {
            let child = super::server_client::headless_staying(&alpha_addr, "meadow", &token(data.path(), p))
                .arg("--cache-dir")
                .arg(caches.path().join(p))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("client");
            Proc(child)
        })
        .collect();
    for p in &mut players {
        // Each is in the zone once it prints its entry (the players are
        // killed when the test ends).
        let mut line = String::new();
        BufReader::new(p.0.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("an entry");
        assert!(line.contains("zone_ready"), "{line}");
    }

    let pid = alpha.0.id();
    signal(pid, "STOP");
    // Gamma takes meadow over once alpha's lease lapses.
    assert_eq!(
        listening(&gamma_rx, Duration::from_secs(30))["serving"],
        serde_json::json!(["meadow"])
    );
    signal(pid, "CONT");
    let resumed = Instant::now();
    let status = loop {
        if let Some(status) = alpha.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "alpha still runs 20 s after resuming"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let after = resumed.elapsed();
    assert_eq!(status.code(), Some(1), "a fenced server stops with exit 1");
    assert!(after < Duration::from_secs(2), "exited {after:?} after resuming");
    println!("alpha exited {} ms after resuming", after.as_millis());
}
