//! Whole-cache operations for players, modders and the client: the
//! inventory (`inspect`), a full verification, clearing a part of the tree,
//! and eviction by size budget (least recently used first) and by age.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hoard_engine::{ServerIdentity, ZoneId};
use serde::Serialize;

use crate::cache::{WorldCache, WriteError};
use crate::format::{MAX_HEADER_BYTES, decode_header, decode_shard, recompute_digest};
use crate::key::{JOURNAL_EXT, SHARD_EXT, SHARED};

/// One shard file found in the cache.
#[derive(Clone, Debug, Serialize)]
pub struct ShardEntry {
    /// Server identity (hex).
    pub server: String,
    /// Service.
    pub service: String,
    /// Perspective folder (`shared` for shared shards).
    pub perspective: String,
    /// Zone.
    pub zone: String,
    /// Shard id.
    pub shard: u64,
    /// The file.
    pub path: PathBuf,
    /// Bytes of the shard file plus its journal.
    pub bytes: u64,
    /// Objects, per the header (`None` if the header is unreadable).
    pub objects: Option<u64>,
    /// The hwm, per the header.
    pub hwm: Option<u64>,
    /// Seconds since the file was last used.
    pub age_secs: u64,
    /// Why the header is unreadable, if it is.
    pub problem: Option<String>,
    #[serde(skip)]
    modified: SystemTime,
}

/// What one [`WorldCache::verify`] found wrong with one file.
#[derive(Clone, Debug, Serialize)]
pub struct Damage {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

/// What eviction removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EvictReport {
    /// Shards removed.
    pub shards: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// Which part of the cache to clear; `None` fields match everything.
#[derive(Clone, Debug, Default)]
pub struct ClearScope {
    /// One server.
    pub server: Option<ServerIdentity>,
    /// One service.
    pub service: Option<String>,
    /// One zone.
    pub zone: Option<ZoneId>,
}

fn dirs(cache: &WorldCache, dir: &Path) -> Vec<(String, PathBuf)> {
    cache
        .storage()
        .list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.is_dir)
        .map(|e| (e.name.clone(), dir.join(&e.name)))
        .collect()
}

