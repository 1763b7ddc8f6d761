//! Power loss under the cache, not just kill -9: a storage layer that tracks
//! what the disk is sure to hold — file contents as of their last fsync,
//! directory entries as of their directory's last fsync — and, at a
//! simulated power cut, rewrites the cache folder to that image (each
//! unsynced file kept as synced, as written, or torn to a prefix).
//!
//! After every cut the cache reopens; each shard loads as a complete state it
//! was once given (never a mixture), and every shard whose whole-file write
//! returned is still there at that state or a later one. `HOARD_POWER_LOSSES`
//! sets the number of cuts; `HOARD_CRASH_SEED` replays one run.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hoard_engine::{Epoch, Seq, ServerIdentity, ShardId, ZoneId};
use hoard_world_cache::format::recompute_digest;
use hoard_world_cache::storage::{Entry, FileMeta};
use hoard_world_cache::{CachedShard, FsStorage, LockPolicy, ShardKey, ShardUpdate, Storage, UpdateKind, WorldCache};

use super::support::{REGISTRY, fs_pass_through, object, shard};

#[derive(Default)]
struct Inode {
    current: Vec<u8>,
    synced: Vec<u8>,
}

/// What the simulated disk knows.
#[derive(Default)]
struct Disk {
    inodes: Vec<Inode>,
    /// Names as the running system sees them.
    names: HashMap<PathBuf, usize>,
    /// Names a power cut keeps (their directory was fsynced since).
    durable_names: HashMap<PathBuf, usize>,
    dirs: HashSet<PathBuf>,
    durable_dirs: HashSet<PathBuf>,
    ops: u64,
    cut_at: u64,
}

/// Real file operations, shadowed by a model of what survives a power cut.
struct PowerLossStorage {
    root: PathBuf,
    disk: Mutex<Disk>,
}

impl PowerLossStorage {
    fn new(root: &Path, cut_at: u64) -> PowerLossStorage {
        PowerLossStorage {
            root: root.to_owned(),
            disk: Mutex::new(Disk {
                cut_at,
                ..Disk::default()
            }),
        }
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a mutating operation; fails it and all later ones once the
    /// power is cut.
    fn step(&self) -> io::Result<std::sync::MutexGuard<'_, Disk>> {
        let mut d = self.disk();
        d.ops += 1;
        if d.ops >= d.cut_at {
            return Err(io::Error::other("simulated power cut"));
        }
        Ok(d)
    }

    fn inode(d: &mut Disk, path: &Path) -> usize {
        if let Some(&i) = d.names.get(path) {
            return i;
        }
        d.inodes.push(Inode::default());
        let i = d.inodes.len() - 1;
        d.names.insert(path.to_owned(), i);
        i
    }

    fn cut(&self) -> bool {
        let d = self.disk();
        d.ops >= d.cut_at
    }

    /// Replaces the folder with what the disk holds after the power cut.
    fn crash(&self, rng: &mut fastrand::Rng) -> (usize, usize) {
        let d = self.disk();
        let mut torn = 0;
        let mut unsynced = 0;
        let survives = |p: &Path| {
            p.ancestors()
                .skip(1)
                .take_while(|a| *a != self.root)
                .all(|a| d.durable_dirs.contains(a))
        };
        let mut image: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for (path, &i) in &d.durable_names {
            if !survives(path) {
                continue;
            }
            let inode = &d.inodes[i];
            let bytes = if inode.current == inode.synced {
                inode.synced.clone()
            } else {
                unsynced += 1;
                match rng.u8(0..3) {
                    0 => inode.synced.clone(),
                    1 => inode.current.clone(),
                    _ => {
                        torn += 1;
                        inode.current[..rng.usize(0..=inode.current.len())].to_vec()
                    }
                }
            };
            image.push((path.clone(), bytes));
        }
        let dirs: Vec<PathBuf> = d.durable_dirs.iter().filter(|p| survives(p)).cloned().collect();
        drop(d);
        for entry in std::fs::read_dir(&self.root).expect("list root").flatten() {
            let p = entry.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).expect("wipe");
            } else {
                std::fs::remove_file(&p).expect("wipe");
            }
        }
        for dir in dirs {
            std::fs::create_dir_all(dir).expect("dir");
        }
        for (path, bytes) in image {
            std::fs::write(path, bytes).expect("file");
        }
        (unsynced, torn)
    }
}

