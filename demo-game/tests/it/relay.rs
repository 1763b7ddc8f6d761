//! `hoard-demo relay` as a process between a server and headless clients: a
//! player's cache filled through the relay is warm through it and at the
//! world's own server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use crate::server_client::{demo, headless, server, server_listening, some_item, token};

struct Relay {
    child: Child,
    addr: String,
    world: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay(upstream: &str, data: &Path, token: &str) -> Relay {
    let mut child = demo()
        .args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--token",
            token,
            "--dev",
            "--data",
        ])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start relay");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("relaying line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["event"], "relaying", "{line}");
    Relay {
        child,
        addr: v["addr"].as_str().expect("addr").to_owned(),
        world: v["world"].as_str().expect("world").to_owned(),
    }
}

fn enter(addr: &str, world: Option<&str>, token: &str, cache: &Path) -> serde_json::Value {
    let mut cmd = headless(addr, "meadow", token);
    cmd.arg("--cache-dir").arg(cache);
    if let Some(world) = world {
        cmd.args(["--world", world]);
    }
    let out = cmd.output().expect("client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one json line")
}

#[test]
fn a_player_enters_through_a_relay_and_keeps_the_cache_at_the_origin() {
    let data = tempfile::tempdir().expect("tempdir");
    let relay_data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let origin = server(data.path());
    let relay = relay(&origin.addr, relay_data.path(), &token(data.path(), "relay-one"));

    let cold = enter(&relay.addr, Some(&relay.world), "dev:ann", cache.path());
    let shards = cold["shards"].as_u64().expect("shards");
    assert!(shards > 0);
    assert_eq!(cold["shards_snapshot"].as_u64(), Some(shards), "{cold}");
    let warm = enter(&relay.addr, Some(&relay.world), "dev:ann", cache.path());
    assert_eq!(warm["shards_fresh"].as_u64(), Some(shards), "{warm}");
    // Without --world the relay's fingerprint is not the world's: refused,
    // with the world named.
    let mut cmd = headless(&relay.addr, "meadow", "dev:ann");
    let other = tempfile::tempdir().expect("tempdir");
    let out = cmd.arg("--cache-dir").arg(other.path()).output().expect("client");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&relay.world));
    // At the world's own server the same cache is warm.
    let direct = enter(&origin.addr, None, &token(data.path(), "ann"), cache.path());
    assert_eq!(direct["shards_fresh"].as_u64(), Some(shards), "{direct}");

    // Objects have URLs naming the world at its address, and a URL resolves
    // from the cache.
    let inspect = |args: &[&str]| -> serde_json::Value {
        let out = demo()
            .args(["cache", "inspect", "--cache-dir"])
            .arg(cache.path())
            .args(args)
            .output()
            .expect("inspect");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let entries = inspect(&["--json"]);
    let path = entries
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["zone"] == "meadow" && e["objects"].as_u64().unwrap_or(0) > 0)
        })
        .and_then(|e| e["path"].as_str())
        .expect("a meadow shard")
        .to_owned();
    let dumped = inspect(&["--dump", &path]);
    let object = &dumped["objects"][0];
    let url = object["url"].as_str().expect("an object url").to_owned();
    assert!(
        url.starts_with(&format!("hoard://{}/world/meadow/", origin.addr)),
        "{url}"
    );
    let resolved = inspect(&["--url", &url]);
    assert_eq!(resolved["id"], object["id"], "{resolved}");
    assert_eq!(resolved["url"], url.as_str());
    // A modder follows the same URL to the file the object is written in.
    let out = demo()
        .args(["world", "show", &url, "--world"])
        .arg(data.path().join("world-files"))
        .output()
        .expect("world show");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!(" {} in shard ", object["id"])) && shown.contains(".scn.ron:"),
        "{shown}"
    );
}

/// The world's server is killed (SIGKILL) and restarted under a relay while
/// a player follows the zone through it: the player is told the world may
/// be stale, and sees a change made after the restart, through the relay.
#[test]
fn a_player_through_a_relay_sees_the_world_again_after_its_server_is_killed_and_restarted() {
    let data = tempfile::tempdir().expect("tempdir");
    let relay_data = tempfile::tempdir().expect("tempdir");
    let (ann_cache, bob_cache) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut origin = server(data.path());
    let addr = origin.addr.clone();
    let relay = relay(&addr, relay_data.path(), &token(data.path(), "relay-one"));
    let ann = token(data.path(), "ann");
    let _ = enter(&addr, None, &ann, ann_cache.path());
    let (id, x, y, _) = some_item(ann_cache.path());
    let x2 = if x < 255 { x + 1 } else { x - 1 };
    let expect = format!("{id}:{x2}:{y}");

    // Bob follows the zone through the relay, waiting for the item to move.
    let mut watcher = headless(&relay.addr, "meadow", "dev:bob")
        .args(["--world", &relay.world, "--expect-item", &expect, "--cache-dir"])
        .arg(bob_cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bob");
    let mut lines = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let ready = lines.next().expect("a line").expect("read");
    assert!(ready.contains("zone_ready"), "{ready}");

    // kill -9, and back on the same address.
    origin.child.kill().expect("kill");
    origin.child.wait().expect("reap");
    drop(origin);
    let origin = server_listening(data.path(), &addr);
    let acts = [
        format!(r#"{{"Move":{{"zone":0,"x":{x},"y":{y}}}}}"#),
        format!(r#"{{"PickUp":{{"object":{id}}}}}"#),
        format!(r#"{{"Move":{{"zone":0,"x":{x2},"y":{y}}}}}"#),
        format!(r#"{{"Drop":{{"object":{id}}}}}"#),
    ];
    let mut cmd = headless(&origin.addr, "meadow", &ann);
    for a in &acts {
        cmd.args(["--act", a]);
    }
    let out = cmd.arg("--cache-dir").arg(ann_cache.path()).output().expect("ann");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let seen = lines.next().expect("bob saw the item").expect("read");
    let v: serde_json::Value = serde_json::from_str(&seen).expect("json");
    assert_eq!(
        (v["event"].as_str(), v["object"].as_u64(), v["copies"].as_u64()),
        (Some("item"), Some(id), Some(1)),
        "{seen}"
    );
    assert!(watcher.wait().expect("wait").success());
}

/// A relay holding none of the world's secrets (its own data directory,
/// not trusted to carry unsigned actions) takes ann's world token and
/// carries her signed action to the world's server: `server token
/// --new-key` makes her key and binds it, `client --player-key` signs with
/// it, and the client exits once the origin confirmed the move. Without the
/// key file the client refuses to start, naming the flag.
#[test]
fn a_player_signs_her_actions_through_a_relay_that_holds_no_secret() {
    let (data, relay_data, cache, keys) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let origin = server(data.path());
    let relay = relay(&origin.addr, relay_data.path(), &token(data.path(), "relay-one"));
    let key_file = keys.path().join("ann.key");
    let out = demo()
        .args(["server", "token", "--player", "ann", "--new-key"])
        .arg(&key_file)
        .arg("--data")
        .arg(data.path())
        .output()
        .expect("token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ann = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    assert!(ann.starts_with("v4.public."), "{ann}");
    let act = |key: Option<&Path>| {
        let mut cmd = headless(&relay.addr, "meadow", &ann);
        cmd.args(["--world", &relay.world, "--act", r#"{"Move":{"zone":0,"x":40,"y":41}}"#])
            .arg("--cache-dir")
            .arg(cache.path());
        if let Some(key) = key {
            cmd.arg("--player-key").arg(key);
        }
        cmd.output().expect("client")
    };
    let out = act(Some(&key_file));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = act(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--player-key"));
}
