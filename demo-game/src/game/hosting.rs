//! Hosting players on a server of some of a world's zones.
//!
//! A player's own shards (the inventory) are written only by the server
//! holding the player's lease (see docs/STORE.md, player leases). Signing
//! in never waits for it: the server tries to take the lease at once and,
//! while another server still holds it (the one the player just left lets
//! them go a moment later), keeps trying on a worker thread; meanwhile the
//! player reads zones as usual, and their actions wait (queued, bounded) until
//! this server hosts them — lease held and inventory loaded from the store.
//! A player who leaves has their inventory forgotten here (the store keeps
//! it) and their lease let go, after a grace in case they come straight
//! back, or at once if they never acted here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoard_engine::ZoneId;
use hoard_engine::store::{LeaseError, LeaseHolder, PgStore};

use super::rules::{INVENTORY_ZONE, inventory_shard};

/// How long a departed player's inventory stays in this server's care (and
/// their lease held) in case they come straight back; also time for the
/// commits of their last actions to be durable before another server may
/// take them.
pub(crate) const DEPARTURE_GRACE: Duration = Duration::from_secs(1);

/// How long a player whose lease is held but whom the world has not seen
/// is kept, should their connection's leave hook not have let them go.
const PENDING_GRACE: Duration = Duration::from_secs(5);

/// How often the worker tries again to take waiting players' leases.
const RETRY_EVERY: Duration = Duration::from_millis(25);

/// Actions of one player waiting for this server to host them.
pub(crate) const MAX_DEFERRED: usize = 32;

/// Where a player stands on this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// Signed in; another server still holds their lease.
    Waiting,
    /// Lease held (since this moment); the world has not seen them yet.
    Pending(Instant),
    /// Seen; their inventory loads at the start of the next frame.
    Loading,
    /// Lease held, inventory loaded: they act.
    Here,
    /// Left at this moment; inventory still loaded and lease held.
    Left(Instant),
}

/// This server's part in a world spread over several servers.
#[derive(Clone)]
pub(crate) struct ZoneServer {
    pub(crate) store: Arc<PgStore>,
    pub(crate) holder: LeaseHolder,
    /// The zones it serves.
    pub(crate) zones: Vec<ZoneId>,
    /// The players it hosts, shared by the hooks, the worker and the world.
    hosted: Arc<Mutex<HashMap<String, Host>>>,
    /// Leases to let go, for the worker (bounded).
    release: SyncSender<String>,
    /// Set once the server has decided to stop (a lost zone lease, a
    /// signal): from then on it takes no player's lease.
    stopping: Arc<AtomicBool>,
}

use hoard_engine::lock::lock;

impl ZoneServer {
    /// Starts the lease worker. `stopping` is the server's stop flag: once
    /// set, no player's lease is taken any more (a fenced server must not
    /// hold players up on the real owner of their zones).
    pub(crate) fn new(
        store: Arc<PgStore>,
        holder: LeaseHolder,
        zones: Vec<ZoneId>,
        stopping: Arc<AtomicBool>,
    ) -> std::io::Result<ZoneServer> {
        let (release, releases) = std::sync::mpsc::sync_channel(1024);
        let hosted = Arc::new(Mutex::new(HashMap::new()));
        let worker = Worker {
            store: store.clone(),
            holder: holder.clone(),
            hosted: hosted.clone(),
            stopping: stopping.clone(),
        };
        std::thread::Builder::new()
            .name("hoard-player-leases".into())
            .spawn(move || worker.run(&releases))?;
        Ok(ZoneServer {
            store,
            holder,
            zones,
            hosted,
            release,
            stopping,
        })
    }

    /// The join hook's part: takes the player's lease if it is free (one
    /// round trip), else leaves them waiting for the worker. Never refuses.
    pub(crate) fn host(&self, player: &str) {
        {
            let mut hosted = lock(&self.hosted);
            match hosted.get(player) {
                // Back before their departure was let go: still hosted.
                Some(Host::Left(_) | Host::Here | Host::Loading | Host::Pending(_)) => return,
                Some(Host::Waiting) => return,
                None => hosted.insert(player.to_owned(), Host::Waiting),
            };
        }
        if self.stopping.load(Ordering::SeqCst) {
            tracing::debug!(player, "stopping: not taking the player's lease");
            return;
        }
        match self.store.acquire_player(player, &self.holder) {
            Ok(_) => {
                let mut hosted = lock(&self.hosted);
                if hosted.get(player) == Some(&Host::Waiting) {
                    hosted.insert(player.to_owned(), Host::Pending(Instant::now()));
                } else {
                    drop(hosted);
                    self.let_go(player);
                }
            }
            Err(LeaseError::Held(lease)) => {
                tracing::debug!(player, owner = %lease.owner, "player still hosted elsewhere; waiting for them");
            }
            Err(e) => tracing::warn!(player, error = %e, "could not take the player's lease; retrying"),
        }
    }

