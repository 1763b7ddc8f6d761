//! `hoard-demo cache inspect | verify | clear`: the shard cache as a player
//! or modder sees it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use hoard_engine::{ObjectState, ServerIdentity, ZoneId};
use hoard_world_cache::format::decode_shard;
use hoard_world_cache::{ClearScope, LockPolicy, ShardEntry, WorldCache};

/// Options shared by the cache commands.
#[derive(Args)]
pub(crate) struct CacheArgs {
    /// The cache root (default: $XDG_CACHE_HOME/hoard, or ~/.cache/hoard).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Show the cached shards as a tree: server / service / perspective / zone / shard,
    /// with object counts, hwm, age and size.
    ///
    /// Example: `hoard-demo cache inspect --json`
    Inspect {
        /// Print one JSON array of shard entries instead of a tree.
        #[arg(long)]
        json: bool,
        /// Print one shard file's header and objects as JSON (a path, absolute
        /// or relative to the cache root, as `inspect --json` lists them).
        #[arg(long, value_name = "SHARD")]
        dump: Option<PathBuf>,
        /// Print what a `hoard://HOST:PORT/SERVICE/ZONE/SHARD[/OBJECT]` URL
        /// names, as this cache holds it (the world at HOST:PORT is the one
        /// this cache met there; through a relay, name it with --world).
        #[arg(long, value_name = "URL", conflicts_with = "dump")]
        url: Option<hoard_engine::HoardUrl>,
        /// The world a --url is resolved in (its fingerprint).
        #[arg(long, requires = "url")]
        world: Option<ServerIdentity>,
    },
    /// Check every cached shard fully; exit with status 2 and list the damage if any.
    ///
    /// Example: `hoard-demo cache verify`
    Verify,
    /// Remove cached shards: all of them, or one server's, service's or zone's.
    ///
    /// Example: `hoard-demo cache clear --zone meadow`
    Clear {
        /// Only this server (its 64-hex-character identity).
        #[arg(long)]
        server: Option<ServerIdentity>,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only this zone.
        #[arg(long)]
        zone: Option<ZoneId>,
    },
}

/// The default cache root.
pub(crate) fn default_cache_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("hoard");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/hoard"),
        None => PathBuf::from(".hoard-cache"),
    }
}

/// Runs a cache command; returns the process exit code.
pub(crate) fn run(args: CacheArgs) -> anyhow::Result<i32> {
    let root = args.cache_dir.unwrap_or_else(default_cache_dir);
    let policy = match args.command {
        CacheCommand::Clear { .. } => LockPolicy::WaitUpTo(std::time::Duration::from_secs(3)),
        _ => LockPolicy::ReadOnlyIfBusy,
    };
    let cache = WorldCache::open(&root, policy).with_context(|| format!("opening cache {}", root.display()))?;
    match args.command {
        CacheCommand::Inspect { dump: Some(shard), .. } => dump(&root, &shard),
        CacheCommand::Inspect {
            url: Some(url), world, ..
        } => resolve(&root, &cache, &url, world),
        CacheCommand::Inspect { json: true, .. } => {
            println!("{}", serde_json::to_string_pretty(&cache.inventory())?);
            Ok(0)
        }
        CacheCommand::Inspect { .. } => {
            print_tree(&root, &cache.inventory());
            Ok(0)
        }
        CacheCommand::Verify => {
            let entries = cache.inventory().len();
            let damage = cache.verify();
            if damage.is_empty() {
                println!("{entries} cached shards verified, no damage");
                return Ok(0);
            }
            println!(
                "{} of {entries} cached shards are damaged (they will be fetched again):",
                damage.len()
            );
            for d in &damage {
                println!("  {}: {}", d.path.display(), d.problem);
            }
            Ok(2)
        }
        CacheCommand::Clear { server, service, zone } => {
            let report = cache.clear(&ClearScope { server, service, zone })?;
            println!(
                "removed {} cached shards ({})",
                report.shards,
                human_bytes(report.bytes)
            );
            Ok(0)
        }
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / 1048576.0),
        n if n >= 1 << 10 => format!("{:.1} KB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn print_tree(root: &Path, entries: &[ShardEntry]) {
    println!("{}", root.display());
    if entries.is_empty() {
        println!("  (empty)");
        return;
    }
    let mut sorted: Vec<&ShardEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.server, &a.service, &a.perspective, &a.zone, a.shard).cmp(&(
            &b.server,
            &b.service,
            &b.perspective,
            &b.zone,
            b.shard,
        ))
    });
    let mut last: (Option<&str>, Option<&str>, Option<&str>, Option<&str>) = (None, None, None, None);
    for e in sorted {
        if last.0 != Some(&e.server) {
            println!("  server {}", e.server);
            last = (Some(&e.server), None, None, None);
        }
        if last.1 != Some(&e.service) {
            println!("    {}", e.service);
            last = (last.0, Some(&e.service), None, None);
        }
        if last.2 != Some(&e.perspective) {
            println!("      {}", e.perspective);
            last = (last.0, last.1, Some(&e.perspective), None);
        }
        if last.3 != Some(&e.zone) {
            let zone: Vec<&ShardEntry> = entries
                .iter()
                .filter(|x| {
                    x.server == e.server && x.service == e.service && x.perspective == e.perspective && x.zone == e.zone
                })
                .collect();
            let objects: u64 = zone.iter().filter_map(|x| x.objects).sum();
            let bytes: u64 = zone.iter().map(|x| x.bytes).sum();
            println!(
                "        {}  ({} shards, {objects} objects, {})",
                e.zone,
                zone.len(),
                human_bytes(bytes)
            );
            last = (last.0, last.1, last.2, Some(&e.zone));
        }
        match (&e.problem, e.objects, e.hwm) {
            (Some(p), _, _) => println!("          {:>6}  unreadable: {p}", e.shard),
            (None, Some(objects), Some(hwm)) => println!(
                "          {:>6}  {objects:>6} objects  hwm {hwm:<8} age {:<4} {}",
                e.shard,
                human_age(e.age_secs),
                human_bytes(e.bytes)
            ),
            _ => println!("          {:>6}", e.shard),
        }
    }
}

