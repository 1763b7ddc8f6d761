//! `hoard-demo store verify`: checks a server's world store offline — every
//! shard's digest against its objects, every state canonical — and lists
//! what is damaged. The server runs the same check on every start.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use hoard_engine::RedbStore;

/// Checks the world store of a server's data directory.
///
/// Example: `hoard-demo store verify --data ./server-data`
#[derive(Args)]
pub(crate) struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Verify every shard; exits 1 and lists the damage if any.
    ///
    /// Example: `hoard-demo store verify --data ./server-data`
    Verify {
        /// The server's data directory.
        #[arg(long, default_value = "hoard-server-data")]
        data: PathBuf,
    },
}

pub(crate) fn run(args: StoreArgs) -> anyhow::Result<i32> {
    let StoreCommand::Verify { data } = args.command;
    let path = data.join(RedbStore::FILE_NAME);
    anyhow::ensure!(path.is_file(), "no world store at {}", path.display());
    let store = RedbStore::open(&path)?;
    let damage = hoard_engine::store::verify(&store).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if damage.is_empty() {
        println!("{}: every shard verified", path.display());
        return Ok(0);
    }
    for d in &damage {
        println!("shard {}: {}", d.shard, d.problem);
    }
    eprintln!("hoard-demo: {} is damaged in {} places", path.display(), damage.len());
    Ok(1)
}
