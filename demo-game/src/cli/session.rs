//! A player's session in the terminal, shared by `hoard-demo play` and
//! `hoard-demo client`: enters the start zone and the player's inventory,
//! then runs the ratatui loop — walking (one step per key, at most 15 a
//! second, the server's limit), picking up, dropping, building, demolishing,
//! digging and planting. Walking off an edge enters the zone beyond it; the
//! neighbour a player walks towards is prefetched, so crossing costs no
//! network. A cold zone entry shows its progress in the status line. The
//! terminal is restored on every exit path.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind};
use hoard_bevy::HoardEvent;
use hoard_bevy::client::ZoneRequest;
use hoard_engine::ZoneId;
use hoard_net::quic::client::ClientEvent;
use hoard_proto::sync::client::EntryStats;
use ratatui::DefaultTerminal;

use crate::cli::app::ClientApp;
use crate::cli::progress::Progress;
use crate::game::presence::Presence;
use crate::game::rules::{self, ACTION, Action};
use crate::game::{ZONE_SIZE, ZoneInfo};
use crate::tui::{View, draw};

/// Distance from an edge at which the zone beyond it is prefetched.
const PREFETCH_WITHIN: u16 = 32;
/// The shortest time between two steps (the server allows 15 a second).
const STEP_EVERY: Duration = Duration::from_millis(70);

/// An edge of a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    North,
    South,
    East,
    West,
}

fn beyond(info: &ZoneInfo, side: Side) -> Option<&str> {
    match side {
        Side::North => info.north.as_deref(),
        Side::South => info.south.as_deref(),
        Side::East => info.east.as_deref(),
        Side::West => info.west.as_deref(),
    }
}

/// The zone beyond the edge a player at `at` walking towards `walking`
/// approaches: within [`PREFETCH_WITHIN`] tiles of that edge.
fn approaching(info: &ZoneInfo, at: (u16, u16), walking: Side) -> Option<&str> {
    let (x, y) = at;
    let distance = match walking {
        Side::North => y,
        Side::South => ZONE_SIZE - 1 - y,
        Side::East => ZONE_SIZE - 1 - x,
        Side::West => x,
    };
    (distance < PREFETCH_WITHIN).then(|| beyond(info, walking)).flatten()
}

/// A player in a zone.
pub(crate) struct Session {
    app: ClientApp,
    /// What the screen shows.
    pub(crate) view: View,
    zone: ZoneId,
    info: ZoneInfo,
    /// Neighbours prefetched since entering this zone.
    prefetched: HashSet<String>,
    last_step: Instant,
}

impl Session {
    /// Takes over a client that has entered `zone` (see
    /// [`ClientApp::connect_entered`]), enters the player's inventory, and
    /// places the player at the crossroads.
    pub(crate) fn start(mut app: ClientApp, zone: ZoneId, stats: EntryStats) -> anyhow::Result<Session> {
        let player = app.perspective().to_owned();
        app.enter(&ZoneId::new(rules::INVENTORY_ZONE)?, |_| {})?;
        let info = app
            .zone_info(&zone)
            .ok_or_else(|| anyhow::anyhow!("zone {zone} has no `zone` object; is this a hoard-demo world?"))?;
        let mut view = View {
            zone: zone.to_string(),
            player: (ZONE_SIZE / 2, ZONE_SIZE / 2),
            last_entry: Some(stats),
            inventory_shard: Some(rules::inventory_shard(&player)),
            player_name: player.clone(),
            ..View::default()
        };
        view.refresh(app.world_mut());
        let (x, y) = view.player;
        app.hoard()
            .send_intent(ACTION, &Action::Move { zone: info.index, x, y })?;
        Ok(Session {
            app,
            view,
            zone,
            info,
            prefetched: HashSet::new(),
            last_step: Instant::now(),
        })
    }

    /// The last entry's stats.
    pub(crate) fn last_entry(&self) -> Option<&EntryStats> {
        self.view.last_entry.as_ref()
    }

    /// Leaves the zone and runs a last frame, so the leave goes out.
    pub(crate) fn leave(mut self) -> anyhow::Result<()> {
        self.app.request(ZoneRequest::Leave(self.zone.clone()));
        self.app.frame()?;
        Ok(())
    }

