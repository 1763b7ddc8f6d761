//! `hoard-demo store verify`: checks a server's world store offline — every
//! shard's digest against its objects, every state canonical — and lists
//! what is damaged. The server runs the same check on every start.

use std::path::PathBuf;

use clap::{Args, Subcommand};

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
        /// The world store, if it is not the data directory's: a PostgreSQL
        /// URL (`postgres://user@host:port/db`).
        #[arg(long)]
        store: Option<String>,
        /// The PostgreSQL schema holding the world (default: `public`).
        #[arg(long, requires = "store")]
        store_schema: Option<String>,
    },
}

pub(crate) fn run(args: StoreArgs) -> anyhow::Result<i32> {
    let StoreCommand::Verify {
        data,
        store,
        store_schema,
    } = args.command;
    if store.is_none() {
        let path = data.join(hoard_engine::RedbStore::FILE_NAME);
        anyhow::ensure!(path.is_file(), "no world store at {}", path.display());
    }
    let opened = crate::game::server::ServerStore::open(&data, store.as_deref(), store_schema.as_deref())?;
    let label = &opened.label;
    let damage = hoard_engine::store::verify(&*opened.store).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    if damage.is_empty() {
        println!("{label}: every shard verified");
        return Ok(0);
    }
    for d in &damage {
        println!("shard {}: {}", d.shard, d.problem);
    }
    eprintln!("hoard-demo: {label} is damaged in {} places", damage.len());
    Ok(1)
}
