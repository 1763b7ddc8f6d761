//! A writable cache remembers its own files (lengths, whether a journal is
//! pending): live deltas, folds and head reads then skip lookups of the
//! file system — and what is read back is still exactly what was written,
//! through deltas, folds and clearing. Copies in memory are audited without
//! reading their files again.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hoard_world_cache::storage::{Entry, FileMeta, FsStorage, Storage};
use hoard_world_cache::tools::ClearScope;
use hoard_world_cache::{LockPolicy, WorldCache};

use crate::support::{REGISTRY, delta, fs_pass_through, key, object, shard};

/// The real file system, counting lookups and reads.
#[derive(Default)]
struct Counting {
    metadata: AtomicU64,
    reads: AtomicU64,
    bytes_read: AtomicU64,
    lists: AtomicU64,
    touches: AtomicU64,
}

impl Counting {
    fn lookups(&self) -> (u64, u64) {
        (self.metadata.load(Ordering::SeqCst), self.reads.load(Ordering::SeqCst))
    }
}

impl Storage for Counting {
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let read = FsStorage.read(path, limit)?;
        self.bytes_read.fetch_add(read.len() as u64, Ordering::SeqCst);
        Ok(read)
    }
    fn read_with_meta(&self, path: &Path, limit: u64, whole_up_to: u64) -> io::Result<(Vec<u8>, FileMeta)> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let read = FsStorage.read_with_meta(path, limit, whole_up_to)?;
        self.bytes_read.fetch_add(read.0.len() as u64, Ordering::SeqCst);
        Ok(read)
    }
    fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
        self.metadata.fetch_add(1, Ordering::SeqCst);
        FsStorage.metadata(path)
    }
    fs_pass_through!(
        write,
        append,
        sync,
        rename,
        sync_dir,
        remove_file,
        remove_dir_all,
        create_dir_all
    );
    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        FsStorage.list(dir)
    }
    fn touch(&self, path: &Path) -> io::Result<()> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        FsStorage.touch(path)
    }
}

#[test]
fn a_writer_journals_and_folds_its_own_files_without_lookups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Arc::new(Counting::default());
    let cache = WorldCache::open_with(dir.path(), super::support::OPEN, storage.clone()).expect("open");
    let mut copy = shard(key(1), 5, 40);
    cache.write(&copy).expect("write");

    let before = storage.lookups();
    for n in 0..5 {
        let update = delta(&copy, n, 1000 + n);
        cache.append_delta(&mut copy, update).expect("journaled");
    }
    assert_eq!(storage.lookups(), before, "live deltas on a known file look nothing up");
    assert!(
        dir.path().join(key(1).journal()).exists(),
        "the deltas are in the journal"
    );

    // The head and the copy read back include the journal.
    let head = cache.read_head(&key(1), REGISTRY).expect("head");
    assert_eq!(head.hwm, copy.header.hwm);
    let loaded = cache.load(&key(1), REGISTRY).expect("loads");
    assert_eq!((loaded.header.hwm, &loaded.objects), (copy.header.hwm, &copy.objects));

    // Folded (by the load's replay): nothing left to fold, without asking.
    let before = storage.lookups();
    assert!(cache.fold_journal(&copy).expect("fold").is_none());
    assert_eq!(storage.lookups(), before, "a known empty journal is not looked up");

    // A copy in memory is audited without reading anything.
    let before = storage.lookups();
    assert!(cache.audit_copy(&loaded));
    assert_eq!(storage.lookups(), before);

    // What clearing removes is not remembered.
    cache.clear(&ClearScope::default()).expect("clear");
    assert!(cache.read_head(&key(1), REGISTRY).is_none());
    assert!(cache.load(&key(1), REGISTRY).is_none());
    assert!(cache.fold_journal(&copy).expect("fold").is_none());
    let update = delta(&copy, 8, 8);
    cache.append_delta(&mut copy, update).expect("written whole");
    assert_eq!(
        cache.load(&key(1), REGISTRY).map(|s| s.objects),
        Some(copy.objects.clone())
    );
}