    /// Runs the terminal until the player quits.
    pub(crate) fn run_terminal(&mut self) -> anyhow::Result<()> {
        let mut terminal = ratatui::try_init().map_err(|e| {
            anyhow::anyhow!("cannot use this terminal ({e}); run in a terminal, or use `hoard-demo client --headless`")
        })?;
        let result = self.event_loop(&mut terminal);
        ratatui::restore();
        result
    }

    fn event_loop(&mut self, terminal: &mut DefaultTerminal) -> anyhow::Result<()> {
        loop {
            // Live deltas change the world without events: redraw from it
            // every frame (a zone is a few thousand objects). A refused
            // action says why.
            for event in self.app.frame()? {
                match event {
                    HoardEvent::Client(ClientEvent::IntentRejected { message, .. }) => self.view.message = message,
                    // A line said in the zone.
                    HoardEvent::Client(ClientEvent::GameMessage { kind, payload, .. })
                        if kind == crate::game::chat::CHAT =>
                    {
                        if let Ok(chat) = rmp_serde::from_slice::<crate::game::chat::Chat>(&payload) {
                            self.view.message = format!("{}: {}", chat.from, chat.text);
                        }
                    }
                    _ => {}
                }
            }
            self.view.refresh(self.app.world_mut());
            self.refresh_others();
            terminal.draw(|f| draw(f, &self.view))?;
            if !event::poll(Duration::from_millis(50))? {
                continue;
            }
            let Event::Key(key) = event::read()? else { continue };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            let side = match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Left | KeyCode::Char('a') => Some(Side::West),
                KeyCode::Right | KeyCode::Char('d') => Some(Side::East),
                KeyCode::Up | KeyCode::Char('w') => Some(Side::North),
                KeyCode::Down | KeyCode::Char('s') => Some(Side::South),
                _ => None,
            };
            match side {
                Some(side) => self.step(terminal, side)?,
                None => {
                    if let Some(action) = self.action_for(key.code) {
                        self.app.hoard().send_intent(ACTION, &action)?;
                    }
                }
            }
        }
    }

    /// The other players in the zone, from its transient state.
    fn refresh_others(&mut self) {
        let presence = self
            .app
            .transient(&self.zone)
            .map(|b| Presence::decode(&b))
            .unwrap_or_default();
        self.view.others = presence
            .0
            .into_iter()
            .filter(|(name, ..)| *name != self.view.player_name)
            .collect();
    }

    /// The action a key asks for (or a message saying why there is none).
    fn action_for(&mut self, key: KeyCode) -> Option<Action> {
        let view = &mut self.view;
        match key {
            KeyCode::Char('?') => {
                view.help = !view.help;
                None
            }
            KeyCode::Char('g') => {
                let found = view.item_near(view.player);
                if found.is_none() {
                    view.message = "nothing to pick up here".into();
                }
                found.map(|object| Action::PickUp { object })
            }
            KeyCode::Char('r') => {
                let found = view.inventory.first().map(|(object, _)| *object);
                if found.is_none() {
                    view.message = "your inventory is empty".into();
                }
                found.map(|object| Action::Drop { object })
            }
            KeyCode::Char('b') => Some(Action::Build {
                name: format!("{}'s house", view.player_name),
            }),
            KeyCode::Char('x') => {
                let found = view.own_house_near(view.player);
                if found.is_none() {
                    view.message = "none of your houses is near".into();
                }
                found.map(|object| Action::Demolish { object })
            }
            KeyCode::Char('t') => Some(Action::Terraform {
                kind: crate::game::tile::FOREST,
            }),
            KeyCode::Char('f') => Some(Action::Terraform {
                kind: crate::game::tile::WATER,
            }),
            _ => None,
        }
    }

    /// One step towards `side`: within the zone, or across its edge.
    fn step(&mut self, terminal: &mut DefaultTerminal, side: Side) -> anyhow::Result<()> {
        if self.last_step.elapsed() < STEP_EVERY {
            return Ok(());
        }
        self.last_step = Instant::now();
        let (x, y) = self.view.player;
        let last = ZONE_SIZE - 1;
        let at_edge = match side {
            Side::North => y == 0,
            Side::South => y == last,
            Side::East => x == last,
            Side::West => x == 0,
        };
        if at_edge {
            let Some(next) = beyond(&self.info, side).map(str::to_owned) else {
                self.view.message = "the world ends here".into();
                return Ok(());
            };
            let arrival = match side {
                Side::North => (x, last),
                Side::South => (x, 0),
                Side::East => (0, y),
                Side::West => (last, y),
            };
            return self.cross(terminal, ZoneId::new(next)?, arrival);
        }
        let to = match side {
            Side::North => (x, y - 1),
            Side::South => (x, y + 1),
            Side::East => (x + 1, y),
            Side::West => (x - 1, y),
        };
        self.view.player = to;
        let step = Action::Move {
            zone: self.info.index,
            x: to.0,
            y: to.1,
        };
        self.app.hoard().send_intent(ACTION, &step)?;
        self.prefetch_ahead(side)
    }

    /// Prefetches the zone beyond the edge the player walks towards, once
    /// they are within [`PREFETCH_WITHIN`] tiles of it.
    fn prefetch_ahead(&mut self, walking: Side) -> anyhow::Result<()> {
        if let Some(next) = approaching(&self.info, self.view.player, walking)
            && !self.prefetched.contains(next)
        {
            self.app.request(ZoneRequest::Prefetch(ZoneId::new(next)?));
            self.view.message = format!("prefetching {next}");
            self.prefetched.insert(next.to_owned());
        }
        Ok(())
    }

    /// Leaves this zone and enters `next`, arriving at `arrival`; a cold
    /// entry shows its progress.
    fn cross(&mut self, terminal: &mut DefaultTerminal, next: ZoneId, arrival: (u16, u16)) -> anyhow::Result<()> {
        self.app.request(ZoneRequest::Leave(self.zone.clone()));
        let view = &mut self.view;
        let entered = self.app.enter(&next, |p| {
            view.message = format!(
                "entering {next}: {}/{} shards, {} KB",
                p.shards_done,
                p.shards.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                p.bytes_rx / 1000
            );
            // A failed draw only loses this progress frame.
            let _ = terminal.draw(|f| draw(f, view));
        });
        let stats = match entered {
            Ok(stats) => stats,
            // Another server of the world serves `next`: the player moves
            // there, with their cache; this connection closes.
            Err(e) => {
                let Some(redirect) = e.downcast_ref::<crate::cli::app::Redirected>() else {
                    return Err(e);
                };
                self.view.message = format!("{next} is served by {}; moving there", redirect.address);
                let _ = terminal.draw(|f| draw(f, &self.view));
                let (mut app, stats) = self.app.connect_elsewhere(&redirect.address, &next)?;
                app.enter(&ZoneId::new(rules::INVENTORY_ZONE)?, |_| {})?;
                self.app = app;
                stats
            }
        };
        self.info = self
            .app
            .zone_info(&next)
            .ok_or_else(|| anyhow::anyhow!("zone {next} has no `zone` object"))?;
        self.zone = next;
        self.view.zone = self.zone.to_string();
        self.view.player = arrival;
        self.view.last_entry = Some(stats);
        self.view.message.clear();
        self.prefetched.clear();
        let arrive = Action::Move {
            zone: self.info.index,
            x: arrival.0,
            y: arrival.1,
        };
        self.app.hoard().send_intent(ACTION, &arrive)?;
        Ok(())
    }
}

/// Waits for the entry of `zone` under way, showing its progress on stderr
/// when it is a terminal.
pub(crate) fn ready_with_progress(app: &mut ClientApp, zone: &ZoneId) -> anyhow::Result<EntryStats> {
    let progress = Progress::new("entering", "shards");
    let report = progress.callback();
    let stats = app.ready(zone, |p| {
        report(u64::from(p.shards_done), u64::from(p.shards.unwrap_or(0)));
    });
    progress.finish();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_prefetched_is_the_one_the_player_walks_towards() {
        let forest = ZoneInfo {
            index: 1,
            west: Some("meadow".into()),
            south: Some("coast".into()),
            ..ZoneInfo::default()
        };
        // Just arrived from the west, walking south along the west edge.
        assert_eq!(approaching(&forest, (0, 200), Side::South), None);
        assert_eq!(approaching(&forest, (0, 230), Side::South), Some("coast"));
        assert_eq!(approaching(&forest, (0, 230), Side::West), Some("meadow"));
        assert_eq!(approaching(&forest, (250, 10), Side::East), None, "the world ends east");
        assert_eq!(approaching(&forest, (128, 3), Side::North), None);
    }
}
