//! A server that serves some of a world's zones (`hoard-demo server --zones
//! meadow,forest` on a PostgreSQL store): it takes those zones' leases —
//! waiting, as a standby, for any another server holds until it lapses —
//! keeps them renewed (through database outages: see [`keep_renewed`]),
//! stops the process if it loses one, and tells clients
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

/// How taking the zones went.
pub(crate) struct Taken {
    /// For a takeover: from the previous owner's lease lapsing to this
    /// server holding the zone (the longest over the zones taken over).
    pub(crate) after_expiry: Option<Duration>,
}

/// Takes each of `zones`, waiting while another server's lease on it runs
/// (logging who has it) until it lapses or `stop` is set. Returns when all
/// are held; `Ok(None)` if stopped first.
pub(crate) fn take_zones(
    store: &PgStore,
    zones: &[ZoneId],
    holder: &LeaseHolder,
    stop: &AtomicBool,
) -> anyhow::Result<Option<Taken>> {
    let mut taken = Taken { after_expiry: None };
    for zone in zones {
        let mut announced = false;
        let mut lapses: Option<chrono::DateTime<chrono::Utc>> = None;
        loop {
            match store.acquire_zone(zone, holder) {
                Ok(lease) => {
                    tracing::info!(%zone, token = lease.token, "serving zone");
                    if let Some(at) = lapses {
                        let after = (chrono::Utc::now() - at).to_std().unwrap_or_default();
                        taken.after_expiry = taken.after_expiry.max(Some(after));
                    }
                    break;
                }
                Err(LeaseError::Held(lease)) => {
                    lapses = Some(lease.expires_at);
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
                return Ok(None);
            }
        }
    }
    Ok(Some(taken))
}

/// Renews this server's leases every third of their life, on a thread of
/// its own. If one is lost (another server took the zone) it records why
/// and sets `stop`: the server must not serve that zone any longer.
///
/// While the database cannot be reached, the leases are kept: no other
/// server can take a zone without the database, and when it returns the
/// renewal succeeds only on the fencing tokens this server holds (a zone
/// taken meanwhile has a new token, and is reported lost). So an outage
/// pauses writes as a store outage does (commits are retried, players are
/// told), renewals are retried every `retry_every` with one log line when
/// the database goes and one when it returns, and the server stops only if
/// the outage outlasts `give_up_after` (the store's retry window) — or a
/// zone turns out to be taken.
pub(crate) fn keep_renewed(
    store: Arc<PgStore>,
    holder: LeaseHolder,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    give_up_after: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("hoard-leases".into()).spawn(move || {
        let every = holder.ttl / 3;
        let retry_every = every.clamp(Duration::from_millis(200), Duration::from_secs(1));
        let mut attempted = Instant::now();
        let mut unreachable_since: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(every.min(Duration::from_millis(200)));
            let due = if unreachable_since.is_some() {
                retry_every
            } else {
                every
            };
            if attempted.elapsed() < due {
                continue;
            }
            attempted = Instant::now();
            let fail = |reason: String| {
                tracing::error!(%reason, "stopping");
                *hoard_engine::lock::lock(&failure) = Some(reason);
                stop.store(true, Ordering::SeqCst);
            };
            match store.renew_leases(&holder) {
                Ok(lost) => {
                    if let Some(since) = unreachable_since.take() {
                        tracing::info!(
                            after_ms = since.elapsed().as_millis() as u64,
                            "the database is back: leases renewed on the tokens this server holds"
                        );
                    }
                    // A lost zone stops the server. A player's lease is
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
                    if !lost.is_empty() {
                        tracing::warn!(?lost, "players' leases taken by another server");
                    }
                }
                Err(e) => match unreachable_since {
                    None => {
                        tracing::warn!(
                            error = %e,
                            retry_ms = retry_every.as_millis() as u64,
                            give_up_s = give_up_after.as_secs(),
                            "cannot renew the leases: the database is unreachable; writes pause until it returns"
                        );
                        unreachable_since = Some(Instant::now());
                    }
                    Some(since) if since.elapsed() >= give_up_after => {
                        return fail(format!(
                            "the database was unreachable for {} s (renewing the leases: {e})",
                            since.elapsed().as_secs()
                        ));
                    }
                    Some(_) => tracing::debug!(error = %e, "renewing the leases failed again"),
                },
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
    /// Other zones' owners, as last read, and until when that holds.
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

    /// Where `zone` is served, and until when that answer holds: at most
    /// [`LOOKUP_FOR`], and never past the owner's lease (a dead owner's
    /// clients are not sent to it once its lease has lapsed).
    fn look_up(&self, zone: &ZoneId) -> (ZoneLocation, Instant) {
        let until = Instant::now() + LOOKUP_FOR;
        let location = match self.store.zone_lease(zone) {
            Ok(Some(lease)) if lease.expires_at > chrono::Utc::now() => {
                let left = (lease.expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
                return (ZoneLocation::Elsewhere(lease.address), until.min(Instant::now() + left));
            }
            // A zone the world does not have is refused here, by name.
            Ok(_)
                if matches!(
                    hoard_engine::store::WorldStore::zone_shards(&*self.store, zone),
                    Err(hoard_engine::store::ReadError::UnknownZone(_))
                ) =>
            {
                ZoneLocation::Here
            }
            // Taken over any moment now: looked at again on the next entry.
            Ok(_) => return (ZoneLocation::Nowhere, Instant::now()),
            Err(e) => {
                tracing::warn!(%zone, error = %e, "could not read the zone's lease");
                return (ZoneLocation::Nowhere, Instant::now());
            }
        };
        (location, until)
    }
}

impl ZoneDirectory for LeaseDirectory {
    fn locate(&self, zone: &ZoneId) -> ZoneLocation {
        // Players' inventories travel with them: each server serves the
        // inventories of the players connected to it.
        if self.mine.contains(zone) || zone.as_str() == INVENTORY_ZONE {
            return ZoneLocation::Here;
        }
        let mut seen = hoard_engine::lock::lock(&self.seen);
        if let Some((until, location)) = seen.get(zone)
            && Instant::now() < *until
        {
            return location.clone();
        }
        // Bounded: a client may name any zone, so the table is emptied
        // when it is full.
        if seen.len() >= MAX_SEEN {
            seen.clear();
        }
        let (location, until) = self.look_up(zone);
        seen.insert(zone.clone(), (until, location.clone()));
        location
    }
}
