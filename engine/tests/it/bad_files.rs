//! A store file that is corrupt, from a newer format, locked by another
//! process, or not a file: a typed error naming the file, never a panic.

use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Stdio};

use hoard_engine::store::{OpenError, STORE_FORMAT_VERSION};
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{ChangeSet, ObjectId, RedbStore, ShardId, ZoneId};

use super::support::state_n;

#[test]
fn garbage_file_is_reported_as_corrupt_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("world.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).expect("write garbage");
    let err = RedbStore::open(&path).expect_err("garbage must not open");
    assert!(
        matches!(err, OpenError::Corrupt { .. } | OpenError::Io { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn damaged_store_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("world.redb");
    {
        let store = RedbStore::open(&path).expect("create");
        let zone = hoard_engine::ZoneId::new("z").expect("zone");
        store
            .create_zone(&zone, &[ShardSpec::shared(ShardId(1)), ShardSpec::shared(ShardId(2))])
            .expect("zone");
        for n in 0..20u64 {
            let mut tick = ChangeSet::new();
            for k in 0..50 {
                tick.upsert(ShardId(1 + k % 2), ObjectId(n * 100 + k), state_n(n));
            }
            store.commit(&tick).expect("commit");
        }
    }
    let len = std::fs::metadata(&path).expect("meta").len();
    // Overwrite stretches across the file: each open either fails with a
    // typed error or opens, and reading a store that opened returns data or
    // typed errors; nothing panics.
    for offset in (0..len).step_by((len / 64).max(1) as usize) {
        let copy = dir.path().join(format!("copy-{offset}.redb"));
        std::fs::copy(&path, &copy).expect("copy");
        let mut file = std::fs::OpenOptions::new().write(true).open(&copy).expect("open copy");
        file.seek(SeekFrom::Start(offset)).expect("seek");
        file.write_all(&[0xff; 512]).expect("scribble");
        drop(file);
        match RedbStore::open(&copy) {
            Err(e) => assert!(e.to_string().contains("copy-"), "error names the file: {e}"),
            Ok(store) => {
                let _ = hoard_engine::store::verify(&store);
            }
        }
    }
}

#[test]
fn truncated_and_empty_files_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("world.redb");
    drop(RedbStore::open(&path).expect("create"));
    let bytes = std::fs::read(&path).expect("read");
    let truncated = dir.path().join("truncated.redb");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write");
    if let Err(e) = RedbStore::open(&truncated) {
        assert!(e.to_string().contains("truncated.redb"), "{e}");
    }
    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").expect("write");
    // An empty file is what a crash or a full disk leaves, not a new store:
    // creating a world over it would hide the loss.
    let err = RedbStore::open(&empty).expect_err("an empty file is refused");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains("empty.redb") && err.to_string().contains("empty (0 bytes)"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&empty).expect("still there").len(),
        0,
        "nothing written over it"
    );
}

#[test]
fn a_directory_in_place_of_the_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = RedbStore::open(dir.path()).expect_err("directory");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("is a directory"), "{err}");
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("world.redb");
    drop(RedbStore::open(&path).expect("create"));
    {
        let db = redb::Database::open(&path).expect("raw open");
        let txn = db.begin_write().expect("write");
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .expect("meta");
            meta.insert("format_version", STORE_FORMAT_VERSION + 1).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = RedbStore::open(&path).expect_err("newer format");
    assert!(
        matches!(err, OpenError::NewerFormat { found, supported, .. } if found == STORE_FORMAT_VERSION + 1 && supported == STORE_FORMAT_VERSION),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade hoard"), "{err}");
}

#[test]
fn a_store_held_by_another_process_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("world.redb");
    let mut writer = Command::new(env!("CARGO_BIN_EXE_hoard-engine-crash-writer"))
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    // Once the writer has committed, it holds the store open.
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.as_mut().expect("stdout")),
        &mut first,
    )
    .expect("read");
    assert!(first.starts_with("ok "), "{first}");
    let err = RedbStore::open(&path).expect_err("locked");
    writer.kill().expect("kill");
    writer.wait().expect("wait");
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("locked by another process"), "{err}");
}

/// Everything a server would serve from a store: every shard's head and
/// objects, and its changes since a few seqs (read from the version and
/// tombstone indexes), written out.
fn contents(store: &RedbStore) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for zone in store.zones().map_err(|e| e.to_string())? {
        for shard in store.zone_shards(&zone).map_err(|e| e.to_string())? {
            out.push(format!("{:?}", store.snapshot(shard).map_err(|e| e.to_string())?));
            for since in [0, 5, 20] {
                let changes = store
                    .changes_since(shard, hoard_engine::Seq(since))
                    .map_err(|e| e.to_string())?;
                out.push(format!("{changes:?}"));
            }
        }
    }
    Ok(out)
}

