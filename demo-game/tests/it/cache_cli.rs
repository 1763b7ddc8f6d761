//! `hoard-demo cache inspect | verify | clear` on a real cache directory.

use std::path::Path;
use std::process::{Command, Output};

use hoard_engine::state::StateBuilder;
use hoard_engine::{Epoch, ObjectId, RegistryHash, Seq, ServerIdentity, ShardId, ZoneId};
use hoard_world_cache::format::recompute_digest;
use hoard_world_cache::{CachedObject, CachedShard, LockPolicy, ShardHeader, ShardKey, WorldCache};

fn demo(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hoard-demo"))
        .arg("cache")
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .expect("run hoard-demo")
}

fn fill(root: &Path) -> Vec<ShardKey> {
    let cache = WorldCache::open(root, LockPolicy::Fail).expect("open");
    let mut keys = Vec::new();
    for (zone, shard) in [("meadow", 1u64), ("meadow", 2), ("desert", 3)] {
        let key = ShardKey::new(
            ServerIdentity([5; 32]),
            "world",
            None,
            ZoneId::new(zone).expect("zone"),
            ShardId(shard),
        )
        .expect("key");
        let objects: Vec<CachedObject> = (0..4u64)
            .map(|i| CachedObject {
                id: ObjectId(shard * 100 + i),
                version: Seq(3),
                state: StateBuilder::new()
                    .component("item", rmp_serde::to_vec(&("stone", i)).expect("encode"))
                    .finish(),
            })
            .collect();
        cache
            .write(&CachedShard {
                header: ShardHeader {
                    key: key.clone(),
                    epoch: Epoch(1),
                    hwm: Seq(3),
                    digest: recompute_digest(&objects),
                    registry: RegistryHash([0; 32]),
                    snapshot_time: chrono::Utc::now(),
                },
                objects,
            })
            .expect("write");
        keys.push(key);
    }
    keys
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn inspect_shows_the_tree_json_and_a_dump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = fill(dir.path());
    let tree = demo(dir.path(), &["inspect"]);
    assert!(tree.status.success());
    let text = stdout(&tree);
    assert!(text.contains("meadow  (2 shards, 8 objects"), "{text}");
    assert!(text.contains("desert  (1 shards, 4 objects"), "{text}");
    assert!(text.contains("hwm 3"), "{text}");

    let json = demo(dir.path(), &["inspect", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(entries.as_array().map(Vec::len), Some(3));

    let shard = keys[0].file();
    let dump = demo(dir.path(), &["inspect", "--dump", shard.to_str().expect("utf-8")]);
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let value: serde_json::Value = serde_json::from_str(&stdout(&dump)).expect("json");
    assert_eq!(value["zone"], "meadow");
    assert_eq!(
        value["objects"][1]["components"]["item"],
        serde_json::json!(["stone", 1])
    );
}

#[test]
fn verify_fails_with_a_list_when_anything_is_damaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = fill(dir.path());
    let ok = demo(dir.path(), &["verify"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    let path = dir.path().join(keys[1].file());
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    let bad = demo(dir.path(), &["verify"]);
    assert_eq!(bad.status.code(), Some(2));
    let text = stdout(&bad);
    assert!(text.contains("1 of 3 cached shards are damaged"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn clear_removes_a_zone() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path());
    let out = demo(dir.path(), &["clear", "--zone", "meadow"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("removed 2 cached shards"), "{}", stdout(&out));
    let json = demo(dir.path(), &["inspect", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(entries.as_array().map(Vec::len), Some(1));
    let bad = demo(dir.path(), &["clear", "--zone", "Not A Zone"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("zone"));
}

#[test]
fn inspect_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path());
    // The reader takes nothing and closes the pipe, as `| head -0` would.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hoard-demo"))
        .args(["cache", "inspect", "--cache-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hoard-demo");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(matches!(out.status.code(), Some(0 | 141)), "{:?} {stderr}", out.status);
}
