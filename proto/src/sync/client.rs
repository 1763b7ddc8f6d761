//! The client side of zone entry and live deltas as a sans-IO state machine.
//!
//! [`ClientSync::enter_zone`] turns the cache's shard heads into one
//! `EnterZone`; the cached copies are handed over with
//! [`ClientSync::provide_copies`] (the driver loads them while the request is
//! in flight); each answer is applied to its copy and its digest checked
//! against the server's; a mismatch costs one `Repair` round trip for that
//! shard. Only when every shard is verified does [`Effect::ZoneReady`] come
//! out, after an [`Effect::WriteShard`] (or [`Effect::JournalShard`]) for each changed shard: game code sees
//! the zone already up to date. Live deltas are applied in seq order,
//! buffered while their shard's answer is still pending.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hoard_engine::shard::{ApplyError, CachedObject, CachedShard, ShardHeader, ShardKey, ShardUpdate, UpdateKind};
use hoard_engine::{Epoch, ObjectId, ObjectState, RegistryHash, Seq, ServerIdentity, ShardId, ZoneId};

use hoard_engine::shard::recompute_digest;

use super::answer::short_hash;
use crate::proof::{ProofChecker, ProofError};
use crate::wire::{
    Delta, EnterZone, LeaveZone, MAX_REPAIR_OBJECTS, Message, Repair, RepairEntry, WireObject, fresh_root, head_tag,
};
use crate::wire::{HeadProof, ShardHave};

/// Who the client is talking to, as settled by the handshake.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server identity (cache namespace).
    pub server: ServerIdentity,
    /// The service.
    pub service: String,
    /// The perspective acted through.
    pub perspective: String,
    /// The component registry in use.
    pub registry: RegistryHash,
    /// The wall-clock time at which the driver's clock (the `now` every call
    /// takes, in seconds) read 0. Cached copies are stamped with this plus
    /// `now`, so the machine reads no clock of its own.
    pub wall_clock_at_zero: DateTime<Utc>,
    /// Set when every shard must come with the origin's signed head (the
    /// server is a relay, or the client republishes what it gets): each
    /// copy is checked against it before it is written, used or shown.
    pub proofs: Option<ProofChecker>,
}

/// A cached copy handed to [`ClientSync::provide_copies`], with what is
/// known of its digest: recomputed from its objects ([`CheckedCopy::new`]:
/// a copy whose header does not describe its contents is repaired even when
/// the server finds it up to date), or taken from a file whose checksums
/// held ([`CheckedCopy::from_verified_file`]: the writer compared the digest
/// before writing, so recomputing it only guards against a writer's bug,
/// which the driver then checks off the critical path and reports with
/// [`ClientSync::repair_live_shard`]). Recomputing costs two blake3 calls
/// per object (about three times reading and checksumming the file), so a
/// driver does either on its own threads, in parallel.
#[derive(Clone, Debug)]
pub struct CheckedCopy {
    copy: Arc<CachedShard>,
    honest: bool,
}

impl CheckedCopy {
    /// Recomputes `copy`'s digest from its objects; the header then carries
    /// the real digest, and a copy whose stored digest differed is repaired.
    pub fn new(mut copy: CachedShard) -> CheckedCopy {
        let real = recompute_digest(&copy.objects);
        let honest = real == copy.header.digest;
        copy.header.digest = real;
        CheckedCopy {
            copy: Arc::new(copy),
            honest,
        }
    }

    /// Takes `copy`'s header digest as stated: for a copy just read from a
    /// cache file whose header and file checksums held, whose digest its
    /// writer checked before writing. The driver should audit such copies
    /// in the background (`WorldCache::audit`) and repair any that fails.
    pub fn from_verified_file(copy: CachedShard) -> CheckedCopy {
        CheckedCopy::from_verified_shared(Arc::new(copy))
    }

    /// [`CheckedCopy::from_verified_file`] for a copy the driver shares (with
    /// a game preparing the zone while the answer is in flight, say): a
    /// current copy becomes the live one as it is, never copied.
    pub fn from_verified_shared(copy: Arc<CachedShard>) -> CheckedCopy {
        CheckedCopy { copy, honest: true }
    }
}

/// What one zone entry cost and reused.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EntryStats {
    /// Shards in the zone.
    pub shards: u32,
    /// Shards whose copy was current.
    pub shards_fresh: u32,
    /// Shards brought up to date by changes or a manifest.
    pub shards_delta: u32,
    /// Shards fetched whole.
    pub shards_snapshot: u32,
    /// Shards repaired after a digest mismatch.
    pub shards_repaired: u32,
    /// Objects in the zone.
    pub objects: u64,
    /// Bytes received for this entry (frames).
    pub bytes_rx: u64,
    /// Bytes sent for this entry (frames).
    pub bytes_tx: u64,
    /// Round trips (1, plus one per repair wave).
    pub round_trips: u32,
    /// Milliseconds from the request to ready.
    pub elapsed_ms: u64,
}

/// How far a zone entry in flight has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryProgress {
    /// Shards verified so far.
    pub shards_done: u32,
    /// Shards in the zone, once the server's answer has said.
    pub shards: Option<u32>,
    /// Bytes received so far for this entry.
    pub bytes_rx: u64,
}

