//! One bot's scripted, random life in the demo world: it connects (with
//! its zone's `EnterZone` pipelined behind `Hello`), then on a fixed
//! schedule walks, digs and plants, builds, picks items up and drops them,
//! and every so often walks to its zone's corner and crosses into the next
//! zone, leaving the old zone and entering the new one.
//!
//! The demo's four zones meet at one corner (meadow's south-east, forest's
//! south-west, coast's north-west, desert's north-east), so a bot lives in
//! the 8×8 tiles at that corner of its zone and changes zones round the
//! ring meadow → forest → coast → desert → meadow by stepping across from
//! the corner tile, as a player would.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoard_engine::{Seq, ShardId, ZoneId};
use hoard_net::quic::client::{ClientEvent, ClientOptions, ClientUpdate, HoardClient};
use hoard_proto::sync::client::EntryStats;
use hoard_world_cache::CachedObject;

use super::record::{EntryKind, Record};
use crate::game::rules::{ACTION, Action, ground_shard};
use crate::game::{Item, ZONE_SIZE};

/// A zone of the ring: name, index, the corner tile, and the tile of the
/// next zone a step across from it.
type RingZone = (&'static str, u32, (u16, u16), (u16, u16));

/// The demo's zones round the shared corner.
const RING: [RingZone; 4] = [
    ("meadow", 0, (LAST, LAST), (0, LAST)),
    ("forest", 1, (0, LAST), (0, 0)),
    ("coast", 3, (0, 0), (LAST, 0)),
    ("desert", 2, (LAST, 0), (LAST, LAST)),
];
const LAST: u16 = ZONE_SIZE - 1;
/// The side of the square a bot walks in, at its zone's corner.
const BOX: u16 = 8;
/// Live updates waiting to be matched with the action that caused them.
const MAX_RECEIPTS: usize = 4096;
/// How long after receipt an update is matched (by then the acting bot has
/// recorded which commit its action landed in).
const MATCH_AFTER: Duration = Duration::from_secs(2);

/// How a bot lives.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Actions per second.
    pub(crate) actions_per_sec: f64,
    /// Seconds between zone changes: uniformly within this range.
    pub(crate) zone_change_every: (f64, f64),
    /// When the run ends.
    pub(crate) stop_at: Instant,
    /// Whether the bot prefetches (follows) every other zone as well.
    pub(crate) prefetch_all: bool,
}

/// A world-changing action in flight: when it was due and sent, and the
/// shard it changes.
struct InFlight {
    due: Instant,
    sent: Instant,
    shard: Option<ShardId>,
}

struct Bot {
    /// `None` only while moving to another server.
    client: Option<HoardClient>,
    /// When `client` connected (what it carried is counted per second of it).
    connected_at: Instant,
    /// How `client` connected (to move to another server of the world).
    options: ClientOptions,
    record: Arc<Record>,
    rng: fastrand::Rng,
    name: String,
    /// Index into [`RING`].
    zone: usize,
    pos: (u16, u16),
    /// Items lying in the bot's square, by id.
    items: HashMap<u64, (u16, u16)>,
    /// An item the bot believes it carries, and steps since it took it.
    carrying: Option<(u64, u32)>,
    in_flight: BTreeMap<u32, InFlight>,
    /// The latest seq received for each shard, and when.
    latest: HashMap<ShardId, (Seq, Instant)>,
    receipts: VecDeque<(ShardId, Seq, Instant)>,
    builds: u32,
}

fn zone_id(index: usize) -> ZoneId {
    ZoneId::new(RING[index].0).expect("the ring's zone names are valid")
}

fn entry_kind(stats: &EntryStats) -> EntryKind {
    if stats.shards_fresh + stats.shards_delta == 0 {
        EntryKind::Cold
    } else {
        EntryKind::Warm
    }
}

fn error_kind(e: &hoard_net::quic::client::ClientError) -> &'static str {
    use hoard_net::quic::client::ClientError as E;
    match e {
        E::Connect { .. } => "connect",
        E::Refused { .. } => "refused",
        E::ZoneDenied { .. } => "zone denied",
        E::Cache(_) => "cache",
        E::Lost(_) => "connection lost",
        E::Timeout(..) => "entry timeout",
        _ => "other",
    }
}

