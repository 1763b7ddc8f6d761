//! Running the demo's binary for the benches that speak to `hoard-demo`
//! processes (`slots`, `kills`).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

/// `hoard-demo world generate` of `zones` zones with `per_zone` houses and
/// items each into `out`, with the demo binary `demo`.
pub(crate) fn generate_world(demo: &Path, out: &Path, zones: u32, per_zone: u32) -> anyhow::Result<()> {
    let status = Command::new(demo)
        .args([
            "world",
            "generate",
            "--zones",
            &zones.to_string(),
            "--objects-per-zone",
            &per_zone.to_string(),
            "--out",
        ])
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", demo.display()))?;
    anyhow::ensure!(status.success(), "generating the world failed");
    Ok(())
}
