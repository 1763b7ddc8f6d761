//! The demo server and headless client as processes: a cold entry, a warm
//! re-entry that reuses the cache (asserted on the JSON line), and the same
//! after the server restarts (its identity and history survive).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub(crate) fn demo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hoard-demo"))
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
    pub(crate) fingerprint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a generated world of two zones (meadow, forest) to `out`.
pub(crate) fn generate_world(out: &Path) {
    let status = demo()
        .args([
            "world",
            "generate",
            "--zones",
            "2",
            "--objects-per-zone",
            "700",
            "--out",
        ])
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .expect("generate");
    assert!(status.success());
}

/// Starts a server on `data`, serving a generated world (kept in `data/world-files`).
/// A child process killed (and reaped) when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn server(data: &Path) -> Server {
    server_listening(data, "127.0.0.1:0")
}

/// [`server`] on a given address (a restart on the address clients know).
pub(crate) fn server_listening(data: &Path, listen: &str) -> Server {
    let world = data.join("world-files");
    if !world.exists() {
        generate_world(&world);
    }
    let mut cmd = demo();
    cmd.args(["server", "--listen", listen, "--tick-hz", "50", "--world"])
        .arg(&world)
        .arg("--data")
        .arg(data);
    let (child, v) = spawn_listening(cmd);
    Server::from_listening(child, &v)
}

impl Server {
    /// The server whose `listening` line is `v`, serving the two generated zones.
    pub(crate) fn from_listening(child: Child, v: &serde_json::Value) -> Server {
        let server = Server {
            child,
            addr: v["addr"].as_str().expect("addr").to_owned(),
            fingerprint: v["fingerprint"].as_str().expect("fingerprint").to_owned(),
        };
        assert_eq!(v["zones"], serde_json::json!(["forest", "meadow"]));
        server
    }
}

/// Spawns a server command and reads its `listening` JSON line.
pub(crate) fn spawn_listening(mut cmd: Command) -> (Child, serde_json::Value) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["event"], "listening");
    (child, v)
}