/// A second handle on the same cache (what a new session opens) reads what
/// the first journaled, whatever the first remembered.
#[test]
fn a_new_handle_replays_what_the_last_one_journaled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut copy = shard(key(2), 5, 10);
    {
        let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
        cache.write(&copy).expect("write");
        assert!(cache.load(&key(2), REGISTRY).is_some());
        for n in 0..3 {
            let update = delta(&copy, n, 50 + n);
            cache.append_delta(&mut copy, update).expect("journaled");
        }
    }
    let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("reopen");
    assert_eq!(cache.read_head(&key(2), REGISTRY).map(|h| h.hwm), Some(copy.header.hwm));
    assert_eq!(cache.load(&key(2), REGISTRY).map(|s| s.objects), Some(copy.objects));
}

/// A copy whose objects do not give its stated digest (a file written with
/// a lying header, then a journaled delta on top) fails the audit in memory
/// as it fails on the file, and is counted.
#[test]
fn a_copy_with_a_lying_header_fails_its_audit_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
    let honest = shard(key(3), 5, 10);
    let mut copy = honest.clone();
    copy.objects[2] = object(2, 5, 999); // the header's digest is of the honest object
    cache.write(&copy).expect("write");
    // The server's delta: its digest follows from the stated one.
    let update = delta(&honest, 4, 44);
    cache.append_delta(&mut copy, update).expect("journaled");
    let loaded = cache.load(&key(3), REGISTRY).expect("loads: checksums hold");
    assert_eq!(loaded.header.hwm, copy.header.hwm, "the journal was replayed");
    assert_eq!(cache.audit(&key(3), REGISTRY), Some(false), "the file fails");
    assert!(!cache.audit_copy(&loaded), "and so does the copy");
    assert!(
        cache
            .discards()
            .contains(&(hoard_world_cache::DiscardReason::Digest, 2)),
        "{:?}",
        cache.discards()
    );
}

/// A zone entry's head reads list the shards' folder once instead of
/// looking each journal up, and the loads that follow look nothing up; a
/// journal an earlier session left is still found and replayed, a missing
/// shard is not opened, and only a file not used for a while is marked used.
#[test]
fn a_zone_is_read_with_one_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: Vec<_> = (10..18).map(key).collect();
    let mut journaled = shard(key(12), 5, 10);
    {
        let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
        for k in &keys {
            cache.write(&shard(k.clone(), 5, 10)).expect("write");
        }
        let update = delta(&journaled, 3, 33);
        cache.append_delta(&mut journaled, update).expect("journaled");
    }
    // One file last used long ago.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join(key(15).file()))
        .and_then(|f| f.set_modified(old))
        .expect("age a file");

    let storage = Arc::new(Counting::default());
    let cache = WorldCache::open_with(dir.path(), super::support::OPEN, storage.clone()).expect("reopen");
    let mut asked = keys.clone();
    asked.push(key(40)); // never cached
    let heads = cache.read_heads(&asked, REGISTRY);
    assert_eq!(heads.iter().filter(|h| h.is_some()).count(), keys.len());
    assert!(heads[keys.len()].is_none());
    assert_eq!(
        heads[2].as_ref().map(|h| h.hwm),
        Some(journaled.header.hwm),
        "journal replayed"
    );
    assert_eq!(storage.lists.load(Ordering::SeqCst), 1, "one listing");
    assert_eq!(
        storage.metadata.load(Ordering::SeqCst),
        2,
        "no lookups but the journal's replay and its fold's folder"
    );
    // Seven heads, then the journaled shard's file and journal; nothing of
    // the missing shard.
    assert_eq!(storage.reads.load(Ordering::SeqCst), keys.len() as u64 + 1);

    let before = storage.lookups();
    let copies = cache.load_many(&keys, REGISTRY);
    assert!(copies.iter().all(Option::is_some));
    assert_eq!(copies[2].as_ref().map(|c| &c.objects), Some(&journaled.objects));
    assert_eq!(storage.lookups().0, before.0, "loads look nothing up");
    assert_eq!(storage.lookups().1, before.1 + keys.len() as u64, "one read each");
    assert_eq!(
        storage.touches.load(Ordering::SeqCst),
        1,
        "only the old file is marked used"
    );
    let marked = std::fs::metadata(dir.path().join(key(15).file()))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert!(marked > old, "the old file was marked");
    // Loaded again within the minute: nothing more.
    cache.load_many(&keys, REGISTRY);
    assert_eq!(storage.touches.load(Ordering::SeqCst), 1);
}

