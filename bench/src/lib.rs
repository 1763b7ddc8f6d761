//! Shared pieces of hoard's benchmarks: the deterministic reference zone,
//! which the engine, cache and network benches all measure against.

pub mod reference;

/// A scratch directory for one bench run, removed when dropped.
///
/// It lives under the workspace's `target/` (or `CARGO_TARGET_DIR`), never the
/// current directory: a store or cache there is on the real disk (not a tmpfs
/// that would flatter fsync), and an interrupted run leaves nothing a commit
/// could pick up.
pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("bench-scratch");
    std::fs::create_dir_all(&dir)?;
    tempfile::Builder::new().prefix("run-").tempdir_in(dir)
}
