//! `hoard-demo play`: the quick start. Starts an embedded server (redb in a
//! data directory) and the terminal client connected to it over QUIC on
//! loopback, in one process. Quitting and playing again shows the warm-cache
//! entry in the status line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bevy_ecs::world::World;
use clap::Args;
use crossterm::event::{self, Event, KeyCode, KeyEventKind};
use hoard_engine::{RedbStore, ZoneId};
use hoard_net::quic::client::{ClientOptions, HoardClient};
use hoard_net::quic::server::{ServerOptions, start};

use crate::game;
use crate::game::rules::{self, Action};
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
    let game = game::server::game(&store, 4, 1, 0)?;
    let zone_index = game::generate::ZONE_NAMES
        .iter()
        .position(|z| *z == args.zone.as_str())
        .ok_or_else(|| anyhow::anyhow!("no zone {} in the demo world", args.zone))? as u32;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let mut options = ServerOptions::new("127.0.0.1:0".parse()?, data.clone());
        // The embedded server only listens on loopback, for this process.
        options.dev_mode = true;
        let server = start(options, store, game).await?;
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
        client.enter_zone(&ZoneId::new(rules::INVENTORY_ZONE)?).await?;
        let mut client_world = World::new();
        client.update(&mut client_world);
        let mut view = View {
            zone: args.zone.to_string(),
            player: (128, 128),
            last_entry: Some(stats),
            inventory_shard: Some(rules::inventory_shard(&args.player)),
            player_name: args.player.clone(),
            ..View::default()
        };
        view.refresh(&mut client_world);
        client
            .send_intent(
                rules::ACTION,
                &Action::Move {
                    zone: zone_index,
                    x: 128,
                    y: 128,
                },
            )
            .await?;
        let result = tokio::task::block_in_place(|| ui(&client, &mut client_world, &mut view, zone_index));
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
fn ui(client: &HoardClient, world: &mut World, view: &mut View, zone: u32) -> anyhow::Result<()> {
    let mut zone = zone;
    let mut prefetched: Option<u32> = None;
    let zones = game::generate::ZONE_NAMES.len().min(4) as u32;
    let runtime = tokio::runtime::Handle::current();
    let send = |action: Action| runtime.block_on(client.send_intent(rules::ACTION, &action)).map(|_| ());
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
            let Event::Key(key) = event::read()? else { continue };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            let (x, y) = view.player;
            let step = match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('?') => {
                    view.help = !view.help;
                    None
                }
                KeyCode::Left | KeyCode::Char('a') => Some((x.saturating_sub(1), y)),
                KeyCode::Right | KeyCode::Char('d') => Some((x.saturating_add(1).min(rules::ZONE_SIZE - 1), y)),
                KeyCode::Up | KeyCode::Char('w') => Some((x, y.saturating_sub(1))),
                KeyCode::Down | KeyCode::Char('s') => Some((x, y.saturating_add(1).min(rules::ZONE_SIZE - 1))),
                KeyCode::Char('g') => {
                    match view.item_near(view.player) {
                        Some(object) => send(Action::PickUp { object })?,
                        None => view.message = "nothing to pick up here".into(),
                    }
                    None
                }
                KeyCode::Char('r') => {
                    match view.inventory.first() {
                        Some((object, _)) => send(Action::Drop { object: *object })?,
                        None => view.message = "your inventory is empty".into(),
                    }
                    None
                }
                KeyCode::Char('b') => {
                    send(Action::Build {
                        name: "a new house".into(),
                    })?;
                    None
                }
                KeyCode::Char('x') => {
                    match view.own_house_near(view.player) {
                        Some(object) => send(Action::Demolish { object })?,
                        None => view.message = "none of your houses is near".into(),
                    }
                    None
                }
                KeyCode::Char('t') => {
                    send(Action::Terraform { kind: 4 })?;
                    None
                }
                KeyCode::Char('f') => {
                    send(Action::Terraform { kind: 1 })?;
                    None
                }
                _ => None,
            };
            // Walking off the east or west edge leads into the next zone of
            // the strip meadow – forest – desert – coast.
            let step = match (step, key.code) {
                (Some(_), KeyCode::Right | KeyCode::Char('d')) if x == rules::ZONE_SIZE - 1 && zone + 1 < zones => {
                    runtime.block_on(cross(client, view, zone, zone + 1))?;
                    zone += 1;
                    Some((0, y))
                }
                (Some(_), KeyCode::Left | KeyCode::Char('a')) if x == 0 && zone > 0 => {
                    runtime.block_on(cross(client, view, zone, zone - 1))?;
                    zone -= 1;
                    Some((rules::ZONE_SIZE - 1, y))
                }
                _ => step,
            };
            if let Some((x, y)) = step {
                view.player = (x, y);
                send(Action::Move { zone, x, y })?;
                // Prefetch the neighbour the player walks towards, so that
                // crossing into it costs nothing.
                let toward = if x > rules::ZONE_SIZE - 32 && zone + 1 < zones {
                    Some(zone + 1)
                } else if x < 32 && zone > 0 {
                    Some(zone - 1)
                } else {
                    None
                };
                if let Some(next) = toward
                    && prefetched != Some(next)
                {
                    runtime.block_on(client.prefetch(&zone_id(next)?))?;
                    prefetched = Some(next);
                    view.message = format!("prefetching {}", zone_id(next)?);
                }
            }
        }
    })();
    ratatui::restore();
    result
}

fn zone_id(index: u32) -> anyhow::Result<ZoneId> {
    let name = game::generate::ZONE_NAMES
        .get(index as usize)
        .ok_or_else(|| anyhow::anyhow!("no zone {index}"))?;
    Ok(ZoneId::new(*name)?)
}

/// Leaves one zone and enters its neighbour (immediate when prefetched).
async fn cross(client: &HoardClient, view: &mut View, from: u32, to: u32) -> anyhow::Result<()> {
    client.leave_zone(&zone_id(from)?).await?;
    let stats = client.enter_zone(&zone_id(to)?).await?;
    view.zone = zone_id(to)?.to_string();
    view.last_entry = Some(stats);
    view.message.clear();
    Ok(())
}
