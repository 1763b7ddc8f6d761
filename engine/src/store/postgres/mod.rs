//! The PostgreSQL world store: the store of a world whose zones run on
//! several servers sharing one database.
//!
//! Same model, same guarantees and the same commit logic (`logic.rs`) as the
//! embedded [`RedbStore`](super::RedbStore): commits are atomic across
//! shards and durable when they return; seqs, digests, tombstones and the
//! horizon follow the same rules. What differs is how rows travel: a commit
//! is two round trips whatever its size (fetch and lock every row it can
//! touch in one pipelined batch; write the results with one multi-row
//! statement per table, pipelined with `COMMIT`), see `overlay.rs`.
//!
//! Tables and their columns are in docs/STORE.md; the schema is applied and
//! versioned by `migrations.rs` when the store opens.

mod codec;
mod conn;
mod lease;
mod migrations;
mod overlay;
mod tls;
mod write;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use self::codec::{dec, enc, head_from_row, object_from_row, scope_key_of};
use self::conn::{Conn, Connections, is_conflict, is_unique_violation};
use self::write::Attempt;
use super::error::{CommitError, OpenError, ReadError, StoreFault, WriteError};
use super::record::ShardRecord;
use super::{ChangesSince, CommitReceipt, ShardHead, ShardSnapshot, ShardSpec, Tombstone, TrimReport, WorldStore};
use crate::changeset::ChangeSet;
use crate::ids::{Epoch, ObjectId, Seq, ShardId, ZoneId};

pub use self::lease::{Lease, LeaseError, LeaseHolder, LeaseKey};

/// How many times a transaction that lost a conflict (serialization
/// failure, deadlock, a concurrent create) is run again before the error
/// is returned.
const CONFLICT_RETRIES: usize = 8;

/// Rows per multi-row write statement: bounds one statement's size for a
/// huge commit (a world's first import), which then takes a few more
/// round trips.
const ROWS_PER_STATEMENT: usize = 4096;

/// Where and how to open a [`PgStore`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// A libpq-style connection string: `postgres://user@host:port/db` or
    /// `host=... user=... dbname=...`. TLS as libpq spells it:
    /// `sslmode=verify-full` (the certificate chain and the host name
    /// checked), `verify-ca` or `require` (the chain checked), `disable` (the
    /// default: plain TCP); `sslrootcert=PATH` names a PEM file of trusted
    /// roots (default, or `system`: the operating system's). `allow` and
    /// `prefer` are refused: hoard never encrypts without verifying.
    pub url: String,
    /// The PostgreSQL schema holding the world's tables (created if
    /// missing); `None`: the connection's default (`public`). Lets one
    /// database hold several worlds, and tests isolate themselves.
    pub schema: Option<String>,
    /// Most connections the store opens.
    pub pool_size: usize,
    /// The longest any one operation may take before it fails (no call
    /// hangs on a database that stopped answering).
    pub op_timeout: Duration,
}

impl PgOptions {
    /// Defaults for `url`: the `public` schema, 8 connections, 30 s per operation.
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            schema: None,
            pool_size: 8,
            op_timeout: Duration::from_secs(30),
        }
    }

    /// The same, with the tables in `schema`.
    pub fn with_schema(mut self, schema: impl Into<String>) -> PgOptions {
        self.schema = Some(schema.into());
        self
    }
}

/// The world store on PostgreSQL. See the module docs and docs/STORE.md.
pub struct PgStore {
    conns: Connections,
    /// The database as messages name it (no password).
    label: String,
    /// The zones this store holds leases on; when it holds any, every commit
    /// checks that each zone it writes is still leased to it with the same
    /// token (see [`LeaseHolder`]).
    leases: lease::Fence,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("database", &self.label).finish()
    }
}

