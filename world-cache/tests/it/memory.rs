//! A cache whose files live in memory (`MemStorage`): shards written,
//! journaled, folded, listed and evicted as on disk, and a copy of a cache
//! made on disk starts warm.

use std::sync::Arc;

use hoard_engine::Seq;
use hoard_world_cache::{MemStorage, WorldCache};

use crate::support::{REGISTRY, delta, key, shard};

#[test]
fn a_cache_in_memory_writes_journals_and_folds_as_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = WorldCache::open_with(dir.path(), super::support::OPEN, Arc::new(MemStorage::new())).expect("open");
    let base = shard(key(1), 5, 10);
    cache.write(&base).expect("write");
    assert!(!dir.path().join(key(1).file()).exists(), "nothing on disk");
    assert_eq!(cache.load(&key(1), REGISTRY), Some(base.clone()));

    let update = delta(&base, 3, 600);
    let mut copy = base.clone();
    cache.append_delta(&mut copy, update).expect("journal");
    let same = |loaded: Option<hoard_world_cache::CachedShard>| {
        let loaded = loaded.expect("loaded");
        (loaded.header.hwm, loaded.header.digest, loaded.objects)
            == (copy.header.hwm, copy.header.digest, copy.objects.clone())
    };
    assert!(cache.fold_journal(&copy).expect("fold").is_some(), "the journal folded");
    assert!(same(cache.load(&key(1), REGISTRY)));
    let mut again = copy.clone();
    let update = delta(&copy, 4, 700);
    cache.append_delta(&mut again, update).expect("journal");
    let loaded = cache.load(&key(1), REGISTRY).expect("loaded");
    assert_eq!(
        (loaded.header.hwm, loaded.objects),
        (Seq(7), again.objects),
        "the file and its journal replayed"
    );
    assert_eq!(cache.inventory().len(), 1);
}

#[test]
fn a_copy_of_a_cache_on_disk_starts_warm_in_memory() {
    let on_disk = tempfile::tempdir().expect("tempdir");
    {
        let cache = WorldCache::open(on_disk.path(), super::support::OPEN).expect("open");
        cache.write(&shard(key(1), 5, 10)).expect("write");
        cache.write(&shard(key(2), 7, 3)).expect("write");
    }
    let root = tempfile::tempdir().expect("tempdir");
    let storage = MemStorage::copy_of(on_disk.path(), root.path()).expect("copy");
    let cache = WorldCache::open_with(root.path(), super::support::OPEN, Arc::new(storage)).expect("open");
    assert_eq!(cache.load(&key(1), REGISTRY), Some(shard(key(1), 5, 10)));
    assert_eq!(cache.load(&key(2), REGISTRY), Some(shard(key(2), 7, 3)));
}

/// Appends behave as on a file system: a new file needs its folder, each
/// append returns the file's length, a folder is not a file, and a file
/// whose folder was removed went with it.
#[test]
fn appends_in_memory_need_the_folder_and_return_the_length() {
    use hoard_world_cache::Storage;
    use std::io::ErrorKind;
    use std::path::Path;

    let files = MemStorage::new();
    let journal = Path::new("/cache/zone/shard.journal");
    let missing = files.append(journal, b"abc").expect_err("no folder yet");
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    files.create_dir_all(Path::new("/cache/zone")).expect("folder");
    assert_eq!(files.append(journal, b"abc").expect("new file"), 3);
    assert_eq!(files.append(journal, b"defg").expect("append"), 7);
    assert_eq!(files.read(journal, 100).expect("read"), b"abcdefg");
    let dir = files.append(Path::new("/cache/zone"), b"x").expect_err("a folder");
    assert_eq!(dir.kind(), ErrorKind::IsADirectory);
    files.remove_dir_all(Path::new("/cache/zone")).expect("remove");
    let gone = files
        .append(journal, b"h")
        .expect_err("its folder went, and it with it");
    assert_eq!(gone.kind(), ErrorKind::NotFound);
}
