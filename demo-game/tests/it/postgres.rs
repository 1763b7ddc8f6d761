//! The demo server on a PostgreSQL store (`--store postgres://...`): the
//! world is imported into the database on first start, a restarted server
//! loads and verifies it from there, and a returning player's cache still
//! counts.

use std::path::Path;

use super::server_client::{Server, enter, generate_world, spawn_listening, token};

/// The PostgreSQL server the tests use (see `.ci/test`).
pub(crate) fn pg_url() -> String {
    std::env::var("HOARD_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A schema of the test's own, dropped with its tables when the guard goes.
pub(crate) struct PgSchema(pub(crate) String);

impl PgSchema {
    pub(crate) fn new() -> PgSchema {
        PgSchema(format!("hoard_demo_{}_{:08x}", std::process::id(), fastrand::u32(..)))
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (sql, url) = (format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0), pg_url());
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

/// A server on `data` (keys) whose world lives in PostgreSQL, in `schema`.
pub(crate) fn pg_server(data: &Path, schema: &PgSchema, extra: &[&str]) -> Server {
    let world = data.join("world-files");
    if !world.exists() {
        generate_world(&world);
    }
    let mut cmd = super::server_client::demo();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--tick-hz", "50", "--world"])
        .arg(&world)
        .arg("--data")
        .arg(data)
        .args(["--store", &pg_url(), "--store-schema", &schema.0])
        .args(extra);
    let (child, v) = spawn_listening(cmd);
    Server::from_listening(child, &v)
}

#[test]
fn a_server_on_postgres_imports_the_world_and_a_restarted_one_serves_it_warm() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let schema = PgSchema::new();
    let first = pg_server(data.path(), &schema, &[]);
    let ann = token(data.path(), "ann");
    let cold = enter(&first, cache.path(), &ann, "meadow");
    assert_eq!(cold["shards_snapshot"], 64);
    let objects = cold["objects"].as_u64().expect("objects");
    drop(first);

    let second = pg_server(data.path(), &schema, &[]);
    let warm = enter(&second, cache.path(), &ann, "meadow");
    assert_eq!(warm["shards_fresh"], 64, "{warm}");
    assert_eq!(warm["objects"].as_u64(), Some(objects));

    let verify = super::server_client::demo()
        .args(["store", "verify", "--store", &pg_url(), "--store-schema", &schema.0])
        .output()
        .expect("verify");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("every shard verified"));
}
