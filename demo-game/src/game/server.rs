//! Setting up the demo's server side: the world (imported from world files
//! on first start, loaded from the store afterwards), the inventory zone, the
//! zone map, the rules and the join hook, as a Bevy App on the hoard server
//! plugin. Shared by
//! `hoard-demo server` and `hoard-demo play`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bevy_app::{App, Update};
use bevy_ecs::prelude::*;
use hoard_bevy::{HoardServerPlugin, ZoneTransients};
use hoard_engine::store::WorldStore;
use hoard_engine::{HoardUrl, Published, Publisher, ZoneId, load_world};
use hoard_net::quic::server::ServerOptions;

use super::ZoneInfo;
use super::hosting::ZoneServer;
use super::presence::{ZoneNames, forget_departed, presence};
use super::rules::{
    ACTION, Action, NextObject, Players, RateBuckets, Tick, TickRate, ZoneMap, advance_tick, apply_actions,
    ensure_inventory,
};

/// Object ids a server of some zones reserves for what its players build
/// (2^40: more than a server builds between two starts).
const OBJECT_ID_BLOCK: u64 = 1 << 40;

/// A server's world store and how messages name it.
#[derive(Clone)]
pub(crate) struct ServerStore {
    pub(crate) store: Arc<dyn WorldStore>,
    /// The same store when it is PostgreSQL (zone leases).
    pub(crate) postgres: Option<Arc<hoard_engine::store::PgStore>>,
    /// The store file, or the database (without its password).
    pub(crate) label: String,
}

impl ServerStore {
    /// The store `url` names (`postgres://...`, its tables in `schema`), or
    /// the embedded redb store in `data_dir` when there is none.
    pub(crate) fn open(data_dir: &Path, url: Option<&str>, schema: Option<&str>) -> anyhow::Result<ServerStore> {
        match url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let mut options = hoard_engine::store::PgOptions::new(url);
                options.schema = schema.map(str::to_owned);
                let store = Arc::new(hoard_engine::store::PgStore::open(&options)?);
                let label = store.database().to_owned();
                Ok(ServerStore {
                    store: store.clone(),
                    postgres: Some(store),
                    label,
                })
            }
            Some(other) => anyhow::bail!(
                "--store {other:?}: give a PostgreSQL URL (postgres://user@host:port/db), \
                 or leave --store out for the embedded store in the data directory"
            ),
            None => {
                let store = hoard_engine::RedbStore::open_dir(data_dir)?;
                let label = store.path().display().to_string();
                Ok(ServerStore {
                    store: Arc::new(store),
                    postgres: None,
                    label,
                })
            }
        }
    }
}

/// Builds the game over `store`. On first start (an empty store) the world
/// in `world_dir` is checked and imported; `progress` follows the import.
/// Checks every shard's digest against its objects before anything is
/// served; a damaged shard is refused by name (clients would otherwise fail
/// to verify that zone for ever).
fn verify_store(store: &ServerStore) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let damage = hoard_engine::store::verify(&*store.store)
        .map_err(|e| anyhow::anyhow!("{} is damaged: {e}; restore it from a backup", store.label))?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "every shard verified"
    );
    if let Some(first) = damage.first() {
        for d in &damage {
            tracing::error!(shard = %d.shard, problem = %d.problem, "damaged shard");
        }
        anyhow::bail!(
            "{} is damaged in {} places (first: shard {}: {}); restore it from a backup \
             (`hoard-demo store verify` lists them all)",
            store.label,
            damage.len(),
            first.shard,
            first.problem
        );
    }
    Ok(())
}

