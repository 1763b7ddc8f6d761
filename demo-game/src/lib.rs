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
    ///
    /// On first start the world in assets/world is imported into the data
    /// directory (default ~/.local/share/hoard-demo); what you see is cached in
    /// ~/.cache/hoard. Quit with `q` and play again: the status line shows the
    /// warm entry (64 fresh shards, a few KB).
    ///
    /// Example: `hoard-demo play`, or `hoard-demo play --player bob --zone forest`
    Play(cli::play::PlayArgs),
    /// Look into, verify or clear a client's shard cache.
    ///
    /// Example: `hoard-demo cache inspect`, `hoard-demo cache verify`,
    /// `hoard-demo cache clear --zone meadow`
    Cache(cli::cache::CacheArgs),
    /// Run a UDP network simulator between clients and a server.
    ///
    /// Example: `hoard-demo netsim --listen 127.0.0.1:7001 --upstream 127.0.0.1:7000 --rtt-ms 50 --rate-mbit 20`,
    /// then point the client at 127.0.0.1:7001.
    Netsim(cli::netsim::NetsimArgs),
    /// Run a dedicated server (imports the world on first start), or issue player tokens.
    ///
    /// Prints one JSON line when ready: {"event":"listening","addr":…,"fingerprint":…,"metrics":…,"zones":[…]}.
    /// `--metrics 127.0.0.1:9100` serves Prometheus metrics there.
    ///
    /// Example: `hoard-demo server --data ./server-data --listen 127.0.0.1:7000`
    /// (add `--world DIR` to serve a world made by `hoard-demo world generate`),
    /// then `hoard-demo server token --data ./server-data --player ann`
    Server(cli::server::ServerArgs),
    /// Carry a world's zones to players near this machine: a relay of the
    /// world's server (or of another relay), with the world's signatures.
    ///
    /// Prints one JSON line when ready: {"event":"relaying","addr":…,"fingerprint":…,"world":…}.
    ///
    /// Example: `hoard-demo relay --upstream 127.0.0.1:7000 --listen 127.0.0.1:7100 --token TOKEN`,
    /// then `hoard-demo client --server 127.0.0.1:7100 --world WORLD --token TOKEN`
    Relay(cli::relay::RelayArgs),
    /// Join a server and play in the terminal; `--headless --zone Z` prints one JSON line per zone entry.
    ///
    /// Example: `hoard-demo client --server 127.0.0.1:7000 --token TOKEN`, or
    /// `hoard-demo client --server 127.0.0.1:7000 --token TOKEN --headless --zone meadow --exit-after-ready`
    Client(cli::client::ClientArgs),
    /// Check a server's world store offline: every shard's digest against its objects.
    ///
    /// Example: `hoard-demo store verify --data ./server-data`
    Store(cli::store::StoreArgs),
    /// A headless load test: N bots living scripted random lives against a server.
    ///
    /// Prints a table (zone entries cold and warm with latency percentiles
    /// and bytes, actions, live updates and their delay, errors by kind);
    /// `--report DIR` writes report.json and report.html with plots.
    ///
    /// Example: `hoard-demo bots --server 127.0.0.1:7000 --server-data ./server-data --clients 200 --duration 60 --metrics http://127.0.0.1:9100/metrics --report target/bots`
    Bots(cli::bots::BotsArgs),
    /// Modders' tools: validate, import, export, diff, apply, render and generate world data.
    ///
    /// The world is RON files under assets/world/<zone>/<shard>.scn.ron; mods
    /// are folders of the same layout under assets/mods/ (see docs/MODDING.md).
    ///
    /// Example: `hoard-demo world validate --mod assets/mods/harvest-festival`
    World(cli::world::WorldArgs),
}

/// Runs `hoard-demo` with the process's arguments; returns the exit code.
pub fn run_cli() -> i32 {
    let cli = Cli::parse();
    // The terminal UIs log to a file (they own the screen); the rest to stderr.
    match &cli.command {
        Command::Play(_) => {}
        Command::Client(args) if !args.headless() => {}
        Command::Server(_) | Command::Relay(_) => cli::logging::to_stderr("info,quinn=warn,rustls=warn"),
        _ => cli::logging::to_stderr("warn"),
    }
    let result = match cli.command {
        Command::Play(args) => cli::play::run(args),
        Command::Cache(args) => cli::cache::run(args),
        Command::Netsim(args) => cli::netsim::run(args),
        Command::Server(args) => cli::server::run(args),
        Command::Relay(args) => cli::relay::run(args),
        Command::Client(args) => cli::client::run(args),
        Command::World(args) => cli::world::run(args),
        Command::Store(args) => cli::store::run(args),
        Command::Bots(args) => cli::bots::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hoard-demo: {e:#}");
            1
        }
    }
}

/// The demo's published components and their schema versions: what a
/// client's `Hello` names by its hash (docs/PROTOCOL.md, "The demo game",
/// lists them), for tools that speak to a demo server.
pub fn registry() -> hoard_engine::PublishRegistry {
    game::registry()
}

/// [`registry`] as a next build of the demo would have it after changing
/// one `component` ("zone", "terrain", "house" or "item"): that component one
/// schema version up, with a migration that keeps its stored objects as they
/// are. For tools that measure what a schema change costs returning players
/// (`hoard-bench schema`).
pub fn registry_bumping(component: &str) -> Option<hoard_engine::PublishRegistry> {
    game::registry_bumping(component)
}

/// Entry points for the fuzzer.
pub mod fuzzing {
    /// Parses `bytes` as a world file (and, if it is one, as a mod file) and
    /// checks what it finds; must never panic, whatever the bytes.
    pub fn world_file(bytes: &[u8]) {
        crate::world::fuzz_world_file(bytes);
    }
}
