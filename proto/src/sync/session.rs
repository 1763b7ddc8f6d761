//! A client's connection as its driver carries it out, sans-IO: the sync
//! machine ([`ClientSync`]) and what a client keeps beside it — which zones
//! the game sees, the latest transient state of each, the cached copies an
//! entry took on trust (audited once it is ready) — and the decisions that
//! turn the sync's effects into what a driver does: cache writes first,
//! then the game's updates in order, entries finished for their waiters,
//! audits to run.
//!
//! Drivers (hoard-net's QUIC client, a client in another runtime) feed the
//! sync through [`ClientSession::sync_mut`] and carry out
//! [`ClientSession::poll_step`]; they own only sockets, threads, the disk
//! cache and their waiters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hoard_engine::ZoneId;
use hoard_engine::shard::{CachedShard, ShardUpdate};

use super::client::{ClientConfig, ClientSync, ENTRY_TIMEOUT_SECS, Effect, EntryStats};
use crate::client::{ClientError, ClientEvent, ClientUpdate};
use crate::wire::Message;

/// What the driver does next, in this order.
#[derive(Debug)]
// Deliberately exhaustive: a driver must carry out every step.
pub enum ClientStep {
    /// Write this copy whole to the cache, before anything after it is
    /// handed to the game.
    WriteShard(Arc<CachedShard>),
    /// Journal this change onto the cached copy (or write the copy whole
    /// when the journal says so), before anything after it.
    JournalShard {
        /// The copy after the change.
        shard: Arc<CachedShard>,
        /// The change.
        update: ShardUpdate,
    },
    /// Hand this to the game (its zone is one the game entered, or it is an
    /// event).
    Update(ClientUpdate),
    /// Recompute the digests of these copies, taken on trust from the
    /// cache when `zone` was entered, off the game's path; each that does
    /// not give its stated digest is repaired
    /// ([`ClientSync::repair_live_shard`]).
    Audit {
        /// The zone.
        zone: ZoneId,
        /// The copies.
        copies: Vec<Arc<CachedShard>>,
    },
    /// The entry of `zone` ended: its waiters get `result`.
    EntryFinished {
        /// The zone.
        zone: ZoneId,
        /// Its statistics, or why it failed.
        result: Result<EntryStats, ClientError>,
    },
    /// The session failed: every waiting entry gets this error.
    FailAll(ClientError),
}

/// A client's connection, sans-IO (see the module docs).
pub struct ClientSession {
    sync: ClientSync,
    /// Zones the game has entered (materialised), as opposed to prefetched.
    visible: HashSet<ZoneId>,
    /// The latest transient state of each entered zone.
    transient: HashMap<ZoneId, Vec<u8>>,
    /// The cached copies each entry in flight took on trust.
    audits: HashMap<ZoneId, Vec<Arc<CachedShard>>>,
    steps: VecDeque<ClientStep>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("visible", &self.visible)
            .field("steps", &self.steps.len())
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// A session speaking as `cfg` says.
    pub fn new(cfg: ClientConfig) -> ClientSession {
        ClientSession {
            sync: ClientSync::new(cfg),
            visible: HashSet::new(),
            transient: HashMap::new(),
            audits: HashMap::new(),
            steps: VecDeque::new(),
        }
    }

    /// The sync machine.
    pub fn sync(&self) -> &ClientSync {
        &self.sync
    }

    /// The sync machine, to hand it messages and timeouts (then drain
    /// [`ClientSession::poll_step`]).
    pub fn sync_mut(&mut self) -> &mut ClientSync {
        &mut self.sync
    }

