//! Zone and player leases: which server owns a zone, and which hosts a
//! player (and so may write the player's own shards), kept in the database.
//!
//! A lease row names the zone's owner (a server's name), the address its
//! clients should connect to, a fencing token and an expiry (database time,
//! so servers' clocks need not agree). A server takes a zone whose lease is
//! free or expired, or its own again, and every take increments the token.
//! It renews its leases well before they expire. Every commit of a store
//! holding leases re-reads them `FOR SHARE` inside its transaction and is
//! refused ([`CommitError::Fenced`](crate::store::CommitError::Fenced)) if
//! any zone it writes is no longer leased to it with the token it took: an
//! owner paused past its expiry, whose zone another server has taken, can
//! never write again, however late it wakes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::PgStore;
use super::conn::Conn;
use crate::ids::ZoneId;
use crate::store::error::StoreFault;

/// What a lease is on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseKey {
    /// A zone: its shared shards are written only by the server holding it.
    Zone(ZoneId),
    /// A player (a perspective): the shards scoped to them (an inventory)
    /// are written only by the server the player is connected to.
    Player(String),
}

impl LeaseKey {
    /// The key as stored: the zone's name, or `@` and the player's.
    pub(crate) fn stored(&self) -> String {
        match self {
            LeaseKey::Zone(zone) => zone.as_str().to_owned(),
            LeaseKey::Player(name) => format!("@{name}"),
        }
    }

    pub(crate) fn from_stored(key: &str) -> Result<LeaseKey, StoreFault> {
        match key.strip_prefix('@') {
            Some(name) => Ok(LeaseKey::Player(name.to_owned())),
            None => ZoneId::new(key)
                .map(LeaseKey::Zone)
                .map_err(|e| StoreFault::Corrupt(format!("lease key {key:?}: {e}"))),
        }
    }
}

impl std::fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseKey::Zone(zone) => write!(f, "zone {zone}"),
            LeaseKey::Player(name) => write!(f, "player {name}"),
        }
    }
}

/// A lease as the database holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// What it is on.
    pub key: LeaseKey,
    /// The owning server's name.
    pub owner: String,
    /// Where its clients connect (`host:port`).
    pub address: String,
    /// The fencing token: higher for every take of the zone.
    pub token: i64,
    /// When it lapses unless renewed (database time).
    pub expires_at: DateTime<Utc>,
}

/// Who this store takes leases as.
#[derive(Clone, Debug)]
pub struct LeaseHolder {
    /// The server's name, unique among the world's servers.
    pub owner: String,
    /// The address its clients connect to.
    pub address: String,
    /// How long a lease lasts unless renewed.
    pub ttl: Duration,
}

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Another server holds it and its lease has not expired.
    #[error("{} is leased to {} ({}) until {}", .0.key, .0.owner, .0.address, .0.expires_at)]
    Held(Lease),
    /// The database failed.
    #[error(transparent)]
    Fault(#[from] StoreFault),
}

/// The leases a store holds, as its commits check them.
#[derive(Default)]
pub(crate) struct Fence {
    inner: Mutex<FenceSnapshot>,
}

/// A copy of the held leases for one commit.
#[derive(Clone, Debug, Default)]
pub(crate) struct FenceSnapshot {
    /// `None`: this store takes no leases (a world on one server) and its
    /// commits check none.
    pub(crate) owner: Option<String>,
    /// Stored lease key → the token this store took it with.
    pub(crate) zones: BTreeMap<String, i64>,
}

