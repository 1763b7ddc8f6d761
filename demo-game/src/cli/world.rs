//! `hoard-demo world`: the modder's tools. The world is RON files under
//! `assets/world/<zone>/<shard>.scn.ron`; mods are overlay folders of the
//! same layout under `assets/mods/<mod>/`. These commands check them, move
//! them in and out of a server's store, show what a mod changes, apply it,
//! draw a zone, and generate worlds of any size.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bevy_ecs::world::World;
use clap::{Args, Subcommand};
use hoard_engine::{Publisher, RedbStore, ZoneId};

use crate::cli::progress::Progress;
use crate::game::server::ServerStore;
use crate::world::problems::Problems;
use crate::world::{Change, WorldData, WorldObject, check, files, generate, render, store};

/// Options of `world`.
#[derive(Args)]
pub(crate) struct WorldArgs {
    #[command(subcommand)]
    command: WorldCommand,
    /// Use the world store on PostgreSQL at this URL instead of a data
    /// directory's (`postgres://user@host:port/db`). Commands that write it
    /// refuse while any server of the world is running.
    #[arg(long, global = true)]
    store: Option<String>,
    /// The PostgreSQL schema holding the world (default: `public`).
    #[arg(long, global = true, requires = "store")]
    store_schema: Option<String>,
}

/// The world shipped with the demo, found next to the sources it was built from.
pub(crate) fn default_world_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/world");
    dir.canonicalize().unwrap_or(dir)
}

