//! Golden shard and journal files: the bytes of a fixed shard must not change
//! without a format version bump. Regenerate with `HOARD_BLESS=1` only when
//! bumping `FORMAT_VERSION` (and record the change in docs/CACHE-FORMAT.md).

use std::path::PathBuf;

use hoard_engine::{Epoch, ObjectId, Seq};
use hoard_world_cache::format::{decode_shard, encode_shard, recompute_digest};
use hoard_world_cache::journal::{encode_record, replay};
use hoard_world_cache::{ShardUpdate, UpdateKind};

use super::support::{key, object, shard};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn check(name: &str, bytes: &[u8]) {
    let path = golden(name);
    if std::env::var_os("HOARD_BLESS").is_some() {
        std::fs::write(&path, bytes).expect("bless");
    }
    let want = std::fs::read(&path).expect("golden file present (HOARD_BLESS=1 to create)");
    assert!(want == bytes, "{name}: encoding changed; bump the format version");
}

#[test]
fn shard_file_v1_bytes_are_stable() {
    let fixed = shard(key(3), 9, 3);
    check("shard-v1.shard", &encode_shard(&fixed));
    let decoded = decode_shard(&std::fs::read(golden("shard-v1.shard")).expect("read")).expect("decodes");
    assert_eq!(decoded, fixed);
}

#[test]
fn journal_record_v1_bytes_are_stable() {
    let upserts = vec![object(1, 10, 5)];
    let update = ShardUpdate {
        epoch: Epoch(0x1234),
        new_hwm: Seq(10),
        digest: recompute_digest(&upserts),
        kind: UpdateKind::Delta {
            base: Seq(9),
            tombstones: vec![ObjectId(2)],
        },
        upserts,
    };
    let bytes = encode_record(&update).expect("delta");
    check("journal-v1.journal", &bytes);
    let replayed = replay(&std::fs::read(golden("journal-v1.journal")).expect("read"));
    assert_eq!(replayed.records, vec![update]);
}