/// What the driver must do.
#[derive(Debug)]
// Deliberately exhaustive: a driver must handle every effect, and a new
// one must fail its build rather than be ignored.
pub enum Effect {
    /// Write this verified shard to the cache.
    WriteShard(Arc<CachedShard>),
    /// Record a shard an entry's `Changes` brought up to date by appending
    /// the change to its cached copy's journal (the copy on disk is at the
    /// change's base): a few objects' bytes instead of the whole shard
    /// rewritten and fsynced. A journal tail lost to a crash only costs
    /// fetching those changes again.
    JournalShard {
        /// The shard after the change (shared with the entry's result).
        shard: Arc<CachedShard>,
        /// The change, as journalled.
        update: ShardUpdate,
    },
    /// Every shard of the zone is verified and written: materialise it.
    ZoneReady {
        /// The zone.
        zone: ZoneId,
        /// Its shards, verified (shared with the sync's live copies: no
        /// zone is copied to be handed over).
        shards: Vec<Arc<CachedShard>>,
        /// What the entry cost.
        stats: EntryStats,
        /// The signed head of each shard, when the session checks them
        /// ([`ClientConfig::proofs`]).
        proofs: Vec<HeadProof>,
    },
    /// A live delta was applied and verified.
    DeltaApplied {
        /// The zone.
        zone: ZoneId,
        /// The shard after the delta (to journal; shared with the live copy).
        shard: Arc<CachedShard>,
        /// The delta, as journalled.
        update: ShardUpdate,
        /// Objects written.
        upserts: Vec<CachedObject>,
        /// Objects removed.
        removed: Vec<ObjectId>,
        /// The signed head after the delta, when the session checks them.
        proof: Option<HeadProof>,
    },
    /// A message of the game to this player (`GameMessage`).
    GameMessage {
        /// Its registered kind.
        kind: String,
        /// The zone it was sent to, if it went to a zone's players.
        zone: Option<ZoneId>,
        /// Its MessagePack encoding.
        payload: Vec<u8>,
    },
    /// A zone's transient state (never stored) replaced the previous one.
    Transient {
        /// The zone.
        zone: ZoneId,
        /// The game's encoding of it.
        payload: Vec<u8>,
    },
    /// The server refused an entry.
    ZoneDenied {
        /// The zone.
        zone: ZoneId,
        /// The error code.
        code: u16,
        /// Why.
        message: String,
    },
    /// The zone is served by another server of the world, at `address`.
    ZoneElsewhere {
        /// The zone.
        zone: ZoneId,
        /// The serving server's address (`host:port`).
        address: String,
    },
    /// An entry got no complete answer within [`ENTRY_TIMEOUT_SECS`]: it is
    /// abandoned (what arrives for it later is ignored).
    EntryTimedOut {
        /// The zone.
        zone: ZoneId,
        /// How long it waited, in seconds.
        waited: f64,
    },
    /// The server refused an intent (it was not applied).
    IntentRejected {
        /// The intent's seq, as sent.
        seq: u32,
        /// The error code.
        code: u16,
        /// Why.
        message: String,
    },
    /// These intents were processed and their effects are durable (their
    /// deltas came before).
    Processed {
        /// The intents' seqs.
        seqs: Vec<u32>,
    },
    /// The server gave the nonce to sign this session's intents under.
    IntentNonce {
        /// The nonce.
        nonce: [u8; 16],
    },
    /// Whether the server accepts actions changed (its store failed or
    /// recovered).
    Status {
        /// Whether intents are accepted.
        writable: bool,
        /// A sentence for the player.
        message: String,
    },
    /// The server reported a fatal error.
    Failed {
        /// The error code.
        code: u16,
        /// Why.
        message: String,
    },
}

/// Why a message could not be handled: the connection should close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The server sent something the protocol does not allow here.
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// A shard stayed wrong after its repair.
    #[error("shard {shard} of zone {zone} does not match the server even after repair")]
    RepairFailed {
        /// The zone.
        zone: ZoneId,
        /// The shard.
        shard: ShardId,
    },
    /// A shard is not what the world's origin signed: the server (a relay)
    /// altered, dropped, invented or replayed something. Nothing of it was
    /// written or shown; take another route to the world.
    #[error("the server is not faithful to the world: {0}")]
    Forged(#[from] ProofError),
}

/// Most signed heads held waiting for their shard's message.
const MAX_PENDING_PROOFS: usize = 2 * crate::wire::MAX_SHARDS_PER_ENTRY;

/// Longest a zone entry (with its repairs) may wait for its answers before
/// [`ClientSync::handle_timeout`] abandons it.
pub const ENTRY_TIMEOUT_SECS: f64 = 120.0;

/// Most abandoned requests remembered (their late answers are dropped).
const MAX_ABANDONED: usize = 1024;

/// Most live deltas kept for a zone whose entry answer has not arrived.
pub const MAX_BUFFERED_DELTAS: usize = 1024;

struct Entry {
    zone: ZoneId,
    started: f64,
    copies: Option<BTreeMap<ShardId, Arc<CachedShard>>>,
    pending: Vec<Message>,
    expected: Option<u32>,
    answered: u32,
    ended: bool,
    done: BTreeMap<ShardId, Arc<CachedShard>>,
    repairing: BTreeSet<ShardId>,
    /// Copies whose contents do not match their header's digest.
    dishonest: BTreeSet<ShardId>,
    /// The shards sent in `held`, ascending: the order of `Fresh.mask`.
    held: Vec<ShardId>,
    /// A `Fresh` whose root is checked again once its flagged copies are
    /// repaired.
    fresh_check: Option<FreshCheck>,
    stats: EntryStats,
}

/// What `Fresh` said, kept while its flagged copies are repaired.
struct FreshCheck {
    root: [u8; 32],
    shards: Vec<ShardId>,
    flagged: BTreeSet<ShardId>,
}

/// The client's sync state: entries in flight and live zones.
pub struct ClientSync {
    cfg: ClientConfig,
    next_request: u32,
    entries: BTreeMap<u32, Entry>,
    /// repair request → (entry request or none for a live repair, zone, shard).
    repairs: BTreeMap<u32, (Option<u32>, ZoneId, ShardId)>,
    live: BTreeMap<ZoneId, BTreeMap<ShardId, Arc<CachedShard>>>,
    buffered: BTreeMap<ZoneId, Vec<Delta>>,
    /// Requests abandoned by a timeout whose answers may still arrive.
    abandoned: BTreeSet<u32>,
    /// Zones whose buffered deltas overflowed: repaired once live.
    overflowed: BTreeSet<ZoneId>,
    out: VecDeque<Message>,
    effects: VecDeque<Effect>,
    /// The request whose answer stream is being read.
    answering: Option<u32>,
    /// The latest `now` a call brought (seconds on the driver's clock).
    now: f64,
    /// Signed heads whose shard message is still to come (proof mode).
    proofs_pending: BTreeMap<ShardId, HeadProof>,
    /// The signed head each live or entered shard was last checked against.
    verified: BTreeMap<ShardId, HeadProof>,
    /// The newest (epoch, seq) held of each shard: a signed head behind it
    /// is a replay.
    newest: BTreeMap<ShardId, (Epoch, Seq)>,
    /// Each zone's transient state as last received, for the zones this
    /// client is in or entering: the base of the next `TransientPatch`.
    transients: BTreeMap<ZoneId, Vec<u8>>,
}

fn cached(o: WireObject) -> Result<CachedObject, SyncError> {
    let state = ObjectState::from_bytes(o.state).map_err(|e| SyncError::Protocol(format!("object {}: {e}", o.id)))?;
    Ok(CachedObject {
        id: o.id,
        version: o.version,
        state,
    })
}

fn cached_all(objects: Vec<WireObject>) -> Result<Vec<CachedObject>, SyncError> {
    objects.into_iter().map(cached).collect()
}

impl ClientSync {
    /// A sync state for a session the handshake settled.
    pub fn new(cfg: ClientConfig) -> ClientSync {
        ClientSync {
            cfg,
            next_request: 1,
            entries: BTreeMap::new(),
            repairs: BTreeMap::new(),
            live: BTreeMap::new(),
            buffered: BTreeMap::new(),
            abandoned: BTreeSet::new(),
            overflowed: BTreeSet::new(),
            out: VecDeque::new(),
            effects: VecDeque::new(),
            answering: None,
            now: 0.0,
            proofs_pending: BTreeMap::new(),
            verified: BTreeMap::new(),
            newest: BTreeMap::new(),
            transients: BTreeMap::new(),
        }
    }

