//! The demo's rules, as ECS systems run by the server each tick. Clients
//! only send intents ([`Action`]); the server validates each against the
//! sender (range, ownership, rate) and is the only writer.
//!
//! Picking an item up moves it from its ground shard into the player's
//! inventory shard, and dropping it moves it back: a change of the
//! `Published` shard, which hoard commits as a tombstone and an upsert in one
//! transaction, so the item exists exactly once whatever crashes.

use std::collections::HashMap;

use bevy_ecs::prelude::*;
use hoard_engine::store::{ShardScope, ShardSpec, WorldStore};
use hoard_engine::{ObjectId, Published, ShardId, ZoneId};
use hoard_proto::intents::{IncomingIntents, IntentId, IntentOutcomes};
use serde::{Deserialize, Serialize};

use super::{House, Item, TerrainRow, ZONE_SIZE};

/// The intent name of [`Action`].
pub(crate) const ACTION: &str = "action";
/// The zone holding every player's inventory shard (each scoped to its player).
pub(crate) const INVENTORY_ZONE: &str = "inventory";

/// What a player asks for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Walk to a tile (one step at a time) in a zone (by its index).
    Move { zone: u32, x: u16, y: u16 },
    /// Pick up an item lying within one tile.
    PickUp { object: u64 },
    /// Drop an item from the inventory where the player stands.
    Drop { object: u64 },
    /// Build a house where the player stands.
    Build { name: String },
    /// Demolish one of the player's own houses within two tiles.
    Demolish { object: u64 },
    /// Dig (`kind` 1, water) or plant (`kind` 4, forest) the tile the player stands on.
    Terraform { kind: u8 },
}

impl Action {
    /// How many of this kind a player may send per second, and in a burst.
    fn rate(&self) -> (f32, f32) {
        match self {
            Action::Move { .. } => (15.0, 30.0),
            Action::PickUp { .. } | Action::Drop { .. } => (4.0, 4.0),
            Action::Build { .. } => (0.5, 1.0),
            Action::Demolish { .. } => (1.0, 1.0),
            Action::Terraform { .. } => (4.0, 4.0),
        }
    }

    /// Which rate bucket the action draws from.
    fn bucket(&self) -> usize {
        match self {
            Action::Move { .. } => 0,
            Action::PickUp { .. } | Action::Drop { .. } => 1,
            Action::Build { .. } => 2,
            Action::Demolish { .. } => 3,
            Action::Terraform { .. } => 4,
        }
    }
}

/// Where each player is (transient: positions are not published).
#[derive(Resource, Default)]
pub(crate) struct Players(pub(crate) HashMap<String, (u32, u16, u16)>);

/// Each player's rate buckets: (tokens, tick last refilled), one per action kind.
#[derive(Resource, Default)]
pub(crate) struct RateBuckets(HashMap<String, [(f32, u64); 5]>);

/// Server ticks so far.
#[derive(Resource, Default)]
pub(crate) struct Tick(pub(crate) u64);

/// Server ticks per second.
#[derive(Resource)]
pub(crate) struct TickRate(pub(crate) u32);

/// The zones beyond each zone's edges, by zone index: north, south, east, west.
#[derive(Resource, Default)]
pub(crate) struct ZoneMap(pub(crate) HashMap<u32, [Option<u32>; 4]>);

/// The zones (by index) this server serves, in a world spread over several
/// servers; `None`: every zone. A move into a zone served elsewhere is
/// refused (the client enters it through the server that serves it).
#[derive(Resource, Default)]
pub(crate) struct ServedZones(pub(crate) Option<std::collections::HashSet<u32>>);

/// Actions of players this server does not host yet, in order, each with
/// its intent (deferred: confirmed only once applied).
#[derive(Resource, Default)]
pub(crate) struct Deferred(pub(crate) HashMap<String, std::collections::VecDeque<(IntentId, Action)>>);

/// Why the rules refused an action: the demo's code (1000 and up, as
/// docs/PROTOCOL.md lists them) and the reason shown to the player.
type Refusal = (u16, String);