/// Fills `world` with the game over `store`: on first start (an empty store)
/// the world in `world_dir` is checked and imported (`progress` follows the
/// import); afterwards it is verified and loaded. Returns the publisher that
/// knows the loaded objects.
fn populate(
    server_store: &ServerStore,
    world: &mut World,
    world_dir: &Path,
    tick_hz: u32,
    zone_server: Option<&ZoneServer>,
    service: &HoardUrl,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<Publisher> {
    let served: &[ZoneId] = zone_server.map_or(&[], |z| &z.zones);
    let store = &server_store.store;
    let mut publisher = Publisher::new(super::registry());
    let zones = store.zones()?;
    if zones.is_empty() {
        anyhow::ensure!(
            world_dir.is_dir(),
            "no world at {}: pass --world DIR (`hoard-demo world generate --out DIR` makes one)",
            world_dir.display()
        );
        tracing::info!(world = %world_dir.display(), "first start: importing the world");
        eprintln!("first start: importing the world from {}", world_dir.display());
        let data = crate::world::load_valid(world_dir, &|_, _| {})?;
        crate::world::store::import(&**store, &data, &mut publisher, world, progress)?;
        // A server of some zones keeps only those in its world.
        if !served.is_empty() {
            for zone in store.zones()?.iter().filter(|z| !served.contains(z)) {
                for shard in store.zone_shards(zone)? {
                    publisher.forget_shard(world, shard);
                }
            }
        }
    } else {
        crate::world::store::ensure_import_finished(&**store, &server_store.label)?;
        verify_store(server_store)?;
        // A world written by an older build: its components are migrated
        // (or refused, naming them) before anything decodes them.
        let schema = hoard_engine::schema::prepare(&**store, publisher.registry())
            .map_err(|e| anyhow::anyhow!("{}: {e}", server_store.label))?;
        for (component, from, to, objects) in &schema.migrated {
            eprintln!("migrated {objects} objects' {component} from schema version {from} to {to}");
        }
        // A server of some zones loads only those; its players' inventories
        // come with them (`leases::host_players`).
        let report = match served.is_empty() {
            true => load_world(&**store, &mut publisher, world, service)?,
            false => hoard_engine::load_zones(&**store, &mut publisher, world, served, service)?,
        };
        for problem in &report.problems {
            tracing::warn!(%problem, "object not loaded");
            eprintln!("warning: {problem}");
        }
    }
    // The next id for a new object; u64::MAX means none are left (it is
    // never handed out), so an object at the top of the range cannot make
    // the counter wrap onto existing ids.
    let next = world
        .query::<&Published>()
        .iter(world)
        .map(|p| p.object.0)
        .max()
        .map_or(Some(1), |max| max.checked_add(1))
        .unwrap_or(u64::MAX);
    // The world's servers each build from a block of their own.
    let next = match zone_server {
        Some(z) => z.store.reserve_object_ids(OBJECT_ID_BLOCK, next)?.start,
        None => next,
    };
    let (zone_map, zone_names) = zone_map(&**store, world)?;
    anyhow::ensure!(
        !zone_names.0.is_empty(),
        "the store holds no zone this game can read (a world from an older hoard-demo?): \
         move its data directory away to start afresh"
    );
    world.insert_resource(zone_map);
    let served_indices = (!served.is_empty()).then(|| {
        zone_names
            .0
            .iter()
            .filter(|(_, name)| served.contains(name))
            .map(|(index, _)| *index)
            .collect()
    });
    world.insert_resource(super::rules::ServedZones(served_indices));
    world.insert_resource(zone_names);
    world.insert_resource(NextObject(next));
    world.insert_resource(TickRate(tick_hz.max(1)));
    world.init_resource::<Tick>();
    world.init_resource::<Players>();
    world.init_resource::<RateBuckets>();
    world.init_resource::<super::chat::ChatBuckets>();
    Ok(publisher)
}

/// The join hook: the player's inventory shard exists before they act
/// (and, on a server of some zones, this server hosts them: their lease).
fn join_hook(zone_server: Option<ZoneServer>) -> hoard_net::quic::server::JoinHook {
    Arc::new(move |player: &str, store: &dyn WorldStore| {
        ensure_inventory(player, store)?;
        if let Some(z) = &zone_server {
            z.host(player);
        }
        Ok(())
    })
}

/// The game as a Bevy App served by [`HoardServerPlugin`] (`hoard-demo
/// server` and `play`): the rules run in `Update`, hoard's systems around
/// them. `served`: the zones players may act in here (empty: all).
pub(crate) fn app(
    store: &ServerStore,
    world_dir: &Path,
    options: ServerOptions,
    zone_server: Option<&ZoneServer>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<App> {
    let mut app = App::new();
    let publisher = populate(
        store,
        app.world_mut(),
        world_dir,
        options.tick_hz,
        zone_server,
        &options.world_url(options.listen),
        progress,
    )?;
    let plugin = HoardServerPlugin::with_registry(options, store.store.clone(), super::registry())
        .with_publisher(publisher)
        .intent::<Action>(ACTION)
        .intent::<super::chat::Say>(super::chat::SAY)
        .server_message::<super::chat::Chat>(super::chat::CHAT)
        .on_join(join_hook(zone_server.cloned()));
    if let Some(z) = zone_server {
        app.insert_resource(super::hosting::Hosted::new(z))
            .init_resource::<super::rules::Deferred>();
    }
    let plugin = match zone_server.cloned() {
        Some(z) => plugin.on_leave(Arc::new(move |player: &str| z.unhost_unseen(player))),
        None => plugin,
    };
    // Started here so a port in use, damaged keys or a full disk come back
    // as the error the binary prints, not as a panic.
    app.add_plugins(plugin.start()?).add_systems(
        Update,
        (
            super::hosting::host_players,
            advance_tick,
            forget_departed,
            apply_actions,
            super::chat::chat,
            presence_to_transients,
        )
            .chain(),
    );
    Ok(app)
}

/// Runs the server App one frame per tick until `stop` is set (returns
/// `None`) or the server fails (returns why). A game system that panics
/// ends the process.
pub(crate) fn run_frames(app: &mut App, tick_hz: u32, stop: &std::sync::atomic::AtomicBool) -> Option<String> {
    let tick = std::time::Duration::from_secs_f64(1.0 / f64::from(tick_hz.max(1)));
    let mut next = std::time::Instant::now();
    loop {
        app.update();
        if app.should_exit().is_some() {
            return Some(
                app.world()
                    .resource::<hoard_bevy::HoardServer>()
                    .failure()
                    .unwrap_or_else(|| "the server stopped".into()),
            );
        }
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        next += tick;
        let now = std::time::Instant::now();
        if next > now {
            // Between frames, commits that finish are published at once.
            if let Err(reason) = hoard_bevy::server::idle_until(app, next) {
                return Some(reason);
            }
        } else {
            next = now;
        }
    }
}

/// Presence (who stands where) as this frame's transient zone state.
fn presence_to_transients(world: &mut World) {
    let states = presence(world);
    world.resource_mut::<ZoneTransients>().0 = states;
}

/// Which zone lies beyond which edge of which, by zone index, and each
/// index's name, from the zones' `zone` objects.
fn zone_map(store: &dyn WorldStore, world: &mut World) -> anyhow::Result<(ZoneMap, ZoneNames)> {
    let mut index_of: HashMap<String, u32> = HashMap::new();
    let mut infos = Vec::new();
    let mut shard_zone = HashMap::new();
    for zone in store.zones()? {
        for shard in store.zone_shards(&zone)? {
            shard_zone.insert(shard, zone.to_string());
        }
    }
    for (published, info) in world.query::<(&Published, &ZoneInfo)>().iter(world) {
        if let Some(name) = shard_zone.get(&published.shard) {
            index_of.insert(name.clone(), info.index);
            infos.push(info.clone());
        }
    }
    let find = |name: &Option<String>| name.as_ref().and_then(|n| index_of.get(n).copied());
    let names = ZoneNames(
        index_of
            .iter()
            .filter_map(|(name, index)| Some((*index, ZoneId::new(name).ok()?)))
            .collect(),
    );
    let mut map = ZoneMap::default();
    for info in infos {
        map.0.insert(
            info.index,
            [find(&info.north), find(&info.south), find(&info.east), find(&info.west)],
        );
    }
    Ok((map, names))
}