/// Lives one bot's life from `due` (its place in the ramp) until the plan's
/// end; everything it sees goes into `record`.
pub(crate) async fn live(
    options: ClientOptions,
    name: String,
    seed: u64,
    due: Instant,
    plan: Plan,
    record: Arc<Record>,
) {
    tokio::time::sleep_until(due.into()).await;
    if Instant::now() >= plan.stop_at {
        return;
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let zone = rng.usize(..RING.len());
    let (client, stats, options) = match enter_following(options, &zone_id(zone)).await {
        Ok(entered) => entered,
        Err(e) => {
            tracing::debug!(bot = %name, error = %e, "could not connect and enter");
            return record.error(error_kind(&e));
        }
    };
    record.connected(1);
    record.entry(entry_kind(&stats), due, stats.bytes_rx, stats.bytes_tx);
    if plan.prefetch_all {
        for other in (0..RING.len()).filter(|i| *i != zone) {
            if let Err(e) = client.prefetch(&zone_id(other)).await {
                tracing::debug!(bot = %name, error = %e, "could not prefetch a zone");
                record.error(error_kind(&e));
            }
        }
    }
    // A random tile of the square (clamping a random tile lands in it).
    let pos = (rng.u16(..ZONE_SIZE), rng.u16(..ZONE_SIZE));
    let mut bot = Bot {
        client: Some(client),
        connected_at: Instant::now(),
        options,
        record: record.clone(),
        rng,
        name,
        zone,
        pos: clamp_to_box(zone, pos),
        items: HashMap::new(),
        carrying: None,
        in_flight: BTreeMap::new(),
        latest: HashMap::new(),
        receipts: VecDeque::new(),
        builds: 0,
    };
    bot.run(plan).await;
    if let Some(client) = &bot.client {
        record.quic(&client.connection_stats(), bot.connected_at.elapsed());
        client.close();
    }
    bot.resolve_receipts(true);
    record.connected(-1);
}

/// Most times one entry follows `ZoneElsewhere` to another server.
const MAX_REDIRECTS: usize = 4;

/// Connects and enters `zone`, following the world to the server that
/// serves it (pinning the identity already verified, as a world's servers
/// share it); the client, the entry, and the options it connected with.
async fn enter_following(
    mut options: ClientOptions,
    zone: &ZoneId,
) -> Result<(HoardClient, EntryStats, ClientOptions), hoard_net::quic::client::ClientError> {
    use hoard_net::quic::client::ClientError;
    for _ in 0..=MAX_REDIRECTS {
        let (address, identity) =
            match HoardClient::connect_and_enter(options.clone(), crate::game::registry(), zone).await {
                Ok((client, pending)) => match pending.wait().await {
                    Ok(stats) => return Ok((client, stats, options)),
                    Err(ClientError::ZoneElsewhere { address, .. }) => {
                        client.close_and_wait(Duration::from_millis(500)).await;
                        (address, client.identity())
                    }
                    Err(e) => {
                        client.close();
                        return Err(e);
                    }
                },
                Err(ClientError::ZoneElsewhere { address, .. }) => {
                    let known = hoard_trust::tls::KnownServers::new(options.cache_dir.join("known_servers"));
                    let identity = options
                        .pin
                        .or_else(|| known.get(&options.server.to_string()))
                        .ok_or_else(|| ClientError::Lost("sent on by a server whose identity is not known".into()))?;
                    (address, identity)
                }
                Err(e) => return Err(e),
            };
        options.server = std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ClientError::Lost(format!("the server address {address:?} does not resolve")))?;
        options.pin = Some(identity);
    }
    Err(hoard_net::quic::client::ClientError::Lost(format!(
        "zone {zone}: sent on more than {MAX_REDIRECTS} times"
    )))
}

/// The tile `pos` moved into `zone`'s square at the corner.
fn clamp_to_box(zone: usize, pos: (u16, u16)) -> (u16, u16) {
    let (cx, cy) = RING[zone].2;
    let range = |c: u16| if c == 0 { (0, BOX - 1) } else { (LAST + 1 - BOX, LAST) };
    let (x0, x1) = range(cx);
    let (y0, y1) = range(cy);
    (pos.0.clamp(x0, x1), pos.1.clamp(y0, y1))
}

impl Bot {
    /// The connection (present except while moving to another server,
    /// which only `change_zone` does, and it returns false if that fails).
    fn client(&self) -> &HoardClient {
        self.client.as_ref().expect("a bot is connected between zone changes")
    }

