//! `hoard-demo server`: a dedicated server for the demo world, and
//! `hoard-demo server token` to issue player tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Args, Subcommand};
use hoard_bevy::HoardServer;
use hoard_net::quic::server::ServerOptions;
use hoard_net::tls::ServerKeys;
use hoard_proto::auth::TokenAuthority;

use crate::cli::progress::Progress;
use crate::cli::world::default_world_dir;
use crate::game;

/// Runs the server, or issues a token.
///
/// Example: `hoard-demo server --data ./server-data --listen 127.0.0.1:7000`
/// (imports `assets/world` on first start; `--world DIR` serves another, such
/// as one made by `hoard-demo world generate`), then
/// `hoard-demo server token --data ./server-data --player ann`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServerArgs {
    #[command(subcommand)]
    command: Option<ServerCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// The data directory: world store, certificate, key, token secret.
    #[arg(long, default_value = "hoard-server-data")]
    data: PathBuf,
    /// The world store: a PostgreSQL URL (`postgres://user@host:port/db`,
    /// for a world shared by several servers). Default: the embedded store
    /// in the data directory.
    #[arg(long)]
    store: Option<String>,
    /// The PostgreSQL schema holding the world's tables (created if
    /// missing), so one database can hold several worlds. Default: `public`.
    #[arg(long, requires = "store")]
    store_schema: Option<String>,
    /// Address to listen on (port 0 picks a free one; the JSON line says which).
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// The world imported on first start (when the data directory is empty).
    #[arg(long, default_value_os_t = default_world_dir())]
    world: PathBuf,
    /// World ticks per second.
    #[arg(long, default_value_t = 20)]
    tick_hz: u32,
    /// Most sends per second of a zone's presence list (0: every tick it
    /// changes); each player in the zone gets the whole list each time.
    #[arg(long, default_value_t = 10)]
    transient_hz: u32,
    /// Accept `dev:<name>` tokens. For local development only.
    #[arg(long)]
    dev: bool,
    /// Serve Prometheus metrics over HTTP here (e.g. 127.0.0.1:9100; port 0
    /// picks one, the JSON line says which).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Most simultaneous connections.
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// Most simultaneous connections from one IP address (raise it for a
    /// load test whose bots all come from one machine).
    #[arg(long, default_value_t = 32)]
    max_connections_per_ip: usize,
}

#[derive(Subcommand)]
enum ServerCommand {
    /// Print a token for a player (valid for --hours).
    ///
    /// Example: `hoard-demo server token --data ./server-data --player ann --hours 48`
    Token {
        /// The server's data directory.
        #[arg(long, default_value = "hoard-server-data")]
        data: PathBuf,
        /// The player's name (a-z, 0-9, _ and -).
        #[arg(long)]
        player: String,
        /// Hours the token stays valid.
        #[arg(long, default_value_t = 24 * 30)]
        hours: i64,
    },
}

pub(crate) fn run(args: ServerArgs) -> anyhow::Result<i32> {
    match args.command {
        Some(ServerCommand::Token { data, player, hours }) => token(&data, &player, hours),
        None => serve(args.run),
    }
}

fn token(data: &Path, player: &str, hours: i64) -> anyhow::Result<i32> {
    let keys = ServerKeys::load_or_create(data).with_context(|| format!("reading keys in {}", data.display()))?;
    // Ten years at most: a longer token is a mistake, and a huge --hours
    // must not wrap round into an already-expired token.
    anyhow::ensure!(
        (1..=24 * 366 * 10).contains(&hours),
        "--hours {hours}: a token must be valid for 1 hour to 10 years"
    );
    let expiry = chrono::Utc::now().timestamp() + hours * 3600;
    println!("{}", TokenAuthority::new(keys.token_secret).issue(player, expiry)?);
    Ok(0)
}

fn serve(args: RunArgs) -> anyhow::Result<i32> {
    let opened = game::server::ServerStore::open(&args.data, args.store.as_deref(), args.store_schema.as_deref())?;
    let store = opened.store.clone();
    let zones: Vec<String> = store
        .zones()?
        .iter()
        .filter(|z| z.as_str() != game::rules::INVENTORY_ZONE)
        .map(|z| z.to_string())
        .collect();
    let mut options = ServerOptions::new(args.listen, args.data.clone());
    options.tick_hz = args.tick_hz;
    options.transient_hz = args.transient_hz;
    options.dev_mode = args.dev;
    options.metrics = args.metrics;
    options.max_connections = args.max_connections;
    options.max_connections_per_ip = args.max_connections_per_ip;
    let progress = Progress::new("importing", "objects");
    // The server is a Bevy App: the rules run in its Update, the hoard
    // plugin around them (and it binds the address).
    let mut app = game::server::app(&opened, &args.world, options, &progress.callback())?;
    progress.finish();
    let zones = if zones.is_empty() {
        // A first start: the zones just imported.
        store
            .zones()?
            .iter()
            .filter(|z| z.as_str() != game::rules::INVENTORY_ZONE)
            .map(|z| z.to_string())
            .collect()
    } else {
        zones
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let server = app.world().resource::<HoardServer>();
        println!(
            "{}",
            serde_json::json!({
                "event": "listening",
                "addr": server.handle.addr.to_string(),
                "fingerprint": server.handle.identity.to_string(),
                "metrics": server.handle.metrics_addr.map(|a| format!("http://{a}/metrics")),
                "zones": zones,
            })
        );
        tracing::info!(addr = %server.handle.addr, "serving");
        let flag = interrupted.clone();
        server.runtime().spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }
    // One frame per tick: the game's rules, then the durable commit and the
    // publishing (a game system that panics ends the process).
    let code = match game::server::run_frames(&mut app, args.tick_hz, &interrupted) {
        Some(reason) => {
            // Logged by the server; the one line an operator needs on stderr.
            eprintln!("hoard-demo: the server failed: {reason}");
            1
        }
        None => {
            tracing::info!("interrupted; shutting down");
            0
        }
    };
    hoard_bevy::server::shutdown(&mut app);
    Ok(code)
}