/// A schema name the store will put into SQL: lower-case ASCII letters,
/// digits and `_`, starting with a letter, at most 63 bytes.
fn valid_schema(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Names a database without its password.
fn label_of(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("?");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreFault {
    move |e| StoreFault::backend(context, e)
}

impl PgStore {
    /// Connects, creates the schema if asked, and applies missing
    /// migrations. Fails with a clear error if the database cannot be
    /// reached or was written by a newer hoard.
    pub fn open(options: &PgOptions) -> Result<PgStore, OpenError> {
        let unparsable = |detail: String| OpenError::Database {
            database: "(unparsable connection string)".into(),
            detail,
        };
        let tls = tls::split(&options.url).map_err(unparsable)?;
        let mut config: tokio_postgres::Config = tls.url.parse().map_err(|e| unparsable(format!("{e}")))?;
        let label = label_of(&config);
        let open_err = |detail: String| OpenError::Database {
            database: label.clone(),
            detail,
        };
        if let Some(schema) = &options.schema {
            if !valid_schema(schema) {
                return Err(open_err(format!(
                    "schema name {schema:?}: use lower-case letters, digits and _, starting with a letter"
                )));
            }
            config.options(format!("-c search_path={schema}"));
        }
        config.connect_timeout(options.op_timeout);
        // Named in `pg_stat_activity` as the connection string says, or "hoard".
        if config.get_application_name().is_none() {
            config.application_name("hoard");
        }
        let connector = tls::connector(tls.mode, tls.root_cert.as_deref()).map_err(&open_err)?;
        config.ssl_mode(match connector {
            Some(_) => tokio_postgres::config::SslMode::Require,
            None => tokio_postgres::config::SslMode::Disable,
        });
        let conns = Connections::new(config, connector, options.pool_size, options.op_timeout)
            .map_err(|e| open_err(format!("starting the store's runtime: {e}")))?;
        let store = PgStore {
            conns,
            label: label.clone(),
            leases: lease::Fence::default(),
        };
        let schema = options.schema.clone();
        store
            .conns
            .run("migrating the schema", move |pool| migrate(pool, schema))
            .map_err(|e| match e {
                Migrate::Newer(found) => OpenError::NewerSchema {
                    database: label.clone(),
                    found,
                    supported: migrations::latest(),
                },
                Migrate::Fault(fault) => open_err(fault.to_string()),
            })?;
        tracing::info!(database = %label, schema = ?options.schema, tls = ?tls.mode, "PostgreSQL world store open");
        Ok(store)
    }

    /// Reserves `count` object ids for this server's new objects, none of
    /// them below `at_least` (one past the largest id it knows): the
    /// world's servers each build from their own block, so two never give
    /// the same id to different objects. The counter is `hoard_meta`'s
    /// `next_object_id` (a plain `BIGINT`: ids reserved this way stay below
    /// 2^63).
    pub fn reserve_object_ids(&self, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, StoreFault> {
        let count = i64::try_from(count).map_err(|_| StoreFault::Corrupt("too many ids asked for".into()))?;
        let at_least =
            i64::try_from(at_least).map_err(|_| StoreFault::Corrupt("ids past 2^63 cannot be reserved".into()))?;
        self.run("reserving object ids", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let bump = conn
                .query_opt(
                    "UPDATE hoard_meta SET value = GREATEST(value, $1::BIGINT) + $2::BIGINT \
                     WHERE key = 'next_object_id' RETURNING value",
                    &[&at_least, &count],
                )
                .await
                .map_err(pg("reserving object ids"))?;
            let end: i64 = match bump {
                Some(row) => codec::col(&row, 0, "hoard_meta")?,
                None => {
                    // The first reservation: past every object the world
                    // holds, whichever server's zone it is in.
                    let row = conn
                        .query_one("SELECT MAX(object) FROM hoard_objects", &[])
                        .await
                        .map_err(pg("finding the largest object id"))?;
                    let max: Option<i64> = codec::col(&row, 0, "hoard_objects")?;
                    let past = max.map_or(0, |m| dec(m).saturating_add(1));
                    let start = i64::try_from(past).unwrap_or(i64::MAX).max(at_least);
                    let row = conn
                        .query_one(
                            "INSERT INTO hoard_meta (key, value) VALUES ('next_object_id', $1::BIGINT + $2::BIGINT) \
                             ON CONFLICT (key) DO UPDATE SET value = GREATEST(hoard_meta.value, $1::BIGINT) + $2::BIGINT \
                             RETURNING value",
                            &[&start, &count],
                        )
                        .await
                        .map_err(pg("reserving object ids"))?;
                    codec::col(&row, 0, "hoard_meta")?
                }
            };
            conn.clean();
            let end = u64::try_from(end).map_err(|_| StoreFault::Corrupt("next_object_id is negative".into()))?;
            Ok(end - count as u64..end)
        })
    }

    /// The database, as messages name it (without a password).
    pub fn database(&self) -> &str {
        &self.label
    }

    fn commit_inner(
        &self,
        changes: &ChangeSet,
        schema: Option<BTreeMap<String, u32>>,
    ) -> Result<CommitReceipt, CommitError> {
        if changes.is_empty() && schema.is_none() {
            return Ok(CommitReceipt::default());
        }
        let span = tracing::debug_span!("commit", objects = changes.len());
        let _enter = span.enter();
        // The task runs on the store's runtime while this thread waits, but
        // spawning needs owned data.
        let changes = changes.clone();
        let fence = self.leases.snapshot();
        self.run("committing", move |pool| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let conn = Conn::get(&pool, "connecting").await?;
                match write::commit_once(&conn, &changes, schema.as_ref(), &fence).await {
                    Ok(receipt) => {
                        conn.clean();
                        return Ok(receipt);
                    }
                    Err(Attempt::Refused(e)) => return Err(e),
                    Err(Attempt::Pg(e)) if attempt < CONFLICT_RETRIES && is_conflict(&e) => {
                        tracing::debug!(error = %e, attempt, "commit lost a conflict; retrying");
                    }
                    Err(Attempt::Pg(e)) => return Err(StoreFault::backend("committing", e).into()),
                }
            }
        })
    }

    fn run<R, E, F>(&self, what: &'static str, op: impl FnOnce(Pool) -> F) -> Result<R, E>
    where
        F: std::future::Future<Output = Result<R, E>> + Send + 'static,
        R: Send + 'static,
        E: From<StoreFault> + Send + 'static,
    {
        self.conns.run(what, op)
    }
}

/// Why applying migrations failed.
enum Migrate {
    Newer(i64),
    Fault(StoreFault),
}

impl From<StoreFault> for Migrate {
    fn from(e: StoreFault) -> Migrate {
        Migrate::Fault(e)
    }
}

async fn migrate(pool: Pool, schema: Option<String>) -> Result<(), Migrate> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let conn = Conn::get(&pool, "connecting").await?;
        match migrate_once(&conn, schema.as_deref()).await {
            Ok(()) => {
                conn.clean();
                return Ok(());
            }
            Err(MigrateStep::Newer(v)) => return Err(Migrate::Newer(v)),
            // Another server migrating the same database at once.
            Err(MigrateStep::Pg(e))
                if attempt < CONFLICT_RETRIES && (is_unique_violation(&e) || is_conflict(&e) || is_ddl_race(&e)) =>
            {
                tracing::debug!(error = %e, "migration raced another server; retrying");
            }
            Err(MigrateStep::Pg(e)) => return Err(StoreFault::backend("applying the schema migrations", e).into()),
        }
    }
}

