//! Shared fixtures: keys, objects, and writing a shard through the public API.

use chrono::{TimeZone, Utc};
use hoard_engine::state::StateBuilder;
use hoard_engine::{Epoch, ObjectId, RegistryHash, Seq, ServerIdentity, ShardId, ZoneId};
use hoard_world_cache::format::recompute_digest;
use hoard_world_cache::{CachedObject, CachedShard, ShardHeader, ShardKey, ShardUpdate, UpdateKind};

pub(crate) const REGISTRY: RegistryHash = RegistryHash([1; 32]);

pub(crate) fn key(shard: u64) -> ShardKey {
    ShardKey::new(
        ServerIdentity([7; 32]),
        "world",
        None,
        ZoneId::new("meadow").expect("zone"),
        ShardId(shard),
    )
    .expect("key")
}

pub(crate) fn object(id: u64, version: u64, value: u64) -> CachedObject {
    CachedObject {
        id: ObjectId(id),
        version: Seq(version),
        state: StateBuilder::new()
            .component("v", value.to_le_bytes().to_vec())
            .finish(),
    }
}

/// A shard holding `objects` objects at `hwm`, with a fixed snapshot time.
pub(crate) fn shard(key: ShardKey, hwm: u64, objects: u64) -> CachedShard {
    let objects: Vec<CachedObject> = (0..objects).map(|i| object(i, hwm, i * hwm)).collect();
    CachedShard {
        header: ShardHeader {
            key,
            epoch: Epoch(0x1234),
            hwm: Seq(hwm),
            digest: recompute_digest(&objects),
            registry: REGISTRY,
            snapshot_time: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("time"),
        },
        objects,
    }
}

/// Storage methods a test storage hands to the real file system unchanged,
/// written once: `fs_pass_through!(read, list);` inside an
/// `impl Storage for …` block (which imports `std::io`, `std::path::Path`,
/// `FsStorage` and the storage module's `Entry` and `FileMeta` as needed).
macro_rules! fs_pass_through {
    ($($method:ident),+ $(,)?) => { $(fs_pass_through!(@ $method);)+ };
    (@ read) => {
        fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
            FsStorage.read(path, limit)
        }
    };
    (@ metadata) => {
        fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
            FsStorage.metadata(path)
        }
    };
    (@ write) => {
        fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            FsStorage.write(path, bytes)
        }
    };
    (@ append) => {
        fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<u64> {
            FsStorage.append(path, bytes)
        }
    };
    (@ sync) => {
        fn sync(&self, path: &Path) -> io::Result<()> {
            FsStorage.sync(path)
        }
    };
    (@ rename) => {
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            FsStorage.rename(from, to)
        }
    };
    (@ sync_dir) => {
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            FsStorage.sync_dir(dir)
        }
    };
    (@ remove_file) => {
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            FsStorage.remove_file(path)
        }
    };
    (@ remove_dir_all) => {
        fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
            FsStorage.remove_dir_all(path)
        }
    };
    (@ create_dir_all) => {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            FsStorage.create_dir_all(path)
        }
    };
    (@ list) => {
        fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
            FsStorage.list(dir)
        }
    };
    (@ touch) => {
        fn touch(&self, path: &Path) -> io::Result<()> {
            FsStorage.touch(path)
        }
    };
}
pub(crate) use fs_pass_through;

/// A delta of `copy` that sets object `id` to `value` at version `hwm`.
pub(crate) fn delta(copy: &CachedShard, id: u64, value: u64) -> ShardUpdate {
    let hwm = copy.header.hwm.0 + 1;
    let mut objects = copy.objects.clone();
    let changed = object(id, hwm, value);
    let at = objects.iter().position(|o| o.id == changed.id).expect("object present");
    objects[at] = changed.clone();
    ShardUpdate {
        epoch: Epoch(0x1234),
        new_hwm: Seq(hwm),
        digest: recompute_digest(&objects),
        kind: UpdateKind::Delta {
            base: copy.header.hwm,
            tombstones: vec![],
        },
        upserts: vec![changed],
    }
}

/// How a test that is not about the cache's lock opens a cache: waiting up
/// to 10 s for the lock. A cache just closed can look busy for a moment —
/// a child process another test is spawning holds a copy of every open
/// file, the lock's too, between its fork and its exec — and a test that
/// reopens with `LockPolicy::Fail` then fails for no fault of the cache.
pub(crate) const OPEN: hoard_world_cache::LockPolicy =
    hoard_world_cache::LockPolicy::WaitUpTo(std::time::Duration::from_secs(10));