    /// The signed head a live shard was last checked against (proof mode).
    pub fn proof(&self, shard: ShardId) -> Option<&HeadProof> {
        self.verified.get(&shard)
    }

    /// A signed head came: its signature is checked now, and it waits for
    /// its shard's message.
    fn take_proof(&mut self, proof: HeadProof) -> Result<(), SyncError> {
        let Some(checker) = &self.cfg.proofs else {
            return Ok(()); // not asked for: nothing to check it against
        };
        checker.check_signature(&proof)?;
        if let Some((epoch, seq)) = self.newest.get(&proof.shard)
            && *epoch == proof.epoch
            && proof.seq < *seq
        {
            return Err(ProofError::Rollback {
                shard: proof.shard,
                seq: proof.seq,
                held: *seq,
            }
            .into());
        }
        if self.proofs_pending.len() >= MAX_PENDING_PROOFS && !self.proofs_pending.contains_key(&proof.shard) {
            return Err(SyncError::Protocol(format!(
                "more than {MAX_PENDING_PROOFS} signed heads without their shards"
            )));
        }
        self.proofs_pending.insert(proof.shard, proof);
        Ok(())
    }

    /// In proof mode, checks a copy against the signed head that came for
    /// it, before anything of it is written or shown.
    fn check_proven(&mut self, copy: &CachedShard) -> Result<(), SyncError> {
        let Some(checker) = &self.cfg.proofs else {
            return Ok(());
        };
        let shard = copy.header.key.shard;
        let proof = self.proofs_pending.remove(&shard).ok_or(ProofError::Missing(shard))?;
        checker.check_copy(&proof, copy)?;
        self.newest.insert(shard, (proof.epoch, proof.seq));
        self.verified.insert(shard, proof);
        Ok(())
    }

    /// Notes the time a call brought, for the timestamps of cached copies.
    fn at(&mut self, now: f64) {
        self.now = self.now.max(now);
    }

    /// The wall-clock time of the latest call.
    fn wall_now(&self) -> DateTime<Utc> {
        let micros = (self.now * 1e6) as i64;
        self.cfg.wall_clock_at_zero + chrono::Duration::microseconds(micros)
    }

