//! The demo server and headless client as processes: a cold entry, a warm
//! re-entry that reuses the cache (asserted on the JSON line), and the same
//! after the server restarts (its identity and history survive).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn demo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hoard-demo"))
}

struct Server {
    child: Child,
    addr: String,
    fingerprint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(data: &Path) -> Server {
    let mut child = demo()
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--zones",
            "2",
            "--tick-hz",
            "50",
            "--data",
        ])
        .arg(data)
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
    assert_eq!(v["zones"], serde_json::json!(["forest", "meadow"]));
    Server {
        child,
        addr: v["addr"].as_str().expect("addr").to_owned(),
        fingerprint: v["fingerprint"].as_str().expect("fingerprint").to_owned(),
    }
}

fn token(data: &Path, player: &str) -> String {
    let out = demo()
        .args(["server", "token", "--player", player, "--data"])
        .arg(data)
        .output()
        .expect("token");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

fn enter(server: &Server, cache: &Path, token: &str, zone: &str) -> serde_json::Value {
    let out = demo()
        .args([
            "client",
            "--headless",
            "--exit-after-ready",
            "--server",
            &server.addr,
            "--zone",
            zone,
            "--token",
            token,
        ])
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
