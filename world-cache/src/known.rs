//! What a writable cache knows of its own shard files without asking the
//! file system: each file's length, its journal's length and when the file
//! was last marked used.
//!
//! A writer holds the cache's lock, so no other process changes the files
//! under it: what this process last wrote or read is what is on disk. With
//! it a journal append, a fold on leaving a zone and a head read skip their
//! path lookups and a load skips re-marking a file it marked a minute ago —
//! on a client following a busy zone these lookups were the largest part of
//! its file-system time. A read-only cache never records anything (another
//! process writes). Anything that removes files by other paths (a discard,
//! eviction, clearing) forgets everything: the next use asks the file
//! system again. Bounded: it is emptied when it holds [`MAX_KNOWN`] shards.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::key::ShardKey;

/// Shards remembered at most (a client follows a few zones of 64 shards;
/// each entry is a key and a few words).
pub(crate) const MAX_KNOWN: usize = 16_384;

/// How long a load's mark of use stands before the next load marks the
/// file again: eviction orders files by days of disuse, not seconds.
pub(crate) const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What is known of one shard's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Known {
    /// The shard file's length.
    pub(crate) file: u64,
    /// The journal's length (0: none).
    pub(crate) journal: u64,
    /// When the file was last written or marked used by this process
    /// (`None`: not yet; its head was read).
    pub(crate) touched: Option<Instant>,
}

/// The remembered shards; empty and unused for a read-only cache.
#[derive(Debug, Default)]
pub(crate) struct KnownFiles {
    enabled: bool,
    map: Mutex<HashMap<ShardKey, Known>>,
}

impl KnownFiles {
    /// A record that remembers only if `enabled` (the cache is writable).
    pub(crate) fn new(enabled: bool) -> KnownFiles {
        KnownFiles {
            enabled,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// What is known of `key`'s files, if anything.
    pub(crate) fn get(&self, key: &ShardKey) -> Option<Known> {
        if !self.enabled {
            return None;
        }
        self.map.lock().ok()?.get(key).copied()
    }

    /// Records what is now true of `key`'s files.
    pub(crate) fn set(&self, key: &ShardKey, known: Known) {
        if !self.enabled {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MAX_KNOWN && !map.contains_key(key) {
                map.clear();
            }
            map.insert(key.clone(), known);
        }
    }

    /// Records `known` unless something is already known of `key`.
    pub(crate) fn set_if_unknown(&self, key: &ShardKey, known: Known) {
        if !self.enabled {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            if map.contains_key(key) {
                return;
            }
            if map.len() >= MAX_KNOWN {
                map.clear();
            }
            map.insert(key.clone(), known);
        }
    }

    /// Changes what is known of `key`, if anything is.
    pub(crate) fn update(&self, key: &ShardKey, change: impl FnOnce(&mut Known)) {
        if let Ok(mut map) = self.map.lock()
            && let Some(known) = map.get_mut(key)
        {
            change(known);
        }
    }

    /// Forgets `key` (its files changed in a way not recorded).
    pub(crate) fn forget(&self, key: &ShardKey) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }

    /// Forgets everything (files were removed by a path that does not say
    /// which shards').
    pub(crate) fn forget_all(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_engine::{ServerIdentity, ShardId, ZoneId};

    fn key(n: u64) -> ShardKey {
        ShardKey::new(
            ServerIdentity([1; 32]),
            "world",
            None,
            ZoneId::new("z").expect("zone"),
            ShardId(n),
        )
        .expect("key")
    }

    fn known(file: u64) -> Known {
        Known {
            file,
            journal: 0,
            touched: Some(Instant::now()),
        }
    }

    #[test]
    fn a_read_only_cache_remembers_nothing() {
        let k = KnownFiles::new(false);
        k.set(&key(1), known(10));
        assert_eq!(k.get(&key(1)), None);
    }

    #[test]
    fn set_update_forget() {
        let k = KnownFiles::new(true);
        k.set(&key(1), known(10));
        k.update(&key(1), |e| e.journal = 7);
        assert_eq!(k.get(&key(1)).map(|e| (e.file, e.journal)), Some((10, 7)));
        k.update(&key(2), |e| e.journal = 7);
        assert_eq!(k.get(&key(2)), None, "update does not create");
        k.forget(&key(1));
        assert_eq!(k.get(&key(1)), None);
    }

    #[test]
    fn it_is_bounded() {
        let k = KnownFiles::new(true);
        for n in 0..(MAX_KNOWN as u64 + 10) {
            k.set(&key(n), known(n));
        }
        let held = k.map.lock().expect("lock").len();
        assert!(held <= MAX_KNOWN, "{held} entries");
        assert_eq!(
            k.get(&key(MAX_KNOWN as u64 + 9)).map(|e| e.file),
            Some(MAX_KNOWN as u64 + 9)
        );
    }
}
