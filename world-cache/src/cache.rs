//! [`WorldCache`]: a client's cache root — reading heads, loading and
//! verifying shards, writing them atomically, journalling live deltas,
//! eviction, and the lock that keeps two processes from corrupting it.
//!
//! Every damaged, foreign or stale file is detected, counted by reason,
//! logged with its path, removed (unless read-only) and treated as missing:
//! the server will resend the shard. Nothing read from disk can panic or
//! allocate more than the file's size.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use chrono::{DateTime, Utc};
use hoard_engine::RegistryHash;
use rayon::prelude::*;

use crate::apply::{ApplyError, ShardUpdate, apply};
use crate::format::{
    CachedShard, FormatError, MAX_HEADER_BYTES, ShardHeader, decode_header, decode_shard, encode_shard,
    recompute_digest,
};
use crate::journal;
use crate::key::ShardKey;
use crate::known::{Known, KnownFiles, TOUCH_EVERY};
use crate::storage::{FileMeta, FsStorage, Storage};

/// Name of the lock file in the cache root.
pub const LOCK_FILE: &str = ".lock";
/// A journal is folded into its shard file once it is this large...
pub const FOLD_MIN_BYTES: u64 = 256 * 1024;
/// ...or larger than this fraction (1/n) of the shard file.
pub const FOLD_FRACTION: u64 = 4;

/// Shards read per task when many are read in parallel: a shard file is a
/// few kilobytes, and a task per file costs more in hand-offs between
/// threads than its read.
const SHARDS_PER_TASK: usize = 8;

/// Shards of one folder, unknown to this process, from which a head read
/// lists the folder rather than looking each one's files up.
const LIST_FROM: usize = 4;

/// Largest shard file a head read keeps whole for the load that follows
/// ([`WorldCache::read_heads_keeping`]): a head read opens the file anyway,
/// and reading a small file whole costs little more than its header.
pub const KEEP_WHOLE_UP_TO: u64 = 64 * 1024;

/// A shard file a head read read whole, handed to
/// [`WorldCache::load_kept`] so the load does not open it again. It is
/// exactly the file the head was read from: the copy loaded from it is the
/// one the head described.
#[derive(Debug)]
pub struct KeptFile {
    bytes: Vec<u8>,
    meta: FileMeta,
}

/// What a listing of a shard's folder showed of its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listed {
    /// Not listed: look the files up.
    Unlisted,
    /// No shard file.
    Missing,
    /// A shard file and no journal.
    NoJournal,
    /// A shard file and a journal.
    Journal,
}

/// What to do when another process holds the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockPolicy {
    /// Block until the other process releases it.
    Wait,
    /// Open read-only (and log that it is so): heads and shards can be read,
    /// nothing is written.
    ReadOnlyIfBusy,
    /// Fail with [`OpenError::Busy`].
    Fail,
    /// Retry for up to this long (a process just exiting, or a child process
    /// that briefly inherited the lock while being spawned), then fail with
    /// [`OpenError::Busy`].
    WaitUpTo(std::time::Duration),
}

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The root could not be created or locked.
    #[error("cannot open cache {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the cache and the policy was [`LockPolicy::Fail`].
    #[error("cache {path} is in use by another process")]
    Busy {
        /// The cache root.
        path: PathBuf,
    },
}

/// Why a write failed. The previous file (if any) is intact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The cache was opened read-only.
    #[error("cache {0} is read-only (another process holds it)")]
    ReadOnly(PathBuf),
    /// A file operation failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The update did not apply.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Why a cached file was treated as missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DiscardReason {
    /// Shorter than its header says, or empty.
    Truncated,
    /// A checksum (header or file) failed, or a structure is invalid.
    Corrupt,
    /// Written by a newer format.
    FutureFormat,
    /// Its header names another server, service, perspective, zone or shard than its folder.
    Misplaced,
    /// Not a regular file (a directory, say).
    NotAFile,
    /// Its journal could not be applied.
    Journal,
    /// Its objects do not give the digest its header states (found by
    /// [`WorldCache::audit`]; the checksums held, so the file was written so).
    Digest,
}

impl DiscardReason {
    const ALL: [DiscardReason; 7] = [
        DiscardReason::Truncated,
        DiscardReason::Corrupt,
        DiscardReason::FutureFormat,
        DiscardReason::Misplaced,
        DiscardReason::NotAFile,
        DiscardReason::Journal,
        DiscardReason::Digest,
    ];

