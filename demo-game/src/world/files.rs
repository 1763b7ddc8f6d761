//! The folder layout of world data: `<world>/<zone>/<shard>.scn.ron`, one
//! folder per zone and one file per shard, and the same layout inside each
//! mod folder. Reading collects every problem instead of stopping at the
//! first; writing replaces a folder's files atomically one by one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use hoard_engine::{ShardId, ZoneId};
use rayon::prelude::*;

use super::problems::{Problem, Problems, Source};
use super::scene::{self, SceneFile};
use super::{Overlay, WorldData, WorldObject};
use crate::game::rules::INVENTORY_ZONE;

/// The suffix of world files.
pub(crate) const SUFFIX: &str = ".scn.ron";
/// The largest world file read (a shard of 100,000 objects is about 12 MiB).
pub(crate) const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One parsed file and the zone and shard its path names.
struct ShardFile {
    zone: ZoneId,
    shard: ShardId,
    scene: SceneFile,
}

/// Reads every `<zone>/<shard>.scn.ron` under `dir`, reporting what is wrong
/// with names and contents to `problems`. `progress` is called once per file.
fn read_tree(
    dir: &Path,
    problems: &mut Problems,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<Vec<ShardFile>> {
    let mut paths = Vec::new();
    let zones = std::fs::read_dir(dir).with_context(|| format!("reading the world folder {}", dir.display()))?;
    let mut zone_dirs: Vec<PathBuf> = zones
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    zone_dirs.sort();
    for zone_dir in zone_dirs {
        let name = zone_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let zone = match ZoneId::new(&name) {
            Ok(zone) if name != INVENTORY_ZONE => zone,
            Ok(_) => {
                problems.push(Problem::in_file(
                    &zone_dir,
                    format!("`{INVENTORY_ZONE}` is the players' inventories, not a zone a world can have"),
                ));
                continue;
            }
            Err(e) => {
                problems.push(Problem::in_file(&zone_dir, format!("not a zone name: {e}")));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&zone_dir)
            .with_context(|| format!("reading {}", zone_dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        for path in files {
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(stem) = file_name.strip_suffix(SUFFIX) else {
                if file_name.ends_with(".ron") {
                    problems.push(Problem::in_file(
                        &path,
                        format!("world files are named after their shard: <shard>{SUFFIX}"),
                    ));
                }
                continue;
            };
            match stem.parse::<u64>() {
                Ok(shard) => paths.push((zone.clone(), ShardId(shard), path)),
                Err(_) => problems.push(Problem::in_file(
                    &path,
                    format!("`{stem}` is not a shard number; world files are named <shard>{SUFFIX}"),
                )),
            }
        }
    }
    // Parsing dominates (RON reads at a few MB/s a core): files are parsed
    // in parallel, and their problems reported in file order.
    let total = paths.len() as u64;
    let done = AtomicU64::new(0);
    let parsed: Vec<anyhow::Result<(Option<ShardFile>, Problems)>> = paths
        .into_par_iter()
        .map(|(zone, shard, path)| {
            let result = read_shard_file(zone, shard, &path);
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            result
        })
        .collect();
    let mut out = Vec::with_capacity(parsed.len());
    for result in parsed {
        let (file, found) = result?;
        problems.extend(found);
        out.extend(file);
    }
    Ok(out)
}

/// Reads and parses one world file; `None` when it cannot be parsed at all.
fn read_shard_file(zone: ZoneId, shard: ShardId, path: &Path) -> anyhow::Result<(Option<ShardFile>, Problems)> {
    let mut problems = Problems::default();
    // A FIFO or a device would block or never end: only regular files
    // (through symlinks) are world files.
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        problems.push(Problem::in_file(
            path,
            "not a regular file; world files are plain files",
        ));
        return Ok((None, problems));
    }
    let size = meta.len();
    if size > MAX_FILE_BYTES {
        problems.push(Problem::in_file(
            path,
            format!("the file is {size} bytes; a world file is at most {MAX_FILE_BYTES}"),
        ));
        return Ok((None, problems));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?,
            MAX_FILE_BYTES + 1,
        ),
        &mut bytes,
    )
    .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        problems.push(Problem::in_file(
            path,
            format!("the file grew past {MAX_FILE_BYTES} bytes while read"),
        ));
        return Ok((None, problems));
    }
    let Ok(text) = String::from_utf8(bytes) else {
        problems.push(Problem::in_file(path, "the file is not UTF-8 text"));
        return Ok((None, problems));
    };
    let file: Arc<Path> = Arc::from(path);
    let scene = scene::parse(&file, &text, &mut problems);
    Ok((Some(ShardFile { zone, shard, scene }), problems))
}

/// Reads a world folder. Problems with names, syntax and duplicates are in
/// `problems`; [`super::check::check`] finds the rest.
pub(crate) fn read_world(
    dir: &Path,
    problems: &mut Problems,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<WorldData> {
    let mut world = WorldData::default();
    for file in read_tree(dir, problems, progress)? {
        world.zones.entry(file.zone.clone()).or_default().insert(file.shard);
        for (_, at) in &file.scene.removed {
            problems.push(Problem::at(
                at,
                "a world file cannot remove objects; removals belong in a mod",
            ));
        }
        for (id, thing, source) in file.scene.objects {
            let object = WorldObject {
                id,
                shard: file.shard,
                thing,
                source,
            };
            if let Some(first) = world.objects.get(&id) {
                problems.push(Problem::at(
                    &object.source,
                    format!("object {id} is already defined at {}", first.source),
                ));
                continue;
            }
            world.objects.insert(id, object);
        }
    }
    if world.zones.is_empty() && problems.is_empty() {
        problems.push(Problem::in_file(
            dir,
            format!("no zone here: a world is folders of <shard>{SUFFIX} files, one folder per zone"),
        ));
    }
    Ok(world)
}

/// Reads a mod folder.
pub(crate) fn read_mod(dir: &Path, problems: &mut Problems) -> anyhow::Result<Overlay> {
    let mut overlay = Overlay::default();
    let mut seen: BTreeMap<u64, Source> = BTreeMap::new();
    for file in read_tree(dir, problems, &|_, _| {})? {
        for (id, at) in file.scene.removed {
            overlay.removed.push((id, file.shard, at));
        }
        for (id, thing, source) in file.scene.objects {
            if let Some(first) = seen.get(&id) {
                problems.push(Problem::at(
                    &source,
                    format!("object {id} is already changed at {first}"),
                ));
                continue;
            }
            seen.insert(id, source.clone());
            overlay.objects.push(WorldObject {
                id,
                shard: file.shard,
                thing,
                source,
            });
        }
    }
    Ok(overlay)
}

/// Writes `world` under `out` (created if needed), one file per shard.
pub(crate) fn write_world(world: &WorldData, out: &Path, progress: &(dyn Fn(u64, u64) + Sync)) -> anyhow::Result<()> {
    let mut by_shard: BTreeMap<ShardId, Vec<&WorldObject>> = BTreeMap::new();
    for object in world.objects.values() {
        by_shard.entry(object.shard).or_default().push(object);
    }
    let total = world.zones.values().map(|s| s.len() as u64).sum();
    let mut done = 0;
    for (zone, shards) in &world.zones {
        let dir = out.join(zone.as_str());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for shard in shards {
            let objects = by_shard.remove(shard).unwrap_or_default();
            let path = dir.join(format!("{}{SUFFIX}", shard.0));
            write_atomically(&path, scene::write(&objects, &[]).as_bytes())?;
            done += 1;
            progress(done, total);
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// crash never leaves half a file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
