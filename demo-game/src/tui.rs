//! The terminal client's screen, as a pure function of a [`View`]: the map
//! around the player (terrain, houses, items, the player), a status line with
//! the last zone entry, and a help overlay. Tested with ratatui's test
//! backend.

use std::collections::HashMap;

use bevy_ecs::world::World;
use hoard_bevy::Replicated;
use hoard_proto::sync::client::EntryStats;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use crate::game::{House, Item, TerrainRow};

/// What the screen shows.
#[derive(Default)]
pub(crate) struct View {
    /// Tile kinds by position.
    pub(crate) tiles: HashMap<(u16, u16), u8>,
    /// Tiles covered by houses.
    pub(crate) houses: HashMap<(u16, u16), (u8, u8, u8)>,
    /// Items by position.
    pub(crate) items: HashMap<(u16, u16), String>,
    /// The player's position.
    pub(crate) player: (u16, u16),
    /// The zone.
    pub(crate) zone: String,
    /// The last entry's stats.
    pub(crate) last_entry: Option<EntryStats>,
    /// Whether the help overlay is shown.
    pub(crate) help: bool,
    /// The player's inventory shard.
    pub(crate) inventory_shard: Option<hoard_engine::ShardId>,
    /// Items in the inventory: (object, description).
    pub(crate) inventory: Vec<(u64, String)>,
    /// Item objects on the ground by position.
    pub(crate) item_ids: HashMap<(u16, u16), u64>,
    /// The player's houses: (object, x, y).
    pub(crate) own_houses: Vec<(u64, u16, u16)>,
    /// The player's name.
    pub(crate) player_name: String,
    /// A message for the player.
    pub(crate) message: String,
    /// Other players in the zone: (name, x, y).
    pub(crate) others: Vec<(String, u16, u16)>,
}

impl View {
    /// Rebuilds the map from the replicated objects in `world`.
    pub(crate) fn refresh(&mut self, world: &mut World) {
        self.tiles.clear();
        self.houses.clear();
        self.items.clear();
        for row in world.query::<(&Replicated, &TerrainRow)>().iter(world).map(|(_, r)| r) {
            for (i, t) in row.tiles.iter().enumerate() {
                self.tiles.insert((row.x + i as u16, row.y), *t);
            }
        }
        for house in world.query::<(&Replicated, &House)>().iter(world).map(|(_, h)| h) {
            for dx in 0..u16::from(house.size.0) {
                for dy in 0..u16::from(house.size.1) {
                    self.houses.insert((house.x + dx, house.y + dy), house.colour);
                }
            }
        }
        self.inventory.clear();
        self.item_ids.clear();
        self.own_houses.clear();
        for (r, item) in world.query::<(&Replicated, &Item)>().iter(world) {
            if Some(r.shard) == self.inventory_shard {
                self.inventory
                    .push((r.object.0, format!("{} × {}", item.count, item.kind)));
            } else {
                self.items.insert((item.x, item.y), item.kind.clone());
                self.item_ids.insert((item.x, item.y), r.object.0);
            }
        }
        self.inventory.sort();
        for (r, house) in world.query::<(&Replicated, &House)>().iter(world) {
            if house.owner == self.player_name {
                self.own_houses.push((r.object.0, house.x, house.y));
            }
        }
    }

    /// An item lying within one tile of `at`.
    pub(crate) fn item_near(&self, at: (u16, u16)) -> Option<u64> {
        self.item_ids
            .iter()
            .find(|((x, y), _)| x.abs_diff(at.0) <= 1 && y.abs_diff(at.1) <= 1)
            .map(|(_, id)| *id)
    }

    /// One of the player's houses within two tiles of `at`.
    pub(crate) fn own_house_near(&self, at: (u16, u16)) -> Option<u64> {
        self.own_houses
            .iter()
            .find(|(_, x, y)| x.abs_diff(at.0) <= 2 && y.abs_diff(at.1) <= 2)
            .map(|(id, _, _)| *id)
    }
}

fn terrain(kind: u8) -> (char, Color) {
    match kind {
        0 => ('.', Color::Green),
        1 => ('~', Color::Blue),
        2 => (':', Color::Yellow),
        3 => ('^', Color::Gray),
        4 => ('T', Color::LightGreen),
        _ => ('=', Color::White),
    }
}

/// The status line text for an entry.
pub(crate) fn status(stats: &EntryStats) -> String {
    format!(
        "zone ready: {} shards ({} fresh, {} delta, {} snapshot, {} repaired), {} objects, {} B in / {} B out, {} round trip(s), {} ms",
        stats.shards,
        stats.shards_fresh,
        stats.shards_delta,
        stats.shards_snapshot,
        stats.shards_repaired,
        stats.objects,
        stats.bytes_rx,
        stats.bytes_tx,
        stats.round_trips,
        stats.elapsed_ms
    )
}