    /// The leave hook's part: a player who never acted here (waiting, or
    /// not yet seen by the world: sent on to another server) is let go at
    /// once. One the world has seen is let go by [`host_players`].
    pub(crate) fn unhost_unseen(&self, player: &str) {
        let release = {
            let mut hosted = lock(&self.hosted);
            match hosted.get(player) {
                Some(Host::Waiting) => {
                    hosted.remove(player);
                    false
                }
                Some(Host::Pending(_)) => {
                    hosted.remove(player);
                    true
                }
                _ => false,
            }
        };
        if release {
            self.let_go(player);
        }
    }

    fn let_go(&self, player: &str) {
        if self.release.try_send(player.to_owned()).is_err() {
            tracing::warn!(player, "too many leases to let go at once; this one lapses by itself");
        }
    }
}

/// Takes waiting players' leases and lets departed players' go, off the
/// world thread.
struct Worker {
    store: Arc<PgStore>,
    holder: LeaseHolder,
    hosted: Arc<Mutex<HashMap<String, Host>>>,
    stopping: Arc<AtomicBool>,
}

impl Worker {
    fn run(&self, releases: &Receiver<String>) {
        // One line when the database cannot be reached, one when it can
        // again: not one per player per retry.
        let mut unreachable = false;
        loop {
            match releases.recv_timeout(RETRY_EVERY) {
                Ok(player) => {
                    if let Err(e) = self.store.release_player(&player) {
                        tracing::warn!(player, error = %e, "could not let the player's lease go; it lapses by itself");
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.stopping.load(Ordering::SeqCst) {
                // Lets go what it is asked to, takes nothing new.
                continue;
            }
            let waiting: Vec<String> = lock(&self.hosted)
                .iter()
                .filter(|(_, h)| **h == Host::Waiting)
                .map(|(p, _)| p.clone())
                .collect();
            for player in waiting {
                match self.store.acquire_player(&player, &self.holder) {
                    Ok(_) => {
                        let mut hosted = lock(&self.hosted);
                        if hosted.get(&player) == Some(&Host::Waiting) {
                            hosted.insert(player, Host::Pending(Instant::now()));
                        } else if !hosted.contains_key(&player) {
                            // Gone meanwhile.
                            drop(hosted);
                            let _ = self.store.release_player(&player);
                        }
                    }
                    Err(LeaseError::Held(_)) => {}
                    Err(e) if !unreachable => {
                        tracing::warn!(player, error = %e, "could not take players' leases; retrying until the database answers");
                        unreachable = true;
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(player, error = %e, "could not take the player's lease");
                        continue;
                    }
                }
                if std::mem::take(&mut unreachable) {
                    tracing::info!("taking players' leases again");
                }
            }
        }
    }
}

/// The hosted players, as the world's systems see them.
#[derive(bevy_ecs::resource::Resource, Clone)]
pub(crate) struct Hosted(ZoneServer);

impl Hosted {
    pub(crate) fn new(server: &ZoneServer) -> Hosted {
        Hosted(server.clone())
    }

    /// Whether `player`'s actions may be applied here: hosted, their
    /// inventory loaded (a player who has just left too: what they did
    /// before leaving is applied, not dropped).
    pub(crate) fn may_act(&self, player: &str) -> bool {
        matches!(lock(&self.0.hosted).get(player), Some(Host::Here | Host::Left(_)))
    }

    /// Whether `player` is (or is about to be) hosted here.
    pub(crate) fn expects(&self, player: &str) -> bool {
        lock(&self.0.hosted).contains_key(player)
    }
}

/// Follows who is connected: a player whose lease is held gets their
/// inventory loaded from the store (another server may have changed it) and
/// acts from the next frame; one who left more than [`DEPARTURE_GRACE`] ago
/// has it forgotten (not deleted: the store keeps it) and their lease let
/// go, so the server they go to next may host them.
pub(crate) fn host_players(
    connected: Option<bevy_ecs::system::Res<hoard_bevy::server::ConnectedPlayers>>,
    hosted: Option<bevy_ecs::system::Res<Hosted>>,
    mut care: bevy_ecs::system::ResMut<hoard_bevy::ShardCare>,
) {
    let Some(hosted) = hosted else {
        return;
    };
    let Ok(inventory) = ZoneId::new(INVENTORY_ZONE) else {
        return;
    };
    // No one has connected until the plugin has seen a sign-in.
    let none = hoard_bevy::server::ConnectedPlayers::default();
    let connected = connected.as_deref().unwrap_or(&none);
    let now = Instant::now();
    let mut gone = Vec::new();
    {
        let mut players = lock(&hosted.0.hosted);
        for (player, host) in players.iter_mut() {
            let here = connected.contains(player);
            *host = match (*host, here) {
                (Host::Pending(_), true) => {
                    care.load.push((inventory.clone(), inventory_shard(player)));
                    Host::Loading
                }
                // Loaded in this frame's `PreUpdate`, before the rules.
                (Host::Loading | Host::Left(_), true) => Host::Here,
                (Host::Here | Host::Waiting, true) => *host,
                (Host::Here | Host::Loading, false) => Host::Left(now),
                (Host::Left(at), false) if now.duration_since(at) >= DEPARTURE_GRACE => {
                    gone.push((player.clone(), true, true));
                    *host
                }
                (Host::Pending(at), false) if now.duration_since(at) >= PENDING_GRACE => {
                    gone.push((player.clone(), false, true));
                    *host
                }
                // Not gone: the world may not have seen the sign-in yet
                // (the join hook runs before the world lists the player).
                // The leave hook removes a waiting player who goes; one
                // whose lease comes meanwhile is let go after
                // `PENDING_GRACE` if the world never sees them.
                (Host::Left(_) | Host::Pending(_) | Host::Waiting, false) => *host,
            };
        }
        for (player, _, _) in &gone {
            players.remove(player);
        }
    }
    for (player, loaded, leased) in gone {
        if loaded {
            care.forget.push(inventory_shard(&player));
        }
        if leased {
            tracing::debug!(player, "letting a departed player go");
            hosted.0.let_go(&player);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bevy_ecs::system::RunSystemOnce;
    use bevy_ecs::world::World;
    use hoard_engine::store::PgOptions;

    fn holder(owner: &str) -> LeaseHolder {
        LeaseHolder {
            owner: owner.into(),
            address: "127.0.0.1:1".into(),
            ttl: Duration::from_secs(60),
        }
    }

    fn drop_schema(schema: &str) {
        let url = std::env::var("HOARD_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(conn);
                client.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }

    /// A player signed in here while another server still holds their lease
    /// waits — also through frames in which the world does not list them
    /// yet (the join hook runs before it does; a slow database widens that
    /// window) — and is taken over once the lease is let go. Forgetting
    /// them there dropped their queued actions and never took the lease.
    #[test]
    fn a_waiting_player_the_world_does_not_list_yet_is_not_forgotten() {
        let schema = format!("hoard_hosting_{}_{:08x}", std::process::id(), fastrand::u32(..));
        let url = std::env::var("HOARD_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let options = PgOptions::new(url).with_schema(schema.clone());
        // Each server's store takes leases as that server.
        let alpha = PgStore::open(&options).expect("alpha's store");
        alpha.acquire_player("ann", &holder("alpha")).expect("alpha hosts ann");
        let store = Arc::new(PgStore::open(&options).expect("beta's store"));
        let beta = ZoneServer::new(store, holder("beta"), Vec::new(), Arc::default()).expect("beta");
        beta.host("ann");
        let mut world = World::new();
        world.insert_resource(Hosted::new(&beta));
        world.init_resource::<hoard_bevy::ShardCare>();
        // Frames in which the world lists no player yet.
        for _ in 0..3 {
            world.run_system_once(host_players).expect("frame");
        }
        assert!(Hosted::new(&beta).expects("ann"), "still waiting for ann");
        alpha.release_player("ann").expect("alpha lets ann go");
        let deadline = Instant::now() + Duration::from_secs(10);
        let taken = loop {
            if matches!(lock(&beta.hosted).get("ann"), Some(Host::Pending(_))) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(RETRY_EVERY);
        };
        drop((beta, alpha));
        drop_schema(&schema);
        assert!(taken, "beta took ann's lease once alpha let it go");
    }

    /// A server that has decided to stop (its zone lease lost) takes no
    /// player's lease any more, at sign-in or from the worker: the player's
    /// actions on the real owner must not wait for this server's lease to
    /// lapse.
    #[test]
    fn a_stopping_server_takes_no_players_lease() {
        let schema = format!("hoard_hosting_{}_{:08x}", std::process::id(), fastrand::u32(..));
        let url = std::env::var("HOARD_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let options = PgOptions::new(url).with_schema(schema.clone());
        let alpha = PgStore::open(&options).expect("alpha's store");
        alpha.acquire_player("bob", &holder("alpha")).expect("alpha hosts bob");
        let stopping = Arc::new(AtomicBool::new(false));
        let beta = ZoneServer::new(
            Arc::new(PgStore::open(&options).expect("beta's store")),
            holder("beta"),
            Vec::new(),
            stopping.clone(),
        )
        .expect("beta");
        beta.host("bob"); // waits: alpha holds bob
        stopping.store(true, Ordering::SeqCst);
        beta.host("cid"); // free, but beta is stopping
        alpha.release_player("bob").expect("alpha lets bob go");
        // The worker retries every 25 ms; give it many rounds to (wrongly) act.
        for _ in 0..20 {
            std::thread::sleep(RETRY_EVERY);
        }
        let hosted = lock(&beta.hosted).clone();
        let gamma = PgStore::open(&options).expect("gamma's store");
        let bob_free = gamma.acquire_player("bob", &holder("gamma"));
        let cid_free = gamma.acquire_player("cid", &holder("gamma"));
        let (bob_free, cid_free) = (bob_free.map_err(|e| e.to_string()), cid_free.map_err(|e| e.to_string()));
        drop((beta, alpha, gamma));
        drop_schema(&schema);
        assert!(
            bob_free.is_ok(),
            "a waiting player's lease was not taken while stopping: {bob_free:?} {hosted:?}"
        );
        assert!(
            cid_free.is_ok(),
            "a new player's lease was not taken while stopping: {cid_free:?} {hosted:?}"
        );
    }
}