impl Fence {
    pub(crate) fn snapshot(&self) -> FenceSnapshot {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FenceSnapshot> {
        crate::lock::lock(&self.inner)
    }
}

fn lease_from_row(row: &tokio_postgres::Row) -> Result<Lease, StoreFault> {
    let key: String = super::codec::col(row, 0, "hoard_zone_leases")?;
    Ok(Lease {
        key: LeaseKey::from_stored(&key)?,
        owner: super::codec::col(row, 1, "hoard_zone_leases")?,
        address: super::codec::col(row, 2, "hoard_zone_leases")?,
        token: super::codec::col(row, 3, "hoard_zone_leases")?,
        expires_at: super::codec::col(row, 4, "hoard_zone_leases")?,
    })
}

const LEASE_COLUMNS: &str = "zone, owner, address, token, expires_at";

fn ttl_ms(ttl: Duration) -> f64 {
    ttl.as_secs_f64() * 1000.0
}

impl PgStore {
    /// Takes the lease on `zone` for `holder` if it is free, expired, or
    /// already `holder`'s (a restarted server taking its zones back). Each
    /// take raises the token, fencing off any earlier holder. From now on
    /// every commit of this store checks its leases.
    pub fn acquire_zone(&self, zone: &ZoneId, holder: &LeaseHolder) -> Result<Lease, LeaseError> {
        self.acquire(&LeaseKey::Zone(zone.clone()), holder)
    }

    /// Takes the lease on `player` (the shards scoped to them) for
    /// `holder`, as [`PgStore::acquire_zone`] does for a zone: the server a
    /// player connects to takes it, and releases it when they leave.
    pub fn acquire_player(&self, player: &str, holder: &LeaseHolder) -> Result<Lease, LeaseError> {
        self.acquire(&LeaseKey::Player(player.to_owned()), holder)
    }

    /// Gives up the lease on `player` (it expires at once).
    pub fn release_player(&self, player: &str) -> Result<(), StoreFault> {
        self.release(&LeaseKey::Player(player.to_owned()))
    }

    fn acquire(&self, key: &LeaseKey, holder: &LeaseHolder) -> Result<Lease, LeaseError> {
        let stored = key.stored();
        {
            let mut fence = self.leases.lock();
            match &fence.owner {
                Some(owner) if *owner != holder.owner => {
                    return Err(StoreFault::Corrupt(format!(
                        "this store takes leases as {owner}, not {}",
                        holder.owner
                    ))
                    .into());
                }
                _ => fence.owner = Some(holder.owner.clone()),
            }
        }
        let (zone_name, holder2) = (stored.clone(), holder.clone());
        let taken = self.run("taking a zone lease", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let taken = conn
                .query_opt(
                    &format!(
                        "INSERT INTO hoard_zone_leases ({LEASE_COLUMNS}) \
                         VALUES ($1, $2, $3, 1, now() + $4::FLOAT8 * INTERVAL '1 millisecond') \
                         ON CONFLICT (zone) DO UPDATE SET owner = EXCLUDED.owner, address = EXCLUDED.address, \
                         token = hoard_zone_leases.token + 1, expires_at = EXCLUDED.expires_at \
                         WHERE hoard_zone_leases.expires_at < now() OR hoard_zone_leases.owner = EXCLUDED.owner \
                         RETURNING {LEASE_COLUMNS}"
                    ),
                    &[
                        &zone_name.as_str(),
                        &holder2.owner,
                        &holder2.address,
                        &ttl_ms(holder2.ttl),
                    ],
                )
                .await
                .map_err(|e| StoreFault::backend("taking a zone lease", e))?;
            let out = match taken {
                Some(row) => Ok(lease_from_row(&row)?),
                None => {
                    let row = conn
                        .query_one(
                            &format!("SELECT {LEASE_COLUMNS} FROM hoard_zone_leases WHERE zone = $1"),
                            &[&zone_name.as_str()],
                        )
                        .await
                        .map_err(|e| StoreFault::backend("reading a zone lease", e))?;
                    Err(LeaseError::Held(lease_from_row(&row)?))
                }
            };
            conn.clean();
            out
        })?;
        self.leases.lock().zones.insert(stored, taken.token);
        tracing::info!(lease = %key, owner = %taken.owner, token = taken.token, "took the lease");
        Ok(taken)
    }

