//! The PostgreSQL store's write transactions: a tick's commit and a
//! tombstone trim, each two round trips whatever its size.
//!
//! Round trip 1 (pipelined): `BEGIN`; lock the records of the shards the
//! commit changes (`FOR UPDATE`, in shard order, so two commits never
//! deadlock); fetch the live objects and tombstones of every id it names;
//! and, on a server holding zone leases, check them (`FOR SHARE`, so a
//! takeover waits for this commit to end and no commit of the old owner can
//! follow the takeover). Every writer locks a shard's record before it
//! touches the shard's rows, and each statement of a READ COMMITTED
//! transaction reads the data committed before it started, so the rows
//! fetched after the lock are current.
//!
//! Then the shared commit logic runs over those rows (`overlay.rs`), and
//! round trip 2 writes what it decided — one multi-row statement per table
//! (`unnest` of arrays, which CockroachDB and YugabyteDB accept too) —
//! pipelined with `COMMIT`.

use std::collections::BTreeMap;

use chrono::Utc;

use super::codec::{dec, enc, head_from_row, state_hash_from};
use super::conn::Conn;
use super::lease::{FenceSnapshot, LeaseKey};
use super::overlay::{LiveRow, Overlay, TombRow};
use super::{ROWS_PER_STATEMENT, SCHEMA_PREFIX};
use crate::changeset::ChangeSet;
use crate::ids::{ObjectId, Seq, ShardId};
use crate::store::error::{CommitError, StoreFault, WriteError};
use crate::store::logic;
use crate::store::record::ShardRecord;
use crate::store::{CommitReceipt, ShardHead, ShardScope, Tombstone, TrimReport};

type PgResult<T> = Result<T, tokio_postgres::Error>;
/// An object row to write: shard, object, version, state hash, state.
type ObjectRow<'a> = (i64, i64, i64, &'a [u8], &'a [u8]);
/// The columns of object rows, as the upsert statement's arrays.
type ObjectColumns<'a> = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<&'a [u8]>, Vec<&'a [u8]>);
/// One statement parameter.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

const LOCK_SHARDS: &str = "SELECT shard, zone, epoch, seq, digest, horizon, scope_key FROM hoard_shards \
     WHERE shard = ANY($1) ORDER BY shard FOR UPDATE";
const FETCH_OBJECTS: &str = "SELECT o.shard, o.object, o.version, o.state_hash FROM hoard_objects o \
     JOIN unnest($1::BIGINT[], $2::BIGINT[]) AS k(shard, object) ON o.shard = k.shard AND o.object = k.object";
const FETCH_TOMBSTONES: &str = "SELECT t.shard, t.object, t.seq, t.at_ms FROM hoard_tombstones t \
     JOIN unnest($1::BIGINT[], $2::BIGINT[]) AS k(shard, object) ON t.shard = k.shard AND t.object = k.object";
const CHECK_LEASES: &str = "SELECT zone, token FROM hoard_zone_leases WHERE zone = ANY($1) AND owner = $2 FOR SHARE";

const UPSERT_OBJECTS: &str = "INSERT INTO hoard_objects (shard, object, version, state_hash, state) \
     SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BYTEA[], $5::BYTEA[]) \
     ON CONFLICT (shard, object) DO UPDATE SET version = EXCLUDED.version, \
     state_hash = EXCLUDED.state_hash, state = EXCLUDED.state";
const DELETE_OBJECTS: &str = "DELETE FROM hoard_objects WHERE (shard, object) IN \
     (SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[]))";
const UPSERT_TOMBSTONES: &str = "INSERT INTO hoard_tombstones (shard, object, seq, at_ms) \
     SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) \
     ON CONFLICT (shard, object) DO UPDATE SET seq = EXCLUDED.seq, at_ms = EXCLUDED.at_ms";
const DELETE_TOMBSTONES: &str = "DELETE FROM hoard_tombstones WHERE (shard, object) IN \
     (SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[]))";
const UPDATE_SHARDS: &str = "UPDATE hoard_shards SET epoch = k.epoch, seq = k.seq, digest = k.digest, \
     horizon = k.horizon FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BYTEA[], $5::BIGINT[]) \
     AS k(shard, epoch, seq, digest, horizon) WHERE hoard_shards.shard = k.shard";
const CLEAR_SCHEMA: &str = "DELETE FROM hoard_meta WHERE key LIKE 'schema:%'";
const WRITE_SCHEMA: &str = "INSERT INTO hoard_meta (key, value) SELECT * FROM unnest($1::TEXT[], $2::BIGINT[])";

