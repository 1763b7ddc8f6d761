//! I/O faults injected through the storage trait: failing the Nth write,
//! append, fsync, rename or directory fsync leaves each shard as its complete
//! old state or its complete new state — never a mixture, never a panic.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hoard_engine::{Epoch, Seq};
use hoard_world_cache::format::recompute_digest;
use hoard_world_cache::storage::{Entry, FileMeta};
use hoard_world_cache::{FsStorage, LockPolicy, ShardUpdate, Storage, UpdateKind, WorldCache};

use super::support::{REGISTRY, fs_pass_through, key, object, shard};

/// Real storage that fails the `fail_at`-th mutating operation (counting
/// from 0), and every one after it, as a crash would.
pub(crate) struct FailingStorage {
    pub(crate) ops: AtomicU64,
    pub(crate) fail_at: u64,
}

impl FailingStorage {
    fn step(&self) -> io::Result<()> {
        if self.ops.fetch_add(1, Ordering::SeqCst) >= self.fail_at {
            Err(io::Error::other("injected fault"))
        } else {
            Ok(())
        }
    }
}

impl Storage for FailingStorage {
    fs_pass_through!(read, metadata, create_dir_all, list, touch);

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.step() {
            // A torn write: half the bytes reach the file before the fault.
            let _ = FsStorage.write(path, &bytes[..bytes.len() / 2]);
            return Err(e);
        }
        FsStorage.write(path, bytes)
    }
    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<u64> {
        if let Err(e) = self.step() {
            let _ = FsStorage.append(path, &bytes[..bytes.len() / 2]);
            return Err(e);
        }
        FsStorage.append(path, bytes)
    }
    fn sync(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        FsStorage.sync(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        FsStorage.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        FsStorage.sync_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        FsStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        FsStorage.remove_dir_all(path)
    }
}

#[test]
fn a_failed_write_leaves_the_old_or_the_new_shard() {
    for fail_at in 0..8 {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = shard(key(1), 5, 30);
        let new = shard(key(1), 6, 31);
        WorldCache::open(dir.path(), super::support::OPEN)
            .expect("open")
            .write(&old)
            .expect("write old");
        {
            let failing = Arc::new(FailingStorage {
                ops: AtomicU64::new(0),
                fail_at,
            });
            let cache = WorldCache::open_with(dir.path(), LockPolicy::Wait, failing).expect("open");
            let _ = cache.write(&new);
        }
        let cache = WorldCache::open(dir.path(), LockPolicy::Wait).expect("reopen");
        let loaded = cache.load(&key(1), REGISTRY).expect("old or new is present");
        assert!(loaded == old || loaded == new, "fault at op {fail_at}: a mixture");
    }
}

#[test]
fn a_failed_journal_append_leaves_a_complete_prefix() {
    for fail_at in 0..6 {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = shard(key(1), 5, 10);
        WorldCache::open(dir.path(), super::support::OPEN)
            .expect("open")
            .write(&base)
            .expect("write base");
        let mut states = vec![base.clone()];
        {
            let failing = Arc::new(FailingStorage {
                ops: AtomicU64::new(0),
                fail_at,
            });
            let cache = WorldCache::open_with(dir.path(), LockPolicy::Wait, failing).expect("open");
            let mut copy = base.clone();
            for n in 6..10u64 {
                let mut objects = copy.objects.clone();
                objects[(n % 10) as usize] = object(n % 10, n, n * 100);
                let update = ShardUpdate {
                    epoch: Epoch(0x1234),
                    new_hwm: Seq(n),
                    digest: recompute_digest(&objects),
                    kind: UpdateKind::Delta {
                        base: Seq(n - 1),
                        tombstones: vec![],
                    },
                    upserts: vec![object(n % 10, n, n * 100)],
                };
                if cache.append_delta(&mut copy, update).is_err() {
                    break;
                }
                states.push(copy.clone());
            }
        }
        let cache = WorldCache::open(dir.path(), LockPolicy::Wait).expect("reopen");
        let loaded = cache.load(&key(1), REGISTRY).expect("a copy is present");
        let matches = states.iter().any(|s| {
            s.objects == loaded.objects && s.header.hwm == loaded.header.hwm && s.header.digest == loaded.header.digest
        });
        assert!(
            matches,
            "fault at op {fail_at}: loaded hwm {} is not a complete state",
            loaded.header.hwm
        );
    }
}