    /// Extends every lease this store holds by its holder's ttl. Returns the
    /// leases it has lost (taken by another server after expiring): they are
    /// dropped from the store's leases, so any commit to them is refused.
    pub fn renew_leases(&self, holder: &LeaseHolder) -> Result<Vec<LeaseKey>, StoreFault> {
        let held = self.leases.snapshot();
        if held.zones.is_empty() {
            return Ok(Vec::new());
        }
        let zones: Vec<String> = held.zones.keys().cloned().collect();
        let tokens: Vec<i64> = held.zones.values().copied().collect();
        let holder2 = holder.clone();
        let renewed: Vec<String> = self.run("renewing zone leases", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let rows = conn
                .query(
                    "UPDATE hoard_zone_leases SET expires_at = now() + $3::FLOAT8 * INTERVAL '1 millisecond' \
                     FROM unnest($1::TEXT[], $2::BIGINT[]) AS k(zone, token) \
                     WHERE hoard_zone_leases.zone = k.zone AND hoard_zone_leases.token = k.token \
                     AND hoard_zone_leases.owner = $4 RETURNING hoard_zone_leases.zone",
                    &[&zones, &tokens, &ttl_ms(holder2.ttl), &holder2.owner],
                )
                .await
                .map_err(|e| StoreFault::backend("renewing zone leases", e))?;
            conn.clean();
            rows.iter()
                .map(|r| super::codec::col::<String>(r, 0, "hoard_zone_leases"))
                .collect()
        })?;
        let mut lost = Vec::new();
        let mut fence = self.leases.lock();
        for zone in held.zones.keys() {
            // One released meanwhile is not lost.
            if !renewed.contains(zone) && fence.zones.contains_key(zone) {
                fence.zones.remove(zone);
                tracing::warn!(lease = %zone, "lost the lease to another server");
                lost.push(LeaseKey::from_stored(zone)?);
            }
        }
        Ok(lost)
    }

    /// Gives up every lease this store holds (a server stopping cleanly,
    /// after its last commit: its standby takes over at once).
    pub fn release_all(&self) -> Result<(), StoreFault> {
        let held: Vec<String> = self.leases.snapshot().zones.into_keys().collect();
        for key in held {
            self.release(&LeaseKey::from_stored(&key)?)?;
        }
        Ok(())
    }

    /// Gives up the lease on `zone` (it expires at once), so another
    /// server may take it without waiting.
    pub fn release_zone(&self, zone: &ZoneId) -> Result<(), StoreFault> {
        self.release(&LeaseKey::Zone(zone.clone()))
    }

    fn release(&self, key: &LeaseKey) -> Result<(), StoreFault> {
        let zone = key.stored();
        let Some(token) = self.leases.lock().zones.remove(&zone) else {
            return Ok(());
        };
        self.run("releasing a zone lease", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            conn.execute(
                // No owner: a renewal already in flight cannot bring it back.
                "UPDATE hoard_zone_leases SET expires_at = now() - INTERVAL '1 millisecond', owner = '' \
                 WHERE zone = $1 AND token = $2",
                &[&zone, &token],
            )
            .await
            .map_err(|e| StoreFault::backend("releasing a lease", e))?;
            conn.clean();
            Ok(())
        })
    }

    /// Every lease that has not lapsed: which servers are serving which
    /// zones and hosting which players now. A tool that writes the store
    /// offline refuses while there are any.
    pub fn live_leases(&self) -> Result<Vec<Lease>, StoreFault> {
        self.run("reading the live leases", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let rows = conn
                .query(
                    &format!(
                        "SELECT {LEASE_COLUMNS} FROM hoard_zone_leases WHERE expires_at > now() AND owner <> '' \
                         ORDER BY zone"
                    ),
                    &[],
                )
                .await
                .map_err(|e| StoreFault::backend("reading the live leases", e))?;
            conn.clean();
            rows.iter().map(lease_from_row).collect()
        })
    }

    /// The lease on `zone`, whoever holds it, expired or not (`None`:
    /// never leased).
    pub fn zone_lease(&self, zone: &ZoneId) -> Result<Option<Lease>, StoreFault> {
        let zone = zone.clone();
        self.run("reading a zone lease", move |pool| async move {
            let conn = Conn::get(&pool, "connecting").await?;
            let row = conn
                .query_opt(
                    &format!("SELECT {LEASE_COLUMNS} FROM hoard_zone_leases WHERE zone = $1"),
                    &[&zone.as_str()],
                )
                .await
                .map_err(|e| StoreFault::backend("reading a zone lease", e))?;
            conn.clean();
            row.as_ref().map(lease_from_row).transpose()
        })
    }
}
