//! Folding a shard's journal into its file: what a client does on leaving a
//! zone. Only a shard with journaled deltas is written again.

use std::os::unix::fs::MetadataExt;

use hoard_engine::{Epoch, Seq};
use hoard_world_cache::format::recompute_digest;
use hoard_world_cache::{ShardUpdate, UpdateKind, WorldCache};

use crate::support::{REGISTRY, key, object, shard};

/// A shard without a journal is left alone (same file, same inode: no write,
/// no fsync); after a live delta its journal is folded into a new file that
/// loads as the copy in memory, and the journal is gone.
#[test]
fn only_a_journaled_shard_is_written_again_when_folded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
    let base = shard(key(1), 5, 10);
    cache.write(&base).expect("write");
    let file = dir.path().join(key(1).file());
    let journal = dir.path().join(key(1).journal());
    let inode = |p: &std::path::Path| std::fs::metadata(p).expect("metadata").ino();
    let before = inode(&file);

    assert!(cache.fold_journal(&base).expect("fold").is_none(), "nothing to fold");
    assert_eq!(inode(&file), before, "the file was not written again");

    let mut copy = base.clone();
    let mut objects = copy.objects.clone();
    objects[3] = object(3, 6, 600);
    let update = ShardUpdate {
        epoch: Epoch(0x1234),
        new_hwm: Seq(6),
        digest: recompute_digest(&objects),
        kind: UpdateKind::Delta {
            base: Seq(5),
            tombstones: vec![],
        },
        upserts: vec![object(3, 6, 600)],
    };
    cache.append_delta(&mut copy, update).expect("journaled");
    assert!(journal.exists(), "the delta went to the journal");

    let report = cache.fold_journal(&copy).expect("fold").expect("folded");
    assert!(report.folded);
    assert!(!journal.exists(), "the journal is folded in");
    assert_ne!(inode(&file), before, "a new file took the old one's place");
    let loaded = cache.load(&key(1), REGISTRY).expect("loads");
    assert_eq!((loaded.header.hwm, &loaded.objects), (Seq(6), &copy.objects));
}
