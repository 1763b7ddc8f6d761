//! `hoard-bench stores`: the two durable stores side by side — the embedded
//! redb store and the PostgreSQL store on this machine's server — committing
//! the same ticks of changes to the same imported reference zone, in one
//! run, alternating tick by tick so both see the same machine load.
//!
//! Beside them, the floor of each: a raw transaction of the same rows in the
//! same engine (redb: one write transaction inserting the rows; PostgreSQL:
//! one multi-row `INSERT ... ON CONFLICT` of the rows, committed), which is
//! what the storage costs without hoard's seqs, digests, tombstones and
//! version index.
//!
//! The PostgreSQL store runs in a schema of its own, dropped at the end.

use std::path::Path;
use std::time::Duration;

use hoard_engine::store::{PgOptions, PgStore, ShardSpec, WorldStore};
use hoard_engine::{Change, ChangeSet, RedbStore, ShardId, ZoneId};
use serde_json::json;

use crate::report::{median, ms, print_table, time, write_json};
use hoard_bench::reference;

/// Options of the stores bench.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    zone: crate::report::ZoneArgs,
    /// Changed objects per tick.
    #[arg(long, default_value_t = 1_000)]
    tick_objects: usize,
    /// Ticks committed to each store.
    #[arg(long, default_value_t = 60)]
    ticks: usize,
    /// The PostgreSQL server (a schema of the bench's own is made and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
}

/// The rows of a tick's upserts: shard, object, state.
type Rows = Vec<(i64, i64, Vec<u8>)>;

fn rows(set: &ChangeSet) -> Rows {
    set.shards()
        .flat_map(|(shard, changes)| {
            changes.iter().filter_map(move |(id, c)| match c {
                Change::Upsert(state) => Some((shard.0 as i64, id.0 as i64, state.as_bytes().to_vec())),
                Change::Remove => None,
            })
        })
        .collect()
}

const RAW_TABLE: redb::TableDefinition<(u64, u64), &[u8]> = redb::TableDefinition::new("raw");

fn raw_redb(db: &redb::Database, rows: &Rows) -> anyhow::Result<()> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(RAW_TABLE)?;
        for (shard, id, state) in rows {
            table.insert((*shard as u64, *id as u64), state.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// A plain client for the raw PostgreSQL floor and the schema's setup.
struct RawPg {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    schema: String,
}

impl RawPg {
    fn connect(url: &str, schema: &str) -> anyhow::Result<RawPg> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = runtime.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA {schema}; CREATE TABLE {schema}.raw (shard BIGINT, object BIGINT, \
                     state BYTEA, PRIMARY KEY (shard, object))"
                ))
                .await?;
            Ok::<_, tokio_postgres::Error>(client)
        })?;
        Ok(RawPg {
            runtime,
            client,
            schema: schema.to_owned(),
        })
    }

    fn commit(&self, rows: &Rows) -> anyhow::Result<()> {
        let shards: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let states: Vec<&[u8]> = rows.iter().map(|r| r.2.as_slice()).collect();
        let sql = format!(
            "INSERT INTO {}.raw SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BYTEA[]) \
             ON CONFLICT (shard, object) DO UPDATE SET state = EXCLUDED.state",
            self.schema
        );
        self.runtime.block_on(async {
            self.client.batch_execute("BEGIN").await?;
            self.client.execute(&sql, &[&shards, &ids, &states]).await?;
            self.client.batch_execute("COMMIT").await
        })?;
        Ok(())
    }
}

impl Drop for RawPg {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        if let Err(e) = self.runtime.block_on(self.client.batch_execute(&sql)) {
            eprintln!("could not drop the bench's schema {}: {e}", self.schema);
        }
    }
}

fn import(store: &dyn WorldStore, zone: &reference::ReferenceZone) -> anyhow::Result<Duration> {
    let specs: Vec<ShardSpec> = (0..zone.shards).map(|s| ShardSpec::shared(ShardId(s))).collect();
    store.create_zone(&ZoneId::new("reference")?, &specs)?;
    let mut all = ChangeSet::new();
    for (id, shard, object) in &zone.objects {
        all.upsert(*shard, *id, object.state());
    }
    let (took, result) = time(|| store.commit(&all));
    result?;
    Ok(took)
}