/// The server's start-up check on a store damaged at random offsets, in 120
/// ways (bytes flipped, runs overwritten, pages zeroed, the file cut short):
/// each copy is refused with an error naming it, or passes `verify` and then
/// holds exactly the original data. Never a panic, never damaged data
/// served. `HOARD_CRASH_SEED` replays one run.
#[test]
fn randomly_damaged_stores_are_refused_or_intact_never_served_damaged() {
    let seed = std::env::var("HOARD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("damage test: HOARD_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("world.redb");
    let original = {
        let store = RedbStore::open(&path).expect("create");
        let zone = hoard_engine::ZoneId::new("z").expect("zone");
        let shards: Vec<_> = (1..=4).map(|s| ShardSpec::shared(ShardId(s))).collect();
        store.create_zone(&zone, &shards).expect("zone");
        for n in 0..30u64 {
            let mut tick = ChangeSet::new();
            for k in 0..40 {
                tick.upsert(ShardId(1 + k % 4), ObjectId(n * 100 + k), state_n(n * k));
            }
            if n > 0 {
                tick.remove(ShardId(1 + (n - 1) % 4), ObjectId((n - 1) * 100 + (n - 1) % 4));
            }
            store.commit(&tick).expect("commit");
        }
        contents(&store).expect("original")
    };
    let bytes = std::fs::read(&path).expect("read");
    let (mut refused, mut intact) = (0, 0);
    for variant in 0..120 {
        let mut damaged = bytes.clone();
        let at = rng.usize(0..damaged.len());
        match variant % 4 {
            0 => {
                for _ in 0..rng.usize(1..8) {
                    let i = rng.usize(0..damaged.len());
                    damaged[i] ^= 1 << rng.u8(0..8);
                }
            }
            1 => {
                let end = (at + rng.usize(1..256)).min(damaged.len());
                rng.fill(&mut damaged[at..end]);
            }
            2 => {
                let page = at / 4096 * 4096;
                let end = (page + 4096).min(damaged.len());
                damaged[page..end].fill(0);
            }
            _ => damaged.truncate(at.max(1)),
        }
        let copy = dir.path().join(format!("damaged-{variant}.redb"));
        std::fs::write(&copy, &damaged).expect("write copy");
        let outcome = match RedbStore::open(&copy) {
            Err(e) => Err(e.to_string()),
            Ok(store) => match hoard_engine::store::verify(&store) {
                Err(e) => Err(e.to_string()),
                Ok(damage) if !damage.is_empty() => Err(format!("{damage:?}")),
                Ok(_) => contents(&store),
            },
        };
        match outcome {
            Err(e) => {
                assert!(!e.is_empty(), "variant {variant}: an error says what is wrong");
                refused += 1;
            }
            Ok(found) => {
                if let Some(at) = (0..found.len().max(original.len())).find(|&i| found.get(i) != original.get(i)) {
                    let cut = |s: Option<&String>| s.map(|s| s.chars().take(600).collect::<String>());
                    panic!(
                        "variant {variant}: a store that passes verify serves its data intact; item {at} differs:\n{:?}\n{:?}",
                        cut(found.get(at)),
                        cut(original.get(at))
                    );
                }
                intact += 1;
            }
        }
        std::fs::remove_file(&copy).ok();
    }
    println!("damage test: 120 variants, {refused} refused, {intact} intact");
    assert_eq!(refused + intact, 120);
}

/// A new store is made under a temporary name and renamed into place whole:
/// what a crash during creation leaves (`world.redb.creating`, here junk) is
/// replaced on the next start, which then creates a sound, empty store; a
/// store that exists is never created over.
#[test]
fn a_store_half_created_by_a_crash_is_made_again_not_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let creating = dir.path().join("world.redb.creating");
    std::fs::write(&creating, b"redb\x1a\x0a\xa9\x0d\x0a half a header").expect("write");
    let store = RedbStore::open_dir(dir.path()).expect("a new store is created");
    assert!(store.zones().expect("zones").is_empty());
    let meadow = ZoneId::new("meadow").expect("zone");
    store
        .create_zone(&meadow, &[ShardSpec::shared(ShardId(1))])
        .expect("zone");
    drop(store);
    assert!(!creating.exists(), "the half-made file is gone");
    let store = RedbStore::open_dir(dir.path()).expect("reopens");
    assert_eq!(store.zones().expect("zones"), vec![meadow], "opened, not created again");
}
