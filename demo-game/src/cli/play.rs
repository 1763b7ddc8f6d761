//! `hoard-demo play`: the quick start. Starts an embedded server (redb in a
//! data directory) and the terminal client connected to it over QUIC on
//! loopback, in one process. Quitting and playing again shows the warm-cache
//! entry in the status line.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use hoard_bevy::HoardServer;
use hoard_engine::ZoneId;
use hoard_net::quic::client::ClientOptions;

use crate::cli::app::ClientApp;
use hoard_net::quic::server::ServerOptions;

use crate::cli::progress::Progress;
use crate::cli::session::Session;
use crate::cli::world::default_world_dir;
use crate::game;

/// Options of `play`.
///
/// Example: `hoard-demo play` (walk with the arrows, `?` for help, `q` to
/// quit; play again and the status line shows the warm entry), or
/// `hoard-demo play --player bob --zone forest`.
#[derive(Args)]
pub(crate) struct PlayArgs {
    /// The embedded server's data directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The client's cache root.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Your player name.
    #[arg(long, default_value = "player")]
    player: String,
    /// The zone to start in.
    #[arg(long, default_value = "meadow")]
    zone: ZoneId,
    /// The world imported on first start (when the data directory is empty).
    #[arg(long, default_value_os_t = default_world_dir())]
    world: PathBuf,
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("hoard-demo"),
        None => std::env::var_os("HOME").map_or_else(
            || PathBuf::from(".hoard-demo-data"),
            |h| PathBuf::from(h).join(".local/share/hoard-demo"),
        ),
    }
}

pub(crate) fn run(args: PlayArgs) -> anyhow::Result<i32> {
    let data = args.data.unwrap_or_else(default_data_dir);
    let cache_dir = args.cache_dir.unwrap_or_else(crate::cli::cache::default_cache_dir);
    // The screen is the game's: logs go beside the world's data.
    crate::cli::logging::to_file(&data.join("play.log"), "info,quinn=warn,rustls=warn");
    let store = game::server::ServerStore::open(&data, None, None)?;
    // The embedded server is a Bevy App on its own thread, one frame per
    // tick; it only listens on loopback, for this process.
    let mut options = ServerOptions::new("127.0.0.1:0".parse()?, data.clone());
    options.dev_mode = true;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_thread = {
        let (stop, world) = (stop.clone(), args.world.clone());
        std::thread::Builder::new()
            .name("hoard-demo-server".into())
            .spawn(move || -> Option<String> {
                let progress = Progress::new("importing", "objects");
                let mut app = match game::server::app(&store, &world, options, None, &progress.callback()) {
                    Ok(app) => app,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return None;
                    }
                };
                progress.finish();
                let handle = &app.world().resource::<HoardServer>().handle;
                let _ = ready_tx.send(Ok((handle.addr, handle.identity)));
                let failure = game::server::run_frames(&mut app, 20, &stop);
                hoard_bevy::server::shutdown(&mut app);
                failure
            })?
    };
    let (addr, identity) = ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the embedded server did not start"))??;
    let result = (|| {
        let (app, stats) = ClientApp::connect_entered(
            ClientOptions::new(
                addr,
                cache_dir,
                format!("{}{}", hoard_proto::auth::DEV_PREFIX, args.player),
            )
            .with_pin(identity),
            &args.zone,
        )?;
        let mut session = Session::start(app, args.zone, stats)?;
        let result = session.run_terminal();
        let last = session.last_entry().cloned();
        session.leave()?;
        if let Some(stats) = last {
            println!("{}", crate::tui::status(&stats));
        }
        result.map(|()| 0)
    })();
    stop.store(true, Ordering::SeqCst);
    if let Ok(Some(reason)) = server_thread.join() {
        eprintln!("hoard-demo: the embedded server failed: {reason}");
        return Ok(1);
    }
    result
}