/// Whether `e` is what PostgreSQL answers when two sessions create the same
/// schema, table or index at once: `IF NOT EXISTS` checks before it takes
/// its lock, so the second may still find the object made meanwhile.
fn is_ddl_race(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(
        e.code(),
        Some(c) if *c == SqlState::DUPLICATE_SCHEMA
            || *c == SqlState::DUPLICATE_TABLE
            || *c == SqlState::DUPLICATE_OBJECT
    )
}

enum MigrateStep {
    Newer(i64),
    Pg(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for MigrateStep {
    fn from(e: tokio_postgres::Error) -> MigrateStep {
        MigrateStep::Pg(e)
    }
}

async fn migrate_once(conn: &Conn, schema: Option<&str>) -> Result<(), MigrateStep> {
    if let Some(schema) = schema {
        // Checked by `valid_schema`: safe to splice.
        conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await?;
    }
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS hoard_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let row = conn
        .query_one("SELECT COALESCE(MAX(version), 0) FROM hoard_migrations", &[])
        .await?;
    let current: i64 = row.try_get(0)?;
    if current > migrations::latest() {
        return Err(MigrateStep::Newer(current));
    }
    for migration in migrations::MIGRATIONS.iter().filter(|m| m.version > current) {
        conn.batch_execute("BEGIN").await?;
        let applied = async {
            for statement in migration.statements {
                conn.batch_execute(statement).await?;
            }
            conn.execute(
                "INSERT INTO hoard_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await?;
            conn.batch_execute("COMMIT").await
        }
        .await;
        if let Err(e) = applied {
            let _ = conn.batch_execute("ROLLBACK").await;
            return Err(e.into());
        }
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied a store migration"
        );
    }
    Ok(())
}

const HEAD_COLUMNS: &str = "shard, zone, epoch, seq, digest, horizon, scope_key";

impl WorldStore for PgStore {
    fn create_zone(&self, zone: &ZoneId, shards: &[ShardSpec]) -> Result<(), WriteError> {
        let zone = zone.clone();
        let shards = shards.to_vec();
        self.run("creating a zone", move |pool| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let conn = Conn::get(&pool, "connecting").await?;
                match create_zone_once(&conn, &zone, &shards).await {
                    Ok(outcome) => {
                        conn.clean();
                        return outcome;
                    }
                    Err(e) if attempt < CONFLICT_RETRIES && (is_conflict(&e) || is_unique_violation(&e)) => {}
                    Err(e) => return Err(StoreFault::backend("creating a zone", e).into()),
                }
            }
        })
    }

