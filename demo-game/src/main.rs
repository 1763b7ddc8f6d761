//! `hoard-demo`: the demo game's binary. For now it carries the cache tools
//! players and modders use to look into and repair a client's shard cache,
//! and the network simulator.

mod cli;
mod game;
mod tui;
mod world;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hoard-demo", version, about = "The hoard demo game and its tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The quick start: an embedded server and the terminal client in one process.
    Play(cli::play::PlayArgs),
    /// Look into, verify or clear a client's shard cache.
    Cache(cli::cache::CacheArgs),
    /// Run a UDP network simulator between clients and a server.
    Netsim(cli::netsim::NetsimArgs),
    /// Run a dedicated server (imports a generated world on first start), or issue tokens.
    Server(cli::server::ServerArgs),
    /// Join a server; `--headless --zone Z` prints one JSON line per zone entry.
    Client(cli::client::ClientArgs),
    /// Modders' tools: validate, import, export, diff, apply, render and generate world data.
    World(cli::world::WorldArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Play(args) => cli::play::run(args),
        Command::Cache(args) => cli::cache::run(args),
        Command::Netsim(args) => cli::netsim::run(args),
        Command::Server(args) => cli::server::run(args),
        Command::Client(args) => cli::client::run(args),
        Command::World(args) => cli::world::run(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hoard-demo: {e:#}");
            std::process::exit(1);
        }
    }
}