impl WorldCache {
    /// Every shard file in the cache, with what its header says. Reads only headers.
    pub fn inventory(&self) -> Vec<ShardEntry> {
        let mut out = Vec::new();
        let now = SystemTime::now();
        for (server, server_dir) in dirs(self, self.root()) {
            for (service, service_dir) in dirs(self, &server_dir) {
                for (perspective, p_dir) in dirs(self, &service_dir) {
                    for (zone, zone_dir) in dirs(self, &p_dir) {
                        for entry in self.storage().list(&zone_dir).unwrap_or_default() {
                            let Some(shard) = entry
                                .name
                                .strip_suffix(&format!(".{SHARD_EXT}"))
                                .and_then(|s| s.parse::<u64>().ok())
                            else {
                                continue;
                            };
                            let path = zone_dir.join(&entry.name);
                            let meta = self.storage().metadata(&path).ok();
                            let journal = self
                                .storage()
                                .metadata(&path.with_extension(JOURNAL_EXT))
                                .map(|m| m.len)
                                .unwrap_or(0);
                            let header = if entry.is_dir {
                                Err("a directory, not a file".to_owned())
                            } else {
                                self.storage()
                                    .read(&path, MAX_HEADER_BYTES as u64)
                                    .map_err(|e| e.to_string())
                                    .and_then(|b| decode_header(&b).map_err(|e| e.to_string()))
                            };
                            let modified = meta.as_ref().map_or(now, |m| m.modified);
                            out.push(ShardEntry {
                                server: server.clone(),
                                service: service.clone(),
                                perspective: perspective.clone(),
                                zone: zone.clone(),
                                shard,
                                bytes: meta.as_ref().map_or(0, |m| m.len) + journal,
                                objects: header.as_ref().ok().map(|h| h.count),
                                hwm: header.as_ref().ok().map(|h| h.header.hwm.0),
                                age_secs: now.duration_since(modified).unwrap_or_default().as_secs(),
                                problem: header.err(),
                                path,
                                modified,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Fully checks every shard file: checksums, structure, that its header
    /// matches its folder, and that its digest equals the one recomputed
    /// from its objects. Returns the damaged files (empty when all is sound).
    pub fn verify(&self) -> Vec<Damage> {
        let mut damage = Vec::new();
        for entry in self.inventory() {
            let problem = (|| -> Result<(), String> {
                let meta = self.storage().metadata(&entry.path).map_err(|e| e.to_string())?;
                if meta.is_dir {
                    return Err("a directory where a shard file should be".into());
                }
                let bytes = self.storage().read(&entry.path, meta.len).map_err(|e| e.to_string())?;
                let shard = decode_shard(&bytes).map_err(|e| e.to_string())?;
                let h = &shard.header;
                let expected = (
                    h.key.server.to_hex(),
                    h.key.service.as_str(),
                    h.key.perspective.as_deref().unwrap_or(SHARED),
                    h.key.zone.as_str(),
                    h.key.shard.0,
                );
                let found = (
                    entry.server.clone(),
                    entry.service.as_str(),
                    entry.perspective.as_str(),
                    entry.zone.as_str(),
                    entry.shard,
                );
                if expected != found {
                    return Err(format!("header names {}, but the file is in another folder", h.key));
                }
                let digest = recompute_digest(&shard.objects);
                if digest != h.digest {
                    return Err(format!("header digest {} but objects give {digest}", h.digest));
                }
                Ok(())
            })();
            if let Err(problem) = problem {
                damage.push(Damage {
                    path: entry.path,
                    problem,
                });
            }
        }
        damage
    }

    /// Removes the cached shards in `scope` (all of them for the default scope).
    pub fn clear(&self, scope: &ClearScope) -> Result<EvictReport, WriteError> {
        if self.is_read_only() {
            return Err(WriteError::ReadOnly(self.root().to_owned()));
        }
        let mut report = EvictReport::default();
        let server = scope.server.map(|s| s.to_hex());
        for entry in self.inventory() {
            let matches = server.as_ref().is_none_or(|s| *s == entry.server)
                && scope.service.as_ref().is_none_or(|s| *s == entry.service)
                && scope.zone.as_ref().is_none_or(|z| z.as_str() == entry.zone);
            if matches {
                self.remove_entry(&entry, &mut report);
            }
        }
        self.prune_empty_dirs();
        Ok(report)
    }

    fn remove_entry(&self, entry: &ShardEntry, report: &mut EvictReport) {
        self.forget_known();
        let removed = if self.storage().metadata(&entry.path).is_ok_and(|m| m.is_dir) {
            self.storage().remove_dir_all(&entry.path)
        } else {
            self.storage().remove_file(&entry.path)
        };
        if removed.is_ok() {
            let _ = self.storage().remove_file(&entry.path.with_extension(JOURNAL_EXT));
            report.shards += 1;
            report.bytes += entry.bytes;
        }
    }

    /// Removes empty folders, with shard writes held off: a folder a write
    /// has just made is not empty by the time this looks at it.
    fn prune_empty_dirs(&self) {
        let _folders = self.lock_folders();
        fn prune(cache: &WorldCache, dir: &Path, depth: usize) {
            if depth == 0 {
                return;
            }
            for (_, sub) in dirs(cache, dir) {
                prune(cache, &sub, depth - 1);
                if cache.storage().list(&sub).is_ok_and(|e| e.is_empty()) {
                    let _ = std::fs::remove_dir(&sub);
                }
            }
        }
        prune(self, self.root(), 4);
    }

    /// Removes shards unused for longer than `max_age`, then the least
    /// recently used ones until the cache fits in `budget_bytes`.
    pub fn evict(&self, budget_bytes: u64, max_age: Duration) -> Result<EvictReport, WriteError> {
        if self.is_read_only() {
            return Err(WriteError::ReadOnly(self.root().to_owned()));
        }
        let mut entries = self.inventory();
        entries.sort_by_key(|e| e.modified);
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut report = EvictReport::default();
        for entry in &entries {
            if entry.age_secs > max_age.as_secs() || total > budget_bytes {
                self.remove_entry(entry, &mut report);
                total = total.saturating_sub(entry.bytes);
            }
        }
        self.prune_empty_dirs();
        if report.shards > 0 {
            tracing::info!(shards = report.shards, bytes = report.bytes, "evicted cached shards");
        }
        Ok(report)
    }
}
