//! The hoard demo game: a small multiplayer world on hoard, its dedicated
//! server and terminal client, and the tools modders and players use — world
//! files (validate, import, export, diff, apply, render, generate), the
//! client cache tools and a network simulator. The binary `hoard-demo` is
//! [`run_cli`]; [`fuzzing`] exposes the world-file decoder to the fuzzer.

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

/// Runs `hoard-demo` with the process's arguments; returns the exit code.
pub fn run_cli() -> i32 {
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
        Ok(code) => code,
        Err(e) => {
            eprintln!("hoard-demo: {e:#}");
            1
        }
    }
}

/// Entry points for the fuzzer.
pub mod fuzzing {
    /// Parses `bytes` as a world file (and, if it is one, as a mod file) and
    /// checks what it finds; must never panic, whatever the bytes.
    pub fn world_file(bytes: &[u8]) {
        crate::world::fuzz_world_file(bytes);
    }
}
