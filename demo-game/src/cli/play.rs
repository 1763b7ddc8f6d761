//! `hoard-demo play`: the quick start. Starts an embedded server (redb in a
//! data directory) and the terminal client connected to it over QUIC on
//! loopback, in one process. Quitting and playing again shows the warm-cache
//! entry in the status line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bevy_ecs::schedule::Schedule;
use bevy_ecs::world::World;
use clap::Args;
use crossterm::event::{self, Event, KeyCode, KeyEventKind};
use hoard_engine::store::WorldStore;
use hoard_engine::{HoardUrl, Publisher, RedbStore, ZoneId, load_world};
use hoard_net::quic::client::{ClientOptions, HoardClient};
use hoard_net::quic::intents::IntentRegistry;
use hoard_net::quic::server::{Game, ServerOptions, start};

use crate::game;
use crate::tui::{View, draw};

/// Options of `play`.
///
/// Example: `hoard-demo play` (then `q` to quit, and `hoard-demo play` again).
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
    let store = Arc::new(RedbStore::open_dir(&data)?);
    let mut publisher = Publisher::new(game::registry());
    let mut world = World::new();
    if store.zones()?.is_empty() {
        eprintln!("first start: generating the world into {} …", data.display());
        for plan in game::generate::generate(&mut world, 4, 1)? {
            store.create_zone(&plan.zone, &plan.shards)?;
        }
    } else {
        load_world(
            &*store,
            &mut publisher,
            &mut world,
            &HoardUrl::service("localhost", 1, "world"),
        )?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let mut options = ServerOptions::new("127.0.0.1:0".parse()?, data.clone());
        // The embedded server only listens on loopback, for this process.
        options.dev_mode = true;
        let server = start(
            options,
            store,
            Game::new(world, Schedule::default(), publisher, IntentRegistry::new()),
        )
        .await?;
        let client = HoardClient::connect(
            ClientOptions {
                server: server.addr,
                cache_dir,
                token: format!("{}{}", hoard_net::auth::DEV_PREFIX, args.player),
                service: "world".into(),
                pin: Some(server.identity),
            },
            game::registry(),
        )
        .await?;
        let stats = client.enter_zone(&args.zone).await?;
        let mut client_world = World::new();
        client.update(&mut client_world);
        let mut view = View {
            zone: args.zone.to_string(),
            player: (128, 128),
            last_entry: Some(stats),
            ..View::default()
        };
        view.refresh(&mut client_world);
        let result = tokio::task::block_in_place(|| ui(&client, &mut client_world, &mut view));
        client.leave_zone(&args.zone).await?;
        client.close();
        server.shutdown().await;
        if let Some(stats) = &view.last_entry {
            println!("{}", crate::tui::status(stats));
        }
        result.map(|()| 0)
    })
}

/// The terminal loop; the terminal is restored on every exit path.
fn ui(client: &HoardClient, world: &mut World, view: &mut View) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        loop {
            // Live deltas change the world without events: redraw from it
            // every frame (a zone is a few thousand objects).
            client.update(world);
            view.refresh(world);
            terminal.draw(|f| draw(f, view))?;
            if !event::poll(Duration::from_millis(100))? {
                continue;
            }
            if let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                let (x, y) = view.player;
                match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('?') => view.help = !view.help,
                    KeyCode::Left | KeyCode::Char('a') => view.player = (x.saturating_sub(1), y),
                    KeyCode::Right | KeyCode::Char('d') => view.player = (x.saturating_add(1).min(255), y),
                    KeyCode::Up | KeyCode::Char('w') => view.player = (x, y.saturating_sub(1)),
                    KeyCode::Down | KeyCode::Char('s') => view.player = (x, y.saturating_add(1).min(255)),
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    result
}
