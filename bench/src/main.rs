//! `hoard-bench`: the measurements hoard reports. Each subcommand runs one
//! set of cases side by side with its baseline in the same process, prints a
//! table of medians and ratios, and writes the same figures as JSON under
//! `target/bench-results/` by default (`--out DIR`).
//!
//! ```text
//! cargo run --release -p hoard-bench -- engine
//! cargo run --release -p hoard-bench -- cache
//! cargo run --release -p hoard-bench -- net
//! cargo run --release -p hoard-bench -- stores
//! cargo run --release -p hoard-bench -- relay
//! cargo run --release -p hoard-bench -- slots --server-bin target/release/hoard-demo
//! cargo run --release -p hoard-bench -- schema --demo-bin target/release/hoard-demo
//! cargo run --release -p hoard-bench -- trust
//! cargo run --release -p hoard-bench -- kills --demo-bin target/release/hoard-demo --seconds 240
//! ```

mod cache;
mod demo;
mod engine;
mod kills;
mod net;
mod pipeline;
mod relay;
mod report;
mod schema;
mod slots;
mod stores;
mod trust;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "hoard's benchmarks: print a table, write JSON")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Directory the JSON results go to.
    #[arg(long, default_value = "target/bench-results", global = true)]
    out: std::path::PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Commit throughput, change gathering and loading, on the reference zone.
    Engine(engine::Args),
    /// Loading a cached zone, and updating one shard after a 1% answer.
    Cache(cache::Args),
    /// Zone entry over QUIC through the simulator, against the full-resend baseline and raw quinn.
    Net(net::Args),
    /// Commits of the same ticks to redb and to PostgreSQL, side by side, beside each engine's raw transaction.
    Stores(stores::Args),
    /// What a relay saves the origin (bytes, CPU) for many clients, what its hop adds, what a signed head costs.
    Relay(relay::Args),
    /// An honest player's zone entry beside hostile connections that hold answer slots (hoard-demo servers of given builds).
    Slots(slots::Args),
    /// A world on three servers and one PostgreSQL under kills and pauses: nothing confirmed lost, nothing twice.
    Kills(kills::Args),
    /// What one component's schema change costs a returning player of the demo world.
    Schema(schema::Args),
    /// What signed trust costs: world token checks beside MAC tokens, intent signatures and their bytes.
    Trust(trust::Args),
    /// The origin process of `relay` (started by it).
    #[command(hide = true)]
    RelayOrigin(relay::OriginArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Engine(args) => engine::run(&args, &cli.out),
        Command::Cache(args) => cache::run(&args, &cli.out),
        Command::Net(args) => net::run(&args, &cli.out),
        Command::Stores(args) => stores::run(&args, &cli.out),
        Command::Relay(args) => relay::run(&args, &cli.out),
        Command::Slots(args) => slots::run(&args, &cli.out),
        Command::Schema(args) => schema::run(&args, &cli.out),
        Command::Kills(args) => kills::run(&args, &cli.out),
        Command::Trust(args) => trust::run(&args, &cli.out),
        Command::RelayOrigin(args) => relay::origin(&args),
    }
}