    fn zones(&self) -> Result<Vec<ZoneId>, ReadError> {
        self.run("listing zones", |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let rows = conn
                .query("SELECT zone FROM hoard_zones", &[])
                .await
                .map_err(pg("listing zones"))?;
            conn.clean();
            let mut zones = rows
                .iter()
                .map(|row| {
                    let name: String = codec::col(row, 0, "hoard_zones")?;
                    ZoneId::new(name).map_err(|e| StoreFault::Corrupt(format!("zone name in store: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Sorted here, byte-wise, as the other stores do (a database
            // collation may order text differently).
            zones.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            Ok(zones)
        })
    }

    fn zone_shards(&self, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
        let zone = zone.clone();
        self.run("listing a zone's shards", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let stmt = conn
                .prepare_cached(
                    "SELECT s.shard FROM hoard_zones z LEFT JOIN hoard_zone_shards s ON s.zone = z.zone \
                     WHERE z.zone = $1 ORDER BY s.shard",
                )
                .await
                .map_err(pg("preparing"))?;
            let rows = conn
                .query(&stmt, &[&zone.as_str()])
                .await
                .map_err(pg("listing a zone's shards"))?;
            conn.clean();
            shards_of_zone(&zone, &rows)
        })
    }

    fn zone_shards_for(&self, zone: &ZoneId, perspective: &str) -> Result<Vec<ShardId>, ReadError> {
        let zone = zone.clone();
        let own = scope_key_of(&super::ShardScope::Perspective(perspective.to_owned()));
        self.run("listing a perspective's shards", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let stmt = conn
                .prepare_cached(
                    "SELECT s.shard FROM hoard_zones z LEFT JOIN hoard_zone_shards s \
                     ON s.zone = z.zone AND s.scope_key IN ('', $2) \
                     WHERE z.zone = $1 ORDER BY s.shard",
                )
                .await
                .map_err(pg("preparing"))?;
            let rows = conn
                .query(&stmt, &[&zone.as_str(), &own.as_str()])
                .await
                .map_err(pg("listing a perspective's shards"))?;
            conn.clean();
            shards_of_zone(&zone, &rows)
        })
    }

    fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError> {
        self.run("reading a shard head", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let head = read_head(&conn, shard).await?;
            conn.clean();
            Ok(head)
        })
    }

    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        self.commit_inner(changes, None)
    }

    fn changes_since(&self, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
        self.run("reading changes", move |pool| async move {
            let mut conn = Conn::get(&pool, "connecting").await?;
            let out = changes_since(&mut conn, shard, since).await;
            if out.is_ok() {
                conn.clean();
            }
            out
        })
    }

    fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
        self.run("reading a manifest", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let (head, rows) = head_and_rows(
                &conn,
                shard,
                "SELECT object, version FROM hoard_objects WHERE shard = $1 ORDER BY object",
            )
            .await?;
            conn.clean();
            let manifest = rows
                .iter()
                .map(|row| {
                    Ok((
                        ObjectId(dec(codec::col(row, 0, "hoard_objects")?)),
                        Seq(dec(codec::col(row, 1, "hoard_objects")?)),
                    ))
                })
                .collect::<Result<Vec<_>, StoreFault>>()?;
            Ok((head, manifest))
        })
    }

    fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
        self.run("reading a snapshot", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let (head, rows) = head_and_rows(
                &conn,
                shard,
                "SELECT object, version, state FROM hoard_objects WHERE shard = $1 ORDER BY object",
            )
            .await?;
            conn.clean();
            let objects = rows
                .iter()
                .map(|row| object_from_row(shard, row))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ShardSnapshot { head, objects })
        })
    }

    fn trim_tombstones(&self, older_than: DateTime<Utc>) -> Result<TrimReport, WriteError> {
        let cutoff = older_than.timestamp_millis();
        self.run("trimming tombstones", move |pool| async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let conn = Conn::get(&pool, "connecting").await?;
                match write::trim_once(&conn, cutoff).await {
                    Ok(report) => {
                        conn.clean();
                        return Ok(report);
                    }
                    Err(Attempt::Refused(e)) => return Err(e),
                    Err(Attempt::Pg(e)) if attempt < CONFLICT_RETRIES && is_conflict(&e) => {}
                    Err(Attempt::Pg(e)) => return Err(StoreFault::backend("trimming tombstones", e).into()),
                }
            }
        })
    }

    fn reserve_object_ids(&self, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, WriteError> {
        Ok(PgStore::reserve_object_ids(self, count, at_least)?)
    }

    fn reset_epoch(&self, shard: ShardId) -> Result<Epoch, WriteError> {
        self.run("resetting an epoch", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let epoch = Epoch::random();
            let n = conn
                .execute(
                    "UPDATE hoard_shards SET epoch = $2 WHERE shard = $1",
                    &[&enc(shard.0), &enc(epoch.0)],
                )
                .await
                .map_err(pg("resetting an epoch"))?;
            conn.clean();
            if n == 0 {
                return Err(WriteError::UnknownShard(shard));
            }
            Ok(epoch)
        })
    }

    fn schema(&self) -> Result<BTreeMap<String, u32>, ReadError> {
        self.run("reading the schema versions", |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let rows = conn
                .query("SELECT key, value FROM hoard_meta", &[])
                .await
                .map_err(pg("reading meta"))?;
            conn.clean();
            let mut out = BTreeMap::new();
            for row in &rows {
                let key: String = codec::col(row, 0, "hoard_meta")?;
                let value: i64 = codec::col(row, 1, "hoard_meta")?;
                if let Some(name) = key.strip_prefix(SCHEMA_PREFIX) {
                    let version = u32::try_from(value)
                        .map_err(|_| StoreFault::Corrupt(format!("schema version of {name} out of range")))?;
                    out.insert(name.to_owned(), version);
                }
            }
            Ok(out)
        })
    }

    fn commit_with_schema(
        &self,
        changes: &ChangeSet,
        schema: &BTreeMap<String, u32>,
    ) -> Result<CommitReceipt, CommitError> {
        self.commit_inner(changes, Some(schema.clone()))
    }
}

/// Keys of `hoard_meta` recording each component's schema version.
const SCHEMA_PREFIX: &str = "schema:";

fn shards_of_zone(zone: &ZoneId, rows: &[tokio_postgres::Row]) -> Result<Vec<ShardId>, ReadError> {
    if rows.is_empty() {
        return Err(ReadError::UnknownZone(zone.clone()));
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let shard: Option<i64> = codec::col(row, 0, "hoard_zone_shards")?;
        out.extend(shard.map(|s| ShardId(dec(s))));
    }
    Ok(out)
}

async fn read_head(conn: &Conn, shard: ShardId) -> Result<ShardHead, ReadError> {
    let stmt = conn
        .prepare_cached(&format!("SELECT {HEAD_COLUMNS} FROM hoard_shards WHERE shard = $1"))
        .await
        .map_err(pg("preparing"))?;
    let row = conn
        .query_opt(&stmt, &[&enc(shard.0)])
        .await
        .map_err(pg("reading a shard head"))?
        .ok_or(ReadError::UnknownShard(shard))?;
    Ok(head_from_row(&row)?)
}

/// A shard's head and the rows of `sql` (over `$1` = the shard), read in
/// one statement pair that sees one snapshot: the rows are fetched by a
/// query joined to the head's row.
async fn head_and_rows(
    conn: &Conn,
    shard: ShardId,
    sql: &'static str,
) -> Result<(ShardHead, Vec<tokio_postgres::Row>), ReadError> {
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(pg("beginning a read"))?;
    let head = read_head(conn, shard).await;
    let rows = match head {
        Ok(_) => {
            let stmt = conn.prepare_cached(sql).await.map_err(pg("preparing"))?;
            Some(
                conn.query(&stmt, &[&enc(shard.0)])
                    .await
                    .map_err(pg("reading a shard"))?,
            )
        }
        Err(_) => None,
    };
    conn.batch_execute("COMMIT").await.map_err(pg("ending a read"))?;
    Ok((head?, rows.unwrap_or_default()))
}