/// Draws the whole screen.
pub(crate) fn draw(frame: &mut Frame<'_>, view: &View) {
    let [main_area, status_area] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    let [map_area, side_area] = Layout::horizontal([Constraint::Min(10), Constraint::Length(22)]).areas(main_area);
    let mut side: Vec<Line> = view.inventory.iter().map(|(_, d)| Line::from(d.clone())).collect();
    if side.is_empty() {
        side.push(Line::from("(empty)"));
    }
    if !view.others.is_empty() {
        side.push(Line::from(""));
        side.push(Line::from("players here:"));
        for (name, x, y) in &view.others {
            side.push(Line::from(format!("{name} ({x}, {y})")));
        }
    }
    if !view.message.is_empty() {
        side.push(Line::from(""));
        side.push(Line::from(view.message.clone()));
    }
    frame.render_widget(
        Paragraph::new(side).block(Block::default().borders(Borders::ALL).title(" inventory ")),
        side_area,
    );
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {} — ? help, q quit ", view.zone));
    let inner = block.inner(map_area);
    frame.render_widget(block, map_area);
    let (w, h) = (inner.width, inner.height);
    let x0 = view.player.0.saturating_sub(w / 2);
    let y0 = view.player.1.saturating_sub(h / 2);
    let mut lines = Vec::with_capacity(h as usize);
    for y in y0..y0 + h {
        let mut spans = Vec::with_capacity(w as usize);
        for x in x0..x0 + w {
            let other = view.others.iter().find(|(_, ox, oy)| (*ox, *oy) == (x, y));
            let (ch, style) = if (x, y) == view.player {
                ('@', Style::default().fg(Color::LightRed))
            } else if let Some((name, ..)) = other {
                let initial = name.chars().next().map_or('&', |c| c.to_ascii_uppercase());
                (initial, Style::default().fg(Color::LightMagenta))
            } else if let Some((r, g, b)) = view.houses.get(&(x, y)) {
                ('#', Style::default().fg(Color::Rgb(*r, *g, *b)))
            } else if view.items.contains_key(&(x, y)) {
                ('*', Style::default().fg(Color::LightYellow))
            } else if let Some(kind) = view.tiles.get(&(x, y)) {
                let (c, color) = terrain(*kind);
                (c, Style::default().fg(color))
            } else {
                (' ', Style::default())
            };
            spans.push(Span::styled(ch.to_string(), style));
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), inner);
    let text = view
        .last_entry
        .as_ref()
        .map_or_else(|| "entering zone…".to_owned(), status);
    frame.render_widget(Paragraph::new(text), status_area);
    if view.help {
        let area = centered(frame.area(), 48, 11);
        frame.render_widget(Clear, area);
        let help = Paragraph::new(vec![
            Line::from("arrows / wasd   walk"),
            Line::from("g pick up   r drop   b build   x demolish"),
            Line::from("t plant a tree   f dig a pond"),
            Line::from("?               this help"),
            Line::from("q / Esc         quit"),
            Line::from(""),
            Line::from(". grass ~ water : sand ^ rock T forest = road"),
            Line::from("# house  * item  @ you"),
        ])
        .block(Block::default().borders(Borders::ALL).title(" help "));
        frame.render_widget(help, area);
    }
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    Rect {
        x: area.x + area.width.saturating_sub(w) / 2,
        y: area.y + area.height.saturating_sub(h) / 2,
        width: w.min(area.width),
        height: h.min(area.height),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(view: &View) -> String {
        let mut terminal = Terminal::new(TestBackend::new(60, 12)).expect("terminal");
        terminal.draw(|f| draw(f, view)).expect("draw");
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_map_shows_terrain_houses_items_and_the_player_and_the_status_line_the_entry() {
        let mut view = View {
            zone: "meadow".into(),
            player: (10, 10),
            ..View::default()
        };
        for x in 0..40 {
            for y in 0..40 {
                view.tiles.insert((x, y), if x == 12 { 1 } else { 0 });
            }
        }
        view.houses.insert((8, 9), (200, 10, 10));
        view.others.push(("bob".into(), 9, 10));
        view.items.insert((11, 10), "gold".into());
        view.last_entry = Some(EntryStats {
            shards: 64,
            shards_fresh: 64,
            objects: 2747,
            round_trips: 1,
            bytes_rx: 534,
            bytes_tx: 3474,
            elapsed_ms: 11,
            ..EntryStats::default()
        });
        let text = screen(&view);
        assert!(text.contains("meadow"), "{text}");
        assert!(
            text.contains("B@*~"),
            "bob, the player, an item, then water east of it:\n{text}"
        );
        assert!(text.contains("bob (9, 10)"), "{text}");
        assert!(text.contains('#'), "{text}");
        assert!(text.contains("64 fresh"), "{text}");
        view.help = true;
        assert!(screen(&view).contains("walk"));
    }
}