    fn of(e: &FormatError) -> DiscardReason {
        match e {
            FormatError::Truncated { .. } | FormatError::Length { .. } | FormatError::ObjectTruncated { .. } => {
                DiscardReason::Truncated
            }
            FormatError::FutureVersion { .. } => DiscardReason::FutureFormat,
            _ => DiscardReason::Corrupt,
        }
    }
}

/// Counts of discarded files, by reason.
#[derive(Default)]
struct Counters([AtomicU64; 8]);

/// The outcome of writing a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteReport {
    /// Bytes written to disk.
    pub bytes: u64,
    /// Whether the journal was folded into the shard file.
    pub folded: bool,
}

/// A client's shard cache, rooted at one directory.
pub struct WorldCache {
    root: PathBuf,
    storage: Arc<dyn Storage>,
    read_only: bool,
    _lock: Option<File>,
    discards: Counters,
    known: KnownFiles,
    /// Shard writes hold it shared from before they look for their folder
    /// until their file is renamed into it; removing empty folders
    /// (eviction, clearing) holds it alone. Without it a trim could remove
    /// a zone folder between a write creating it and the write's file
    /// landing in it. The cache's file lock keeps other processes out, so
    /// this process's lock covers every writer.
    folders: std::sync::RwLock<()>,
}