fn quantile(mut samples: Vec<Duration>, q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

pub(crate) fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let zone = args.zone.generate();
    println!(
        "reference zone: {} objects in {} shards; {} ticks of {} changes per store",
        zone.objects.len(),
        zone.shards,
        args.ticks,
        args.tick_objects
    );
    let dir = tempfile::tempdir()?;
    let schema = format!("hoard_bench_{}", std::process::id());
    let raw_pg = RawPg::connect(&args.postgres, &format!("{schema}_raw"))?;
    let redb = RedbStore::open_dir(dir.path())?;
    let pg = PgStore::open(&PgOptions::new(&args.postgres).with_schema(&schema))?;
    let raw_redb_db = redb::Database::create(dir.path().join("raw.redb"))?;
    let redb_import = import(&redb, &zone)?;
    let pg_import = import(&pg, &zone)?;

    let mut rng = fastrand::Rng::with_seed(args.zone.seed ^ 0x5707e);
    let ticks: Vec<ChangeSet> = (0..args.ticks)
        .map(|_| {
            let mut tick = ChangeSet::new();
            for _ in 0..args.tick_objects {
                let (id, shard, object) = &zone.objects[rng.usize(..zone.objects.len())];
                tick.upsert(*shard, *id, object.mutated(&mut rng).state());
            }
            tick
        })
        .collect();
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for tick in &ticks {
        let r = rows(tick);
        let (t, result) = time(|| redb.commit(tick));
        result?;
        samples[0].push(t);
        let (t, result) = time(|| pg.commit(tick));
        result?;
        samples[1].push(t);
        let (t, result) = time(|| raw_redb(&raw_redb_db, &r));
        result?;
        samples[2].push(t);
        let (t, result) = time(|| raw_pg.commit(&r));
        result?;
        samples[3].push(t);
    }
    // Both stores end equal: the same heads after the same commits.
    for shard in 0..zone.shards {
        let (a, b) = (redb.shard_head(ShardId(shard))?, pg.shard_head(ShardId(shard))?);
        anyhow::ensure!(
            (a.seq, a.digest) == (b.seq, b.digest),
            "shard {shard}: redb and PostgreSQL disagree"
        );
    }
    let names = ["hoard, redb", "hoard, PostgreSQL", "raw redb txn", "raw PostgreSQL txn"];
    let mut table = Vec::new();
    let mut cases = Vec::new();
    for (name, s) in names.iter().zip(&samples) {
        let total: Duration = s.iter().sum();
        let rate = (args.ticks * args.tick_objects) as f64 / total.as_secs_f64();
        let (p50, p99) = (median(s.clone()), quantile(s.clone(), 0.99));
        table.push(vec![
            (*name).to_owned(),
            format!("{:.1}", ms(p50)),
            format!("{:.1}", ms(p99)),
            format!("{rate:.0}"),
        ]);
        cases.push(json!({
            "case": name,
            "commit_p50_ms": ms(p50),
            "commit_p99_ms": ms(p99),
            "changes_per_sec": rate,
        }));
    }
    print_table(
        &format!(
            "durable commits of {} changes, one tick per commit, side by side",
            args.tick_objects
        ),
        &["case", "p50 ms", "p99 ms", "changes/s"],
        &table,
    );
    let ratio = median(samples[1].clone()).as_secs_f64() / median(samples[0].clone()).as_secs_f64();
    println!(
        "PostgreSQL ÷ redb commit time (median): {ratio:.2}; import of {} objects: redb {:.0} ms, PostgreSQL {:.0} ms",
        zone.objects.len(),
        ms(redb_import),
        ms(pg_import)
    );
    drop(pg);
    // The store's schema goes with the raw client's cleanup.
    let drop_store = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    raw_pg.runtime.block_on(raw_pg.client.batch_execute(&drop_store))?;
    write_json(
        out,
        "stores",
        &json!({
            "objects": zone.objects.len(),
            "shards": zone.shards,
            "tick_objects": args.tick_objects,
            "ticks": args.ticks,
            "import_ms": {"redb": ms(redb_import), "postgres": ms(pg_import)},
            "cases": cases,
            "postgres_over_redb_median": ratio,
        }),
    )
}
