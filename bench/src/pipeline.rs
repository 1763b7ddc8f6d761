//! `hoard-bench engine`, its pipeline part: ticks of changes offered to the
//! server's sans-IO tick core at a fixed rate and committed by a commit
//! thread exactly as the server's driver runs it (one job in flight; the
//! frames of one commit's time go as the next group).
//!
//! For each offer rate: durable changes per second, commits and ticks per
//! commit, and each tick's delay from its offer to the moment its commit was
//! reported durable (when its deltas may go out). Beside them, in the same
//! run: raw redb write transactions of the same bytes, one per tick (the
//! floor the issue names) and one per group hoard formed (what the same
//! grouping costs the storage engine alone).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hoard_engine::store::{CommitError, CommitReceipt, ShardSpec, WorldStore};
use hoard_engine::{Change, ChangeSet, RedbStore, ShardId, ZoneId};
use hoard_proto::sync::tick::{CommitJob, TickCore};
use serde_json::json;

use crate::report::{median, ms, print_table, time};
use hoard_bench::reference;

/// What the pipeline bench runs.
pub(crate) struct Params {
    pub(crate) seed: u64,
    pub(crate) tick_objects: usize,
    pub(crate) ticks: usize,
    pub(crate) offer_every_ms: Vec<f64>,
}

/// A fresh store at `dir` holding the whole reference zone, and how long
/// its one import commit took.
pub(crate) fn imported_store(zone: &reference::ReferenceZone, dir: &Path) -> anyhow::Result<(RedbStore, Duration)> {
    std::fs::create_dir_all(dir)?;
    let store = RedbStore::open_dir(dir)?;
    let specs: Vec<ShardSpec> = (0..zone.shards).map(|s| ShardSpec::shared(ShardId(s))).collect();
    store.create_zone(&ZoneId::new("reference")?, &specs)?;
    let mut all = ChangeSet::new();
    for (id, shard, object) in &zone.objects {
        all.upsert(*shard, *id, object.state());
    }
    let (took, result) = time(|| store.commit(&all));
    result?;
    Ok((store, took))
}

type Rows = Vec<(u64, u64, Vec<u8>)>;

fn rows(set: &ChangeSet) -> Rows {
    set.shards()
        .flat_map(|(shard, changes)| {
            changes.iter().filter_map(move |(id, c)| match c {
                Change::Upsert(state) => Some((shard.0, id.0, state.as_bytes().to_vec())),
                Change::Remove => None,
            })
        })
        .collect()
}