impl std::fmt::Debug for WorldCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorldCache")
            .field("root", &self.root)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl WorldCache {
    /// Opens (creating if needed) the cache at `root` on the real file system.
    pub fn open(root: &Path, policy: LockPolicy) -> Result<WorldCache, OpenError> {
        WorldCache::open_with(root, policy, Arc::new(FsStorage))
    }

    /// Opens the cache with the given storage (tests inject faults this way).
    /// The lock itself always uses the real file system.
    pub fn open_with(root: &Path, policy: LockPolicy, storage: Arc<dyn Storage>) -> Result<WorldCache, OpenError> {
        let io = |source| OpenError::Io {
            path: root.to_owned(),
            source,
        };
        if !root.is_dir() {
            std::fs::create_dir_all(root).map_err(io)?;
            // A new cache folder is durable only once its parent's entry is
            // (a relative name of one component has the current directory
            // as its parent, spelled "").
            let parent = match root.parent() {
                Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
                other => other,
            };
            if let Some(parent) = parent {
                storage.sync_dir(parent).map_err(io)?;
            }
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(LOCK_FILE))
            .map_err(io)?;
        let read_only = match lock.try_lock() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => match policy {
                LockPolicy::Wait => {
                    tracing::info!(path = %root.display(), "cache in use by another process; waiting");
                    lock.lock().map_err(io)?;
                    false
                }
                LockPolicy::ReadOnlyIfBusy => {
                    tracing::warn!(path = %root.display(), "cache in use by another process; opened read-only, nothing will be saved");
                    true
                }
                LockPolicy::Fail => {
                    return Err(OpenError::Busy { path: root.to_owned() });
                }
                LockPolicy::WaitUpTo(limit) => {
                    let deadline = std::time::Instant::now() + limit;
                    loop {
                        // Polling: flock has no timed wait.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        match lock.try_lock() {
                            Ok(()) => break false,
                            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {}
                            Err(std::fs::TryLockError::WouldBlock) => {
                                return Err(OpenError::Busy { path: root.to_owned() });
                            }
                            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
                        }
                    }
                }
            },
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        };
        Ok(WorldCache {
            root: root.to_owned(),
            storage,
            read_only,
            _lock: (!read_only).then_some(lock),
            discards: Counters::default(),
            known: KnownFiles::new(!read_only),
            folders: std::sync::RwLock::new(()),
        })
    }

    /// Holds off shard writes while empty folders are removed (see
    /// `folders`).
    pub(crate) fn lock_folders(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        hoard_engine::lock::write(&self.folders)
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this handle may only read.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// How many files were discarded, by reason, since opening.
    pub fn discards(&self) -> Vec<(DiscardReason, u64)> {
        DiscardReason::ALL
            .iter()
            .zip(&self.discards.0)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    /// Total discarded files since opening.
    pub fn discarded_total(&self) -> u64 {
        self.discards.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    /// Forgets what the cache knew of its files without asking: called by
    /// whatever removes files (clearing, eviction).
    pub(crate) fn forget_known(&self) {
        self.known.forget_all();
    }

    fn discard(&self, path: &Path, reason: DiscardReason, detail: &dyn std::fmt::Display) {
        self.discards.0[reason as usize].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %path.display(), ?reason, %detail, "cached shard discarded; it will be fetched again");
        if !self.read_only {
            let _ = self.storage.remove_file(path);
            let journal = path.with_extension(crate::key::JOURNAL_EXT);
            let _ = self.storage.remove_file(&journal);
            self.known.forget_all();
        }
    }

    /// Checks a header against the folder it was found in. A copy written
    /// with another component registry is kept: when a component's schema
    /// changes, the server migrates the objects holding it and commits
    /// them, so its answer for this copy brings every object whose
    /// encoding changed (as changes, or a snapshot), and a shard holding
    /// none of them stays current — a schema change costs only what
    /// changed. The copy's objects are never shown before that answer.
    fn check_header(&self, path: &Path, key: &ShardKey, header: &ShardHeader, registry: RegistryHash) -> bool {
        if &header.key != key {
            self.discard(
                path,
                DiscardReason::Misplaced,
                &format_args!("header names {}", header.key),
            );
            return false;
        }
        if header.registry != registry {
            tracing::debug!(path = %path.display(), written = %header.registry, now = %registry,
                "cached shard written with another registry: kept; the server sends what changed");
        }
        true
    }

    /// Reads up to `limit` bytes of a shard file (the whole file when
    /// `limit` is `None`, or when it is at most `whole_up_to` bytes long),
    /// with its length. A missing file is `None`; a directory or an
    /// unreadable file is discarded and `None`.
    fn read_shard_file(&self, path: &Path, limit: Option<u64>, whole_up_to: u64) -> Option<(Vec<u8>, FileMeta)> {
        // Reading is bounded by the file's real size.
        let (bytes, meta) = match self
            .storage
            .read_with_meta(path, limit.unwrap_or(u64::MAX), whole_up_to)
        {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.discard(path, DiscardReason::Corrupt, &e);
                return None;
            }
        };
        if meta.is_dir {
            self.discard(
                path,
                DiscardReason::NotAFile,
                &"a directory where a shard file should be",
            );
            return None;
        }
        Some((bytes, meta))
    }

    /// Reads one shard's header (its first bytes only), or `None` if there
    /// is no valid copy.
    pub fn read_head(&self, key: &ShardKey, registry: RegistryHash) -> Option<ShardHeader> {
        self.read_head_listed(key, registry, Listed::Unlisted, false)
            .map(|(head, _)| head)
    }

    /// [`WorldCache::read_head`], told what a listing of the shard's folder
    /// showed (if it was listed) instead of looking its journal up.
    /// With `keep`, a file of up to [`KEEP_WHOLE_UP_TO`] bytes is read whole
    /// and returned with its head.
    fn read_head_listed(
        &self,
        key: &ShardKey,
        registry: RegistryHash,
        listed: Listed,
        keep: bool,
    ) -> Option<(ShardHeader, Option<KeptFile>)> {
        let journal_pending = match listed {
            Listed::Missing => return None,
            Listed::NoJournal => false,
            Listed::Journal => true,
            Listed::Unlisted => {
                self.known.get(key).is_none_or(|k| k.journal != 0)
                    && self.storage.metadata(&self.root.join(key.journal())).is_ok()
            }
        };
        if journal_pending {
            // Deltas are pending from a session that did not exit cleanly:
            // fold them so the head describes what is cached.
            return self.load(key, registry).map(|s| (s.header, None));
        }
        let path = self.root.join(key.file());
        // A file too large to keep has its header read alone.
        let whole_up_to = if keep { KEEP_WHOLE_UP_TO } else { 0 };
        let (prefix, meta) = self.read_shard_file(&path, Some(MAX_HEADER_BYTES as u64), whole_up_to)?;
        let len = meta.len;
        let info = match decode_header(&prefix) {
            Ok(info) => info,
            Err(e) => {
                self.discard(&path, DiscardReason::of(&e), &e);
                return None;
            }
        };
        if info.file_len() != len {
            self.discard(
                &path,
                DiscardReason::Truncated,
                &format_args!("{len} bytes, header describes {}", info.file_len()),
            );
            return None;
        }
        if !self.check_header(&path, key, &info.header, registry) {
            return None;
        }
        if listed == Listed::NoJournal {
            // The listing showed no journal: the load that follows a head
            // read need not look for one either.
            self.known.set_if_unknown(
                key,
                Known {
                    file: len,
                    journal: 0,
                    touched: None,
                },
            );
        }
        let kept = (prefix.len() as u64 == len).then_some(KeptFile { bytes: prefix, meta });
        Some((info.header, kept))
    }

    /// Reads the heads of many shards (a zone's), in parallel. The folder of
    /// shards this process knows nothing of yet is listed once, instead of
    /// each shard's file and journal being looked up: on a zone entry that
    /// is one listing in place of 64 lookups of journals that are almost
    /// never there (and of files that are not, on a first visit).
    pub fn read_heads(&self, keys: &[ShardKey], registry: RegistryHash) -> Vec<Option<ShardHeader>> {
        self.read_heads_with(keys, registry, false)
            .into_iter()
            .map(|h| h.map(|(head, _)| head))
            .collect()
    }

    /// [`WorldCache::read_heads`], keeping the files of up to
    /// [`KEEP_WHOLE_UP_TO`] bytes whole for [`WorldCache::load_kept`]: a
    /// zone entry then opens each small file once, not once for its head
    /// and again for its copy. At most `keys.len()` such files are held.
    pub fn read_heads_keeping(
        &self,
        keys: &[ShardKey],
        registry: RegistryHash,
    ) -> Vec<Option<(ShardHeader, Option<KeptFile>)>> {
        self.read_heads_with(keys, registry, true)
    }

    fn read_heads_with(
        &self,
        keys: &[ShardKey],
        registry: RegistryHash,
        keep: bool,
    ) -> Vec<Option<(ShardHeader, Option<KeptFile>)>> {
        let listed = self.list_folders(keys);
        keys.par_iter()
            .zip(listed)
            .with_min_len(SHARDS_PER_TASK)
            .map(|(k, listed)| self.read_head_listed(k, registry, listed, keep))
            .collect()
    }

    /// What one listing of each folder says of the files of `keys` this
    /// process knows nothing of; [`Listed::Unlisted`] for the rest, and for
    /// folders with too few such shards to be worth a listing.
    fn list_folders(&self, keys: &[ShardKey]) -> Vec<Listed> {
        let unknown: Vec<bool> = keys.iter().map(|k| self.known.get(k).is_none()).collect();
        let mut per_folder: HashMap<PathBuf, usize> = HashMap::new();
        for (key, _) in keys.iter().zip(&unknown).filter(|(_, u)| **u) {
            *per_folder.entry(key.zone_dir()).or_default() += 1;
        }
        let mut names: HashMap<PathBuf, Option<HashSet<String>>> = HashMap::new();
        for (folder, count) in per_folder {
            if count < LIST_FROM {
                continue;
            }
            let listing = match self.storage.list(&self.root.join(&folder)) {
                // Directories are kept: a directory where a file should be
                // is found (and reported) by the read.
                Ok(entries) => Some(entries.into_iter().map(|e| e.name).collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(HashSet::new()),
                Err(_) => None,
            };
            names.insert(folder, listing);
        }
        keys.iter()
            .zip(unknown)
            .map(|(key, unknown)| {
                let Some(Some(names)) = unknown.then(|| names.get(&key.zone_dir())).flatten() else {
                    return Listed::Unlisted;
                };
                let has = |path: PathBuf| {
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| names.contains(n))
                };
                if !has(key.file()) {
                    Listed::Missing
                } else if has(key.journal()) {
                    Listed::Journal
                } else {
                    Listed::NoJournal
                }
            })
            .collect()
    }

    /// Loads and verifies one shard, replaying its journal; `None` if there
    /// is no valid copy. Marks the file as recently used.
    pub fn load(&self, key: &ShardKey, registry: RegistryHash) -> Option<CachedShard> {
        self.load_kept(key, registry, None)
    }

    /// [`WorldCache::load`] from the file a head read kept, if it kept it
    /// (the file is not read again); from the file otherwise.
    pub fn load_kept(&self, key: &ShardKey, registry: RegistryHash, kept: Option<KeptFile>) -> Option<CachedShard> {
        let path = self.root.join(key.file());
        let (bytes, meta) = match kept {
            Some(KeptFile { bytes, meta }) => (bytes, meta),
            None => self.read_shard_file(&path, None, 0)?,
        };
        let len = meta.len;
        let shard = match decode_shard(&bytes) {
            Ok(s) => s,
            Err(e) => {
                self.discard(&path, DiscardReason::of(&e), &e);
                return None;
            }
        };
        if !self.check_header(&path, key, &shard.header, registry) {
            return None;
        }
        let known = self.known.get(key).filter(|k| k.file == len);
        let shard = if known.is_some_and(|k| k.journal == 0) {
            shard
        } else {
            self.replay_journal(key, shard, registry)
        };
        if !self.read_only {
            self.mark_used(key, &path, &meta);
        }
        Some(shard)
    }

    /// Marks a loaded file as used, for eviction, which counts days: a file
    /// this process marked (or wrote) a minute ago, or that was modified
    /// within that minute, is not marked again.
    fn mark_used(&self, key: &ShardKey, path: &Path, meta: &FileMeta) {
        let now = Instant::now();
        let known = self.known.get(key);
        if known
            .and_then(|k| k.touched)
            .is_some_and(|t| now.duration_since(t) < TOUCH_EVERY)
        {
            return;
        }
        let fresh = SystemTime::now()
            .duration_since(meta.modified)
            .is_ok_and(|age| age < TOUCH_EVERY);
        if !fresh {
            let _ = self.storage.touch(path);
        }
        if known.is_some() {
            self.known.update(key, |k| k.touched = Some(now));
        } else if self.storage.metadata(&self.root.join(key.journal())).is_err() {
            // First seen by this process: remembered once no journal is
            // left (a replay folds it into a new file, which its write
            // records; a fold that failed leaves it).
            self.known.set(
                key,
                Known {
                    file: meta.len,
                    journal: 0,
                    touched: Some(now),
                },
            );
        }
    }

    /// Loads and verifies many shards in parallel (rayon across shards).
    pub fn load_many(&self, keys: &[ShardKey], registry: RegistryHash) -> Vec<Option<CachedShard>> {
        keys.par_iter()
            .with_min_len(SHARDS_PER_TASK)
            .map(|k| self.load(k, registry))
            .collect()
    }

    /// [`WorldCache::load_kept`] of many shards in parallel.
    pub fn load_many_kept(
        &self,
        shards: Vec<(ShardKey, Option<KeptFile>)>,
        registry: RegistryHash,
    ) -> Vec<Option<CachedShard>> {
        shards
            .into_par_iter()
            .with_min_len(SHARDS_PER_TASK)
            .map(|(k, kept)| self.load_kept(&k, registry, kept))
            .collect()
    }

    /// Checks that a shard file's objects give the digest its header states:
    /// the one check [`WorldCache::load`] leaves out, since the writer
    /// compares the digest before writing (invariant 1) and the checksums
    /// prove the bytes unchanged since. A client runs it in the background
    /// on the copies a zone entry took on trust. Reads the file only, never
    /// its journal, and changes nothing on disk: `Some(false)` is counted as
    /// [`DiscardReason::Digest`] and logged, and the caller repairs the
    /// shard (its repair rewrites the file). `None`: no valid file to check.
    pub fn audit(&self, key: &ShardKey, registry: RegistryHash) -> Option<bool> {
        let path = self.root.join(key.file());
        let (bytes, _) = self.read_shard_file(&path, None, 0)?;
        let shard = decode_shard(&bytes).ok()?;
        if shard.header.key != *key {
            return None;
        }
        let _ = registry;
        Some(self.audit_copy(&shard))
    }

    /// [`WorldCache::audit`] of a copy already in memory, as
    /// [`WorldCache::load`] returned it: what a client checks once a zone
    /// is ready, without reading the files again. A copy whose journal was
    /// replayed is audited as well as its file: each record's digest was
    /// derived from the file's stated one, so the copy's objects give its
    /// digest exactly when the file's gave theirs. `false` is counted as
    /// [`DiscardReason::Digest`] and logged.
    pub fn audit_copy(&self, copy: &CachedShard) -> bool {
        let real = recompute_digest(&copy.objects);
        if real == copy.header.digest {
            return true;
        }
        self.discards.0[DiscardReason::Digest as usize].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(shard = %copy.header.key, stated = %copy.header.digest, real = %real,
            "cached shard's objects do not give its digest; it will be repaired");
        false
    }

    fn replay_journal(&self, key: &ShardKey, mut shard: CachedShard, registry: RegistryHash) -> CachedShard {
        let path = self.root.join(key.journal());
        let Ok(meta) = self.storage.metadata(&path) else {
            return shard;
        };
        let Ok(bytes) = self.storage.read(&path, meta.len) else {
            return shard;
        };
        let replay = journal::replay(&bytes);
        let mut applied = 0;
        for record in replay.records {
            if record.new_hwm <= shard.header.hwm {
                continue; // already folded into the shard file
            }
            match apply(key, registry, Some(&shard), record, shard.header.snapshot_time) {
                Ok(next) => {
                    shard = next;
                    applied += 1;
                }
                Err(e) => {
                    self.discards.0[DiscardReason::Journal as usize].fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), error = %e, "journal record does not apply; the rest of the journal is dropped");
                    break;
                }
            }
        }
        if replay.torn {
            tracing::info!(path = %path.display(), applied, "journal ended in an incomplete record (unclean exit); kept the complete ones");
        }
        if !self.read_only {
            // Fold what was recovered, so the journal is not replayed again.
            if let Err(e) = self.write(&shard) {
                tracing::warn!(path = %path.display(), error = %e, "could not fold the journal");
            }
        }
        shard
    }

    fn ensure_writable(&self) -> Result<(), WriteError> {
        if self.read_only {
            Err(WriteError::ReadOnly(self.root.clone()))
        } else {
            Ok(())
        }
    }

    /// Writes a shard atomically: a temporary file, fsync, rename over the
    /// old file, fsync of the directory; then drops the shard's journal,
    /// whose content the new file includes. A crash at any point leaves the
    /// old file or the new one; a failed write (a full disk) removes its
    /// temporary file.
    pub fn write(&self, shard: &CachedShard) -> Result<WriteReport, WriteError> {
        self.ensure_writable()?;
        let key = &shard.header.key;
        let dir = self.root.join(key.zone_dir());
        let path = self.root.join(key.file());
        let tmp = path.with_extension("shard.tmp");
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WriteError::Io { path, source }
        };
        let bytes = encode_shard(shard);
        let _folders = hoard_engine::lock::read(&self.folders);
        // A shard this process knows has its folder: no lookup.
        let dir_known = self.known.get(key).is_some();
        self.known.forget(key);
        if !dir_known && self.storage.metadata(&dir).is_err() {
            self.storage.create_dir_all(&dir).map_err(io(&dir))?;
            // New directories survive a power cut only once each parent's
            // entry for them is synced, up to the cache root.
            let mut child = dir.as_path();
            while let Some(parent) = child.parent()
                && child != self.root
            {
                self.storage.sync_dir(parent).map_err(io(parent))?;
                child = parent;
            }
        }
        let placed = self
            .storage
            .write(&tmp, &bytes)
            .and_then(|()| self.storage.sync(&tmp))
            .map_err(io(&tmp))
            .and_then(|()| self.storage.rename(&tmp, &path).map_err(io(&path)));
        if let Err(e) = placed {
            // A full disk must not leave temporary files behind, one per
            // shard that failed.
            let _ = self.storage.remove_file(&tmp);
            return Err(e);
        }
        self.storage.sync_dir(&dir).map_err(io(&dir))?;
        let journal = self.root.join(key.journal());
        let removed = self.storage.remove_file(&journal);
        let folded = removed.is_ok();
        if removed
            .as_ref()
            .err()
            .is_none_or(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            self.known.set(
                key,
                Known {
                    file: bytes.len() as u64,
                    journal: 0,
                    touched: Some(Instant::now()),
                },
            );
        }
        Ok(WriteReport {
            bytes: bytes.len() as u64,
            folded,
        })
    }

    /// Applies a server answer to the cached copy and writes the result; the
    /// write happens only if the digest matches the server's.
    pub fn apply_and_write(
        &self,
        key: &ShardKey,
        registry: RegistryHash,
        copy: Option<&CachedShard>,
        update: ShardUpdate,
        now: DateTime<Utc>,
    ) -> Result<(CachedShard, WriteReport), WriteError> {
        self.ensure_writable()?;
        let next = apply(key, registry, copy, update, now)?;
        let report = self.write(&next)?;
        Ok((next, report))
    }

    /// Folds `shard`'s journal into its file: writes the copy whole if it
    /// has journaled deltas, and does nothing (`None`) if it has none — the
    /// file already holds the copy. What a client does on leaving a zone: a
    /// shard that did not change while it was followed costs no write.
    pub fn fold_journal(&self, shard: &CachedShard) -> Result<Option<WriteReport>, WriteError> {
        let key = &shard.header.key;
        match self.known.get(key) {
            Some(k) if k.journal == 0 => return Ok(None),
            Some(_) => {}
            None => {
                if self.storage.metadata(&self.root.join(key.journal())).is_err() {
                    return Ok(None);
                }
            }
        }
        self.write(shard).map(Some)
    }

    /// Records a live delta that was already applied (and digest-checked) in
    /// memory: `shard` is the copy after it. Appends the delta to the shard's
    /// journal, folding the journal into the shard file when it grows past
    /// [`FOLD_MIN_BYTES`] and a quarter of the shard file.
    pub fn record_delta(&self, shard: &CachedShard, update: &ShardUpdate) -> Result<WriteReport, WriteError> {
        match self.journal_delta(shard, update)? {
            Some(report) => Ok(report),
            None => self.write(shard),
        }
    }

    /// [`WorldCache::record_delta`] without its whole writes: appends the
    /// delta to the shard's journal and returns `Some`, or `None` when the
    /// shard is to be written whole instead (its journal is due to be
    /// folded, or there is no file to journal against), which the caller
    /// then does with [`WorldCache::write`]. An append is a few system calls
    /// without a sync; a whole write syncs, so a caller on an async thread
    /// hands only those to a blocking one.
    pub fn journal_delta(&self, shard: &CachedShard, update: &ShardUpdate) -> Result<Option<WriteReport>, WriteError> {
        self.ensure_writable()?;
        let key = &shard.header.key;
        let Some(record) = journal::encode_record(update) else {
            return Ok(None);
        };
        // A client journals every live delta of every zone it follows: the
        // shard file's length comes from what this process knows of it when
        // it can, from one lookup when not.
        let known = self.known.get(key);
        let shard_len = match known {
            Some(k) => k.file,
            None => match self.storage.metadata(&self.root.join(key.file())) {
                Ok(meta) => meta.len,
                // No base file to journal against: write the shard whole.
                Err(_) => return Ok(None),
            },
        };
        let path = self.root.join(key.journal());
        let journal_len = match self.storage.append(&path, &record) {
            Ok(len) => len,
            Err(source) => {
                self.known.forget(key);
                return Err(WriteError::Io { path, source });
            }
        };
        self.known.set(
            key,
            Known {
                file: shard_len,
                journal: journal_len,
                touched: known.and_then(|k| k.touched),
            },
        );
        if journal_len >= FOLD_MIN_BYTES && journal_len * FOLD_FRACTION >= shard_len {
            return Ok(None);
        }
        Ok(Some(WriteReport {
            bytes: record.len() as u64,
            folded: false,
        }))
    }

    /// Applies a live delta to `shard` in memory, then records it with
    /// [`WorldCache::record_delta`].
    pub fn append_delta(&self, shard: &mut CachedShard, update: ShardUpdate) -> Result<WriteReport, WriteError> {
        self.ensure_writable()?;
        let key = shard.header.key.clone();
        *shard = apply(&key, shard.header.registry, Some(shard), update.clone(), Utc::now())?;
        self.record_delta(shard, &update)
    }

    /// The keys of every shard of a zone cached for this server and service:
    /// the shared ones and, if a perspective is given, its own.
    pub fn zone_keys(
        &self,
        server: hoard_engine::ServerIdentity,
        service: &str,
        perspective: Option<&str>,
        zone: &hoard_engine::ZoneId,
    ) -> Vec<ShardKey> {
        let mut out = Vec::new();
        let scopes: &[Option<&str>] = match perspective {
            Some(p) => &[None, Some(p)],
            None => &[None],
        };
        for &scope in scopes {
            let Ok(probe) = ShardKey::new(server, service, scope, zone.clone(), hoard_engine::ShardId(0)) else {
                continue;
            };
            for entry in self.storage.list(&self.root.join(probe.zone_dir())).unwrap_or_default() {
                let suffix = format!(".{}", crate::key::SHARD_EXT);
                if let Some(id) = entry.name.strip_suffix(&suffix).and_then(|s| s.parse::<u64>().ok()) {
                    let mut key = probe.clone();
                    key.shard = hoard_engine::ShardId(id);
                    out.push(key);
                }
            }
        }
        out
    }
}