pub(crate) fn token(data: &Path, player: &str) -> String {
    let out = demo()
        .args(["server", "token", "--player", player, "--data"])
        .arg(data)
        .output()
        .expect("token");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// A headless client command entering `zone` as the player with `token`,
/// exiting once its work is done.
pub(crate) fn headless(addr: &str, zone: &str, token: &str) -> Command {
    let mut cmd = headless_staying(addr, zone, token);
    cmd.arg("--exit-after-ready");
    cmd
}

/// A headless client command that stays in the zone until killed.
pub(crate) fn headless_staying(addr: &str, zone: &str, token: &str) -> Command {
    let mut cmd = demo();
    cmd.args([
        "client",
        "--headless",
        "--server",
        addr,
        "--zone",
        zone,
        "--token",
        token,
    ]);
    cmd
}

pub(crate) fn enter(server: &Server, cache: &Path, token: &str, zone: &str) -> serde_json::Value {
    let out = headless(&server.addr, zone, token)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .expect("client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one json line")
}

#[test]
fn a_returning_player_gets_the_zone_from_cache() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let first = server(data.path());
    let ann = token(data.path(), "ann");

    let cold = enter(&first, cache.path(), &ann, "meadow");
    assert_eq!(cold["event"], "zone_ready");
    assert_eq!(cold["shards"], 64);
    assert_eq!(cold["shards_snapshot"], 64);
    assert_eq!(cold["round_trips"], 1);
    let objects = cold["objects"].as_u64().expect("objects");
    assert!(objects > 64 * 32);

    let warm = enter(&first, cache.path(), &ann, "meadow");
    assert_eq!(warm["shards_fresh"], 64);
    assert_eq!(warm["objects"].as_u64(), Some(objects));
    let bytes = warm["bytes_rx"].as_u64().expect("rx") + warm["bytes_tx"].as_u64().expect("tx");
    assert!(bytes < 8 * 1024, "warm entry cost {bytes} bytes");

    // The server restarts: same identity, same history, the cache still counts.
    let fingerprint = first.fingerprint.clone();
    drop(first);
    let second = server(data.path());
    assert_eq!(second.fingerprint, fingerprint);
    let after_restart = enter(&second, cache.path(), &ann, "meadow");
    assert_eq!(after_restart["shards_fresh"], 64);

    let bad = demo()
        .args([
            "client",
            "--headless",
            "--exit-after-ready",
            "--server",
            &second.addr,
            "--zone",
            "atlantis",
            "--token",
            &ann,
        ])
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .expect("client");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("atlantis"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Finds an item lying in meadow, from the cached copies: (id, x, y, shard).
pub(crate) fn some_item(cache: &Path) -> (u64, u64, u64, u64) {
    let inventory = demo()
        .args(["cache", "inspect", "--json", "--cache-dir"])
        .arg(cache)
        .output()
        .expect("inspect");
    let entries: serde_json::Value = serde_json::from_slice(&inventory.stdout).expect("json");
    for entry in entries
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["zone"] == "meadow")
    {
        let path = entry["path"].as_str().expect("path");
        let dump = demo()
            .args(["cache", "inspect", "--dump", path, "--cache-dir"])
            .arg(cache)
            .output()
            .expect("dump");
        let shard: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("json");
        let objects = shard["objects"].as_array().expect("objects");
        if let Some(item) = objects.iter().find(|o| o["components"].get("item").is_some()) {
            // Item is [kind, count, x, y].
            let fields = &item["components"]["item"];
            return (
                item["id"].as_u64().expect("id"),
                fields[2].as_u64().expect("x"),
                fields[3].as_u64().expect("y"),
                entry["shard"].as_u64().expect("shard"),
            );
        }
    }
    panic!("no item in any cached shard of meadow");
}

#[test]
fn an_item_one_player_moves_is_seen_by_another_exactly_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let ann_cache = tempfile::tempdir().expect("tempdir");
    let bob_cache = tempfile::tempdir().expect("tempdir");
    let cleo_cache = tempfile::tempdir().expect("tempdir");
    let server = server(data.path());
    let (ann, bob) = (token(data.path(), "ann"), token(data.path(), "bob"));
    // Cleo visits first and leaves; she comes back after the item moved.
    let cleo = token(data.path(), "cleo");
    enter(&server, cleo_cache.path(), &cleo, "meadow");
    enter(&server, ann_cache.path(), &ann, "meadow");
    let (id, x, y, _) = some_item(ann_cache.path());
    let x2 = if x < 255 { x + 1 } else { x - 1 };
    let expect = format!("{id}:{x2}:{y}");

    // Bob is in the zone first, waiting for the item to show up where Ann drops it.
    let mut watcher = headless(&server.addr, "meadow", &bob)
        .args(["--expect-item", &expect, "--cache-dir"])
        .arg(bob_cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bob");
    let mut lines = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let ready = lines.next().expect("a line").expect("read");
    assert!(ready.contains("zone_ready"), "{ready}");

    let acts = [
        format!(r#"{{"Move":{{"zone":0,"x":{x},"y":{y}}}}}"#),
        format!(r#"{{"PickUp":{{"object":{id}}}}}"#),
        format!(r#"{{"Move":{{"zone":0,"x":{x2},"y":{y}}}}}"#),
        format!(r#"{{"Drop":{{"object":{id}}}}}"#),
    ];
    let mut cmd = headless(&server.addr, "meadow", &ann);
    for a in &acts {
        cmd.args(["--act", a]);
    }
    let out = cmd
        .args(["--expect-item", &expect, "--cache-dir"])
        .arg(ann_cache.path())
        .output()
        .expect("ann");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let seen = lines.next().expect("bob saw the item").expect("read");
    let v: serde_json::Value = serde_json::from_str(&seen).expect("json");
    assert_eq!(
        (v["event"].as_str(), v["object"].as_u64(), v["copies"].as_u64()),
        (Some("item"), Some(id), Some(1))
    );
    assert!(watcher.wait().expect("wait").success());

    // Cleo's warm re-entry fetches only the changed shards, as deltas.
    let again = enter(&server, cleo_cache.path(), &cleo, "meadow");
    let delta = again["shards_delta"].as_u64().expect("delta");
    assert!((1..=2).contains(&delta), "{again}");
    assert_eq!(again["shards_snapshot"], 0, "{again}");
    assert_eq!(again["shards_fresh"].as_u64(), Some(64 - delta), "{again}");
    let rx = again["bytes_rx"].as_u64().expect("rx");
    assert!(rx < 4096, "a re-entry after one item moved cost {rx} bytes in");
}

#[test]
fn players_in_a_zone_see_each_other() {
    let data = tempfile::tempdir().expect("tempdir");
    let (ann_cache, bob_cache) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let server = server(data.path());
    let (ann, bob) = (token(data.path(), "ann"), token(data.path(), "bob"));
    let mut watcher = headless(&server.addr, "meadow", &bob)
        .args(["--act", r#"{"Move":{"zone":0,"x":100,"y":100}}"#])
        .args(["--expect-player", "ann", "--cache-dir"])
        .arg(bob_cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bob");
    let mut lines = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    assert!(lines.next().expect("a line").expect("read").contains("zone_ready"));
    // Ann stays connected (no --exit-after-ready) until Bob has seen her:
    // presence is a latest value, and hers ends when she leaves.
    let mut ann_client = headless_staying(&server.addr, "meadow", &ann)
        .args(["--act", r#"{"Move":{"zone":0,"x":140,"y":7}}"#])
        .args(["--expect-player", "bob", "--cache-dir"])
        .arg(ann_cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ann");
    let mut ann_lines = BufReader::new(ann_client.stdout.take().expect("stdout")).lines();
    let _ann_guard = KillOnDrop(ann_client);
    assert!(ann_lines.next().expect("a line").expect("read").contains("zone_ready"));
    let ann_saw: serde_json::Value =
        serde_json::from_str(&ann_lines.next().expect("player line").expect("read")).expect("json");
    assert_eq!(
        (ann_saw["name"].as_str(), ann_saw["x"].as_u64(), ann_saw["y"].as_u64()),
        (Some("bob"), Some(100), Some(100))
    );
    let bob_saw: serde_json::Value = serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json");
    assert_eq!(
        (bob_saw["name"].as_str(), bob_saw["x"].as_u64(), bob_saw["y"].as_u64()),
        (Some("ann"), Some(140), Some(7))
    );
    assert!(watcher.wait().expect("wait").success());
}

/// How many objects the store at `data` holds, asserting no id is in two shards.
fn objects_each_once(data: &Path) -> usize {
    use hoard_engine::store::WorldStore;
    let store = hoard_engine::RedbStore::open_dir(data).expect("the killed server's store reopens");
    let mut seen = std::collections::HashMap::new();
    for zone in store.zones().expect("zones") {
        for shard in store.zone_shards(&zone).expect("shards") {
            for object in store.snapshot(shard).expect("snapshot").objects {
                if let Some(other) = seen.insert(object.id.0, shard.0) {
                    panic!("object {} is in shards {other} and {}", object.id.0, shard.0);
                }
            }
        }
    }
    seen.len()
}

/// Every copy of object `id` the store at `data` holds: (shard, version).
fn copies_in_store(data: &Path, id: u64) -> Vec<(u64, u64)> {
    use hoard_engine::store::WorldStore;
    let store = hoard_engine::RedbStore::open_dir(data).expect("the killed server's store reopens");
    let mut copies = Vec::new();
    for zone in store.zones().expect("zones") {
        for shard in store.zone_shards(&zone).expect("shards") {
            let snapshot = store.snapshot(shard).expect("snapshot");
            copies.extend(
                snapshot
                    .objects
                    .iter()
                    .filter(|o| o.id.0 == id)
                    .map(|o| (shard.0, o.version.0)),
            );
        }
    }
    copies
}

#[test]
fn an_item_picked_up_and_dropped_exists_exactly_once_after_server_sigkills() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut rng = fastrand::Rng::new();
    let first = server(data.path());
    let ann = token(data.path(), "ann");
    enter(&first, cache.path(), &ann, "meadow");
    drop(first);
    let (id, x, y, _) = some_item(cache.path());
    let x2 = if x < 255 { x + 1 } else { x - 1 };
    let mv = |x: u64| format!(r#"{{"Move":{{"zone":0,"x":{x},"y":{y}}}}}"#);
    let pick = format!(r#"{{"PickUp":{{"object":{id}}}}}"#);
    let put = format!(r#"{{"Drop":{{"object":{id}}}}}"#);
    let initial = copies_in_store(data.path(), id)[0];
    let objects = objects_each_once(data.path());
    let mut moved = false;
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        let server = server(data.path());
        // The last round waits until the item lies at x2, then kills: so at
        // least one kill follows an applied move, however slow the machine.
        let last = round == ROUNDS - 1;
        if last {
            // Into the inventory first, wherever an earlier round left it
            // (a pick-up of an item already held is refused, with its
            // reason: that client's exit status does not matter here).
            let _ = headless(&server.addr, "meadow", &ann)
                .args(["--act", &mv(x), "--act", &pick, "--cache-dir"])
                .arg(cache.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("client");
        }
        let mut cmd = headless(&server.addr, "meadow", &ann);
        let script = if last {
            vec![mv(x2), put.clone()]
        } else {
            let once = [
                mv(x),
                pick.clone(),
                mv(x2),
                put.clone(),
                pick.clone(),
                mv(x),
                put.clone(),
            ];
            once.iter().cycle().take(5 * once.len()).cloned().collect()
        };
        for a in &script {
            cmd.args(["--act", a]);
        }
        if last {
            cmd.args(["--expect-item", &format!("{id}:{x2}:{y}")]);
        }
        let mut client = cmd
            .arg("--cache-dir")
            .arg(cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("client");
        let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
        // The actions go out right after the entry: wait for it, then
        // SIGKILL the server at a random moment while they are applied.
        let ready = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(ready.contains("zone_ready"), "round {round}: {ready}");
        if last {
            assert!(client.wait().expect("wait").success(), "the item reached {x2},{y}");
        } else {
            std::thread::sleep(std::time::Duration::from_millis(rng.u64(0..300)));
        }
        drop(server);
        let _ = client.kill();
        let _ = client.wait();
        let copies = copies_in_store(data.path(), id);
        assert_eq!(copies.len(), 1, "the item must exist exactly once: {copies:?}");
        assert_eq!(objects_each_once(data.path()), objects, "every object exactly once");
        moved |= copies[0] != initial;
    }
    assert!(
        moved,
        "the item was never moved before a kill: the test exercised nothing"
    );
}

#[test]
fn a_new_player_signing_in_on_several_connections_at_once_keeps_one_session() {
    // Each sign-in's join hook finds no inventory for a new player; one
    // creates it and the others must not be refused for it (the newest
    // session is the one that keeps the player; older ones are replaced).
    let data = tempfile::tempdir().expect("tempdir");
    let served = server(data.path());
    for round in 0..5 {
        let player = format!("newcomer-{round}");
        let token = token(data.path(), &player);
        let caches: Vec<_> = (0..8).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let children: Vec<_> = caches
            .iter()
            .map(|cache| {
                headless(&served.addr, "meadow", &token)
                    .arg("--cache-dir")
                    .arg(cache.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("client")
            })
            .collect();
        let mut entered = 0;
        for child in children {
            let out = child.wait_with_output().expect("client");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("inventory"),
                "round {round}: a sign-in was refused over the inventory: {stderr}"
            );
            if out.status.success() {
                entered += 1;
            } else {
                assert!(
                    stderr.contains("signed in again"),
                    "round {round}: only a replaced session may fail: {stderr}"
                );
            }
        }
        assert!(entered >= 1, "round {round}: the newest session entered");
    }
}

#[test]
fn a_cache_dir_named_by_one_relative_component_is_made_and_used() {
    let data = tempfile::tempdir().expect("tempdir");
    let served = server(data.path());
    let work = tempfile::tempdir().expect("tempdir");
    let ann = token(data.path(), "ann");
    for round in ["cold", "warm"] {
        let out = headless(&served.addr, "meadow", &ann)
            .current_dir(work.path())
            .args(["--cache-dir", "my-cache"])
            .output()
            .expect("client");
        assert!(
            out.status.success(),
            "{round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let entry: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let fresh = entry["shards_fresh"].as_u64();
        assert_eq!(fresh == Some(64), round == "warm", "{round}: {entry}");
    }
    assert!(work.path().join("my-cache").is_dir());
}

#[test]
fn a_line_said_in_a_zone_is_heard_by_the_players_there_and_a_line_from_nowhere_is_refused() {
    let data = tempfile::tempdir().expect("tempdir");
    let served = server(data.path());
    let (bob_cache, ann_cache, cid_cache) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut bob = headless(&served.addr, "meadow", &token(data.path(), "bob"))
        .args(["--expect-chat", "hello meadow", "--cache-dir"])
        .arg(bob_cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bob");
    let mut bob_out = BufReader::new(bob.stdout.take().expect("stdout"));
    let mut line = String::new();
    bob_out.read_line(&mut line).expect("bob's first line");
    assert!(line.contains("zone_ready"), "bob is in the meadow: {line}");
    let ann = headless(&served.addr, "meadow", &token(data.path(), "ann"))
        .args(["--act", r#"{"Move":{"zone":0,"x":10,"y":10}}"#])
        .args(["--say", "hello meadow", "--cache-dir"])
        .arg(ann_cache.path())
        .output()
        .expect("ann");
    assert!(ann.status.success(), "{}", String::from_utf8_lossy(&ann.stderr));
    line.clear();
    bob_out.read_line(&mut line).expect("bob's second line");
    let heard: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(heard["event"], "chat", "{heard}");
    assert_eq!(heard["from"], "ann", "{heard}");
    assert!(bob.wait().expect("bob exits").success());
    // Said before standing anywhere: refused, with the reason.
    let cid = headless(&served.addr, "meadow", &token(data.path(), "cid"))
        .args(["--say", "hi", "--cache-dir"])
        .arg(cid_cache.path())
        .output()
        .expect("cid");
    assert!(!cid.status.success());
    let err = String::from_utf8_lossy(&cid.stderr);
    assert!(err.contains("move first"), "{err}");
}
