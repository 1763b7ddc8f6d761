//! Shared fixtures: a small publishable game and store constructors.

use bevy_ecs::prelude::*;
use hoard_engine::state::StateBuilder;
use hoard_engine::{ObjectState, PublishRegistry};
use serde::{Deserialize, Serialize};

/// A tile of terrain.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Terrain {
    pub(crate) kind: u8,
    pub(crate) height: i16,
}

/// An item lying somewhere.
#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) name: String,
    pub(crate) count: u32,
}

pub(crate) fn registry() -> PublishRegistry {
    PublishRegistry::builder()
        .publish::<Terrain>("terrain", 1)
        .publish::<Item>("item", 1)
        .build()
}

/// A state with one component holding `n`.
pub(crate) fn state_n(n: u64) -> ObjectState {
    let mut value = Vec::new();
    rmp::encode::write_uint(&mut value, n).expect("vec write");
    StateBuilder::new().component("n", value).finish()
}

pub(crate) fn temp_store() -> (tempfile::TempDir, hoard_engine::RedbStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = hoard_engine::RedbStore::open_dir(dir.path()).expect("open store");
    (dir, store)
}

/// The PostgreSQL server the tests use: `HOARD_TEST_POSTGRES` (a connection
/// string; `.ci/run` sets it to a database it creates for the run), or the
/// local server on 127.0.0.1:5432.
pub(crate) fn pg_url() -> String {
    std::env::var("HOARD_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A PostgreSQL schema of one test's own, dropped (with every table in it)
/// when the guard goes.
pub(crate) struct PgSchema {
    pub(crate) name: String,
}

impl PgSchema {
    pub(crate) fn new() -> PgSchema {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PgSchema {
            name: format!("hoard_test_{}_{n}_{:08x}", std::process::id(), fastrand::u32(..)),
        }
    }

    pub(crate) fn options(&self) -> hoard_engine::store::PgOptions {
        hoard_engine::store::PgOptions::new(pg_url()).with_schema(self.name.clone())
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let url = pg_url();
        // Best effort: a schema left behind is dropped with the run's database.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(conn);
                client.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }
}

/// A PostgreSQL store in a fresh schema of its own. Fails the test with a
/// clear message when no server answers.
pub(crate) fn pg_store() -> (PgSchema, hoard_engine::store::PgStore) {
    let schema = PgSchema::new();
    let store = hoard_engine::store::PgStore::open(&schema.options()).unwrap_or_else(|e| {
        panic!("{e}\nthe PostgreSQL tests need a server: start one on 127.0.0.1:5432 or set HOARD_TEST_POSTGRES (.ci/run does both)")
    });
    (schema, store)
}
