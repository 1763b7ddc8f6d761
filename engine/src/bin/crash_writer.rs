//! Test helper for the crash tests: commits to a redb store in an endless
//! loop and prints `ok N` after each commit returns, so a parent process can
//! SIGKILL it at a random moment and then check that every acknowledged
//! commit survived, atomically.
//!
//! Usage: `hoard-engine-crash-writer STORE_FILE` (a redb store) or
//! `hoard-engine-crash-writer postgres URL SCHEMA`. Each commit N writes, in one
//! transaction: a marker object holding N in each of four shards, a batch of
//! objects with varying sizes, removals of older ones, and a move of object
//! 42 from one shard to the next — so after any crash the markers must agree,
//! and object 42 must exist exactly once.

use std::io::Write;
use std::path::PathBuf;

use hoard_engine::state::StateBuilder;
use hoard_engine::store::{ShardSpec, WorldStore};
use hoard_engine::{ChangeSet, ObjectId, RedbStore, ShardId, ZoneId};

const USAGE: &str = "usage: hoard-engine-crash-writer STORE_FILE | hoard-engine-crash-writer postgres URL SCHEMA";

/// Shards the writer uses.
const SHARDS: u64 = 4;
/// Id of each shard's marker object is `MARKER_BASE + shard`.
const MARKER_BASE: u64 = 1_000_000;
/// The object that moves between shards on every commit.
const MOVER: u64 = 42;

fn state(n: u64, pad: usize) -> hoard_engine::ObjectState {
    let mut value = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_uint(&mut value, n);
    StateBuilder::new()
        .component("n", value)
        .component("pad", vec![0xc4; pad.min(200)])
        .finish()
}

fn marker_of(store: &dyn WorldStore, shard: u64) -> anyhow::Result<u64> {
    let snapshot = store.snapshot(ShardId(shard))?;
    Ok(snapshot
        .objects
        .iter()
        .find(|o| o.id == ObjectId(MARKER_BASE + shard))
        .map_or(0, |o| o.version.0))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let store: Box<dyn WorldStore> = match args.as_slice() {
        [path] => Box::new(RedbStore::open(&PathBuf::from(path))?),
        [kind, url, schema] if kind == "postgres" => Box::new(hoard_engine::store::PgStore::open(
            &hoard_engine::store::PgOptions::new(url).with_schema(schema),
        )?),
        _ => anyhow::bail!(USAGE),
    };
    let store = &*store;
    let zone = ZoneId::new("crash")?;
    if store.zones()?.is_empty() {
        let specs: Vec<ShardSpec> = (0..SHARDS).map(|s| ShardSpec::shared(ShardId(s))).collect();
        store.create_zone(&zone, &specs)?;
    }
    // Commits so far = the marker's version in shard 0 (each commit bumps every shard once).
    let mut n = marker_of(store, 0)?;
    let mut stdout = std::io::stdout().lock();
    loop {
        n += 1;
        let mut changes = ChangeSet::new();
        for shard in 0..SHARDS {
            changes.upsert(ShardId(shard), ObjectId(MARKER_BASE + shard), state(n, 0));
        }
        for k in 0..20u64 {
            let id = 1000 + (n * 7 + k * 13) % 500;
            changes.upsert(ShardId(id % SHARDS), ObjectId(id), state(n, (k * 11 % 200) as usize));
        }
        let gone = 1000 + (n * 31) % 500;
        changes.remove(ShardId(gone % SHARDS), ObjectId(gone));
        changes.remove(ShardId((n - 1) % SHARDS), ObjectId(MOVER));
        changes.upsert(ShardId(n % SHARDS), ObjectId(MOVER), state(n, 10));
        store.commit(&changes)?;
        writeln!(stdout, "ok {n}")?;
        stdout.flush()?;
    }
}
