//! `hoard-bench engine`: commit throughput, change gathering and loading on
//! the reference zone, each beside its floor.
//!
//! - commit: ticks of 1,000 changed objects spread over the 64 shards,
//!   durable, against a raw redb transaction writing the same bytes (the
//!   floor: what the storage engine costs without seqs, digests and indexes);
//! - pipeline: the same ticks offered to the server's tick core faster than
//!   one commit each can keep up with, committed by a commit thread as the
//!   server's driver does (the frames of one commit's time go as one
//!   group): durable changes per second, beside raw redb transactions of
//!   one tick each and of the same groups;
//! - gather: one tick with 0, 100 and 10,000 of 100,000 published entities
//!   changed (the cost must follow the changes, not the world);
//! - load: the whole store into a fresh ECS world, against reading the same
//!   bytes from the store with the same parallelism.

use std::path::Path;

use bevy_ecs::prelude::*;
use hoard_engine::store::WorldStore;
use hoard_engine::{ChangeSet, HoardUrl, Publisher, RedbStore, ShardId, load_world};
use rayon::prelude::*;
use serde_json::json;

use crate::report::{median, ms, print_table, time, write_json};
use hoard_bench::reference::{self, RefObject};

/// Options of the engine bench.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    zone: crate::report::ZoneArgs,
    /// Changed objects per commit tick.
    #[arg(long, default_value_t = 1_000)]
    tick_objects: usize,
    /// Commit ticks measured.
    #[arg(long, default_value_t = 30)]
    ticks: usize,
    /// Ticks offered to the commit pipeline.
    #[arg(long, default_value_t = 200)]
    pipeline_ticks: usize,
    /// Milliseconds between two ticks offered to the pipeline, one run
    /// each: the demo's 20 Hz, then faster than one commit per tick can
    /// follow, so groups form.
    #[arg(long, value_delimiter = ',', default_value = "50,10,2")]
    offer_every_ms: Vec<f64>,
    /// Repetitions of each gather and load case.
    #[arg(long, default_value_t = 9)]
    reps: usize,
}

pub(crate) fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let zone = args.zone.generate();
    let bytes: usize = zone.objects.iter().map(|(_, _, o)| o.state().as_bytes().len()).sum();
    println!(
        "reference zone: {} objects in {} shards, {:.2} MB of state",
        zone.objects.len(),
        zone.shards,
        bytes as f64 / 1e6
    );
    // Stores live on the real disk (under target/), not a tmpfs.
    let dir = hoard_bench::scratch_dir()?;
    let commit = bench_commit(args, &zone, dir.path())?;
    let pipeline = crate::pipeline::run(
        &crate::pipeline::Params {
            seed: args.zone.seed,
            tick_objects: args.tick_objects,
            ticks: args.pipeline_ticks,
            offer_every_ms: args.offer_every_ms.clone(),
        },
        &zone,
        &dir.path().join("pipeline"),
    )?;
    let gather = bench_gather(args, &zone);
    let load = bench_load(args, dir.path())?;
    write_json(
        out,
        "engine",
        &json!({
            "zone": { "objects": zone.objects.len(), "shards": zone.shards, "state_bytes": bytes },
            "commit": commit,
            "pipeline": pipeline,
            "gather": gather,
            "load": load,
        }),
    )
}