fn record_of(head: ShardHead) -> ShardRecord {
    ShardRecord {
        zone: head.zone,
        epoch: head.epoch,
        seq: head.seq,
        digest: head.digest,
        horizon: head.horizon,
        scope: head.scope,
    }
}

/// Why a commit attempt ended: the database failed (maybe worth a retry),
/// or the commit itself was refused (never retried).
pub(crate) enum Attempt<E> {
    Pg(tokio_postgres::Error),
    Refused(E),
}

impl<E> From<tokio_postgres::Error> for Attempt<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        Attempt::Pg(e)
    }
}

impl From<StoreFault> for Attempt<CommitError> {
    fn from(e: StoreFault) -> Self {
        Attempt::Refused(e.into())
    }
}

impl From<StoreFault> for Attempt<WriteError> {
    fn from(e: StoreFault) -> Self {
        Attempt::Refused(e.into())
    }
}

/// One attempt at committing `changes` (and `schema`) in one transaction.
pub(crate) async fn commit_once(
    conn: &Conn,
    changes: &ChangeSet,
    schema: Option<&BTreeMap<String, u32>>,
    fence: &FenceSnapshot,
) -> Result<CommitReceipt, Attempt<CommitError>> {
    let now = Utc::now();
    let shard_ids: Vec<i64> = changes
        .shards()
        .filter(|(_, c)| !c.is_empty())
        .map(|(s, _)| enc(s.0))
        .collect();
    let (mut key_shards, mut key_objects) = (Vec::new(), Vec::new());
    for (shard, shard_changes) in changes.shards() {
        for (id, _) in shard_changes.iter() {
            key_shards.push(enc(shard.0));
            key_objects.push(enc(id.0));
        }
    }
    let lock = conn.prepare_cached(LOCK_SHARDS).await?;
    let fetch_objects = conn.prepare_cached(FETCH_OBJECTS).await?;
    let fetch_tombs = conn.prepare_cached(FETCH_TOMBSTONES).await?;
    let check = conn.prepare_cached(CHECK_LEASES).await?;
    let held_zones: Vec<&str> = fence.zones.keys().map(String::as_str).collect();
    let lock_params: [Param<'_>; 1] = [&shard_ids];
    let key_params: [Param<'_>; 2] = [&key_shards, &key_objects];
    let owner = fence.owner.as_deref().unwrap_or_default();
    let check_params: [Param<'_>; 2] = [&held_zones, &owner];
    let (_, shard_rows, object_rows, tomb_rows, lease_rows) = tokio::try_join!(
        conn.batch_execute("BEGIN"),
        conn.query(&lock, &lock_params),
        conn.query(&fetch_objects, &key_params),
        conn.query(&fetch_tombs, &key_params),
        async {
            match &fence.owner {
                Some(_) => conn.query(&check, &check_params).await,
                None => Ok(Vec::new()),
            }
        },
    )?;

    let mut overlay = Overlay::default();
    for row in &shard_rows {
        let head = head_from_row(row)?;
        overlay.put_fetched_shard(head.shard, Some(record_of(head)));
    }
    if let Some((missing, _)) = changes
        .shards()
        .find(|(s, c)| !c.is_empty() && overlay.shard_record(*s).is_none())
    {
        conn.batch_execute("ROLLBACK").await?;
        return Err(Attempt::Refused(CommitError::UnknownShard(missing)));
    }
    if let Some(owner) = &fence.owner {
        let current: BTreeMap<String, i64> = lease_rows
            .iter()
            .map(|row| Ok((row.try_get::<_, String>(0)?, row.try_get::<_, i64>(1)?)))
            .collect::<PgResult<_>>()?;
        for (shard, _) in changes.shards().filter(|(_, c)| !c.is_empty()) {
            let Some(record) = overlay.shard_record(shard) else {
                continue;
            };
            // A shared shard is its zone's; a player's own shard is the player's.
            let key = match &record.scope {
                ShardScope::Shared => LeaseKey::Zone(record.zone.clone()),
                ShardScope::Perspective(p) => LeaseKey::Player(p.clone()),
            };
            let stored = key.stored();
            let held = fence.zones.get(&stored);
            if held.is_none() || held != current.get(&stored) {
                conn.batch_execute("ROLLBACK").await?;
                return Err(Attempt::Refused(CommitError::Fenced {
                    lease: key.to_string(),
                    owner: owner.clone(),
                }));
            }
        }
    }
    for (shard, shard_changes) in changes.shards() {
        for (id, _) in shard_changes.iter() {
            overlay.expect_object((shard, id));
        }
    }
    for row in &object_rows {
        let shard = ShardId(dec(row.try_get(0)?));
        let id = ObjectId(dec(row.try_get(1)?));
        let hash = state_hash_from(shard, id, row.try_get(3)?)?;
        overlay.put_fetched_object(
            (shard, id),
            LiveRow {
                version: Seq(dec(row.try_get(2)?)),
                hash,
                state: None,
            },
        );
    }
    for row in &tomb_rows {
        let shard = ShardId(dec(row.try_get(0)?));
        let id = ObjectId(dec(row.try_get(1)?));
        overlay.put_fetched_tombstone(
            (shard, id),
            TombRow {
                seq: Seq(dec(row.try_get(2)?)),
                at_ms: row.try_get(3)?,
            },
        );
    }

    let receipt = match logic::commit(&mut overlay, changes, now) {
        Ok(receipt) => receipt,
        Err(e) => {
            conn.batch_execute("ROLLBACK").await?;
            return Err(Attempt::Refused(e));
        }
    };
    write_and_commit(conn, &overlay, schema).await?;
    Ok(receipt)
}

/// One attempt at a trim: tombstones recorded before `cutoff_ms` go, shard
/// by shard, as `logic::trim_tombstones` decides.
pub(crate) async fn trim_once(conn: &Conn, cutoff_ms: i64) -> Result<TrimReport, Attempt<WriteError>> {
    conn.batch_execute("BEGIN").await?;
    let rows = conn
        .query(
            "SELECT DISTINCT shard FROM hoard_tombstones WHERE at_ms < $1",
            &[&cutoff_ms],
        )
        .await?;
    let shards: Vec<i64> = rows.iter().map(|r| r.try_get(0)).collect::<PgResult<_>>()?;
    if shards.is_empty() {
        conn.batch_execute("COMMIT").await?;
        return Ok(TrimReport::default());
    }
    let shard_rows = conn.query(LOCK_SHARDS, &[&shards]).await?;
    let tomb_rows = conn
        .query(
            "SELECT shard, object, seq, at_ms FROM hoard_tombstones WHERE shard = ANY($1) \
             ORDER BY shard, seq, object",
            &[&shards],
        )
        .await?;
    let mut overlay = Overlay::default();
    for row in &shard_rows {
        let head = head_from_row(row)?;
        overlay.put_fetched_shard(head.shard, Some(record_of(head)));
    }
    let mut all = Vec::with_capacity(tomb_rows.len());
    for row in &tomb_rows {
        all.push((
            ShardId(dec(row.try_get(0)?)),
            Tombstone {
                id: ObjectId(dec(row.try_get(1)?)),
                seq: Seq(dec(row.try_get(2)?)),
            },
            row.try_get::<_, i64>(3)?,
        ));
    }
    overlay.put_all_tombstones(all);
    let report = match logic::trim_tombstones(
        &mut overlay,
        chrono::DateTime::from_timestamp_millis(cutoff_ms).unwrap_or_default(),
    ) {
        Ok(report) => report,
        Err(e) => {
            conn.batch_execute("ROLLBACK").await?;
            return Err(Attempt::Refused(e));
        }
    };
    write_and_commit(conn, &overlay, None).await?;
    Ok(report)
}

/// Writes what the logic changed in `overlay`, and `schema` if given, and
/// commits: one statement per table, pipelined with `COMMIT` (a huge
/// commit's extra chunks go first, one round trip each).
async fn write_and_commit(conn: &Conn, overlay: &Overlay, schema: Option<&BTreeMap<String, u32>>) -> PgResult<()> {
    // Objects: upserts and deletes.
    let mut upserts: Vec<ObjectRow<'_>> = Vec::new();
    let (mut del_shards, mut del_objects) = (Vec::new(), Vec::new());
    let mut dirty: Vec<_> = overlay.dirty_objects.iter().copied().collect();
    dirty.sort_unstable();
    for key in dirty {
        match overlay.object(key) {
            Some(row) => upserts.push((
                enc(key.0.0),
                enc(key.1.0),
                enc(row.version.0),
                &row.hash[..],
                row.state.as_deref().unwrap_or_default(),
            )),
            None => {
                del_shards.push(enc(key.0.0));
                del_objects.push(enc(key.1.0));
            }
        }
    }
    // Tombstones: upserts and deletes.
    let (mut ts_shards, mut ts_objects, mut ts_seqs, mut ts_at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut td_shards, mut td_objects) = (Vec::new(), Vec::new());
    let mut dirty: Vec<_> = overlay.dirty_tombstones.iter().copied().collect();
    dirty.sort_unstable();
    for key in dirty {
        match overlay.tombstone_row(key) {
            Some(row) => {
                ts_shards.push(enc(key.0.0));
                ts_objects.push(enc(key.1.0));
                ts_seqs.push(enc(row.seq.0));
                ts_at.push(row.at_ms);
            }
            None => {
                td_shards.push(enc(key.0.0));
                td_objects.push(enc(key.1.0));
            }
        }
    }
    // Shard records.
    let (mut s_ids, mut s_epochs, mut s_seqs, mut s_digests, mut s_horizons) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut dirty: Vec<_> = overlay.dirty_shards.iter().copied().collect();
    dirty.sort_unstable();
    for shard in dirty {
        if let Some(record) = overlay.shard_record(shard) {
            s_ids.push(enc(shard.0));
            s_epochs.push(enc(record.epoch.0));
            s_seqs.push(enc(record.seq.0));
            s_digests.push(record.digest.to_bytes().to_vec());
            s_horizons.push(enc(record.horizon.0));
        }
    }
    let upsert_objects = conn.prepare_cached(UPSERT_OBJECTS).await?;
    let delete_objects = conn.prepare_cached(DELETE_OBJECTS).await?;
    let upsert_tombs = conn.prepare_cached(UPSERT_TOMBSTONES).await?;
    let delete_tombs = conn.prepare_cached(DELETE_TOMBSTONES).await?;
    let update_shards = conn.prepare_cached(UPDATE_SHARDS).await?;

    let mut chunks = upserts.chunks(ROWS_PER_STATEMENT).collect::<Vec<_>>();
    let last = chunks.pop().unwrap_or_default();
    for chunk in chunks {
        let c = columns(chunk);
        conn.execute(&upsert_objects, &[&c.0, &c.1, &c.2, &c.3, &c.4]).await?;
    }
    let c = columns(last);
    let object_params: [Param<'_>; 5] = [&c.0, &c.1, &c.2, &c.3, &c.4];
    let delete_params: [Param<'_>; 2] = [&del_shards, &del_objects];
    let tomb_params: [Param<'_>; 4] = [&ts_shards, &ts_objects, &ts_seqs, &ts_at];
    let tomb_delete_params: [Param<'_>; 2] = [&td_shards, &td_objects];
    let shard_params: [Param<'_>; 5] = [&s_ids, &s_epochs, &s_seqs, &s_digests, &s_horizons];
    let (schema_keys, schema_values): (Vec<String>, Vec<i64>) = schema
        .map(|s| {
            s.iter()
                .map(|(name, v)| (format!("{SCHEMA_PREFIX}{name}"), i64::from(*v)))
                .unzip()
        })
        .unwrap_or_default();
    let write_schema = schema.is_some();
    let schema_params: [Param<'_>; 2] = [&schema_keys, &schema_values];
    let clear_schema = conn.prepare_cached(CLEAR_SCHEMA).await?;
    let put_schema = conn.prepare_cached(WRITE_SCHEMA).await?;
    // Every statement is prepared already, so each request goes out on the
    // join's first poll, in this order, and `COMMIT` follows them all.
    tokio::try_join!(
        conn.execute(&upsert_objects, &object_params),
        conn.execute(&delete_objects, &delete_params),
        conn.execute(&upsert_tombs, &tomb_params),
        conn.execute(&delete_tombs, &tomb_delete_params),
        conn.execute(&update_shards, &shard_params),
        async {
            match write_schema {
                true => conn.execute(&clear_schema, &[]).await,
                false => Ok(0),
            }
        },
        async {
            match write_schema {
                true => conn.execute(&put_schema, &schema_params).await,
                false => Ok(0),
            }
        },
        conn.batch_execute("COMMIT"),
    )?;
    Ok(())
}

/// The columns of object rows, as the upsert statement's arrays.
fn columns<'a>(rows: &[ObjectRow<'a>]) -> ObjectColumns<'a> {
    let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &(s, o, v, h, st) in rows {
        c.0.push(s);
        c.1.push(o);
        c.2.push(v);
        c.3.push(h);
        c.4.push(st);
    }
    c
}
