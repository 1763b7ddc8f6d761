//! `hoard-bench schema`: what one component's schema change costs a
//! returning player of the demo world. For each component bumped, the demo
//! world (`assets/world`, imported by `hoard-demo world import`) is served
//! at the demo's registry and a player enters every zone (filling a cache);
//! then the store is brought to the next build's registry (that component one
//! version up, migrated on start, as `hoard_demo::registry_bumping` makes
//! it) and served again, and the player enters every zone with the cache
//! the old build left. Beside it, in the same run, the same entries with no
//! cache: what every returning player paid when a cache was keyed by the
//! whole registry's hash (any change made every cached shard cold).
//!
//! ```text
//! cargo run --release -p hoard-bench -- schema --demo-bin target/release/hoard-demo
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::Context;
use bevy_ecs::prelude::{Schedule, World};
use hoard_engine::store::WorldStore;
use hoard_engine::{PublishRegistry, Publisher, RedbStore, ZoneId};
use hoard_net::quic::client::{ClientOptions, HoardClient};
use hoard_net::quic::server::{Game, ServerHandle, ServerOptions, start};
use hoard_proto::intents::IntentRegistry;

use crate::report::{print_table, write_json};

/// Options of `schema`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The `hoard-demo` binary that imports the demo world.
    #[arg(long = "demo-bin", default_value = "target/release/hoard-demo")]
    demo: PathBuf,
    /// The world folder imported.
    #[arg(long, default_value = "assets/world")]
    world: PathBuf,
    /// The components bumped, one case each.
    #[arg(long, value_delimiter = ',', default_value = "house,item,zone,terrain")]
    components: Vec<String>,
}

/// A player's entry of every zone.
#[derive(Default, Debug, Clone, Copy)]
struct Entries {
    shards: usize,
    fresh: usize,
    delta: usize,
    snapshot: usize,
    bytes: u64,
}

impl Entries {
    fn add(&mut self, stats: &hoard_proto::sync::client::EntryStats) {
        self.shards += stats.shards as usize;
        self.fresh += stats.shards_fresh as usize;
        self.delta += stats.shards_delta as usize;
        self.snapshot += stats.shards_snapshot as usize;
        self.bytes += stats.bytes_rx;
    }
}

pub(crate) fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for component in &args.components {
        let bumped = hoard_demo::registry_bumping(component)
            .with_context(|| format!("the demo has no component {component:?}"))?;
        let (holding, warm, cold) = runtime
            .block_on(measure(args, bumped))
            .with_context(|| format!("bumping {component}"))?;
        let ratio = warm.bytes as f64 / cold.bytes.max(1) as f64;
        rows.push(vec![
            component.clone(),
            format!("{holding} of {}", warm.shards),
            format!("{} / {} / {}", warm.fresh, warm.delta, warm.snapshot),
            warm.bytes.to_string(),
            cold.bytes.to_string(),
            format!("{ratio:.3}"),
        ]);
        results.push(serde_json::json!({
            "component": component,
            "shards": warm.shards,
            "shards_holding_it": holding,
            "after_fresh": warm.fresh,
            "after_delta": warm.delta,
            "after_snapshot": warm.snapshot,
            "after_bytes": warm.bytes,
            "whole_cache_cold_bytes": cold.bytes,
            "ratio": ratio,
        }));
    }
    print_table(
        "a returning player's entry of every demo zone after one component's schema change",
        &[
            "component bumped",
            "shards holding it",
            "fresh / delta / snapshot",
            "bytes received",
            "bytes, whole cache cold (before)",
            "ratio",
        ],
        &rows,
    );
    write_json(out, "schema", &serde_json::json!({ "results": results }))
}

/// One case: returns the shards holding the bumped component, the warm
/// entries after the change, and the same entries with no cache.
async fn measure(args: &Args, bumped: PublishRegistry) -> anyhow::Result<(usize, Entries, Entries)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let status = Command::new(&args.demo)
        .args(["world", "import", "--data"])
        .arg(&data)
        .arg("--world")
        .arg(&args.world)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", args.demo.display()))?;
    anyhow::ensure!(status.success(), "importing the demo world failed");
    let store = Arc::new(RedbStore::open_dir(&data)?);
    let zones = store.zones()?;
    let cache = dir.path().join("cache");

    // The old build: the player fills the cache.
    let old = hoard_demo::registry();
    hoard_engine::schema::prepare(&*store, &old)?;
    let server = serve(&store, &data, &old).await?;
    enter_all(&server, &cache, &old, &zones).await?;
    server.shutdown().await;

    // The next build: migrated on start; the shards whose seq moved are
    // those holding the component.
    let before: Vec<_> = shard_seqs(&*store, &zones)?;
    hoard_engine::schema::prepare(&*store, &bumped)?;
    let after: Vec<_> = shard_seqs(&*store, &zones)?;
    let holding = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let server = serve(&store, &data, &bumped).await?;
    let warm = enter_all(&server, &cache, &bumped, &zones).await?;
    let cold = enter_all(&server, &dir.path().join("no-cache"), &bumped, &zones).await?;
    server.shutdown().await;
    Ok((holding, warm, cold))
}

fn shard_seqs(store: &dyn WorldStore, zones: &[ZoneId]) -> anyhow::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for zone in zones {
        for shard in store.zone_shards(zone)? {
            seqs.push(store.shard_head(shard)?.seq.0);
        }
    }
    Ok(seqs)
}

/// Serves `store` with `registry` (no game: nothing changes while measured).
async fn serve(store: &Arc<RedbStore>, data: &Path, registry: &PublishRegistry) -> anyhow::Result<ServerHandle> {
    let game = Game::new(
        World::new(),
        Schedule::default(),
        Publisher::new(registry.clone()),
        IntentRegistry::new(),
    );
    let options = ServerOptions::new("127.0.0.1:0".parse::<SocketAddr>()?, data.to_owned());
    Ok(start(options, store.clone(), game).await?)
}

/// Connects with `cache` and enters every zone, one after another.
async fn enter_all(
    server: &ServerHandle,
    cache: &Path,
    registry: &PublishRegistry,
    zones: &[ZoneId],
) -> anyhow::Result<Entries> {
    let token = server.auth.issue("returning", chrono::Utc::now().timestamp() + 3600)?;
    let options = ClientOptions::new(server.addr, cache.to_owned(), token).with_pin(server.identity);
    let client = HoardClient::connect(options, registry.clone()).await?;
    let mut entries = Entries::default();
    for zone in zones {
        entries.add(&client.enter_zone(zone).await?);
        client.leave_zone(zone).await?;
    }
    client.close_and_wait(std::time::Duration::from_secs(2)).await;
    Ok(entries)
}
