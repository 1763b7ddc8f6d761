//! Two processes on one cache root: the second waits, works read-only and
//! says so, or is refused — it never writes beside the first.

use std::io::BufRead;
use std::process::{Command, Stdio};

use hoard_world_cache::cache::{OpenError, WriteError};
use hoard_world_cache::{LockPolicy, WorldCache};

use super::support::{REGISTRY, key, shard};

#[test]
fn a_second_handle_is_read_only_or_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = WorldCache::open(dir.path(), LockPolicy::Fail).expect("first");
    first.write(&shard(key(1), 1, 5)).expect("write");
    let second = WorldCache::open(dir.path(), LockPolicy::ReadOnlyIfBusy).expect("second");
    assert!(second.is_read_only());
    assert!(second.load(&key(1), REGISTRY).is_some(), "reads work read-only");
    assert!(matches!(
        second.write(&shard(key(1), 2, 5)),
        Err(WriteError::ReadOnly(_))
    ));
    assert!(matches!(
        WorldCache::open(dir.path(), LockPolicy::Fail),
        Err(OpenError::Busy { .. })
    ));
    drop(first);
    // Wait, not Fail: a fork in another test thread can hold the lock until it execs.
    let third = WorldCache::open(dir.path(), LockPolicy::Wait).expect("free again");
    assert!(!third.is_read_only());
}

#[test]
fn another_process_holding_the_cache_makes_this_one_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = Command::new(env!("CARGO_BIN_EXE_hoard-cache-crash-writer"))
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(writer.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let cache = WorldCache::open(dir.path(), LockPolicy::ReadOnlyIfBusy).expect("open");
    let read_only = cache.is_read_only();
    writer.kill().expect("kill");
    writer.wait().expect("wait");
    assert!(read_only, "the writer process holds the lock");
}