fn bench_commit(args: &Args, zone: &reference::ReferenceZone, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let (store, initial) = crate::pipeline::imported_store(zone, dir)?;

    const RAW: redb::TableDefinition<(u64, u64), &[u8]> = redb::TableDefinition::new("raw");
    let raw = redb::Database::create(dir.join("raw.redb"))?;

    let mut rng = fastrand::Rng::with_seed(args.zone.seed ^ 0xc0ffee);
    let mut hoard_times = Vec::new();
    let mut raw_times = Vec::new();
    for _ in 0..args.ticks {
        let mut tick = ChangeSet::new();
        let mut raw_rows = Vec::with_capacity(args.tick_objects);
        for _ in 0..args.tick_objects {
            let (id, shard, object) = &zone.objects[rng.usize(..zone.objects.len())];
            let state = object.mutated(&mut rng).state();
            raw_rows.push((shard.0, id.0, state.as_bytes().to_vec()));
            tick.upsert(*shard, *id, state);
        }
        let (t, result) = time(|| store.commit(&tick));
        result?;
        hoard_times.push(t);
        let (t, result) = time(|| -> anyhow::Result<()> {
            let txn = raw.begin_write()?;
            {
                let mut table = txn.open_table(RAW)?;
                for (shard, id, state) in &raw_rows {
                    table.insert((*shard, *id), state.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        });
        result?;
        raw_times.push(t);
    }
    let hoard = median(hoard_times);
    let raw = median(raw_times);
    let per_sec = |d: std::time::Duration| args.tick_objects as f64 / d.as_secs_f64();
    print_table(
        &format!(
            "commit: ticks of {} changed objects over {} shards, durable (median of {})",
            args.tick_objects, zone.shards, args.ticks
        ),
        &["case", "ms/tick", "objects/s", "ratio"],
        &[
            vec![
                "hoard commit".into(),
                format!("{:.3}", ms(hoard)),
                format!("{:.0}", per_sec(hoard)),
                format!("{:.2}", hoard.as_secs_f64() / raw.as_secs_f64()),
            ],
            vec![
                "raw redb txn, same bytes".into(),
                format!("{:.3}", ms(raw)),
                format!("{:.0}", per_sec(raw)),
                "1.00".into(),
            ],
        ],
    );
    println!(
        "  (initial import of the whole zone in one commit: {:.1} ms)",
        ms(initial)
    );
    Ok(json!({
        "tick_objects": args.tick_objects,
        "ticks": args.ticks,
        "hoard_ms_per_tick": ms(hoard),
        "hoard_objects_per_sec": per_sec(hoard),
        "raw_redb_ms_per_tick": ms(raw),
        "ratio_hoard_over_raw": hoard.as_secs_f64() / raw.as_secs_f64(),
        "initial_import_ms": ms(initial),
    }))
}

fn bench_gather(args: &Args, zone: &reference::ReferenceZone) -> serde_json::Value {
    let mut world = World::new();
    let mut publisher = Publisher::new(reference::registry());
    let entities: Vec<(Entity, RefObject)> = zone
        .objects
        .iter()
        .map(|(id, shard, object)| (object.spawn(&mut world, *id, *shard), object.clone()))
        .collect();
    let (first, first_tick) = time(|| publisher.gather(&mut world));
    let mut rng = fastrand::Rng::with_seed(args.zone.seed ^ 0x9a7e);
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for changed in [0usize, 100, 10_000] {
        let mut samples = Vec::new();
        for _ in 0..args.reps {
            for _ in 0..changed {
                let (entity, _) = &entities[rng.usize(..entities.len())];
                touch(&mut world, *entity, &mut rng);
            }
            let (t, gathered) = time(|| publisher.gather(&mut world));
            assert!(gathered.changes.len() <= changed);
            samples.push(t);
        }
        let m = median(samples);
        let per_change = if changed == 0 {
            String::from("-")
        } else {
            format!("{:.2}", m.as_secs_f64() * 1e6 / changed as f64)
        };
        rows.push(vec![changed.to_string(), format!("{:.3}", ms(m)), per_change]);
        results.push(json!({ "changed": changed, "median_ms": ms(m) }));
    }
    print_table(
        &format!(
            "gather: one tick with {} published entities (median of {})",
            entities.len(),
            args.reps
        ),
        &["changed", "ms/tick", "us/change"],
        &rows,
    );
    println!(
        "  (first gather, publishing all {}: {:.1} ms)",
        first_tick.changes.len(),
        ms(first)
    );
    json!({ "entities": entities.len(), "cases": results, "first_gather_ms": ms(first) })
}

/// Changes one component of an entity, as gameplay would.
fn touch(world: &mut World, entity: Entity, rng: &mut fastrand::Rng) {
    if let Some(mut item) = world.get_mut::<reference::Item>(entity) {
        item.count = item.count.wrapping_add(1);
    } else if let Some(mut strip) = world.get_mut::<reference::TerrainStrip>(entity) {
        let i = rng.usize(..strip.heights.len());
        strip.heights[i] = strip.heights[i].wrapping_add(1);
    } else if let Some(mut house) = world.get_mut::<reference::House>(entity) {
        house.colour.1 = house.colour.1.wrapping_add(1);
    }
}

fn bench_load(args: &Args, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let store = RedbStore::open_dir(dir)?;
    let shards: Vec<ShardId> = store
        .zones()?
        .iter()
        .map(|z| store.zone_shards(z))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let service = HoardUrl::service("localhost", 1, "bench");
    let mut load_times = Vec::new();
    let mut read_times = Vec::new();
    let mut objects = 0;
    for _ in 0..args.reps {
        let (t, bytes) = time(|| {
            shards
                .par_iter()
                .map(|s| {
                    store
                        .snapshot(*s)
                        .map(|snap| snap.objects.iter().map(|o| o.state.as_bytes().len()).sum::<usize>())
                })
                .collect::<Result<Vec<_>, _>>()
        });
        std::hint::black_box(bytes?);
        read_times.push(t);
        let mut world = World::new();
        let mut publisher = Publisher::new(reference::registry());
        let (t, report) = time(|| load_world(&store, &mut publisher, &mut world, &service));
        let report = report?;
        anyhow::ensure!(report.problems.is_empty(), "load problems: {:?}", report.problems);
        objects = report.objects;
        load_times.push(t);
        // Dropping a world of 100,000 entities is not part of the load.
        drop(world);
    }
    // The server's start-up check: every shard's digest recomputed from its
    // objects (hoard_engine::store::verify).
    let mut verify_times = Vec::new();
    for _ in 0..args.reps {
        let (t, damage) = time(|| hoard_engine::store::verify(&store));
        anyhow::ensure!(damage?.is_empty(), "the bench store is damaged");
        verify_times.push(t);
    }
    let load = median(load_times);
    let read = median(read_times);
    let verify = median(verify_times);
    let ratio = load.as_secs_f64() / read.as_secs_f64();
    print_table(
        &format!(
            "load: {objects} objects from redb (median of {}, {} threads)",
            args.reps,
            rayon::current_num_threads()
        ),
        &["case", "ms", "ratio"],
        &[
            vec![
                "load_world into an ECS world".into(),
                format!("{:.1}", ms(load)),
                format!("{ratio:.2}"),
            ],
            vec![
                "verify every shard's digest (start-up check)".into(),
                format!("{:.1}", ms(verify)),
                format!("{:.2}", verify.as_secs_f64() / read.as_secs_f64()),
            ],
            vec![
                "read the same bytes from the store".into(),
                format!("{:.1}", ms(read)),
                "1.00".into(),
            ],
        ],
    );
    Ok(json!({
        "objects": objects,
        "load_ms": ms(load),
        "read_ms": ms(read),
        "verify_ms": ms(verify),
        "ratio_load_over_read": ratio,
        "ratio_verify_over_read": verify.as_secs_f64() / read.as_secs_f64(),
    }))
}