/// Decodes one component's MessagePack bytes into JSON (MessagePack is self-describing).
fn component_json(bytes: &[u8]) -> serde_json::Value {
    rmp_serde::from_slice::<serde_json::Value>(bytes)
        .unwrap_or_else(|e| serde_json::json!({ "undecodable": e.to_string(), "bytes": bytes.len() }))
}

fn state_json(state: &ObjectState) -> serde_json::Value {
    match state.components() {
        Ok(parts) => serde_json::Value::Object(
            parts
                .into_iter()
                .map(|(n, b)| (n.to_owned(), component_json(b)))
                .collect(),
        ),
        Err(e) => serde_json::json!({ "invalid_state": e.to_string() }),
    }
}

/// The URL of a service of the world `server`, at the first address this
/// cache met it at (`None` if it only met it through relays).
fn world_url(root: &Path, server: ServerIdentity, service: &str) -> Option<hoard_engine::HoardUrl> {
    let known = hoard_trust::tls::KnownServers::new(root.join("known_servers"));
    known.addresses_of(server).into_iter().find_map(|addr| {
        let addr: std::net::SocketAddr = addr.parse().ok()?;
        Some(hoard_engine::HoardUrl::service(
            addr.ip().to_string(),
            addr.port(),
            service,
        ))
    })
}

/// Prints what `url` names as the cache holds it: a shard (header and
/// objects) or one object.
fn resolve(
    root: &Path,
    cache: &WorldCache,
    url: &hoard_engine::HoardUrl,
    world: Option<ServerIdentity>,
) -> anyhow::Result<i32> {
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let address = format!("{host}:{}", url.port);
    let known = hoard_trust::tls::KnownServers::new(root.join("known_servers"));
    let world = world
        .or_else(|| known.get(&address))
        .with_context(|| format!("this cache met no world at {address}; name the world with --world FINGERPRINT"))?;
    let (Some(zone), Some(shard)) = (&url.zone, url.shard) else {
        anyhow::bail!("{url} names no shard: give service/zone/shard[/object]");
    };
    let registry = crate::game::registry().hash();
    // The shared copy, or the one of a perspective that holds the shard.
    let copy = cache
        .inventory()
        .into_iter()
        .filter(|e| {
            e.server == world.to_hex() && e.service == url.service && e.zone == zone.as_str() && e.shard == shard.0
        })
        .find_map(|e| {
            let perspective = (e.perspective != "shared").then_some(e.perspective.as_str());
            let key = hoard_world_cache::ShardKey::new(world, &url.service, perspective, zone.clone(), shard).ok()?;
            cache.load(&key, registry)
        })
        .with_context(|| format!("{url}: this cache holds no copy of that shard"))?;
    let h = &copy.header;
    let out = match url.object {
        None => serde_json::json!({
            "url": url.to_string(),
            "hwm": h.hwm.0,
            "epoch": h.epoch.to_string(),
            "objects": copy.objects.len(),
            "snapshot_time": h.snapshot_time.to_rfc3339(),
        }),
        Some(id) => {
            let object = copy
                .objects
                .iter()
                .find(|o| o.id == id)
                .with_context(|| format!("{url}: the cached shard (at seq {}) does not hold object {id}", h.hwm))?;
            serde_json::json!({
                "url": url.to_string(),
                "id": object.id.0,
                "version": object.version.0,
                "shard_hwm": h.hwm.0,
                "components": state_json(&object.state),
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

fn dump(root: &Path, shard: &Path) -> anyhow::Result<i32> {
    let path = if shard.is_absolute() || shard.exists() {
        shard.to_owned()
    } else {
        root.join(shard)
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let shard = decode_shard(&bytes).with_context(|| format!("{} is not a valid shard file", path.display()))?;
    let h = &shard.header;
    let base = world_url(root, h.key.server, &h.key.service);
    let out = serde_json::json!({
        "path": path,
        "server": h.key.server.to_hex(),
        "service": h.key.service,
        "perspective": h.key.perspective,
        "zone": h.key.zone.as_str(),
        "shard": h.key.shard.0,
        "epoch": h.epoch.to_string(),
        "hwm": h.hwm.0,
        "digest": h.digest.to_string(),
        "registry": h.registry.to_string(),
        "snapshot_time": h.snapshot_time.to_rfc3339(),
        "objects": shard.objects.iter().map(|o| serde_json::json!({
            "url": base.as_ref().map(|b| b.object(h.key.zone.clone(), h.key.shard, o.id).to_string()),
            "id": o.id.0,
            "version": o.version.0,
            "components": state_json(&o.state),
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
