//! Every kind of bad cache file is detected, counted, logged and treated as
//! missing; none panics, none allocates more than the file's size.

use hoard_engine::{Epoch, RegistryHash, Seq, ServerIdentity, ShardId, ZoneId};
use hoard_world_cache::format::{MAX_HEADER_BYTES, decode_header, decode_shard, encode_shard};
use hoard_world_cache::{ApplyError, DiscardReason, ShardKey, ShardUpdate, UpdateKind, WorldCache};

use super::support::{REGISTRY, key, shard};

fn setup() -> (tempfile::TempDir, WorldCache) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = WorldCache::open(dir.path(), super::support::OPEN).expect("open");
    (dir, cache)
}

/// Recomputes both checksums after a test edits fields, so the edit reaches
/// the decoder's other checks.
fn reseal(bytes: &mut [u8]) {
    let header_len = u16::from_le_bytes([bytes[10], bytes[11]]) as usize;
    let sum = blake3::hash(&bytes[..header_len - 32]);
    bytes[header_len - 32..header_len].copy_from_slice(sum.as_bytes());
    let n = bytes.len();
    let sum = blake3::hash(&bytes[..n - 32]);
    bytes[n - 32..].copy_from_slice(sum.as_bytes());
}

fn write_file(cache: &WorldCache, key: &ShardKey, bytes: &[u8]) {
    let path = cache.root().join(key.file());
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn assert_missing(cache: &WorldCache, key: &ShardKey, reason: DiscardReason) {
    let before = cache.discarded_total();
    assert!(cache.load(key, REGISTRY).is_none(), "damaged file must not load");
    assert!(cache.discarded_total() > before, "discard must be counted");
    assert!(
        cache.discards().iter().any(|(r, _)| *r == reason),
        "expected {reason:?} among {:?}",
        cache.discards()
    );
    assert!(!cache.root().join(key.file()).exists(), "a discarded file is removed");
}

#[test]
fn a_good_file_loads_and_its_head_needs_only_the_header() {
    let (_dir, cache) = setup();
    let s = shard(key(1), 5, 100);
    cache.write(&s).expect("write");
    let head = cache.read_head(&key(1), REGISTRY).expect("head");
    assert_eq!(head, s.header);
    assert_eq!(cache.load(&key(1), REGISTRY).expect("load"), s);
    let bytes = encode_shard(&s);
    // The header decodes from its own bytes alone.
    assert_eq!(
        decode_header(&bytes[..MAX_HEADER_BYTES.min(bytes.len())])
            .expect("header")
            .header,
        s.header
    );
    assert_eq!(cache.discarded_total(), 0);
}

#[test]
fn truncated_and_empty_files_are_missing() {
    let bytes = encode_shard(&shard(key(1), 5, 20));
    for cut in (0..bytes.len()).step_by(7) {
        let (_dir, cache) = setup();
        write_file(&cache, &key(1), &bytes[..cut]);
        assert!(cache.read_head(&key(1), REGISTRY).is_none(), "cut at {cut}");
        write_file(&cache, &key(1), &bytes[..cut]);
        assert_missing(&cache, &key(1), DiscardReason::Truncated);
    }
}

#[test]
fn every_flipped_bit_is_caught() {
    let bytes = encode_shard(&shard(key(1), 5, 4));
    let (_dir, cache) = setup();
    for at in 0..bytes.len() {
        for bit in [0, 3, 7] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            write_file(&cache, &key(1), &damaged);
            assert!(
                cache.load(&key(1), REGISTRY).is_none(),
                "flip at byte {at} bit {bit} loaded"
            );
        }
    }
    assert_eq!(cache.discarded_total(), bytes.len() as u64 * 3);
}

#[test]
fn a_future_format_is_missing() {
    let (_dir, cache) = setup();
    let mut bytes = encode_shard(&shard(key(1), 5, 3));
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    reseal(&mut bytes);
    write_file(&cache, &key(1), &bytes);
    assert_missing(&cache, &key(1), DiscardReason::FutureFormat);
}

