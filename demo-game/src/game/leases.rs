//! A server that serves some of a world's zones (`hoard-demo server --zones
//! meadow,forest` on a PostgreSQL store): it takes those zones' leases —
//! waiting, as a standby, for any another server holds until it lapses —
//! keeps them renewed, stops the process if it loses one, and tells clients
//! which server serves the zones it does not (the [`ZoneDirectory`] the
//! sessions ask).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoard_engine::ZoneId;
use hoard_engine::store::{LeaseError, LeaseHolder, LeaseKey, PgStore};
use hoard_proto::sync::server::{ZoneDirectory, ZoneLocation};

use super::rules::INVENTORY_ZONE;

/// How long a looked-up owner of another zone is trusted before it is read
/// again (a client is sent to a dead owner for at most this long after a
/// takeover; it then retries).
const LOOKUP_FOR: Duration = Duration::from_secs(1);
/// Most zones whose owner is remembered.
const MAX_SEEN: usize = 1024;

/// Takes each of `zones`, waiting while another server's lease on it runs
/// (logging who has it) until it lapses or `stop` is set. Returns when all
/// are held; `Ok(false)` if stopped first.
pub(crate) fn take_zones(
    store: &PgStore,
    zones: &[ZoneId],
    holder: &LeaseHolder,
    stop: &AtomicBool,
) -> anyhow::Result<bool> {
    for zone in zones {
        let mut announced = false;
        loop {
            match store.acquire_zone(zone, holder) {
                Ok(lease) => {
                    tracing::info!(%zone, token = lease.token, "serving zone");
                    break;
                }
                Err(LeaseError::Held(lease)) => {
                    if !announced {
                        eprintln!(
                            "zone {zone} is served by {} at {} (lease until {}); waiting to take it over",
                            lease.owner, lease.address, lease.expires_at
                        );
                        announced = true;
                    }
                    let left = (lease.expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
                    // Wake a little after the lease lapses, and at least now and then to see `stop`.
                    std::thread::sleep((left + Duration::from_millis(20)).min(Duration::from_millis(250)));
                }
                Err(e) => return Err(e.into()),
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Renews this server's leases every third of their life, on a thread of
/// its own. If one is lost (another server took the zone) or none could be
/// renewed for a whole lease life (the database is unreachable: another
/// server may take over), it records why and sets `stop`: the server
/// must not serve those zones any longer.
pub(crate) fn keep_renewed(
    store: Arc<PgStore>,
    holder: LeaseHolder,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("hoard-leases".into()).spawn(move || {
        let every = holder.ttl / 3;
        let mut renewed = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(every.min(Duration::from_millis(200)));
            if renewed.elapsed() < every {
                continue;
            }
            let fail = |reason: String| {
                tracing::error!(%reason, "stopping");
                *failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
                stop.store(true, Ordering::SeqCst);
            };
            match store.renew_leases(&holder) {
                Ok(lost) if lost.is_empty() => renewed = Instant::now(),
                Ok(lost) => {
                    renewed = Instant::now();
                    // A lost zone stops the server. A player's lease lapses
                    // only when renewals failed for its whole life; it is
                    // logged (a write of theirs here would now be refused,
                    // which stops the server then).
                    let zones: Vec<String> = lost
                        .iter()
                        .filter(|k| matches!(k, LeaseKey::Zone(_)))
                        .map(ToString::to_string)
                        .collect();
                    if !zones.is_empty() {
                        return fail(format!("lost the lease on {} to another server", zones.join(", ")));
                    }
                    tracing::warn!(?lost, "players' leases taken by another server");
                }
                Err(e) if renewed.elapsed() >= holder.ttl => {
                    return fail(format!("could not renew the zone leases for {:?}: {e}", holder.ttl));
                }
                Err(e) => tracing::warn!(error = %e, "renewing the zone leases failed; retrying"),
            }
        }
    })
}

/// Where each zone is served, as the world's leases say.
#[derive(Debug)]
pub(crate) struct LeaseDirectory {
    store: Arc<PgStore>,
    /// The zones this server serves.
    mine: BTreeSet<ZoneId>,
    /// Other zones' owners, as last read.
    seen: Mutex<HashMap<ZoneId, (Instant, ZoneLocation)>>,
}

impl LeaseDirectory {
    pub(crate) fn new(store: Arc<PgStore>, mine: &[ZoneId]) -> LeaseDirectory {
        LeaseDirectory {
            store,
            mine: mine.iter().cloned().collect(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn look_up(&self, zone: &ZoneId) -> ZoneLocation {
        match self.store.zone_lease(zone) {
            Ok(Some(lease)) if lease.expires_at > chrono::Utc::now() => ZoneLocation::Elsewhere(lease.address),
            // A zone the world does not have is refused here, by name.
            Ok(_)
                if matches!(
                    hoard_engine::store::WorldStore::zone_shards(&*self.store, zone),
                    Err(hoard_engine::store::ReadError::UnknownZone(_))
                ) =>
            {
                ZoneLocation::Here
            }
            Ok(_) => ZoneLocation::Nowhere,
            Err(e) => {
                tracing::warn!(%zone, error = %e, "could not read the zone's lease");
                ZoneLocation::Nowhere
            }
        }
    }
}

impl ZoneDirectory for LeaseDirectory {
    fn locate(&self, zone: &ZoneId) -> ZoneLocation {
        // Players' inventories travel with them: each server serves the
        // inventories of the players connected to it.
        if self.mine.contains(zone) || zone.as_str() == INVENTORY_ZONE {
            return ZoneLocation::Here;
        }
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, location)) = seen.get(zone)
            && at.elapsed() < LOOKUP_FOR
        {
            return location.clone();
        }
        // Bounded: a client may name any zone, so the table is emptied
        // when it is full.
        if seen.len() >= MAX_SEEN {
            seen.clear();
        }
        let location = self.look_up(zone);
        seen.insert(zone.clone(), (Instant::now(), location.clone()));
        location
    }
}

/// How long a departed player's inventory stays in this server's care (and
/// its lease held) in case they come straight back; also time enough for
/// the commits of their last actions to be durable before another server
/// may take them.
pub(crate) const DEPARTURE_GRACE: Duration = Duration::from_secs(1);

/// This server's part in a world spread over several servers.
#[derive(Clone)]
pub(crate) struct ZoneServer {
    pub(crate) store: Arc<PgStore>,
    pub(crate) holder: LeaseHolder,
    /// The zones it serves.
    pub(crate) zones: Vec<ZoneId>,
    /// The players it hosts, shared by the join hook and the world.
    pub(crate) hosted: Arc<Mutex<HashMap<String, Host>>>,
}

/// Where a hosted player stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// Their lease was taken when they signed in (at this moment); the
    /// world has not seen them yet, so their inventory is not loaded.
    Pending(Instant),
    /// Connected; their inventory loads at the start of the next frame.
    Loading,
    /// Connected, inventory loaded: they may act.
    Here,
    /// Left at this moment; their inventory is still loaded and their
    /// lease held, in case they come straight back.
    Left(Instant),
}

impl ZoneServer {
    pub(crate) fn new(store: Arc<PgStore>, holder: LeaseHolder, zones: Vec<ZoneId>) -> ZoneServer {
        ZoneServer {
            store,
            holder,
            zones,
            hosted: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The join hook's part: the player's lease, taken before the session
    /// is served, waiting (up to a lease's life and a second) while the
    /// server the player just left lets them go.
    pub(crate) fn host(&self, player: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.holder.ttl + Duration::from_secs(1);
        loop {
            match self.store.acquire_player(player, &self.holder) {
                Ok(_) => {
                    lock(&self.hosted)
                        .entry(player.to_owned())
                        .or_insert(Host::Pending(Instant::now()));
                    return Ok(());
                }
                Err(LeaseError::Held(lease)) if Instant::now() < deadline => {
                    tracing::debug!(player, owner = %lease.owner, "player still hosted elsewhere; waiting");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(LeaseError::Held(lease)) => {
                    return Err(format!(
                        "you are still signed in on {} ({}); try again in a few seconds",
                        lease.owner, lease.address
                    ));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

impl ZoneServer {
    /// The leave hook's part: a player who signed in here but went before
    /// the world saw them (sent on to another server) never acted here, so
    /// their lease is let go at once and the next server hosts them without
    /// waiting. One the world has seen is let go by [`host_players`], after
    /// [`DEPARTURE_GRACE`].
    pub(crate) fn unhost_unseen(&self, player: &str) {
        let unseen = {
            let mut hosted = lock(&self.hosted);
            match hosted.get(player) {
                Some(Host::Pending(_)) => hosted.remove(player).is_some(),
                _ => false,
            }
        };
        if unseen && let Err(e) = self.store.release_player(player) {
            tracing::warn!(player, error = %e, "could not let the player's lease go; it lapses by itself");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The hosted players, as the world's systems see them.
#[derive(bevy_ecs::resource::Resource)]
pub(crate) struct Hosted {
    players: Arc<Mutex<HashMap<String, Host>>>,
    /// Lets go of departed players' leases off the world thread (bounded).
    release: std::sync::mpsc::SyncSender<String>,
}

impl Hosted {
    pub(crate) fn new(server: &ZoneServer) -> std::io::Result<Hosted> {
        let (release, departed) = std::sync::mpsc::sync_channel::<String>(1024);
        let store = server.store.clone();
        std::thread::Builder::new()
            .name("hoard-player-leases".into())
            .spawn(move || {
                for player in departed {
                    if let Err(e) = store.release_player(&player) {
                        // It lapses by itself within a lease's life.
                        tracing::warn!(player, error = %e, "could not let the player's lease go");
                    }
                }
            })?;
        Ok(Hosted {
            players: server.hosted.clone(),
            release,
        })
    }

    /// Whether `player` may act here: hosted, with their inventory loaded.
    pub(crate) fn may_act(&self, player: &str) -> bool {
        lock(&self.players).get(player) == Some(&Host::Here)
    }
}

/// Follows who is connected: a player who arrives gets their inventory
/// loaded from the store (another server may have changed it) and may act
/// from the next frame; one who left more than [`DEPARTURE_GRACE`] ago has
/// it forgotten (not deleted: the store keeps it) and their lease let go,
/// so the server they go to next may host them. One who signed in but left
/// before the world saw them (sent on to another server) is let go at once.
pub(crate) fn host_players(
    connected: Option<bevy_ecs::system::Res<hoard_bevy::server::ConnectedPlayers>>,
    hosted: Option<bevy_ecs::system::Res<Hosted>>,
    mut care: bevy_ecs::system::ResMut<hoard_bevy::ShardCare>,
) {
    let Some(hosted) = hosted else {
        return;
    };
    // No one has connected yet until the plugin has seen a sign-in.
    let none = hoard_bevy::server::ConnectedPlayers::default();
    let connected = connected.as_deref().unwrap_or(&none);
    let Ok(inventory) = ZoneId::new(INVENTORY_ZONE) else {
        return;
    };
    let now = Instant::now();
    let mut players = lock(&hosted.players);
    for player in connected.0.keys() {
        // Only the join hook hosts a player (it takes their lease).
        let Some(host) = players.get_mut(player) else {
            continue;
        };
        *host = match *host {
            Host::Pending(_) => {
                care.load
                    .push((inventory.clone(), super::rules::inventory_shard(player)));
                Host::Loading
            }
            // Loaded in this frame's `PreUpdate`, before the rules run.
            Host::Loading | Host::Here | Host::Left(_) => Host::Here,
        };
    }
    let mut gone = Vec::new();
    for (player, host) in players.iter_mut() {
        if connected.contains(player) {
            continue;
        }
        match *host {
            Host::Here | Host::Loading => *host = Host::Left(now),
            // Sent on before the world saw them: nothing of theirs is here.
            Host::Pending(at) if now.duration_since(at) >= PENDING_GRACE => gone.push((player.clone(), false)),
            Host::Left(at) if now.duration_since(at) >= DEPARTURE_GRACE => gone.push((player.clone(), true)),
            Host::Pending(_) | Host::Left(_) => {}
        }
    }
    for (player, loaded) in gone {
        tracing::debug!(player, loaded, "letting a departed player go");
        players.remove(&player);
        if loaded {
            care.forget.push(super::rules::inventory_shard(&player));
        }
        if hosted.release.try_send(player.clone()).is_err() {
            tracing::warn!(player, "too many leases to let go at once; this one lapses by itself");
        }
    }
}

/// How long a signed-in player the world has not seen yet is waited for
/// before their lease is let go, should their connection's leave hook not
/// have done it (their `Joined` reaches the world a frame after sign-in).
const PENDING_GRACE: Duration = Duration::from_secs(5);