/// `journal_delta` appends until the journal is due to be folded, then
/// leaves the whole write to its caller (and records the append, so the
/// journal is not replayed against the wrong file); `record_delta` folds.
#[test]
fn journal_delta_leaves_the_fold_to_its_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
    let mut copy = shard(key(20), 5, 4);
    cache.write(&copy).expect("write");
    let journal = dir.path().join(key(20).journal());
    let mut appended = 0;
    let due = loop {
        let update = delta(&copy, appended % 4, 10_000 + appended);
        copy = hoard_world_cache::apply::apply(&key(20), REGISTRY, Some(&copy), update.clone(), chrono::Utc::now())
            .expect("applies");
        match cache.journal_delta(&copy, &update).expect("journaled") {
            Some(report) => {
                assert!(!report.folded);
                appended += 1;
            }
            None => break copy.clone(),
        }
        assert!(appended < 100_000, "a fold is never due");
    };
    let len = std::fs::metadata(&journal).expect("journal").len();
    assert!(len >= hoard_world_cache::cache::FOLD_MIN_BYTES, "due at {len} bytes");
    // The last delta is in the journal too: what is read back is the copy.
    let reopened = WorldCache::open(dir.path(), LockPolicy::ReadOnlyIfBusy).expect("reopen");
    assert_eq!(
        reopened.load(&key(20), REGISTRY).map(|s| s.objects),
        Some(due.objects.clone())
    );
    // The caller's whole write folds it.
    assert!(cache.write(&due).expect("write").folded);
    assert!(!journal.exists());
    // record_delta does the same by itself.
    let update = delta(&copy, 1, 1);
    copy = hoard_world_cache::apply::apply(&key(20), REGISTRY, Some(&copy), update.clone(), chrono::Utc::now())
        .expect("applies");
    assert!(!cache.record_delta(&copy, &update).expect("recorded").folded);
    assert!(journal.exists());
}

/// A zone entry opens each small file once: the head read keeps it whole
/// and the load decodes the kept bytes; a large file's head is read alone
/// and its load reads it. The copies are the ones `load` gives.
#[test]
fn small_files_are_read_once_per_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small: Vec<_> = (50..54).map(key).collect();
    let large = key(60);
    {
        let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
        for k in &small {
            cache.write(&shard(k.clone(), 5, 10)).expect("write");
        }
        cache.write(&shard(large.clone(), 5, 4000)).expect("write");
    }
    let large_len = std::fs::metadata(dir.path().join(large.file())).expect("file").len();
    assert!(
        large_len > hoard_world_cache::cache::KEEP_WHOLE_UP_TO,
        "{large_len} bytes"
    );

    let storage = Arc::new(Counting::default());
    let cache = WorldCache::open_with(dir.path(), super::support::OPEN, storage.clone()).expect("reopen");
    let mut keys = small.clone();
    keys.push(large.clone());
    let heads = cache.read_heads_keeping(&keys, REGISTRY);
    assert_eq!(storage.reads.load(Ordering::SeqCst), keys.len() as u64);
    // The small files whole, and no more of the large one than a header.
    let small_bytes: u64 = small
        .iter()
        .map(|k| std::fs::metadata(dir.path().join(k.file())).expect("file").len())
        .sum();
    let head_bytes = storage.bytes_read.load(Ordering::SeqCst) - small_bytes;
    assert!(
        head_bytes <= hoard_world_cache::format::MAX_HEADER_BYTES as u64,
        "{head_bytes} bytes of the large file read for its head"
    );
    let kept: Vec<_> = heads
        .into_iter()
        .map(|h| h.expect("head"))
        .map(|(head, file)| (head.key.clone(), file))
        .collect();
    assert!(kept[..small.len()].iter().all(|(_, f)| f.is_some()), "small files kept");
    assert!(kept[small.len()].1.is_none(), "the large file is not");
    let copies = cache.load_many_kept(kept, REGISTRY);
    assert_eq!(
        storage.reads.load(Ordering::SeqCst),
        keys.len() as u64 + 1,
        "only the large file is read again"
    );
    for (k, copy) in keys.iter().zip(copies) {
        let copy = copy.expect("loads");
        let fresh = cache.load(k, REGISTRY).expect("loads");
        assert_eq!((copy.header, copy.objects), (fresh.header, fresh.objects));
    }
}