#[derive(Subcommand)]
enum WorldCommand {
    /// Check a world, and mods over it, reporting every problem as file:line:column.
    ///
    /// Example: `hoard-demo world validate --mod assets/mods/harvest-festival`
    Validate {
        /// The world folder.
        #[arg(long, default_value_os_t = default_world_dir())]
        world: PathBuf,
        /// A mod folder to check over the world (repeat for several, applied in order).
        #[arg(long = "mod")]
        mods: Vec<PathBuf>,
    },
    /// Import a world into an empty server store.
    ///
    /// Example: `hoard-demo world import --data ./server-data --world assets/world`
    Import {
        /// The server's data directory (or give --store).
        #[arg(long)]
        data: Option<PathBuf>,
        /// The world folder.
        #[arg(long, default_value_os_t = default_world_dir())]
        world: PathBuf,
    },
    /// Write a server's world (not the players' inventories) out as world files.
    ///
    /// Example: `hoard-demo world export --data ./server-data --out ./exported`
    Export {
        /// The server's data directory (the server must not be running; or give --store).
        #[arg(long)]
        data: Option<PathBuf>,
        /// The folder to write (created; existing world files in it are replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show what a mod changes: each object added (+), changed (~) or removed (-).
    ///
    /// Example: `hoard-demo world diff --mod assets/mods/harvest-festival`
    /// (against the shipped world), or `--data ./server-data` to compare with a server's store.
    Diff {
        /// The mod folder.
        #[arg(long = "mod")]
        mod_dir: PathBuf,
        /// The world folder to compare with.
        #[arg(long, default_value_os_t = default_world_dir(), conflicts_with = "data")]
        world: PathBuf,
        /// A server's data directory to compare with instead.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Apply a mod to a server's store, offline. Clients that connect later
    /// receive only the changed objects, as a delta.
    ///
    /// Example: `hoard-demo world apply --data ./server-data --mod assets/mods/harvest-festival`
    Apply {
        /// The server's data directory (stop the server first; or give --store).
        #[arg(long)]
        data: Option<PathBuf>,
        /// The mod folder.
        #[arg(long = "mod")]
        mod_dir: PathBuf,
    },
    /// Draw a zone as a PNG picture.
    ///
    /// Example: `hoard-demo world render --zone meadow --out meadow.png`
    Render {
        /// The zone.
        #[arg(long)]
        zone: ZoneId,
        /// The picture to write.
        #[arg(long)]
        out: PathBuf,
        /// Pixels per tile.
        #[arg(long, default_value_t = 3)]
        scale: u32,
        /// The world folder to draw from.
        #[arg(long, default_value_os_t = default_world_dir(), conflicts_with = "data")]
        world: PathBuf,
        /// A server's data directory to draw from instead.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Show what a `hoard://HOST:PORT/SERVICE/ZONE/SHARD/OBJECT` URL names
    /// (the URL `hoard-demo cache inspect --dump` prints for a cached object):
    /// the object, and the file and line it is written at.
    ///
    /// Example: `hoard-demo world show hoard://127.0.0.1:7000/world/meadow/3/42`
    Show {
        /// The URL (its host names where the world is served; the world is
        /// read from --world or --data).
        url: hoard_engine::HoardUrl,
        /// The world folder to read.
        #[arg(long, default_value_os_t = default_world_dir(), conflicts_with = "data")]
        world: PathBuf,
        /// A server's data directory to read instead.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Write a synthetic but plausible world of a given size, the same for the same seed.
    ///
    /// Example: `hoard-demo world generate --zones 16 --objects-per-zone 20000 --out ./big-world`,
    /// then `hoard-demo server --world ./big-world --data ./big-data`.
    Generate {
        /// Zones, laid out on a square grid.
        #[arg(long, default_value_t = 4)]
        zones: u32,
        /// Houses and items per zone (each zone's 2,048 terrain rows come on top).
        #[arg(long, default_value_t = 700)]
        objects_per_zone: u32,
        /// The folder to write.
        #[arg(long)]
        out: PathBuf,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub(crate) fn run(args: WorldArgs) -> anyhow::Result<i32> {
    let at = StoreAt {
        url: args.store,
        schema: args.store_schema,
    };
    let open_store = |data: Option<&Path>| at.open(data);
    match args.command {
        WorldCommand::Validate { world, mods } => validate(&world, &mods),
        WorldCommand::Import { data, world } => {
            let world_data = load_valid(&world)?;
            let opened = open_store(data.as_deref())?;
            ensure_no_server(&opened)?;
            let store = &*opened.store;
            let mut publisher = Publisher::new(crate::game::registry());
            let progress = Progress::new("importing", "objects");
            let n = store::import(
                store,
                &world_data,
                &mut publisher,
                &mut World::new(),
                &progress.callback(),
            )?;
            progress.finish();
            println!(
                "imported {n} objects in {} zones into {}",
                world_data.zones.len(),
                opened.label
            );
            Ok(0)
        }
        WorldCommand::Export { data, out } => {
            write_files(&store::read(&*open_store(data.as_deref())?.store)?, &out, "exporting")
        }
        WorldCommand::Diff { mod_dir, world, data } => {
            let base = match &data {
                Some(data) => store::read(&*open_store(Some(data))?.store)?,
                None if at.url.is_some() => store::read(&*open_store(None)?.store)?,
                None => load_valid(&world)?,
            };
            let (_, changes) = overlay_valid(base, &mod_dir)?;
            print_changes(&changes);
            Ok(0)
        }
        WorldCommand::Apply { data, mod_dir } => {
            let opened = open_store(data.as_deref())?;
            ensure_no_server(&opened)?;
            let store = &*opened.store;
            // One load serves both: its data is checked with the mod over
            // it, its entities receive the changes.
            let mut loaded = store::load(store)?;
            let (_, changes) = overlay_valid(std::mem::take(&mut loaded.data), &mod_dir)?;
            if changes.is_empty() {
                println!("{} changes nothing in this store", mod_dir.display());
                return Ok(0);
            }
            let receipt = store::apply(store, loaded, &changes)?;
            print_changes(&changes);
            for head in &receipt.heads {
                println!("shard {} of {} is now at seq {}", head.shard.0, head.zone, head.seq.0);
            }
            Ok(0)
        }
        WorldCommand::Render {
            zone,
            out,
            scale,
            world,
            data,
        } => {
            let source = match &data {
                Some(data) => store::read(&*open_store(Some(data))?.store)?,
                None if at.url.is_some() => store::read(&*open_store(None)?.store)?,
                None => load_valid(&world)?,
            };
            let progress = Progress::new("drawing", "layers");
            let picture = render::render(&source, &zone, scale, &progress.callback())?;
            render::write_png(&picture, &out)?;
            progress.finish();
            println!(
                "drew {zone} ({}×{} px) to {}",
                picture.width,
                picture.height,
                out.display()
            );
            Ok(0)
        }
        WorldCommand::Show { url, world, data } => {
            let source = match &data {
                Some(data) => store::read(&*open_store(Some(data))?.store)?,
                None if at.url.is_some() => store::read(&*open_store(None)?.store)?,
                None => load_valid(&world)?,
            };
            show(&source, &url)
        }
        WorldCommand::Generate {
            zones,
            objects_per_zone,
            out,
            seed,
        } => {
            let world = generate::generate(&generate::GenerateOptions {
                zones,
                objects_per_zone,
                seed,
            })?;
            write_files(&world, &out, "writing")
        }
    }
}

/// Prints the object `url` names in `world`, with where it is written.
fn show(world: &WorldData, url: &hoard_engine::HoardUrl) -> anyhow::Result<i32> {
    let (Some(zone), Some(shard), Some(object)) = (&url.zone, url.shard, url.object) else {
        anyhow::bail!("{url} names no object: give service/zone/shard/object");
    };
    anyhow::ensure!(
        world.zones.get(zone).is_some_and(|s| s.contains(&shard)),
        "{url}: the world has no shard {shard} in zone {zone}"
    );
    let Some(o) = world.objects.get(&object.0).filter(|o| o.shard == shard) else {
        anyhow::bail!("{url}: shard {shard} holds no object {object}");
    };
    println!(
        "{} {} in shard {} of {zone}, at {}",
        o.thing.name(),
        o.id,
        o.shard.0,
        o.source
    );
    println!("{}", o.thing.to_ron());
    Ok(0)
}

/// Writes `world` as files under `out`, with a progress bar labelled `verb`.
fn write_files(world: &WorldData, out: &Path, verb: &str) -> anyhow::Result<i32> {
    let progress = Progress::new(verb, "shards");
    files::write_world(world, out, &progress.callback())?;
    progress.finish();
    println!(
        "wrote {} objects in {} zones to {}",
        world.objects.len(),
        world.zones.len(),
        out.display()
    );
    Ok(0)
}

/// Which store a command works on: a PostgreSQL one, or a data directory's.
struct StoreAt {
    url: Option<String>,
    schema: Option<String>,
}

impl StoreAt {
    /// Opens the store, explaining the usual reason a data directory's is
    /// busy, and refuses one whose first import did not finish (exporting
    /// or changing a part of a world would pass it off as the whole).
    fn open(&self, data: Option<&Path>) -> anyhow::Result<ServerStore> {
        let opened = self.open_any(data)?;
        store::ensure_import_finished(&*opened.store, &opened.label)?;
        Ok(opened)
    }

    fn open_any(&self, data: Option<&Path>) -> anyhow::Result<ServerStore> {
        if let Some(url) = &self.url {
            anyhow::ensure!(data.is_none(), "give --data DIR or --store URL, not both");
            return ServerStore::open(Path::new("."), Some(url), self.schema.as_deref());
        }
        let data = data.context("give the server's --data DIR (or --store URL)")?;
        let store = RedbStore::open_dir(data).with_context(|| {
            format!(
                "opening the store in {} (a running server holds it: stop the server first)",
                data.display()
            )
        })?;
        let label = store.path().display().to_string();
        Ok(ServerStore {
            store: std::sync::Arc::new(store),
            postgres: None,
            label,
        })
    }
}

/// A PostgreSQL world shared by servers has no file lock: a tool writing
/// it refuses while any server of the world holds a lease (it would change
/// zones behind their backs).
fn ensure_no_server(opened: &ServerStore) -> anyhow::Result<()> {
    let Some(pg) = &opened.postgres else {
        return Ok(());
    };
    let live = pg.live_leases()?;
    if let Some(first) = live.first() {
        anyhow::bail!(
            "the world is being served ({} live leases; {} is leased to {} at {}): stop its servers first, \
             or wait until their leases lapse",
            live.len(),
            first.key,
            first.owner,
            first.address
        );
    }
    Ok(())
}

/// Reads and checks a world folder, with a progress bar.
pub(crate) fn load_valid(dir: &Path) -> anyhow::Result<WorldData> {
    let progress = Progress::new("reading", "files");
    let world = crate::world::load_valid(dir, &progress.callback());
    progress.finish();
    world
}

/// `base` with the mod in `dir` over it, checked; every problem is in the error.
fn overlay_valid(mut base: WorldData, dir: &Path) -> anyhow::Result<(WorldData, Vec<Change>)> {
    let mut problems = Problems::default();
    let overlay = files::read_mod(dir, &mut problems)?;
    let changes = base.overlay(overlay, &mut problems);
    if problems.is_empty() {
        check::check(&base, &mut problems);
    }
    problems.into_result(&format!("{} over its world", dir.display()))?;
    Ok((base, changes))
}

fn validate(world: &Path, mods: &[PathBuf]) -> anyhow::Result<i32> {
    let mut problems = Problems::default();
    let mut data = files::read_world(world, &mut problems, &|_, _| {})?;
    for dir in mods {
        let overlay = files::read_mod(dir, &mut problems)?;
        data.overlay(overlay, &mut problems);
    }
    if problems.is_empty() {
        check::check(&data, &mut problems);
    }
    for problem in problems.iter() {
        println!("{problem}");
    }
    let shards: usize = data.zones.values().map(|s| s.len()).sum();
    let summary = format!(
        "{}: {} zones, {shards} shards, {} objects",
        world.display(),
        data.zones.len(),
        data.objects.len()
    );
    if problems.is_empty() {
        println!("{summary}{}: no problem", mods_suffix(mods));
        Ok(0)
    } else {
        eprintln!("{summary}{}: {} problem(s)", mods_suffix(mods), problems.len());
        Ok(1)
    }
}

fn mods_suffix(mods: &[PathBuf]) -> String {
    if mods.is_empty() {
        return String::new();
    }
    let names: Vec<String> = mods.iter().map(|m| m.display().to_string()).collect();
    format!(" with {}", names.join(", "))
}

fn print_object(sign: char, o: &WorldObject) {
    println!(
        "{sign} {} {} in shard {}: {}",
        o.thing.name(),
        o.id,
        o.shard.0,
        o.thing.to_ron()
    );
}

fn print_changes(changes: &[Change]) {
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    for change in changes {
        match change {
            Change::Added(o) => {
                added += 1;
                print_object('+', o);
            }
            Change::Changed { old, new } => {
                changed += 1;
                let moved = if old.shard == new.shard {
                    String::new()
                } else {
                    format!(" (moves from shard {})", old.shard.0)
                };
                println!("~ {} {} in shard {}{moved}:", new.thing.name(), new.id, new.shard.0);
                println!("    was {}", old.thing.to_ron());
                println!("    now {}", new.thing.to_ron());
            }
            Change::Removed(o) => {
                removed += 1;
                print_object('-', o);
            }
        }
    }
    println!("{added} added, {changed} changed, {removed} removed");
}