#[test]
fn a_file_moved_to_another_folder_is_missing() {
    let bytes = encode_shard(&shard(key(1), 5, 3));
    let zone = ZoneId::new("meadow").expect("zone");
    let elsewhere = [
        ShardKey::new(ServerIdentity([8; 32]), "world", None, zone.clone(), ShardId(1)).expect("key"),
        ShardKey::new(ServerIdentity([7; 32]), "arena", None, zone.clone(), ShardId(1)).expect("key"),
        ShardKey::new(ServerIdentity([7; 32]), "world", Some("ann"), zone.clone(), ShardId(1)).expect("key"),
        ShardKey::new(
            ServerIdentity([7; 32]),
            "world",
            None,
            ZoneId::new("desert").expect("zone"),
            ShardId(1),
        )
        .expect("key"),
        ShardKey::new(ServerIdentity([7; 32]), "world", None, zone, ShardId(2)).expect("key"),
    ];
    for other in elsewhere {
        let (_dir, cache) = setup();
        write_file(&cache, &other, &bytes);
        assert!(cache.read_head(&other, REGISTRY).is_none(), "{other}");
        write_file(&cache, &other, &bytes);
        assert_missing(&cache, &other, DiscardReason::Misplaced);
    }
}

#[test]
fn another_registry_is_kept_and_another_epoch_does_not_apply() {
    let (_dir, cache) = setup();
    let s = shard(key(1), 5, 3);
    cache.write(&s).expect("write");
    // Kept across a registry change: the server's answer brings the
    // objects whose encoding changed (see CACHE-FORMAT.md).
    let head = cache.read_head(&key(1), RegistryHash([2; 32])).expect("kept");
    assert_eq!(head.hwm, s.header.hwm);
    assert!(cache.discards().is_empty(), "{:?}", cache.discards());

    cache.write(&s).expect("write");
    let update = ShardUpdate {
        epoch: Epoch(999),
        new_hwm: Seq(6),
        digest: s.header.digest,
        kind: UpdateKind::Delta {
            base: Seq(5),
            tombstones: vec![],
        },
        upserts: vec![],
    };
    let err = cache
        .apply_and_write(&key(1), REGISTRY, Some(&s), update, chrono::Utc::now())
        .expect_err("other epoch");
    assert!(
        matches!(
            err,
            hoard_world_cache::cache::WriteError::Apply(ApplyError::Base { .. })
        ),
        "{err}"
    );
    assert_eq!(cache.load(&key(1), REGISTRY).expect("old copy intact"), s);
}

#[test]
fn lengths_claiming_gigabytes_allocate_nothing() {
    let good = encode_shard(&shard(key(1), 5, 3));
    // body length field (offset 156) and object count (offset 140)
    for (offset, value) in [(156usize, 1u64 << 40), (140, 1 << 40), (140, u64::MAX)] {
        let mut bytes = good.clone();
        bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
        reseal(&mut bytes);
        assert!(decode_shard(&bytes).is_err());
        let (_dir, cache) = setup();
        write_file(&cache, &key(1), &bytes);
        assert!(cache.load(&key(1), REGISTRY).is_none());
    }
    // an object's state length (the first record starts right after the header)
    let header_len = u16::from_le_bytes([good[10], good[11]]) as usize;
    let mut bytes = good.clone();
    bytes[header_len + 16..header_len + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut bytes);
    assert!(decode_shard(&bytes).is_err());
    // the header length itself
    let mut bytes = good;
    bytes[10..12].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(decode_shard(&bytes).is_err());
}

#[test]
fn a_directory_in_place_of_a_file_is_missing() {
    let (_dir, cache) = setup();
    std::fs::create_dir_all(cache.root().join(key(1).file())).expect("mkdir");
    assert!(cache.read_head(&key(1), REGISTRY).is_none());
    assert!(cache.discards().contains(&(DiscardReason::NotAFile, 1)));
    assert!(cache.load(&key(1), REGISTRY).is_none());
}
