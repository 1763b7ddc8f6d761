//! Setting up the demo's server side: the world (generated on first start,
//! loaded from the store afterwards), the inventory zone, the rules schedule
//! and the join hook. Shared by `hoard-demo server` and `hoard-demo play`.

use std::sync::Arc;

use bevy_ecs::prelude::*;
use hoard_engine::store::WorldStore;
use hoard_engine::{HoardUrl, Published, Publisher, RedbStore, ZoneId, load_world};
use hoard_net::quic::intents::IntentRegistry;
use hoard_net::quic::server::Game;

use super::rules::{ACTION, Action, INVENTORY_ZONE, NextObject, Players, apply_actions, ensure_inventory};

/// Builds the game over `store`, generating `zones` zones on first start.
pub(crate) fn game(store: &Arc<RedbStore>, zones: usize, seed: u64, port: u16) -> anyhow::Result<Game> {
    let mut publisher = Publisher::new(super::registry());
    let mut world = World::new();
    if store.zones()?.is_empty() {
        eprintln!("first start: generating a world of {zones} zones");
        for plan in super::generate::generate(&mut world, zones, seed)? {
            store.create_zone(&plan.zone, &plan.shards)?;
        }
        store.create_zone(&ZoneId::new(INVENTORY_ZONE)?, &[])?;
    } else {
        let report = load_world(
            &**store,
            &mut publisher,
            &mut world,
            &HoardUrl::service("localhost", port.max(1), "world"),
        )?;
        for problem in &report.problems {
            eprintln!("warning: {problem}");
        }
    }
    let next = world
        .query::<&Published>()
        .iter(&world)
        .map(|p| p.object.0)
        .max()
        .unwrap_or(0)
        + 1;
    world.insert_resource(NextObject(next));
    world.init_resource::<Players>();
    let mut schedule = Schedule::default();
    schedule.add_systems(apply_actions);
    let mut game = Game::new(
        world,
        schedule,
        publisher,
        IntentRegistry::new().intent::<Action>(ACTION),
    );
    game.on_join = Some(Arc::new(|player: &str, store: &dyn WorldStore| {
        ensure_inventory(player, store)
    }));
    Ok(game)
}