/// One raw redb transaction writing `rows`, durable.
fn raw_txn(raw: &redb::Database, rows: &Rows) -> anyhow::Result<()> {
    const RAW: redb::TableDefinition<(u64, u64), &[u8]> = redb::TableDefinition::new("raw");
    let txn = raw.begin_write()?;
    {
        let mut table = txn.open_table(RAW)?;
        for (shard, id, state) in rows {
            table.insert((*shard, *id), state.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

type Done = (u64, Result<CommitReceipt, CommitError>);

/// The driver's side of the pipeline: the core, the commit thread's
/// channels, and what each commit carried.
struct Driver {
    core: TickCore,
    jobs: mpsc::SyncSender<CommitJob>,
    /// Offer times of the ticks gathered since the last job started.
    waiting: Vec<Instant>,
    /// Offer times of the ticks in the job in flight.
    in_flight: Vec<Instant>,
    /// Ticks per commit.
    groups: Vec<usize>,
    /// Each tick's delay from its offer to its commit reported durable.
    delays: Vec<Duration>,
    start: Instant,
}

impl Driver {
    fn submit_due(&mut self) -> anyhow::Result<()> {
        if let Some(job) = self.core.poll_commit() {
            self.in_flight = std::mem::take(&mut self.waiting);
            self.jobs.send(job)?;
        }
        Ok(())
    }

    fn done(&mut self, (id, result): Done) -> anyhow::Result<()> {
        let now = Instant::now();
        self.groups.push(self.in_flight.len());
        self.delays.extend(self.in_flight.drain(..).map(|t| now - t));
        self.core
            .commit_done(self.start.elapsed().as_secs_f64(), id, result)
            .map_err(anyhow::Error::msg)?;
        self.submit_due()
    }
}

/// What one run measured.
struct Offered {
    /// Ticks per commit.
    groups: Vec<usize>,
    /// Each tick's delay from its offer to its commit reported durable.
    delays: Vec<Duration>,
    /// From the first offer until every change was durable.
    elapsed: Duration,
}

/// One run: `ticks` offered every `every`, until every change is durable.
fn offer(store: Arc<dyn WorldStore>, ticks: &[ChangeSet], every: Duration) -> anyhow::Result<Offered> {
    let (job_tx, job_rx) = mpsc::sync_channel::<CommitJob>(1);
    let (done_tx, done_rx) = mpsc::sync_channel::<Done>(1);
    let committer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for job in job_rx {
                let result = hoard_engine::store::run_commit(&*store, &job.changes, job.recover_first);
                if done_tx.send((job.id, result)).is_err() {
                    return;
                }
            }
        })
    };
    let start = Instant::now();
    let mut driver = Driver {
        core: TickCore::new(60.0),
        jobs: job_tx,
        waiting: Vec::new(),
        in_flight: Vec::new(),
        groups: Vec::new(),
        delays: Vec::new(),
        start,
    };
    for (i, tick) in ticks.iter().cloned().enumerate() {
        // Until the tick is due, commits that finish are taken in at once,
        // as the server's world thread does between frames.
        let due = start + every.mul_f64(i as f64);
        loop {
            let wait = due.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(wait) {
                Ok(done) => driver.done(done)?,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(e) => anyhow::bail!("the commit thread stopped: {e}"),
            }
        }
        driver
            .core
            .commit_frame(start.elapsed().as_secs_f64(), tick)
            .map_err(anyhow::Error::msg)?;
        driver.waiting.push(due.max(start));
        driver.submit_due()?;
    }
    while driver.core.commit_in_flight() {
        let done = done_rx.recv()?;
        driver.done(done)?;
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(driver.core.pending() == 0, "changes left undurable");
    let Driver {
        jobs, groups, delays, ..
    } = driver;
    // The commit thread ends once the job channel closes.
    drop(jobs);
    committer
        .join()
        .map_err(|_| anyhow::anyhow!("the commit thread panicked"))?;
    Ok(Offered {
        groups,
        delays,
        elapsed,
    })
}

fn quantile(mut samples: Vec<Duration>, q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples.get(i).copied().unwrap_or_default()
}

pub(crate) fn run(params: &Params, zone: &reference::ReferenceZone, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let store: Arc<dyn WorldStore> = Arc::new(imported_store(zone, dir)?.0);
    let raw = redb::Database::create(dir.join("raw.redb"))?;
    let mut rng = fastrand::Rng::with_seed(params.seed ^ 0x919e);
    let mut table = Vec::new();
    let mut results = Vec::new();
    for &every_ms in &params.offer_every_ms {
        let ticks: Vec<ChangeSet> = (0..params.ticks)
            .map(|_| {
                let mut tick = ChangeSet::new();
                for _ in 0..params.tick_objects {
                    let (id, shard, object) = &zone.objects[rng.usize(..zone.objects.len())];
                    tick.upsert(*shard, *id, object.mutated(&mut rng).state());
                }
                tick
            })
            .collect();
        let offered: usize = ticks.iter().map(ChangeSet::len).sum();
        let every = Duration::from_secs_f64(every_ms / 1e3);
        let driver = offer(store.clone(), &ticks, every)?;
        let hoard_rate = offered as f64 / driver.elapsed.as_secs_f64();

        // The floor, side by side: raw transactions of the same bytes, one
        // per tick, then one per group hoard formed.
        let tick_rows: Vec<Rows> = ticks.iter().map(rows).collect();
        let (raw_tick, result) = time(|| tick_rows.iter().try_for_each(|r| raw_txn(&raw, r)));
        result?;
        let mut grouped = Vec::new();
        let mut at = 0;
        for &n in &driver.groups {
            let mut set = ChangeSet::new();
            for tick in &ticks[at..at + n] {
                set.extend(tick.clone());
            }
            at += n;
            grouped.push(rows(&set));
        }
        let (raw_group, result) = time(|| grouped.iter().try_for_each(|r| raw_txn(&raw, r)));
        result?;
        let raw_tick_rate = offered as f64 / raw_tick.as_secs_f64();
        let raw_group_rate = offered as f64 / raw_group.as_secs_f64();
        // Offered faster than anything can follow, a rate is capacity; at a
        // rate the store follows, it is just the offer.
        let offer_rate = 1e3 / every_ms * params.tick_objects as f64;
        let commits = driver.groups.len();
        let per_commit = params.ticks as f64 / commits.max(1) as f64;
        let p50 = median(driver.delays.clone());
        let p99 = quantile(driver.delays.clone(), 0.99);
        table.push(vec![
            format!("{every_ms}"),
            format!("{offer_rate:.0}"),
            format!("{hoard_rate:.0}"),
            format!("{commits}"),
            format!("{per_commit:.1}"),
            format!("{:.1} / {:.1}", ms(p50), ms(p99)),
            format!("{raw_tick_rate:.0}"),
            format!("{:.2}", hoard_rate / raw_tick_rate),
            format!("{raw_group_rate:.0}"),
        ]);
        results.push(json!({
            "offer_every_ms": every_ms,
            "offered_changes_per_sec": offer_rate,
            "hoard_changes_per_sec": hoard_rate,
            "commits": commits,
            "ticks_per_commit": per_commit,
            "tick_to_durable_p50_ms": ms(p50),
            "tick_to_durable_p99_ms": ms(p99),
            "raw_redb_txn_per_tick_changes_per_sec": raw_tick_rate,
            "ratio_hoard_over_raw_per_tick": hoard_rate / raw_tick_rate,
            "raw_redb_txn_per_hoard_group_changes_per_sec": raw_group_rate,
        }));
    }
    print_table(
        &format!(
            "pipeline: {} ticks of {} changes per rate, tick core + commit thread (durable)",
            params.ticks, params.tick_objects
        ),
        &[
            "offer every ms",
            "offered/s",
            "hoard durable/s",
            "commits",
            "ticks/commit",
            "tick→durable p50 / p99 ms",
            "raw txn per tick /s",
            "hoard ÷ raw",
            "raw txn per group /s",
        ],
        &table,
    );
    Ok(json!({
        "ticks": params.ticks,
        "tick_objects": params.tick_objects,
        "runs": results,
    }))
}