    async fn run(&mut self, plan: Plan) {
        let period = Duration::from_secs_f64(1.0 / plan.actions_per_sec.max(0.001));
        // Place the bot (the first move of a player may go anywhere).
        let now = Instant::now();
        self.act(
            Action::Move {
                zone: RING[self.zone].1,
                x: self.pos.0,
                y: self.pos.1,
            },
            now,
            None,
        )
        .await;
        let mut next_action = now + period.mul_f64(self.rng.f64());
        let mut next_change = now + self.change_interval(&plan);
        loop {
            let wake = next_action.min(next_change).min(plan.stop_at);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = self.client().changed() => {}
            }
            if !self.take_updates() {
                return;
            }
            let now = Instant::now();
            if now >= plan.stop_at {
                return;
            }
            if now >= next_change {
                let due = next_change;
                next_change = due + self.change_interval(&plan);
                if !self.change_zone(due).await {
                    return;
                }
                continue;
            }
            if now >= next_action {
                let due = next_action;
                next_action += period;
                self.random_action(due).await;
                self.resolve_receipts(false);
            }
        }
    }

    fn change_interval(&mut self, plan: &Plan) -> Duration {
        let (lo, hi) = plan.zone_change_every;
        Duration::from_secs_f64(lo + (hi - lo).max(0.0) * self.rng.f64())
    }

    /// Sends one action; a world-changing one (on `shard`) is followed
    /// until it is processed, to match the live update it causes.
    async fn act(&mut self, action: Action, due: Instant, shard: Option<ShardId>) {
        match self.client().send_intent(ACTION, &action).await {
            Ok(seq) => {
                self.record.sent();
                if self.in_flight.len() < 1024 {
                    self.in_flight.insert(
                        seq,
                        InFlight {
                            due,
                            sent: Instant::now(),
                            shard,
                        },
                    );
                }
            }
            Err(e) => self.record.error(error_kind(&e)),
        }
    }

    async fn random_action(&mut self, due: Instant) {
        let zone_index = RING[self.zone].1;
        let here = ground_shard(zone_index, self.pos.0, self.pos.1);
        if let Some((object, steps)) = self.carrying
            && steps >= 3
        {
            self.carrying = None;
            return self.act(Action::Drop { object }, due, Some(here)).await;
        }
        let near = self
            .items
            .iter()
            .find(|(_, (x, y))| x.abs_diff(self.pos.0) <= 1 && y.abs_diff(self.pos.1) <= 1)
            .map(|(id, at)| (*id, *at));
        if self.carrying.is_none()
            && let Some((object, (x, y))) = near
        {
            self.carrying = Some((object, 0));
            self.items.remove(&object);
            return self
                .act(Action::PickUp { object }, due, Some(ground_shard(zone_index, x, y)))
                .await;
        }
        let roll = self.rng.f64();
        if roll < 0.15 {
            let kind = if self.rng.bool() { 1 } else { 4 };
            return self.act(Action::Terraform { kind }, due, Some(here)).await;
        }
        if roll < 0.2 {
            self.builds += 1;
            let name = format!("{}-{}", self.name, self.builds);
            return self.act(Action::Build { name }, due, Some(here)).await;
        }
        // A step: towards an item in the square if there is one, else random.
        let target = self.items.values().next().copied();
        let step = |from: u16, to: Option<u16>, rng: &mut fastrand::Rng| match to {
            Some(t) if t > from => from + 1,
            Some(t) if t < from => from - 1,
            Some(_) => from,
            None => from.saturating_add_signed(rng.i16(-1..=1)),
        };
        let next = (
            step(self.pos.0, target.map(|t| t.0), &mut self.rng),
            step(self.pos.1, target.map(|t| t.1), &mut self.rng),
        );
        self.pos = clamp_to_box(self.zone, next);
        if let Some((_, steps)) = &mut self.carrying {
            *steps += 1;
        }
        let (x, y) = self.pos;
        self.act(Action::Move { zone: zone_index, x, y }, due, None).await;
    }

    /// Walks to the corner, steps across into the next zone, leaves the old
    /// zone and enters the new one. False if the bot cannot go on.
    async fn change_zone(&mut self, due: Instant) -> bool {
        let from = self.zone;
        let to = (from + 1) % RING.len();
        let corner = RING[from].2;
        // The walk as one burst of steps (within the game's move burst).
        while self.pos != corner {
            let step = |p: u16, c: u16| match p.cmp(&c) {
                std::cmp::Ordering::Less => p + 1,
                std::cmp::Ordering::Greater => p - 1,
                std::cmp::Ordering::Equal => p,
            };
            self.pos = (step(self.pos.0, corner.0), step(self.pos.1, corner.1));
            let (x, y) = self.pos;
            self.act(
                Action::Move {
                    zone: RING[from].1,
                    x,
                    y,
                },
                due,
                None,
            )
            .await;
        }
        let arrival = RING[from].3;
        self.act(
            Action::Move {
                zone: RING[to].1,
                x: arrival.0,
                y: arrival.1,
            },
            due,
            None,
        )
        .await;
        if let Err(e) = self.client().leave_zone(&zone_id(from)).await {
            self.record.error(error_kind(&e));
            return false;
        }
        self.zone = to;
        self.pos = arrival;
        self.items.clear();
        match self.client().enter_zone(&zone_id(to)).await {
            Ok(stats) => {
                self.record
                    .entry(entry_kind(&stats), due, stats.bytes_rx, stats.bytes_tx);
                true
            }
            // Another server of the world serves it: the bot moves there.
            Err(hoard_net::quic::client::ClientError::ZoneElsewhere { address, .. }) => {
                let mut options = self.options.clone();
                options.pin = Some(self.client().identity());
                // Gone before the next connection opens the bot's cache.
                if let Some(old) = self.client.take() {
                    self.record.quic(&old.connection_stats(), self.connected_at.elapsed());
                    old.close_and_wait(Duration::from_millis(500)).await;
                }
                options.server = match std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
                    .ok()
                    .and_then(|mut a| a.next())
                {
                    Some(server) => server,
                    None => {
                        self.record.error("bad redirect");
                        return false;
                    }
                };
                match enter_following(options, &zone_id(to)).await {
                    Ok((client, stats, options)) => {
                        self.client = Some(client);
                        self.connected_at = Instant::now();
                        self.options = options;
                        self.record
                            .entry(entry_kind(&stats), due, stats.bytes_rx, stats.bytes_tx);
                        // The step across went to the old server; say it here.
                        self.act(
                            Action::Move {
                                zone: RING[to].1,
                                x: arrival.0,
                                y: arrival.1,
                            },
                            due,
                            None,
                        )
                        .await;
                        true
                    }
                    Err(e) => {
                        self.record.error(error_kind(&e));
                        false
                    }
                }
            }
            Err(e) => {
                self.record.error(error_kind(&e));
                false
            }
        }
    }

    /// Takes what arrived; false once the connection has ended.
    fn take_updates(&mut self) -> bool {
        let now = Instant::now();
        let mut alive = true;
        let Some(client) = &self.client else { return false };
        for update in client.take_updates() {
            match update {
                ClientUpdate::ZoneLoaded { shards, .. } => {
                    for shard in shards {
                        for object in &shard.objects {
                            self.see(object);
                        }
                    }
                }
                ClientUpdate::Objects {
                    shard,
                    upserts,
                    removed,
                    ..
                } => {
                    for id in removed {
                        self.items.remove(&id.0);
                    }
                    for object in &upserts {
                        self.see(object);
                    }
                    if let Some(seq) = upserts.iter().map(|o| o.version).max() {
                        self.record.received();
                        self.latest.insert(shard, (seq, now));
                        if self.receipts.len() >= MAX_RECEIPTS {
                            self.receipts.pop_front();
                        }
                        self.receipts.push_back((shard, seq, now));
                    }
                }
                ClientUpdate::Event(ClientEvent::IntentsProcessed { seqs }) => {
                    for seq in seqs {
                        let Some(flight) = self.in_flight.remove(&seq) else {
                            continue;
                        };
                        self.record.processed(flight.due);
                        // Deltas come before `Processed` on the same stream:
                        // the latest commit of the shard since the action was
                        // sent is the one that carried it.
                        if let Some(shard) = flight.shard
                            && let Some((seq, at)) = self.latest.get(&shard)
                            && *at >= flight.sent
                        {
                            self.record.caused(shard, *seq, flight.due);
                        }
                    }
                }
                ClientUpdate::Event(ClientEvent::IntentRejected { seq, .. }) => {
                    self.in_flight.remove(&seq);
                    self.record.rejected();
                }
                ClientUpdate::Event(ClientEvent::Disconnected { reason }) => {
                    tracing::debug!(bot = %self.name, %reason, "disconnected");
                    self.record.error("disconnected");
                    alive = false;
                }
                _ => {}
            }
        }
        alive
    }

    /// Notes an item lying in the bot's square.
    fn see(&mut self, object: &CachedObject) {
        // Every object of each zone entered passes here: no allocation.
        let mut item_bytes = None;
        let _ = object.state.visit_components(|name, bytes| {
            if name == "item" {
                item_bytes = Some(bytes);
            }
        });
        let Some(bytes) = item_bytes else {
            return;
        };
        let Ok(item) = rmp_serde::from_slice::<Item>(bytes) else {
            return;
        };
        if clamp_to_box(self.zone, (item.x, item.y)) == (item.x, item.y) {
            self.items.insert(object.id.0, (item.x, item.y));
        } else {
            self.items.remove(&object.id.0);
        }
    }

    /// Matches live updates received long enough ago with their cause.
    fn resolve_receipts(&mut self, all: bool) {
        while let Some((shard, seq, at)) = self.receipts.front().copied() {
            if !all && at.elapsed() < MATCH_AFTER {
                break;
            }
            self.receipts.pop_front();
            self.record.resolve(shard, seq, at);
        }
    }
}