/// The demo's refusal codes (docs/PROTOCOL.md, "The demo game").
pub(crate) mod refusal {
    /// Over the action's rate.
    pub(crate) const TOO_FAST: u16 = 1001;
    /// The player is not in a zone yet (no `Move` yet).
    pub(crate) const NOWHERE: u16 = 1002;
    /// Out of reach, or not the player's to take, drop or demolish.
    pub(crate) const OUT_OF_REACH: u16 = 1003;
    /// The place or the arguments do not allow it.
    pub(crate) const NOT_HERE: u16 = 1004;
    /// The server is busy taking the player over from another server.
    pub(crate) const BUSY: u16 = 1005;
}

/// Counts ticks (runs before [`apply_actions`]).
pub(crate) fn advance_tick(mut tick: ResMut<Tick>) {
    tick.0 += 1;
}

/// Whether `player` may do `action` now, taking a token if so. A player gets
/// `rate` actions of a kind per second, and up to `burst` at once.
fn allowed_now(buckets: &mut RateBuckets, player: &str, action: &Action, tick: u64, hz: u32) -> bool {
    let (rate, burst) = action.rate();
    let slots = buckets.0.entry(player.to_owned()).or_insert([(f32::MAX, 0); 5]);
    let (tokens, last) = &mut slots[action.bucket()];
    let refill = (tick.saturating_sub(*last)) as f32 * rate / hz as f32;
    *tokens = (*tokens + refill).min(burst);
    *last = tick;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

/// Whether stepping from (from, px, py) to (to, x, y) crosses an edge of
/// `from` into the neighbour beyond it, arriving on the facing edge.
fn crosses(map: &ZoneMap, from: (u32, u16, u16), to: (u32, u16, u16)) -> bool {
    let (z, px, py) = from;
    let (t, x, y) = to;
    let last = ZONE_SIZE - 1;
    let Some([north, south, east, west]) = map.0.get(&z) else {
        return false;
    };
    (*north == Some(t) && py == 0 && y == last && x == px)
        || (*south == Some(t) && py == last && y == 0 && x == px)
        || (*east == Some(t) && px == last && x == 0 && y == py)
        || (*west == Some(t) && px == 0 && x == last && y == py)
}

/// The next object id for things the server creates.
#[derive(Resource)]
pub(crate) struct NextObject(pub(crate) u64);

/// The shard of a player's inventory: a hash of the name, above every zone's shards.
pub(crate) fn inventory_shard(player: &str) -> ShardId {
    let hash = blake3::hash(player.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    ShardId(1 << 40 | (u64::from_le_bytes(bytes) >> 24))
}

/// The ground shard holding tile (x, y) of zone `zone`.
pub(crate) fn ground_shard(zone: u32, x: u16, y: u16) -> ShardId {
    ShardId(u64::from(zone) * 1000 + u64::from(y / 32) * 8 + u64::from(x / 32))
}

/// Creates `player`'s inventory shard if it does not exist (called when a player joins).
pub(crate) fn ensure_inventory(player: &str, store: &dyn WorldStore) -> Result<(), String> {
    let shard = inventory_shard(player);
    if store.shard_head(shard).is_ok() {
        return Ok(());
    }
    let zone = ZoneId::new(INVENTORY_ZONE).map_err(|e| e.to_string())?;
    let spec = ShardSpec {
        id: shard,
        scope: ShardScope::Perspective(player.to_owned()),
    };
    match store.create_zone(&zone, &[spec]) {
        Ok(()) => Ok(()),
        // A player signing in on several connections at once: each join
        // hook found no inventory, one created it. The others' sign-ins
        // stand (the newest session keeps the player), not refused.
        Err(_) if store.shard_head(shard).is_ok() => Ok(()),
        Err(e) => Err(format!("could not create the inventory of {player}: {e}")),
    }
}

fn near(a: (u16, u16), b: (u16, u16), range: u16) -> bool {
    a.0.abs_diff(b.0) <= range && a.1.abs_diff(b.1) <= range
}

/// Items: moved between the ground and inventories.
type ItemQuery<'w, 's> = Query<'w, 's, (&'static mut Published, &'static mut Item)>;

/// Houses, disjoint from items.
type HouseQuery<'w, 's> = Query<'w, 's, (Entity, &'static Published, &'static House), Without<Item>>;

/// Terrain rows, disjoint from items and houses (whose markers the other queries write).
type TerrainQuery<'w, 's> =
    Query<'w, 's, (&'static Published, &'static mut TerrainRow), (Without<Item>, Without<House>)>;

/// Applies this tick's actions; every action that changes nothing is
/// refused with the reason (the player's client shows it), and one that
/// must wait for this server to host its player is deferred, confirmed only
/// once applied.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_actions(
    intents: Res<IncomingIntents>,
    mut outcomes: ResMut<IntentOutcomes>,
    (tick, rate, zones): (Res<Tick>, Res<TickRate>, Res<ZoneMap>),
    (served, hosted, mut deferred): (
        Res<ServedZones>,
        Option<Res<super::hosting::Hosted>>,
        Option<ResMut<Deferred>>,
    ),
    mut players: ResMut<Players>,
    mut buckets: ResMut<RateBuckets>,
    mut next: ResMut<NextObject>,
    mut items: ItemQuery,
    houses: HouseQuery,
    mut terrain: TerrainQuery,
    mut commands: Commands,
) {
    // On a server of some zones, a player acts once this server hosts them
    // (their lease held, their inventory loaded); until then their actions
    // wait, in order, at most MAX_DEFERRED of them.
    let mut todo = Vec::new();
    if let (Some(hosted), Some(deferred)) = (&hosted, &mut deferred) {
        deferred.0.retain(|player, queue| {
            if hosted.may_act(player) {
                todo.extend(queue.drain(..).map(|(id, a)| (id, player.clone(), a, true)));
                false
            } else if hosted.expects(player) {
                true
            } else {
                for (id, _) in queue.drain(..) {
                    outcomes.refuse(
                        id,
                        refusal::BUSY,
                        "this server no longer expects you; act on the server you are on",
                    );
                }
                false
            }
        });
    }
    for (id, player, action) in intents.read_with_ids::<Action>(ACTION) {
        match (&hosted, &mut deferred) {
            (Some(hosted), Some(deferred)) if !hosted.may_act(&player) => {
                let queue = deferred.0.entry(player.clone()).or_default();
                if queue.len() < super::hosting::MAX_DEFERRED {
                    outcomes.defer(id);
                    queue.push_back((id, action));
                } else {
                    outcomes.refuse(
                        id,
                        refusal::BUSY,
                        "too many actions while this server takes you over; try again in a moment",
                    );
                }
            }
            _ => todo.push((id, player, action, false)),
        }
    }
    for (id, player, action, was_deferred) in todo {
        let done = apply_one(
            &player,
            action,
            (&mut players, &mut buckets, &mut next),
            (&tick, &rate, &zones, &served),
            (&mut items, &houses, &mut terrain),
            &mut commands,
        );
        match done {
            Err((code, reason)) => outcomes.refuse(id, code, reason),
            Ok(()) if was_deferred => outcomes.complete(id),
            Ok(()) => {}
        }
    }
}

/// One action by `player`: applied, or why not.
fn apply_one(
    player: &str,
    action: Action,
    (players, buckets, next): (&mut Players, &mut RateBuckets, &mut NextObject),
    (tick, rate, zones, served): (&Tick, &TickRate, &ZoneMap, &ServedZones),
    (items, houses, terrain): (&mut ItemQuery, &HouseQuery, &mut TerrainQuery),
    commands: &mut Commands,
) -> Result<(), Refusal> {
    if !allowed_now(buckets, player, &action, tick.0, rate.0) {
        return Err((refusal::TOO_FAST, "too many actions of this kind; slow down".into()));
    }
    let here = players.0.get(player).copied();
    let nowhere = || (refusal::NOWHERE, "you are in no zone yet: move first".to_owned());
    match action {
        Action::Move { zone, x, y } => {
            if x >= ZONE_SIZE || y >= ZONE_SIZE {
                return Err((refusal::NOT_HERE, format!("({x}, {y}) is outside the zone")));
            }
            if served.0.as_ref().is_some_and(|s| !s.contains(&zone)) {
                return Err((refusal::NOT_HERE, "that zone is served by another server".into()));
            }
            let reachable = here.is_none_or(|(z, px, py)| {
                (z == zone && near((px, py), (x, y), 1)) || crosses(zones, (z, px, py), (zone, x, y))
            });
            if !reachable {
                return Err((refusal::OUT_OF_REACH, format!("({x}, {y}) is more than one step away")));
            }
            players.0.insert(player.to_owned(), (zone, x, y));
        }
        Action::PickUp { object } => {
            let (zone, x, y) = here.ok_or_else(nowhere)?;
            let mut taken = false;
            for (mut published, item) in items.iter_mut() {
                if published.object.0 == object
                    && published.shard == ground_shard(zone, item.x, item.y)
                    && near((x, y), (item.x, item.y), 1)
                {
                    published.shard = inventory_shard(player);
                    taken = true;
                }
            }
            if !taken {
                return Err((
                    refusal::OUT_OF_REACH,
                    format!("no item {object} lies within one tile of you"),
                ));
            }
        }
        Action::Drop { object } => {
            let (zone, x, y) = here.ok_or_else(nowhere)?;
            let mut dropped = false;
            for (mut published, mut item) in items.iter_mut() {
                if published.object.0 == object && published.shard == inventory_shard(player) {
                    published.shard = ground_shard(zone, x, y);
                    item.x = x;
                    item.y = y;
                    dropped = true;
                }
            }
            if !dropped {
                return Err((refusal::OUT_OF_REACH, format!("item {object} is not in your inventory")));
            }
        }
        Action::Build { name } => {
            let (zone, x, y) = here.ok_or_else(nowhere)?;
            // Only houses of this zone (a ground shard's id carries its zone).
            let occupied = houses.iter().any(|(_, p, h)| {
                p.shard.0 / 1000 == u64::from(zone)
                    && x >= h.x
                    && x < h.x + u16::from(h.size.0)
                    && y >= h.y
                    && y < h.y + u16::from(h.size.1)
            });
            if occupied {
                return Err((refusal::NOT_HERE, "a house stands here already".into()));
            }
            if name.is_empty() || name.len() > 32 {
                return Err((refusal::NOT_HERE, "a house's name is 1 to 32 bytes".into()));
            }
            if x > ZONE_SIZE - 3 || y > ZONE_SIZE - 3 {
                return Err((refusal::NOT_HERE, "too close to the zone's edge to build".into()));
            }
            // Ids are never reused: at the end of the range, building stops.
            let Some(after) = next.0.checked_add(1) else {
                tracing::error!("object ids are exhausted; no more houses can be built");
                return Err((refusal::NOT_HERE, "this world can hold no more houses".into()));
            };
            let id = ObjectId(next.0);
            next.0 = after;
            commands.spawn((
                Published::new(id, ground_shard(zone, x, y)),
                House {
                    owner: player.to_owned(),
                    name,
                    x,
                    y,
                    size: (2, 2),
                    colour: (200, 120, 60),
                },
            ));
        }
        Action::Demolish { object } => {
            let (_, x, y) = here.ok_or_else(nowhere)?;
            let mine = houses
                .iter()
                .find(|(_, p, h)| p.object.0 == object && h.owner == player && near((x, y), (h.x, h.y), 2));
            match mine {
                Some((entity, _, _)) => commands.entity(entity).despawn(),
                None => {
                    return Err((
                        refusal::OUT_OF_REACH,
                        format!("no house {object} of yours stands within two tiles"),
                    ));
                }
            }
        }
        Action::Terraform { kind } => {
            let (zone, x, y) = here.ok_or_else(nowhere)?;
            if kind != 1 && kind != 4 {
                return Err((
                    refusal::NOT_HERE,
                    format!("tile kind {kind}: dig water (1) or plant forest (4)"),
                ));
            }
            for (published, mut row) in terrain.iter_mut() {
                if published.shard == ground_shard(zone, x, y) && row.y == y && x >= row.x {
                    let at = usize::from(x - row.x);
                    if let Some(tile) = row.tiles.get_mut(at) {
                        *tile = kind;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_proto::intents::ReceivedIntent;

    #[test]
    fn simultaneous_sign_ins_of_a_new_player_all_find_one_inventory() {
        for round in 0..20 {
            let store = hoard_engine::MemoryStore::new();
            let player = format!("new-{round}");
            let start = std::sync::Barrier::new(8);
            let results: Vec<Result<(), String>> = std::thread::scope(|s| {
                let joins: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            ensure_inventory(&player, &store)
                        })
                    })
                    .collect();
                joins.into_iter().map(|j| j.join().expect("thread")).collect()
            });
            assert!(results.iter().all(Result::is_ok), "round {round}: {results:?}");
            assert!(store.shard_head(inventory_shard(&player)).is_ok());
        }
    }

    fn world() -> (World, Schedule, Entity) {
        let mut world = World::new();
        world.init_resource::<IncomingIntents>();
        world.init_resource::<IntentOutcomes>();
        world.init_resource::<Players>();
        world.init_resource::<RateBuckets>();
        world.init_resource::<ServedZones>();
        world.init_resource::<Tick>();
        world.insert_resource(TickRate(20));
        // Zone 0 has zone 1 to its east.
        world.insert_resource(ZoneMap(HashMap::from([
            (0, [None, None, Some(1), None]),
            (1, [None, None, None, Some(0)]),
        ])));
        world.insert_resource(NextObject(1_000_000));
        let item = world
            .spawn((
                Published::new(ObjectId(7), ground_shard(0, 40, 40)),
                Item {
                    kind: "gold".into(),
                    count: 1,
                    x: 40,
                    y: 40,
                },
            ))
            .id();
        world.spawn((
            Published::new(ObjectId(8), ground_shard(0, 10, 10)),
            House {
                owner: "ann".into(),
                name: "ann's".into(),
                x: 10,
                y: 10,
                size: (2, 2),
                colour: (1, 2, 3),
            },
        ));
        let mut schedule = Schedule::default();
        schedule.add_systems((advance_tick, apply_actions).chain());
        (world, schedule, item)
    }

    /// Sends `actions` in one tick.
    fn act_at_once(world: &mut World, schedule: &mut Schedule, player: &str, actions: &[Action]) {
        world.resource_mut::<IncomingIntents>().0 = actions
            .iter()
            .map(|action| ReceivedIntent {
                id: Default::default(),
                perspective: player.into(),
                kind: ACTION.into(),
                payload: rmp_serde::to_vec(action).expect("encode"),
            })
            .collect();
        schedule.run(world);
    }

    /// Sends `action` a second after the previous one (no rate limit applies).
    fn act(world: &mut World, schedule: &mut Schedule, player: &str, action: Action) {
        world.resource_mut::<Tick>().0 += 19;
        act_at_once(world, schedule, player, &[action]);
    }

    #[test]
    fn an_action_that_changes_nothing_is_refused_with_its_reason() {
        let (mut world, mut schedule, _) = world();
        let refusals = |world: &mut World| world.resource_mut::<IntentOutcomes>().take().0;
        act(&mut world, &mut schedule, "ann", Action::PickUp { object: 7 });
        let nowhere = refusals(&mut world);
        assert_eq!(nowhere.len(), 1);
        assert_eq!(nowhere[0].1, refusal::NOWHERE, "{nowhere:?}");
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 42, y: 42 });
        assert!(refusals(&mut world).is_empty(), "a move is applied, not refused");
        act(&mut world, &mut schedule, "ann", Action::PickUp { object: 7 });
        let far = refusals(&mut world);
        assert_eq!(far[0].1, refusal::OUT_OF_REACH);
        assert!(far[0].2.contains("within one tile"), "{far:?}");
        act(&mut world, &mut schedule, "ann", Action::Terraform { kind: 9 });
        assert_eq!(refusals(&mut world)[0].1, refusal::NOT_HERE);
        let burst: Vec<Action> = (0..40).map(|_| Action::Move { zone: 0, x: 42, y: 42 }).collect();
        act_at_once(&mut world, &mut schedule, "ann", &burst);
        assert!(
            refusals(&mut world).iter().any(|r| r.1 == refusal::TOO_FAST),
            "a burst over the rate is refused, not dropped"
        );
    }

    #[test]
    fn pick_up_needs_range_and_moves_the_item_into_the_inventory_shard() {
        let (mut world, mut schedule, item) = world();
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 42, y: 42 });
        act(&mut world, &mut schedule, "ann", Action::PickUp { object: 7 });
        assert_eq!(
            world.get::<Published>(item).map(|p| p.shard),
            Some(ground_shard(0, 40, 40)),
            "two tiles away"
        );
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 41, y: 41 });
        act(&mut world, &mut schedule, "ann", Action::PickUp { object: 7 });
        assert_eq!(
            world.get::<Published>(item).map(|p| p.shard),
            Some(inventory_shard("ann"))
        );
        // Bob cannot drop Ann's item.
        act(
            &mut world,
            &mut schedule,
            "bob",
            Action::Move {
                zone: 0,
                x: 100,
                y: 100,
            },
        );
        act(&mut world, &mut schedule, "bob", Action::Drop { object: 7 });
        assert_eq!(
            world.get::<Published>(item).map(|p| p.shard),
            Some(inventory_shard("ann"))
        );
        // Ann drops it where she stands, in another chunk.
        for step in 0..30u16 {
            act(
                &mut world,
                &mut schedule,
                "ann",
                Action::Move {
                    zone: 0,
                    x: 42 + step,
                    y: 41,
                },
            );
        }
        act(&mut world, &mut schedule, "ann", Action::Drop { object: 7 });
        assert_eq!(
            world.get::<Published>(item).map(|p| p.shard),
            Some(ground_shard(0, 71, 41))
        );
        assert_eq!(world.get::<Item>(item).map(|i| (i.x, i.y)), Some((71, 41)));
    }

    #[test]
    fn walking_is_one_step_at_a_time() {
        let (mut world, mut schedule, _) = world();
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 5, y: 5 });
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 50, y: 50 });
        assert_eq!(world.resource::<Players>().0.get("ann"), Some(&(0, 5, 5)));
    }

    #[test]
    fn only_owners_demolish_and_building_needs_free_ground() {
        let (mut world, mut schedule, _) = world();
        let houses = |w: &mut World| w.query::<&House>().iter(w).count();
        act(&mut world, &mut schedule, "bob", Action::Move { zone: 0, x: 11, y: 11 });
        act(&mut world, &mut schedule, "bob", Action::Demolish { object: 8 });
        act(
            &mut world,
            &mut schedule,
            "bob",
            Action::Build { name: "on top".into() },
        );
        assert_eq!(houses(&mut world), 1, "not bob's house, and the ground is taken");
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 12, y: 12 });
        act(&mut world, &mut schedule, "ann", Action::Demolish { object: 8 });
        assert_eq!(houses(&mut world), 0);
        act(&mut world, &mut schedule, "ann", Action::Build { name: "new".into() });
        assert_eq!(houses(&mut world), 1);
    }

    #[test]
    fn a_house_in_one_zone_does_not_block_the_same_tile_in_another() {
        let (mut world, mut schedule, _) = world();
        let houses = |w: &mut World| w.query::<&House>().iter(w).count();
        let before = houses(&mut world);
        // Zone 0 has a house at (11, 11); zone 1 does not.
        act(
            &mut world,
            &mut schedule,
            "cleo",
            Action::Move { zone: 1, x: 11, y: 11 },
        );
        act(
            &mut world,
            &mut schedule,
            "cleo",
            Action::Build { name: "cleo's".into() },
        );
        assert_eq!(houses(&mut world), before + 1);
    }

    #[test]
    fn a_server_serving_some_zones_refuses_moves_into_the_others() {
        let (mut world, mut schedule, _) = world();
        world.insert_resource(ServedZones(Some([0].into())));
        act(&mut world, &mut schedule, "cleo", Action::Move { zone: 1, x: 5, y: 5 });
        assert_eq!(
            world.resource::<Players>().0.get("cleo"),
            None,
            "zone 1 is served elsewhere"
        );
        act(&mut world, &mut schedule, "cleo", Action::Move { zone: 0, x: 5, y: 5 });
        assert_eq!(world.resource::<Players>().0.get("cleo"), Some(&(0, 5, 5)));
        // Walking off the east edge into zone 1 is refused too: the player stays.
        world.resource_mut::<Players>().0.insert("cleo".into(), (0, 255, 5));
        act(&mut world, &mut schedule, "cleo", Action::Move { zone: 1, x: 0, y: 5 });
        assert_eq!(world.resource::<Players>().0.get("cleo"), Some(&(0, 255, 5)));
        world.insert_resource(ServedZones(None));
        act(&mut world, &mut schedule, "cleo", Action::Move { zone: 1, x: 0, y: 5 });
        assert_eq!(
            world.resource::<Players>().0.get("cleo"),
            Some(&(1, 0, 5)),
            "on a server serving every zone the same step crosses"
        );
    }

    #[test]
    fn building_stops_when_object_ids_run_out_instead_of_wrapping() {
        let (mut world, mut schedule, _) = world();
        let houses = |w: &mut World| w.query::<&House>().iter(w).count();
        let before = houses(&mut world);
        world.insert_resource(NextObject(u64::MAX));
        act(
            &mut world,
            &mut schedule,
            "cleo",
            Action::Move { zone: 1, x: 20, y: 20 },
        );
        act(&mut world, &mut schedule, "cleo", Action::Build { name: "last".into() });
        assert_eq!(houses(&mut world), before, "no id left: nothing built");
        assert_eq!(world.resource::<NextObject>().0, u64::MAX, "the counter did not wrap");
    }

    #[test]
    fn each_kind_of_action_is_rate_limited_per_player() {
        let (mut world, mut schedule, _) = world();
        let houses = |w: &mut World| w.query::<&House>().iter(w).count();
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 60, y: 60 });
        let builds: Vec<Action> = (0..5).map(|n| Action::Build { name: format!("h{n}") }).collect();
        act_at_once(&mut world, &mut schedule, "ann", &builds);
        assert_eq!(houses(&mut world), 2, "one new house, however many asked at once");
        // 100 steps east at once: only the burst gets through.
        let steps: Vec<Action> = (1..=100)
            .map(|n| Action::Move {
                zone: 0,
                x: 60 + n,
                y: 60,
            })
            .collect();
        act_at_once(&mut world, &mut schedule, "ann", &steps);
        let (_, x, _) = world.resource::<Players>().0["ann"];
        assert!((60 + 29..=60 + 31).contains(&x), "walked to {x}");
        // Bob has his own buckets.
        act(&mut world, &mut schedule, "bob", Action::Move { zone: 0, x: 90, y: 90 });
        act_at_once(&mut world, &mut schedule, "bob", &builds[..1]);
        assert_eq!(houses(&mut world), 3);
        // After two seconds Ann may build again.
        world.resource_mut::<Tick>().0 += 40;
        act_at_once(&mut world, &mut schedule, "ann", &builds[..1]);
        assert_eq!(houses(&mut world), 4);
    }

    #[test]
    fn a_player_crosses_only_into_the_neighbour_beyond_the_edge_they_stand_on() {
        let (mut world, mut schedule, _) = world();
        let at = |w: &World| w.resource::<Players>().0["ann"];
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 255, y: 9 });
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 1, x: 0, y: 10 });
        assert_eq!(at(&world), (0, 255, 9), "arriving one row off");
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 2, x: 0, y: 9 });
        assert_eq!(at(&world), (0, 255, 9), "zone 2 is not zone 0's neighbour");
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 1, x: 0, y: 9 });
        assert_eq!(at(&world), (1, 0, 9));
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 0, y: 9 });
        assert_eq!(at(&world), (1, 0, 9), "back west arrives on the east edge");
        act(&mut world, &mut schedule, "ann", Action::Move { zone: 0, x: 255, y: 9 });
        assert_eq!(at(&world), (0, 255, 9));
    }
}