    /// The next message to send on the control stream.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.sync.poll_transmit()
    }

    /// The game enters `zone` (its objects will be handed over); a zone
    /// only prefetched is kept current but not shown.
    pub fn show(&mut self, zone: &ZoneId) {
        self.visible.insert(zone.clone());
    }

    /// Whether the game entered `zone`.
    pub fn is_visible(&self, zone: &ZoneId) -> bool {
        self.visible.contains(zone)
    }

    /// Whether the game is to get `update` (updates of zones only
    /// prefetched, or left meanwhile, are not).
    pub fn for_game(&self, update: &ClientUpdate) -> bool {
        match update {
            ClientUpdate::ZoneCached { zone, .. }
            | ClientUpdate::ZoneLoaded { zone, .. }
            | ClientUpdate::Objects { zone, .. } => self.visible.contains(zone),
            _ => true,
        }
    }

    /// The latest transient state of `zone`.
    pub fn transient(&self, zone: &ZoneId) -> Option<&[u8]> {
        self.transient.get(zone).map(Vec::as_slice)
    }

    /// The cached copies of the entry `request` of `zone`, loaded while the
    /// request was in flight and taken on trust (their checksums held; their
    /// digests are audited once the zone is ready): the game may prepare
    /// them at once, and the sync checks the answer against them.
    pub fn provide_copies(
        &mut self,
        now: f64,
        request: u32,
        zone: &ZoneId,
        copies: Vec<Arc<CachedShard>>,
    ) -> Result<(), ClientError> {
        if self.visible.contains(zone) && !copies.is_empty() {
            self.steps.push_back(ClientStep::Update(ClientUpdate::ZoneCached {
                zone: zone.clone(),
                shards: copies.clone(),
            }));
        }
        // Registered before the copies are handed over: the zone may be
        // ready as soon as they are.
        self.audits.insert(zone.clone(), copies.clone());
        let checked = copies
            .into_iter()
            .map(super::client::CheckedCopy::from_verified_shared)
            .collect();
        // An answer that came before its copies is checked now: a forgery
        // found here is the same error as one found on arrival (the caller
        // leaves this route), not a lost connection.
        self.sync.provide_copies(now, request, checked).map_err(|e| match e {
            super::client::SyncError::Forged(proof) => ClientError::Forged(proof.to_string()),
            other => ClientError::Lost(other.to_string()),
        })
    }

    /// The game leaves `zone`: no more deltas, its objects go. Returns the
    /// live copies as they stand (the zone's last state, for the driver to
    /// fold its journals into): no change is applied after they are taken.
    pub fn leave(&mut self, zone: &ZoneId) -> Vec<Arc<CachedShard>> {
        self.visible.remove(zone);
        self.transient.remove(zone);
        self.audits.remove(zone);
        let shards = self.sync.live_shards(zone).unwrap_or_default();
        self.sync.leave_zone(zone);
        self.steps
            .push_back(ClientStep::Update(ClientUpdate::ZoneLeft { zone: zone.clone() }));
        shards
    }

    /// The next step for the driver, the sync's effects turned into steps
    /// in order.
    pub fn poll_step(&mut self) -> Option<ClientStep> {
        while self.steps.is_empty() {
            let effect = self.sync.poll_effect()?;
            self.take(effect);
        }
        self.steps.pop_front()
    }

    fn update(&mut self, update: ClientUpdate) {
        self.steps.push_back(ClientStep::Update(update));
    }

    fn event(&mut self, event: ClientEvent) {
        self.update(ClientUpdate::Event(event));
    }

    fn finish(&mut self, zone: ZoneId, result: Result<EntryStats, ClientError>) {
        self.steps.push_back(ClientStep::EntryFinished { zone, result });
    }

    fn take(&mut self, effect: Effect) {
        match effect {
            Effect::WriteShard(shard) => self.steps.push_back(ClientStep::WriteShard(shard)),
            Effect::JournalShard { shard, update } => self.steps.push_back(ClientStep::JournalShard { shard, update }),
            Effect::ZoneReady {
                zone,
                shards,
                stats,
                proofs,
            } => {
                if let Some(copies) = self.audits.remove(&zone).filter(|c| !c.is_empty()) {
                    self.steps.push_back(ClientStep::Audit {
                        zone: zone.clone(),
                        copies,
                    });
                }
                self.update(ClientUpdate::ZoneLoaded {
                    zone: zone.clone(),
                    shards,
                    proofs,
                });
                self.event(ClientEvent::ZoneReady {
                    zone: zone.clone(),
                    stats: stats.clone(),
                });
                self.finish(zone, Ok(stats));
            }
            Effect::Transient { zone, payload } => {
                self.transient.insert(zone, payload);
            }
            Effect::DeltaApplied {
                zone,
                shard,
                update,
                upserts,
                removed,
                proof,
            } => {
                self.steps.push_back(ClientStep::JournalShard {
                    shard: shard.clone(),
                    update,
                });
                self.update(ClientUpdate::Objects {
                    zone,
                    upserts,
                    removed,
                    proof,
                    shard: shard.header.key.shard,
                    head: shard,
                });
            }
            Effect::GameMessage { kind, zone, payload } => self.event(ClientEvent::GameMessage { kind, zone, payload }),
            Effect::ZoneDenied { zone, code, message } => {
                self.event(ClientEvent::ZoneDenied {
                    zone: zone.clone(),
                    message: message.clone(),
                });
                let denied = ClientError::ZoneDenied {
                    zone: zone.clone(),
                    code,
                    message,
                };
                self.finish(zone, Err(denied));
            }
            Effect::ZoneElsewhere { zone, address } => {
                tracing::info!(%zone, %address, "zone served by another server");
                self.event(ClientEvent::ZoneElsewhere {
                    zone: zone.clone(),
                    address: address.clone(),
                });
                let elsewhere = ClientError::ZoneElsewhere {
                    zone: zone.clone(),
                    address,
                };
                self.finish(zone, Err(elsewhere));
            }
            Effect::EntryTimedOut { zone, waited } => {
                tracing::warn!(%zone, waited_s = waited, "zone entry timed out");
                let timeout = Duration::from_secs(ENTRY_TIMEOUT_SECS as u64);
                self.finish(zone.clone(), Err(ClientError::Timeout(zone, timeout)));
            }
            Effect::IntentRejected { seq, code, message } => {
                tracing::info!(seq, code, %message, "intent rejected");
                self.event(ClientEvent::IntentRejected { seq, code, message });
            }
            Effect::Processed { seqs } => self.event(ClientEvent::IntentsProcessed { seqs }),
            Effect::IntentNonce { nonce } => self.event(ClientEvent::IntentNonce { nonce }),
            Effect::Status { writable, message } => {
                if writable {
                    tracing::info!(%message, "server accepts actions again");
                } else {
                    tracing::warn!(%message, "server does not accept actions");
                }
                self.event(ClientEvent::ServerStatus { writable, message });
            }
            Effect::Failed { code, message } => {
                self.event(ClientEvent::Disconnected {
                    reason: message.clone(),
                });
                self.steps
                    .push_back(ClientStep::FailAll(ClientError::Refused { code, message }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ErrorMsg, ZoneDenied};
    use hoard_engine::{RegistryHash, ServerIdentity};

    fn session() -> ClientSession {
        ClientSession::new(ClientConfig {
            server: ServerIdentity([1; 32]),
            service: "world".into(),
            perspective: "ann".into(),
            registry: RegistryHash([2; 32]),
            wall_clock_at_zero: chrono::Utc::now(),
            proofs: None,
        })
    }

    fn steps(session: &mut ClientSession) -> Vec<ClientStep> {
        std::iter::from_fn(|| session.poll_step()).collect()
    }

    /// A refused entry tells the game and finishes its waiters with why; a
    /// failed session disconnects and fails every waiter; leaving a zone
    /// tells the game; a prefetched zone's objects are not the game's.
    #[test]
    fn the_syncs_effects_become_the_drivers_steps_in_order() {
        let mut s = session();
        let meadow = ZoneId::new("meadow").expect("zone");
        let request = s.sync_mut().enter_zone(0.0, meadow.clone(), &[], true);
        s.show(&meadow);
        let denied = Message::ZoneDenied(ZoneDenied {
            request,
            zone: meadow.clone(),
            code: 7,
            message: "no".into(),
        });
        s.sync_mut().handle(0.1, denied, 10).expect("handled");
        let out = steps(&mut s);
        assert!(
            matches!(&out[..], [
                ClientStep::Update(ClientUpdate::Event(ClientEvent::ZoneDenied { zone, .. })),
                ClientStep::EntryFinished { zone: finished, result: Err(ClientError::ZoneDenied { code: 7, .. }) },
            ] if *zone == meadow && *finished == meadow),
            "{out:?}"
        );

        let loaded = ClientUpdate::ZoneLoaded {
            zone: ZoneId::new("forest").expect("zone"),
            shards: Vec::new(),
            proofs: Vec::new(),
        };
        assert!(!s.for_game(&loaded), "a zone the game did not enter");
        assert!(s.leave(&meadow).is_empty());
        assert!(!s.is_visible(&meadow));
        assert!(matches!(
            &steps(&mut s)[..],
            [ClientStep::Update(ClientUpdate::ZoneLeft { .. })]
        ));

        let failed = Message::Error(ErrorMsg {
            code: 9,
            message: "bye".into(),
        });
        let _ = s.sync_mut().handle(0.2, failed, 10);
        let out = steps(&mut s);
        assert!(
            matches!(
                &out[..],
                [
                    ClientStep::Update(ClientUpdate::Event(ClientEvent::Disconnected { .. })),
                    ClientStep::FailAll(ClientError::Refused { code: 9, .. }),
                ]
            ),
            "{out:?}"
        );
    }
}