async fn changes_since(conn: &mut Conn, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(pg("beginning a read"))?;
    let out = changes_since_in(conn, shard, since).await;
    conn.batch_execute("COMMIT").await.map_err(pg("ending a read"))?;
    out
}

async fn changes_since_in(conn: &Conn, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
    let head = read_head(conn, shard).await?;
    if since > head.seq {
        return Err(ReadError::FutureSeq {
            shard,
            asked: since,
            head: head.seq,
        });
    }
    if since < head.horizon {
        return Ok(ChangesSince::BehindHorizon { head });
    }
    let objects = conn
        .prepare_cached(
            "SELECT object, version, state FROM hoard_objects WHERE shard = $1 AND version > $2 \
             ORDER BY version, object",
        )
        .await
        .map_err(pg("preparing"))?;
    let tombs = conn
        .prepare_cached("SELECT object, seq FROM hoard_tombstones WHERE shard = $1 AND seq > $2 ORDER BY seq, object")
        .await
        .map_err(pg("preparing"))?;
    let (shard_key, since_key) = (enc(shard.0), enc(since.0));
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&shard_key, &since_key];
    let (objects, tombs) =
        tokio::try_join!(conn.query(&objects, &params), conn.query(&tombs, &params)).map_err(pg("reading changes"))?;
    let upserts = objects
        .iter()
        .map(|row| object_from_row(shard, row))
        .collect::<Result<Vec<_>, _>>()?;
    let tombstones = tombs
        .iter()
        .map(|row| {
            Ok(Tombstone {
                id: ObjectId(dec(codec::col(row, 0, "hoard_tombstones")?)),
                seq: Seq(dec(codec::col(row, 1, "hoard_tombstones")?)),
            })
        })
        .collect::<Result<Vec<_>, StoreFault>>()?;
    Ok(ChangesSince::Changes {
        head,
        upserts,
        tombstones,
    })
}

async fn create_zone_once(
    conn: &Conn,
    zone: &ZoneId,
    specs: &[ShardSpec],
) -> Result<Result<(), WriteError>, tokio_postgres::Error> {
    conn.batch_execute("BEGIN").await?;
    let outcome = async {
        let ids: Vec<i64> = specs.iter().map(|s| enc(s.id.0)).collect();
        let existing = conn
            .query(
                "SELECT shard, zone FROM hoard_shards WHERE shard = ANY($1) ORDER BY shard",
                &[&ids],
            )
            .await?;
        if let Some(row) = existing.first() {
            let shard = ShardId(dec(row.try_get(0)?));
            let name: String = row.try_get(1)?;
            let zone = ZoneId::new(name).unwrap_or_else(|_| zone.clone());
            return Ok(Err(WriteError::ShardExists { shard, zone }));
        }
        conn.execute(
            "INSERT INTO hoard_zones (zone) VALUES ($1) ON CONFLICT (zone) DO NOTHING",
            &[&zone.as_str()],
        )
        .await?;
        if !specs.is_empty() {
            let mut epochs = Vec::new();
            let mut digests = Vec::new();
            let mut scopes = Vec::new();
            for spec in specs {
                let record = ShardRecord::new(zone.clone(), spec.scope.clone());
                epochs.push(enc(record.epoch.0));
                digests.push(record.digest.to_bytes().to_vec());
                scopes.push(scope_key_of(&spec.scope));
            }
            let zones = vec![zone.as_str(); specs.len()];
            let zero = vec![enc(0); specs.len()];
            conn.execute(
                "INSERT INTO hoard_shards (shard, zone, epoch, seq, digest, horizon, scope_key) \
                 SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BYTEA[], \
                 $6::BIGINT[], $7::TEXT[])",
                &[&ids, &zones, &epochs, &zero, &digests, &zero, &scopes],
            )
            .await?;
            conn.execute(
                "INSERT INTO hoard_zone_shards (zone, scope_key, shard) \
                 SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[])",
                &[&zones, &scopes, &ids],
            )
            .await?;
        }
        Ok(Ok(()))
    }
    .await;
    match outcome {
        Ok(Ok(())) => {
            conn.batch_execute("COMMIT").await?;
            Ok(Ok(()))
        }
        Ok(Err(e)) => {
            conn.batch_execute("ROLLBACK").await?;
            Ok(Err(e))
        }
        Err(e) => Err(e),
    }
}