    /// The session's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The next message to send on the control stream.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.out.pop_front()
    }

    /// The next effect for the driver.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The current, verified shards of a live (entered or prefetched) zone.
    pub fn live_shards(&self, zone: &ZoneId) -> Option<Vec<Arc<CachedShard>>> {
        self.live.get(zone).map(|s| s.values().cloned().collect())
    }

    /// How far the entry of `zone` in flight has come; `None` when none is.
    pub fn entry_progress(&self, zone: &ZoneId) -> Option<EntryProgress> {
        self.entries
            .values()
            .find(|e| e.zone == *zone && !e.ended)
            .map(|e| EntryProgress {
                shards_done: e.done.len() as u32,
                shards: e.expected,
                bytes_rx: e.stats.bytes_rx,
            })
    }

    /// Asks the server to repair a live shard whose copy is suspect (a
    /// background audit found its objects do not give its digest): a
    /// `Repair` listing the copy's objects goes out, and the answer comes
    /// back as [`Effect::WriteShard`] and [`Effect::DeltaApplied`] with the
    /// objects that differed. Nothing happens for a shard not live.
    pub fn repair_live_shard(&mut self, zone: &ZoneId, shard: ShardId) {
        // Only an error of a shard not live is possible, and that is no-op.
        let _ = self.request_live_repair(zone.clone(), shard);
    }

    /// Whether a zone is entered and receiving live deltas.
    pub fn is_live(&self, zone: &ZoneId) -> bool {
        self.live.contains_key(zone)
    }

    /// Starts entering (or, with `subscribe` false, prefetching once) a zone
    /// whose cached copies have these `heads`. Returns the request id; hand
    /// the copies over with [`ClientSync::provide_copies`].
    pub fn enter_zone(&mut self, now: f64, zone: ZoneId, heads: &[ShardHeader], subscribe: bool) -> u32 {
        self.at(now);
        let request = self.next_request;
        self.next_request += 1;
        // The compact form: each copy by its hwm only. Copies at the
        // server's seq are confirmed together by one `Fresh` root, so a warm
        // entry's size hardly grows with the zone's shard count.
        let proofs = self.cfg.proofs.is_some();
        let (have, held) = if proofs {
            // Signed heads are checked against full heads; a copy newer
            // than a head the server offers later is a replay.
            for h in heads {
                let newest = self.newest.entry(h.key.shard).or_insert((h.epoch, h.hwm));
                if newest.0 == h.epoch && newest.1 < h.hwm {
                    newest.1 = h.hwm;
                }
            }
            let have = heads
                .iter()
                .map(|h| ShardHave {
                    shard: h.key.shard,
                    epoch: h.epoch,
                    hwm: h.hwm,
                    digest: h.digest,
                })
                .collect();
            (have, Vec::new())
        } else {
            let mut held: Vec<(ShardId, Seq)> = heads.iter().map(|h| (h.key.shard, h.hwm)).collect();
            held.sort_unstable();
            held.dedup_by_key(|(shard, _)| *shard);
            (Vec::new(), held)
        };
        let held_order: Vec<ShardId> = held.iter().map(|(shard, _)| *shard).collect();
        let msg = Message::EnterZone(EnterZone {
            request,
            zone: zone.clone(),
            subscribe,
            have,
            held,
            proofs,
        });
        let stats = EntryStats {
            bytes_tx: msg.to_frame().len() as u64,
            round_trips: 1,
            ..EntryStats::default()
        };
        self.out.push_back(msg);
        self.entries.insert(
            request,
            Entry {
                zone,
                started: now,
                copies: None,
                pending: Vec::new(),
                expected: None,
                answered: 0,
                ended: false,
                done: BTreeMap::new(),
                repairing: BTreeSet::new(),
                dishonest: BTreeSet::new(),
                held: held_order,
                fresh_check: None,
                stats,
            },
        );
        request
    }

    /// Hands over the cached copies for an entry (those that loaded; a copy
    /// that failed to load is simply absent), each checked by
    /// [`CheckedCopy::new`] (the driver does that on its own threads).
    pub fn provide_copies(&mut self, now: f64, request: u32, copies: Vec<CheckedCopy>) -> Result<(), SyncError> {
        self.at(now);
        let Some(entry) = self.entries.get_mut(&request) else {
            return Ok(());
        };
        let checked: Vec<(Arc<CachedShard>, bool)> = copies.into_iter().map(|c| (c.copy, c.honest)).collect();
        for (c, honest) in &checked {
            if !honest {
                tracing::warn!(shard = %c.header.key, "cached copy does not match its own header; it will be repaired");
                entry.dishonest.insert(c.header.key.shard);
            }
        }
        entry.copies = Some(checked.into_iter().map(|(c, _)| (c.header.key.shard, c)).collect());
        let pending = std::mem::take(&mut entry.pending);
        for msg in pending {
            self.apply_answer(request, msg)?;
        }
        self.maybe_ready(now, request);
        Ok(())
    }

    /// When [`ClientSync::handle_timeout`] must next be called (seconds on
    /// the clock `now` is given in), if any entry is in flight.
    pub fn poll_timeout(&self) -> Option<f64> {
        self.entries
            .values()
            .map(|e| e.started + ENTRY_TIMEOUT_SECS)
            .min_by(f64::total_cmp)
    }

    /// Abandons every entry that has waited [`ENTRY_TIMEOUT_SECS`] by `now`:
    /// an `EntryTimedOut` effect each, so no caller waits for ever.
    pub fn handle_timeout(&mut self, now: f64) {
        self.at(now);
        let expired: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| now >= e.started + ENTRY_TIMEOUT_SECS)
            .map(|(request, _)| *request)
            .collect();
        for request in expired {
            if let Some(entry) = self.entries.remove(&request) {
                tracing::warn!(zone = %entry.zone, "zone entry timed out");
                // Its answer (and its repairs' answers) may still arrive.
                self.abandoned.insert(request);
                let repairs: Vec<u32> = self
                    .repairs
                    .iter()
                    .filter(|(_, (of, _, _))| *of == Some(request))
                    .map(|(r, _)| *r)
                    .collect();
                for r in repairs {
                    self.repairs.remove(&r);
                    self.abandoned.insert(r);
                }
                while self.abandoned.len() > MAX_ABANDONED {
                    self.abandoned.pop_first();
                }
                // Stop any live deltas it subscribed to, unless the zone is live.
                if !self.live.contains_key(&entry.zone) && !self.entries.values().any(|e| e.zone == entry.zone) {
                    self.out.push_back(Message::LeaveZone(LeaveZone {
                        zone: entry.zone.clone(),
                    }));
                }
                self.buffered.remove(&entry.zone);
                self.overflowed.remove(&entry.zone);
                self.effects.push_back(Effect::EntryTimedOut {
                    zone: entry.zone,
                    waited: now - entry.started,
                });
            }
        }
    }

    /// Leaves a zone: no more live deltas for it.
    pub fn leave_zone(&mut self, zone: &ZoneId) {
        if self.live.remove(zone).is_some() {
            self.out.push_back(Message::LeaveZone(LeaveZone { zone: zone.clone() }));
        }
        self.buffered.remove(zone);
        self.overflowed.remove(zone);
        self.transients.remove(zone);
    }

    /// Whether this client is in `zone` or entering it.
    fn follows(&self, zone: &ZoneId) -> bool {
        self.live.contains_key(zone) || self.entries.values().any(|e| e.zone == *zone)
    }

    /// A zone's new transient state: kept as the base of the next patch
    /// and handed to the game, if this client is in the zone or entering
    /// it (a late one for a zone just left is dropped). States of zones no
    /// longer followed are forgotten here, so at most one is held per
    /// zone followed.
    fn take_transient(&mut self, zone: ZoneId, payload: Vec<u8>) {
        let mut held = std::mem::take(&mut self.transients);
        held.retain(|z, _| self.follows(z));
        self.transients = held;
        if self.follows(&zone) {
            self.transients.insert(zone.clone(), payload.clone());
            self.effects.push_back(Effect::Transient { zone, payload });
        }
    }

    /// A `TransientPatch`: applied to the state held for its zone when that
    /// is its base. Without that base (a zone not followed, or a state
    /// missed) it is dropped and the zone's state waits for the next whole
    /// one, which the server sends at least every
    /// [`crate::transient::WHOLE_EVERY`] sends.
    fn transient_patch(&mut self, p: crate::wire::TransientPatch) -> Result<(), SyncError> {
        if p.base.len() != crate::transient::BASE_TAG_BYTES {
            return Err(SyncError::Protocol(format!(
                "transient patch for {} names a base of {} bytes; a base tag is {}",
                p.zone,
                p.base.len(),
                crate::transient::BASE_TAG_BYTES
            )));
        }
        let Some(base) = self.transients.get(&p.zone) else {
            tracing::debug!(zone = %p.zone, "transient patch without its base; dropped");
            return Ok(());
        };
        if crate::transient::base_tag(base).as_slice() != p.base.as_slice() {
            tracing::debug!(zone = %p.zone, "transient patch of another base; dropped until a whole state");
            self.transients.remove(&p.zone);
            return Ok(());
        }
        let payload = crate::transient::apply(base, &p.ops)
            .map_err(|e| SyncError::Protocol(format!("transient patch for {}: {e}", p.zone)))?;
        self.take_transient(p.zone, payload);
        Ok(())
    }

    /// The entry's copy of a shard, if loaded, and the key to cache it under.
    fn copy_and_key<'e>(
        &self,
        entry: &'e Entry,
        zone: &ZoneId,
        shard: ShardId,
    ) -> Result<(Option<&'e CachedShard>, ShardKey), SyncError> {
        let copy = entry.copies.as_ref().and_then(|c| c.get(&shard)).map(Arc::as_ref);
        let key = match copy {
            Some(c) => c.header.key.clone(),
            None => self.key(zone, shard, None)?,
        };
        Ok((copy, key))
    }

    fn key(&self, zone: &ZoneId, shard: ShardId, perspective: Option<&str>) -> Result<ShardKey, SyncError> {
        ShardKey::new(self.cfg.server, &self.cfg.service, perspective, zone.clone(), shard)
            .map_err(|e| SyncError::Protocol(format!("shard {shard}: {e}")))
    }

    /// Handles one message from an answer or delta stream (or a control
    /// message about entries) at `now`; `frame_len` counts toward the entry's bytes.
    pub fn handle(&mut self, now: f64, msg: Message, frame_len: usize) -> Result<(), SyncError> {
        self.at(now);
        // The answer of an abandoned (timed-out) entry may still come: it is
        // dropped, whole, not taken for a protocol violation.
        let abandoned = match &msg {
            Message::AnswerBegin(b) => self.abandoned.contains(&b.request).then_some(b.request),
            Message::AnswerEnd(e) => self.abandoned.contains(&e.request).then_some(e.request),
            Message::UpToDate(_)
            | Message::Changes(_)
            | Message::Manifest(_)
            | Message::Snapshot(_)
            | Message::HeadProof(_)
            | Message::Fresh(_) => self.answering.filter(|r| self.abandoned.contains(r)),
            _ => None,
        };
        if let Some(request) = abandoned {
            self.answering = Some(request);
            if matches!(msg, Message::AnswerEnd(_)) {
                self.abandoned.remove(&request);
            }
            return Ok(());
        }
        match msg {
            Message::AnswerBegin(b) => {
                let request = self.entry_of(b.request)?;
                if self.repairs.get(&request).is_some_and(|r| r.0.is_none()) {
                    // A live shard's repair: its manifest follows.
                    return Ok(());
                }
                let entry = self
                    .entries
                    .get_mut(&request)
                    .ok_or_else(|| SyncError::Protocol("answer for no request".into()))?;
                entry.stats.bytes_rx += frame_len as u64;
                if b.request == request {
                    entry.expected = Some(b.shards);
                    entry.stats.shards = b.shards;
                }
            }
            Message::AnswerEnd(e) => {
                let request = self.entry_of(e.request)?;
                if let Some(entry) = self.entries.get_mut(&request) {
                    entry.stats.bytes_rx += frame_len as u64;
                    if e.request == request {
                        entry.ended = true;
                    }
                }
                if e.request != request || self.repairs.get(&e.request).is_some_and(|r| r.0.is_none()) {
                    self.repairs.remove(&e.request);
                }
                self.maybe_ready(now, request);
            }
            m @ (Message::UpToDate(_)
            | Message::Changes(_)
            | Message::Manifest(_)
            | Message::Snapshot(_)
            | Message::Fresh(_)) => {
                let request = self
                    .current_answer_request()
                    .ok_or_else(|| SyncError::Protocol("shard answer outside an answer".into()))?;
                self.answer_frame(now, request, m, frame_len)?;
            }
            Message::ZoneDenied(d) => {
                if let Some(entry) = self.entries.remove(&d.request) {
                    self.effects.push_back(Effect::ZoneDenied {
                        zone: entry.zone,
                        code: d.code,
                        message: d.message,
                    });
                } else if let Some((_, zone, _)) = self.repairs.remove(&d.request) {
                    self.effects.push_back(Effect::ZoneDenied {
                        zone,
                        code: d.code,
                        message: d.message,
                    });
                }
            }
            Message::ZoneElsewhere(e) => {
                if e.address.len() > crate::wire::MAX_ADDRESS_BYTES {
                    return Err(SyncError::Protocol(format!(
                        "a server address of {} bytes; the limit is {}",
                        e.address.len(),
                        crate::wire::MAX_ADDRESS_BYTES
                    )));
                }
                if let Some(entry) = self.entries.remove(&e.request) {
                    self.effects.push_back(Effect::ZoneElsewhere {
                        zone: entry.zone,
                        address: e.address,
                    });
                }
            }
            Message::Delta(d) => self.delta(d)?,
            Message::HeadProof(p) => self.take_proof(p)?,
            Message::Transient(t) => {
                if t.payload.len() > crate::wire::MAX_TRANSIENT_BYTES {
                    return Err(SyncError::Protocol(format!(
                        "transient state of {} bytes for {}; the limit is {}",
                        t.payload.len(),
                        t.zone,
                        crate::wire::MAX_TRANSIENT_BYTES
                    )));
                }
                self.take_transient(t.zone, t.payload);
            }
            Message::TransientPatch(p) => self.transient_patch(p)?,
            Message::GameMessage(m) => {
                if m.payload.len() > crate::wire::MAX_GAME_MESSAGE_BYTES
                    || m.kind.len() > crate::wire::MAX_GAME_MESSAGE_KIND
                {
                    return Err(SyncError::Protocol(format!(
                        "a game message of kind {:?} ({} bytes) over the limits ({} bytes, kind {} bytes)",
                        m.kind,
                        m.payload.len(),
                        crate::wire::MAX_GAME_MESSAGE_BYTES,
                        crate::wire::MAX_GAME_MESSAGE_KIND
                    )));
                }
                self.effects.push_back(Effect::GameMessage {
                    kind: m.kind,
                    zone: m.zone,
                    payload: m.payload,
                });
            }
            Message::IntentRejected(r) => self.effects.push_back(Effect::IntentRejected {
                seq: r.seq,
                code: r.code,
                message: r.message,
            }),
            Message::Processed(p) => self.effects.push_back(Effect::Processed { seqs: p.seqs }),
            Message::IntentNonce(n) => self.effects.push_back(Effect::IntentNonce { nonce: n.nonce }),
            Message::Status(st) => self.effects.push_back(Effect::Status {
                writable: st.writable,
                message: st.message,
            }),
            Message::Error(e) => self.effects.push_back(Effect::Failed {
                code: e.code,
                message: e.message,
            }),
            other => {
                return Err(SyncError::Protocol(format!(
                    "unexpected message type 0x{:02x}",
                    other.kind()
                )));
            }
        }
        Ok(())
    }

    /// Handles one frame of an answer stream whose `AnswerBegin` named
    /// `request` (the driver keeps that per stream, so answer streams may
    /// interleave).
    pub fn handle_answer(&mut self, now: f64, request: u32, msg: Message, frame_len: usize) -> Result<(), SyncError> {
        self.answering = Some(request);
        if matches!(msg, Message::HeadProof(_))
            && let Ok(entry) = self.entry_of_answer(request)
            && let Some(entry) = self.entries.get_mut(&entry)
        {
            entry.stats.bytes_rx += frame_len as u64;
        }
        self.handle(now, msg, frame_len)
    }

    fn current_answer_request(&self) -> Option<u32> {
        self.answering
    }

    fn entry_of(&mut self, request: u32) -> Result<u32, SyncError> {
        self.answering = Some(request);
        if self.entries.contains_key(&request) {
            return Ok(request);
        }
        match self.repairs.get(&request) {
            Some((Some(entry), _, _)) => Ok(*entry),
            Some((None, _, _)) => Ok(request),
            None => Err(SyncError::Protocol(format!("answer for unknown request {request}"))),
        }
    }

    fn answer_frame(&mut self, now: f64, request: u32, msg: Message, frame_len: usize) -> Result<(), SyncError> {
        // A live repair (not part of an entry).
        if let Some((None, zone, shard)) = self.repairs.get(&request).cloned() {
            return self.live_repair(zone, shard, msg);
        }
        let entry_request = self.entry_of_answer(request)?;
        let Some(entry) = self.entries.get_mut(&entry_request) else {
            return Ok(());
        };
        entry.stats.bytes_rx += frame_len as u64;
        if entry.copies.is_none() {
            entry.pending.push(msg);
            return Ok(());
        }
        self.apply_answer(entry_request, msg)?;
        self.maybe_ready(now, entry_request);
        Ok(())
    }

    fn entry_of_answer(&self, request: u32) -> Result<u32, SyncError> {
        if self.entries.contains_key(&request) {
            return Ok(request);
        }
        match self.repairs.get(&request) {
            Some((Some(entry), _, _)) => Ok(*entry),
            _ => Err(SyncError::Protocol(format!("answer for unknown request {request}"))),
        }
    }

    fn apply_answer(&mut self, request: u32, msg: Message) -> Result<(), SyncError> {
        let registry = self.cfg.registry;
        let perspective = self.cfg.perspective.clone();
        let Some(entry) = self.entries.get(&request) else {
            return Ok(());
        };
        let zone = entry.zone.clone();
        let now = self.wall_now();
        let mut journal = None;
        let (shard, result, kind) = match msg {
            Message::UpToDate(u) => {
                let copy = entry.copies.as_ref().and_then(|c| c.get(&u.shard));
                let result = match copy {
                    // The head was sent but the copy then failed to load
                    // (damaged body): fetch the shard through a repair.
                    None => Err(ApplyError::NoBase {
                        key: Box::new(self.key(&zone, u.shard, None)?),
                    }),
                    Some(copy) if copy.header.hwm != u.seq => {
                        return Err(SyncError::Protocol(format!(
                            "shard {} up to date at {}, the copy is at {}",
                            u.shard, u.seq, copy.header.hwm
                        )));
                    }
                    Some(copy) if entry.dishonest.contains(&u.shard) => Err(ApplyError::DigestMismatch {
                        key: Box::new(copy.header.key.clone()),
                        expected: copy.header.digest,
                        computed: copy.header.digest,
                    }),
                    Some(copy) => Ok(copy.clone()),
                };
                (u.shard, result, Kind::Fresh)
            }
            Message::Changes(c) => {
                let (copy, key) = self.copy_and_key(entry, &zone, c.shard)?;
                let update = ShardUpdate {
                    epoch: c.epoch,
                    new_hwm: c.seq,
                    digest: c.digest,
                    kind: UpdateKind::Delta {
                        base: c.base,
                        tombstones: c.tombstones,
                    },
                    upserts: cached_all(c.upserts)?,
                };
                journal = Some(update.clone());
                (
                    c.shard,
                    hoard_engine::shard::apply::apply(&key, registry, copy, update, now).map(Arc::new),
                    Kind::Delta,
                )
            }
            Message::Manifest(m) => {
                let (copy, key) = self.copy_and_key(entry, &zone, m.shard)?;
                let shard = m.shard;
                let update = manifest_update(m)?;
                let repaired = entry.repairing.contains(&shard);
                let result = if repaired {
                    hoard_engine::shard::apply::apply_repair(&key, registry, copy, update, now)
                } else {
                    hoard_engine::shard::apply::apply(&key, registry, copy, update, now)
                }
                .map(Arc::new);
                (shard, result, if repaired { Kind::Repaired } else { Kind::Delta })
            }
            Message::Snapshot(s) => {
                let scope = s.perspective.as_deref();
                if scope.is_some_and(|p| p != perspective) {
                    return Err(SyncError::Protocol(format!(
                        "shard {} is scoped to another perspective",
                        s.shard
                    )));
                }
                let key = self.key(&zone, s.shard, scope)?;
                let update = ShardUpdate {
                    epoch: s.epoch,
                    new_hwm: s.seq,
                    digest: s.digest,
                    kind: UpdateKind::Snapshot,
                    upserts: cached_all(s.objects)?,
                };
                (
                    s.shard,
                    hoard_engine::shard::apply::apply(&key, registry, None, update, now).map(Arc::new),
                    Kind::Snapshot,
                )
            }
            Message::Fresh(f) => return self.apply_fresh(request, zone, f),
            _ => return Ok(()),
        };
        self.settle(request, zone, shard, result, kind, journal)
    }

    /// Applies `Fresh`. When the root over this client's heads of the listed
    /// shards (each copy's digest recomputed from its objects) equals the
    /// server's, every one of them is current. Otherwise the copies whose
    /// tag differs, or that did not load or do not match their header, are
    /// repaired; once they are, the root is checked again over the repaired
    /// heads and the others, and if it still differs the others are
    /// repaired too. Either way one more round trip in all, mostly.
    fn apply_fresh(&mut self, request: u32, zone: ZoneId, fresh: crate::wire::Fresh) -> Result<(), SyncError> {
        let Some(entry) = self.entries.get(&request) else {
            return Ok(());
        };
        let shards = fresh.selected(&entry.held).map_err(SyncError::Protocol)?;
        let held = |shard: &ShardId| entry.copies.as_ref().and_then(|c| c.get(shard));
        let mut heads = Vec::with_capacity(shards.len());
        let mut flagged = BTreeSet::new();
        for (shard, tag) in shards.iter().zip(&fresh.tags) {
            match held(shard) {
                Some(c) if !entry.dishonest.contains(shard) => {
                    let h = &c.header;
                    heads.push((*shard, h.epoch, h.hwm, h.digest));
                    if head_tag(*shard, h.epoch, h.hwm, &h.digest) != *tag {
                        flagged.insert(*shard);
                    }
                }
                _ => {
                    flagged.insert(*shard);
                }
            }
        }
        let current = flagged.is_empty() && fresh_root(&heads) == fresh.root;
        // Current copies are taken out of the entry (a whole zone is not
        // copied); suspect ones stay there as the base of their repair.
        let mut copies: BTreeMap<ShardId, Arc<CachedShard>> = BTreeMap::new();
        if let Some(entry) = self.entries.get_mut(&request)
            && let Some(held) = entry.copies.as_mut()
        {
            for shard in &shards {
                let copy = if current {
                    held.remove(shard)
                } else {
                    held.get(shard).cloned()
                };
                if let Some(copy) = copy {
                    copies.insert(*shard, copy);
                }
            }
        }
        if !current {
            tracing::warn!(%zone, shards = shards.len(), flagged = flagged.len(), "cached heads do not match the server's root; repairing");
        }
        // A differing root that no tag explains: every listed copy is suspect.
        let repair_all = !current && flagged.is_empty();
        for shard in &shards {
            let result = match copies.remove(shard) {
                Some(copy) if current || !(repair_all || flagged.contains(shard)) => Ok(copy),
                Some(copy) => Err(ApplyError::DigestMismatch {
                    key: Box::new(copy.header.key.clone()),
                    expected: copy.header.digest,
                    computed: copy.header.digest,
                }),
                None => Err(ApplyError::NoBase {
                    key: Box::new(self.key(&zone, *shard, None)?),
                }),
            };
            self.settle(request, zone.clone(), *shard, result, Kind::Fresh, None)?;
        }
        if !current
            && !repair_all
            && let Some(entry) = self.entries.get_mut(&request)
        {
            // The unflagged copies stand provisionally, until the root
            // checks out with the repaired heads in place.
            entry.fresh_check = Some(FreshCheck {
                root: fresh.root,
                shards,
                flagged,
            });
        }
        Ok(())
    }

    /// Once the flagged copies of a `Fresh` are repaired, checks the root
    /// over every listed shard's head as it stands now; if it still differs,
    /// the copies that stood provisionally are repaired as well.
    fn recheck_fresh(&mut self, request: u32) {
        let Some(entry) = self.entries.get_mut(&request) else {
            return;
        };
        let Some(check) = entry.fresh_check.as_ref() else {
            return;
        };
        if check.flagged.iter().any(|s| entry.repairing.contains(s)) {
            return;
        }
        let Some(check) = entry.fresh_check.take() else {
            return;
        };
        let heads: Option<Vec<_>> = check
            .shards
            .iter()
            .map(|s| {
                entry
                    .done
                    .get(s)
                    .map(|c| (*s, c.header.epoch, c.header.hwm, c.header.digest))
            })
            .collect();
        if heads.is_some_and(|h| fresh_root(&h) == check.root) {
            return;
        }
        tracing::warn!(zone = %entry.zone, "the server's root still differs; repairing the other listed shards");
        // A second wave of repairs, after the first came back.
        entry.stats.round_trips = 3;
        let zone = entry.zone.clone();
        let suspects: Vec<ShardId> = check
            .shards
            .into_iter()
            .filter(|s| !check.flagged.contains(s))
            .collect();
        for shard in suspects {
            if let Some(entry) = self.entries.get_mut(&request)
                && entry.done.remove(&shard).is_some()
            {
                entry.stats.shards_fresh = entry.stats.shards_fresh.saturating_sub(1);
            }
            self.send_repair(request, zone.clone(), shard);
        }
    }

    /// Records one shard's outcome in its entry: verified (and written,
    /// unless the copy was already current), or repaired with one more
    /// round trip.
    fn settle(
        &mut self,
        request: u32,
        zone: ZoneId,
        shard: ShardId,
        result: Result<Arc<CachedShard>, ApplyError>,
        kind: Kind,
        journal: Option<ShardUpdate>,
    ) -> Result<(), SyncError> {
        let Some(entry) = self.entries.get_mut(&request) else {
            return Ok(());
        };
        match result {
            Ok(shard_copy) => {
                self.check_proven(&shard_copy)?;
                let Some(entry) = self.entries.get_mut(&request) else {
                    return Ok(());
                };
                // One copy shared by the write, the entry and, once ready,
                // the game and the live zone: a zone is never copied.
                if kind != Kind::Repaired {
                    entry.answered += 1;
                }
                entry.repairing.remove(&shard);
                match kind {
                    Kind::Fresh => entry.stats.shards_fresh += 1,
                    Kind::Delta => entry.stats.shards_delta += 1,
                    Kind::Snapshot => entry.stats.shards_snapshot += 1,
                    Kind::Repaired => entry.stats.shards_repaired += 1,
                }
                match journal {
                    _ if kind == Kind::Fresh => {}
                    Some(update) => self.effects.push_back(Effect::JournalShard {
                        shard: shard_copy.clone(),
                        update,
                    }),
                    None => self.effects.push_back(Effect::WriteShard(shard_copy.clone())),
                }
                entry.done.insert(shard, shard_copy);
                Ok(())
            }
            Err(ApplyError::DigestMismatch { .. } | ApplyError::Base { .. } | ApplyError::NoBase { .. })
                if kind != Kind::Repaired =>
            {
                if kind != Kind::Repaired {
                    entry.answered += 1;
                }
                tracing::warn!(%zone, %shard, "shard does not match the server after applying; repairing");
                self.send_repair(request, zone, shard);
                Ok(())
            }
            Err(_) => Err(SyncError::RepairFailed { zone, shard }),
        }
    }

    /// Asks the server to repair one shard of an entry: the copy's hwm and
    /// what it holds go up; the answer is a manifest.
    fn send_repair(&mut self, request: u32, zone: ZoneId, shard: ShardId) {
        let Some(entry) = self.entries.get_mut(&request) else {
            return;
        };
        let copy = entry.copies.as_ref().and_then(|c| c.get(&shard));
        let (hwm, have) = match copy {
            Some(c) => (c.header.hwm, repair_entries(&c.objects)),
            None => (Seq::ZERO, Vec::new()),
        };
        entry.repairing.insert(shard);
        entry.stats.round_trips = entry.stats.round_trips.max(2);
        let repair_request = self.next_request;
        self.next_request += 1;
        self.repairs
            .insert(repair_request, (Some(request), zone.clone(), shard));
        let msg = Message::Repair(Repair {
            request: repair_request,
            zone,
            shard,
            hwm,
            have,
        });
        entry.stats.bytes_tx += msg.to_frame().len() as u64;
        self.out.push_back(msg);
    }

    fn maybe_ready(&mut self, now: f64, request: u32) {
        self.recheck_fresh(request);
        let Some(entry) = self.entries.get(&request) else {
            return;
        };
        let complete = entry.ended
            && entry.copies.is_some()
            && entry.fresh_check.is_none()
            && entry.repairing.is_empty()
            && entry
                .expected
                .is_some_and(|n| entry.answered >= n && entry.done.len() as u32 == n);
        if !complete {
            return;
        }
        let Some(mut entry) = self.entries.remove(&request) else {
            return;
        };
        entry.stats.objects = entry.done.values().map(|s| s.objects.len() as u64).sum();
        entry.stats.elapsed_ms = ((now - entry.started).max(0.0) * 1000.0).round() as u64;
        tracing::info!(zone = %entry.zone, stats = ?entry.stats, "zone ready");
        let shards: Vec<Arc<CachedShard>> = entry.done.into_values().collect();
        let proofs = match self.cfg.proofs {
            Some(_) => shards
                .iter()
                .filter_map(|s| self.verified.get(&s.header.key.shard).cloned())
                .collect(),
            None => Vec::new(),
        };
        self.live.insert(
            entry.zone.clone(),
            shards.iter().map(|s| (s.header.key.shard, s.clone())).collect(),
        );
        self.effects.push_back(Effect::ZoneReady {
            zone: entry.zone.clone(),
            shards,
            stats: entry.stats,
            proofs,
        });
        if let Some(deltas) = self.buffered.remove(&entry.zone) {
            for d in deltas {
                // Deltas that arrived before the zone was ready; ordering and
                // duplicates are handled by seq.
                let _ = self.delta(d);
            }
        }
        if self.overflowed.remove(&entry.zone) {
            // Deltas were dropped: bring every shard back in line.
            let shards: Vec<ShardId> = self
                .live
                .get(&entry.zone)
                .map(|s| s.keys().copied().collect())
                .unwrap_or_default();
            for shard in shards {
                let _ = self.request_live_repair(entry.zone.clone(), shard);
            }
        }
    }

    fn delta(&mut self, d: Delta) -> Result<(), SyncError> {
        let wall_now = self.wall_now();
        let Some(shards) = self.live.get_mut(&d.zone) else {
            // Deltas that overtake their zone's answer wait for it; others
            // (a zone just left) are dropped. The wait is bounded: past the
            // bound the buffer is dropped, and the gap shows as a delta that
            // does not follow its copy, which a repair closes.
            if self.entries.values().any(|e| e.zone == d.zone) {
                let buffer = self.buffered.entry(d.zone.clone()).or_default();
                if buffer.len() >= MAX_BUFFERED_DELTAS {
                    tracing::warn!(zone = %d.zone, "too many deltas ahead of the zone's answer; dropping them");
                    buffer.clear();
                    self.overflowed.insert(d.zone.clone());
                }
                buffer.push(d);
            }
            return Ok(());
        };
        let Some(copy) = shards.get(&d.shard) else {
            return Ok(());
        };
        if d.seq <= copy.header.hwm {
            return Ok(()); // already in the answer
        }
        if d.base != copy.header.hwm || d.epoch != copy.header.epoch {
            tracing::warn!(zone = %d.zone, shard = %d.shard, "live delta does not follow the copy; repairing");
            return self.request_live_repair(d.zone.clone(), d.shard);
        }
        let removed = d.tombstones.clone();
        let upserts = cached_all(d.upserts)?;
        let update = ShardUpdate {
            epoch: d.epoch,
            new_hwm: d.seq,
            digest: d.digest,
            kind: UpdateKind::Delta {
                base: d.base,
                tombstones: d.tombstones,
            },
            upserts: upserts.clone(),
        };
        let key = copy.header.key.clone();
        if self.cfg.proofs.is_none() {
            return self.delta_in_place(d.zone, d.shard, key, update, upserts, removed, wall_now);
        }
        match hoard_engine::shard::apply::apply(&key, self.cfg.registry, Some(copy), update.clone(), wall_now) {
            Ok(next) => {
                if self.cfg.proofs.is_some() {
                    if !self.proofs_pending.contains_key(&d.shard) {
                        // Sent unsigned (the origin had moved on when it
                        // signed): a repair brings the shard with its head.
                        tracing::debug!(zone = %d.zone, shard = %d.shard, "delta without a signed head; repairing");
                        return self.request_live_repair(d.zone, d.shard);
                    }
                    self.check_proven(&next)?;
                }
                let proof = self
                    .verified
                    .get(&d.shard)
                    .cloned()
                    .filter(|_| self.cfg.proofs.is_some());
                let next = Arc::new(next);
                if let Some(shards) = self.live.get_mut(&d.zone) {
                    shards.insert(d.shard, next.clone());
                }
                self.effects.push_back(Effect::DeltaApplied {
                    zone: d.zone,
                    shard: next,
                    update,
                    upserts,
                    removed,
                    proof,
                });
                Ok(())
            }
            Err(_) => self.request_live_repair(d.zone, d.shard),
        }
    }

    /// Applies a live delta (already checked to follow the copy) to the
    /// live copy in place: the copy is cloned only if something else still
    /// holds it (the game, or an effect not yet carried out), and only the
    /// objects the delta names are touched. A delta that does not apply
    /// leaves the copy as it was and asks for a repair.
    #[allow(clippy::too_many_arguments)]
    fn delta_in_place(
        &mut self,
        zone: ZoneId,
        shard: ShardId,
        key: ShardKey,
        update: ShardUpdate,
        upserts: Vec<CachedObject>,
        removed: Vec<ObjectId>,
        now: DateTime<Utc>,
    ) -> Result<(), SyncError> {
        let registry = self.cfg.registry;
        let Some(live) = self.live.get_mut(&zone).and_then(|shards| shards.get_mut(&shard)) else {
            return Ok(());
        };
        let applied =
            hoard_engine::shard::apply::apply_in_place(&key, registry, Arc::make_mut(live), update.clone(), now);
        match applied {
            Ok(()) => {
                let next = live.clone();
                self.effects.push_back(Effect::DeltaApplied {
                    zone,
                    shard: next,
                    update,
                    upserts,
                    removed,
                    proof: None,
                });
                Ok(())
            }
            Err(_) => self.request_live_repair(zone, shard),
        }
    }

    fn request_live_repair(&mut self, zone: ZoneId, shard: ShardId) -> Result<(), SyncError> {
        let Some(copy) = self.live.get(&zone).and_then(|s| s.get(&shard)) else {
            return Ok(());
        };
        let request = self.next_request;
        self.next_request += 1;
        self.repairs.insert(request, (None, zone.clone(), shard));
        self.out.push_back(Message::Repair(Repair {
            request,
            zone,
            shard,
            hwm: copy.header.hwm,
            have: repair_entries(&copy.objects),
        }));
        Ok(())
    }

    fn live_repair(&mut self, zone: ZoneId, shard: ShardId, msg: Message) -> Result<(), SyncError> {
        let Message::Manifest(m) = msg else {
            return Err(SyncError::Protocol(
                "a repair answered with something other than a manifest".into(),
            ));
        };
        let Some(copy) = self.live.get(&zone).and_then(|s| s.get(&shard)).cloned() else {
            return Ok(());
        };
        let update = manifest_update(m)?;
        let next = hoard_engine::shard::apply::apply_repair(
            &copy.header.key,
            self.cfg.registry,
            Some(&copy),
            update.clone(),
            self.wall_now(),
        )
        .map_err(|_| SyncError::RepairFailed {
            zone: zone.clone(),
            shard,
        })?;
        self.check_proven(&next)?;
        let proof = self.verified.get(&shard).cloned().filter(|_| self.cfg.proofs.is_some());
        let before: BTreeMap<ObjectId, &CachedObject> = copy.objects.iter().map(|o| (o.id, o)).collect();
        let after: BTreeSet<ObjectId> = next.objects.iter().map(|o| o.id).collect();
        let removed = before.keys().filter(|id| !after.contains(id)).copied().collect();
        let upserts = next
            .objects
            .iter()
            .filter(|o| before.get(&o.id).is_none_or(|b| *b != *o))
            .cloned()
            .collect();
        let next = Arc::new(next);
        self.effects.push_back(Effect::WriteShard(next.clone()));
        if let Some(shards) = self.live.get_mut(&zone) {
            shards.insert(shard, next.clone());
        }
        self.effects.push_back(Effect::DeltaApplied {
            zone,
            shard: next,
            update,
            upserts,
            removed,
            proof,
        });
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fresh,
    Delta,
    Snapshot,
    Repaired,
}

/// A manifest answer as an update of the cached copy.
fn manifest_update(m: crate::wire::Manifest) -> Result<ShardUpdate, SyncError> {
    Ok(ShardUpdate {
        epoch: m.epoch,
        new_hwm: m.seq,
        digest: m.digest,
        kind: UpdateKind::Manifest {
            base: m.base,
            live: m.live,
        },
        upserts: cached_all(m.upserts)?,
    })
}

/// What a `Repair` says the copy holds: its first [`MAX_REPAIR_OBJECTS`]
/// objects by id (one control frame's worth); the server sends every object
/// not listed, so a larger copy is repaired all the same.
fn repair_entries(objects: &[CachedObject]) -> Vec<RepairEntry> {
    objects
        .iter()
        .take(MAX_REPAIR_OBJECTS)
        .map(|o| RepairEntry {
            id: o.id,
            version: o.version,
            hash: short_hash(o.state.as_bytes()),
        })
        .collect()
}