impl Storage for PowerLossStorage {
    fs_pass_through!(read, metadata, list, touch);

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut d = self.step()?;
        let i = Self::inode(&mut d, path);
        d.inodes[i].current = bytes.to_vec();
        FsStorage.write(path, bytes)
    }
    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<u64> {
        let mut d = self.step()?;
        let i = Self::inode(&mut d, path);
        d.inodes[i].current.extend_from_slice(bytes);
        FsStorage.append(path, bytes)
    }
    fn sync(&self, path: &Path) -> io::Result<()> {
        let mut d = self.step()?;
        if let Some(&i) = d.names.get(path) {
            d.inodes[i].synced = d.inodes[i].current.clone();
        }
        FsStorage.sync(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut d = self.step()?;
        if let Some(i) = d.names.remove(from) {
            d.names.insert(to.to_owned(), i);
        }
        FsStorage.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut d = self.step()?;
        let in_dir = |p: &Path| p.parent() == Some(dir);
        let current: Vec<(PathBuf, usize)> = d
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        d.durable_names.retain(|p, _| !in_dir(p));
        d.durable_names.extend(current);
        let subdirs: Vec<PathBuf> = d.dirs.iter().filter(|p| in_dir(p)).cloned().collect();
        d.durable_dirs.retain(|p| !in_dir(p));
        d.durable_dirs.extend(subdirs);
        FsStorage.sync_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut d = self.step()?;
        d.names.remove(path);
        FsStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut d = self.step()?;
        d.names.retain(|p, _| !p.starts_with(path));
        d.dirs.retain(|p| !p.starts_with(path));
        FsStorage.remove_dir_all(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut d = self.step()?;
        for a in path.ancestors().take_while(|a| *a != self.root) {
            d.dirs.insert(a.to_owned());
        }
        FsStorage.create_dir_all(path)
    }
}

fn key_in(zone: &str, perspective: Option<&str>, shard: u64) -> ShardKey {
    ShardKey::new(
        ServerIdentity([7; 32]),
        "world",
        perspective,
        ZoneId::new(zone).expect("zone"),
        ShardId(shard),
    )
    .expect("key")
}

fn with_key(mut s: CachedShard, key: &ShardKey) -> CachedShard {
    s.header.key = key.clone();
    s
}

fn delta(copy: &CachedShard, n: u64) -> ShardUpdate {
    let mut objects = copy.objects.clone();
    let changed = object(n % 7, copy.header.hwm.0 + 1, n * 31);
    if let Some(o) = objects.iter_mut().find(|o| o.id == changed.id) {
        *o = changed.clone();
    }
    ShardUpdate {
        epoch: Epoch(0x1234),
        new_hwm: Seq(copy.header.hwm.0 + 1),
        digest: recompute_digest(&objects),
        kind: UpdateKind::Delta {
            base: copy.header.hwm,
            tombstones: vec![],
        },
        upserts: vec![changed],
    }
}

#[test]
fn power_loss_at_random_moments_leaves_whole_shards_and_keeps_acknowledged_writes() {
    let losses: u64 = std::env::var("HOARD_POWER_LOSSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed = std::env::var("HOARD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("cache power loss: {losses} cuts, HOARD_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let keys = [
        key_in("meadow", None, 1),
        key_in("meadow", None, 2),
        key_in("forest", None, 1),
        key_in("forest", Some("ann"), 900),
    ];
    let (mut violations, mut unsynced, mut torn, mut lost_acked) = (0, 0, 0, 0);
    for round in 0..losses {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Arc::new(PowerLossStorage::new(dir.path(), rng.u64(1..80)));
        // Every state each key was ever given (complete), and the last one
        // whose whole-file write returned.
        let mut given: HashMap<ShardKey, Vec<CachedShard>> = HashMap::new();
        let mut acked: HashMap<ShardKey, Seq> = HashMap::new();
        if let Ok(cache) = WorldCache::open_with(dir.path(), LockPolicy::Fail, storage.clone()) {
            let mut copies: HashMap<ShardKey, CachedShard> = HashMap::new();
            'script: for step in 0..40u64 {
                let key = &keys[rng.usize(0..keys.len())];
                let result = match copies.get_mut(key) {
                    Some(copy) if rng.bool() => {
                        let update = delta(copy, step);
                        let mut next = copy.clone();
                        let r = cache.append_delta(&mut next, update);
                        given.entry(key.clone()).or_default().push(next.clone());
                        *copy = next;
                        r.map(|_| None)
                    }
                    _ => {
                        let hwm = copies.get(key).map_or(1, |c| c.header.hwm.0 + 1);
                        let s = with_key(shard(key.clone(), hwm, 7), key);
                        given.entry(key.clone()).or_default().push(s.clone());
                        copies.insert(key.clone(), s.clone());
                        cache.write(&s).map(|_| Some(s.header.hwm))
                    }
                };
                match result {
                    Ok(Some(hwm)) => {
                        acked.insert(key.clone(), hwm);
                    }
                    Ok(None) => {}
                    Err(_) => break 'script,
                }
            }
        }
        assert!(storage.cut(), "round {round}: the power was cut during the script");
        let (u, t) = storage.crash(&mut rng);
        unsynced += u;
        torn += t;
        let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("the cache reopens after power loss");
        for key in &keys {
            let loaded = cache.load(key, REGISTRY);
            if let Some(l) = &loaded {
                let whole = given.get(key).is_some_and(|states| {
                    states
                        .iter()
                        .any(|s| s.objects == l.objects && s.header.hwm == l.header.hwm)
                });
                if !whole || recompute_digest(&l.objects) != l.header.digest {
                    violations += 1;
                    eprintln!(
                        "round {round}: {key:?} loaded at {} is not a state it was given",
                        l.header.hwm
                    );
                }
            }
            if let Some(&hwm) = acked.get(key)
                && loaded.as_ref().is_none_or(|l| l.header.hwm < hwm)
            {
                lost_acked += 1;
                eprintln!("round {round}: {key:?} lost its acknowledged write at {hwm}");
            }
        }
    }
    println!(
        "cache power loss: {losses} cuts, {unsynced} unsynced files, {torn} torn, {violations} mixed shards, {lost_acked} acknowledged writes lost"
    );
    assert_eq!(violations, 0, "shards that are not a whole state");
    assert_eq!(lost_acked, 0, "acknowledged shard writes lost");
}
