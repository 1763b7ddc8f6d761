//! The whole-cache tools: inventory, verify, clear and eviction.

use std::time::{Duration, SystemTime};

use hoard_engine::{ServerIdentity, ZoneId};
use hoard_world_cache::{ClearScope, ShardKey, WorldCache};

use super::support::{key, shard};

fn other_server(shard_id: u64) -> ShardKey {
    let mut k = key(shard_id);
    k.server = ServerIdentity([9; 32]);
    k
}

#[test]
fn inventory_lists_every_shard_with_its_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
    cache.write(&shard(key(1), 3, 10)).expect("write");
    cache.write(&shard(key(2), 4, 20)).expect("write");
    cache.write(&shard(other_server(1), 5, 30)).expect("write");
    let mut entries = cache.inventory();
    entries.sort_by_key(|e| (e.server.clone(), e.shard));
    let summary: Vec<_> = entries.iter().map(|e| (e.shard, e.objects, e.hwm)).collect();
    assert_eq!(
        summary,
        vec![(1, Some(10), Some(3)), (2, Some(20), Some(4)), (1, Some(30), Some(5))]
    );
    assert!(
        entries
            .iter()
            .all(|e| e.zone == "meadow" && e.perspective == "shared" && e.bytes > 0)
    );
}

#[test]
fn verify_lists_damaged_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
    cache.write(&shard(key(1), 3, 10)).expect("write");
    cache.write(&shard(key(2), 3, 10)).expect("write");
    assert!(cache.verify().is_empty());
    let path = dir.path().join(key(2).file());
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&path, bytes).expect("write");
    let damage = cache.verify();
    assert_eq!(damage.len(), 1);
    assert_eq!(damage[0].path, path);
    assert!(damage[0].problem.contains("checksum"), "{}", damage[0].problem);
}

#[test]
fn clear_removes_one_server_service_or_zone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
    let mut desert = key(7);
    desert.zone = ZoneId::new("desert").expect("zone");
    for k in [key(1), key(2), desert.clone(), other_server(1)] {
        cache.write(&shard(k, 1, 3)).expect("write");
    }
    let report = cache
        .clear(&ClearScope {
            zone: Some(ZoneId::new("desert").expect("zone")),
            ..ClearScope::default()
        })
        .expect("clear zone");
    assert_eq!(report.shards, 1);
    assert!(!dir.path().join(desert.zone_dir()).exists(), "empty folders are pruned");
    let report = cache
        .clear(&ClearScope {
            server: Some(ServerIdentity([9; 32])),
            ..ClearScope::default()
        })
        .expect("clear server");
    assert_eq!(report.shards, 1);
    assert_eq!(cache.inventory().len(), 2);
    cache.clear(&ClearScope::default()).expect("clear all");
    assert!(cache.inventory().is_empty());
}

#[test]
fn eviction_keeps_the_most_recently_used_within_budget_and_drops_old_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
    let base = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..6u64 {
        cache.write(&shard(key(i), 1, 50)).expect("write");
        // Shard i was last used 10·i minutes after `base` (an hour ago).
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join(key(i).file()))
            .expect("open");
        file.set_modified(base + Duration::from_secs(600 * i))
            .expect("set mtime");
    }
    let size = cache.inventory()[0].bytes;
    let report = cache.evict(size * 4, Duration::from_secs(86_400)).expect("evict");
    assert_eq!(report.shards, 2);
    let mut left: Vec<u64> = cache.inventory().iter().map(|e| e.shard).collect();
    left.sort_unstable();
    assert_eq!(left, vec![2, 3, 4, 5], "the least recently used go first");
    // Loading marks a shard as used, so it survives an age limit.
    assert!(cache.load(&key(2), super::support::REGISTRY).is_some());
    let report = cache
        .evict(u64::MAX, Duration::from_secs(25 * 60))
        .expect("evict by age");
    let mut left: Vec<u64> = cache.inventory().iter().map(|e| e.shard).collect();
    left.sort_unstable();
    assert_eq!(left, vec![2, 4, 5], "older than 25 minutes go, unless just used");
    assert_eq!(report.shards, 1);
}

#[test]
fn a_trim_beside_writes_into_new_zone_folders_loses_none() {
    // A client trims its cache once per connection while a zone entry
    // writes shards into folders it has just made; the trim's removal of
    // empty folders must never take one from under a write.
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = std::sync::Arc::new(WorldCache::open(dir.path(), super::support::OPEN).expect("open"));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trimmer = {
        let (cache, done) = (cache.clone(), done.clone());
        std::thread::spawn(move || {
            let mut trims = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                cache.evict(u64::MAX, Duration::from_secs(86_400)).expect("trim");
                trims += 1;
            }
            trims
        })
    };
    let zones = 300u64;
    let mut keys = Vec::new();
    for z in 0..zones {
        let mut k = key(z);
        k.zone = ZoneId::new(format!("zone-{z}")).expect("zone");
        let written = cache.write(&shard(k.clone(), 1, 3));
        assert!(written.is_ok(), "write {z}: {written:?}");
        keys.push(k);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let trims = trimmer.join().expect("trimmer");
    assert!(trims > 0);
    for k in &keys {
        assert!(dir.path().join(k.file()).is_file(), "{k} is cached");
    }
}
