//! What a relay holds and serves, sans-IO: the shards it follows upstream,
//! each with the origin's signed head, kept in memory and read in the world
//! store's terms (its driver serves them to the server's sessions as a
//! read-only `WorldStore`, so they answer exactly as an origin's do), and a
//! [`ProofSource`] that hands on the origin's signatures (a relay cannot
//! make any).
//!
//! A shard comes in whole (from an upstream zone entry: [`RelayStore::install`])
//! or as a change of a copy already held ([`RelayStore::apply`]). Each
//! change is recorded with its seq, objects that left as tombstones, so the
//! relay answers a client's entry with `Changes` since its hwm like an
//! origin; tombstones are kept for the last [`TOMBSTONES_KEPT`] per shard,
//! and a client behind that (or behind when the relay started following the
//! shard) gets the live manifest instead, still in one round trip. Every
//! change comes out as a [`Delta`] for the relay's own subscribers.
//!
//! [`actions`] decides how the relay carries its players' actions up.

pub mod actions;
mod world;

pub use world::RelayWorld;

use std::collections::{BTreeMap, VecDeque};

use hoard_engine::shard::{CachedObject, CachedShard};
use hoard_engine::store::{ChangesSince, ReadError, ShardHead, ShardScope, ShardSnapshot, StoredObject, Tombstone};
use hoard_engine::{Digest, Epoch, ObjectId, ObjectState, Seq, ShardId, ZoneId};

use crate::proof::ProofSource;
use crate::wire::{Delta, HeadProof, WireObject};

/// Tombstones a relay keeps per shard; older ones move the horizon up.
pub const TOMBSTONES_KEPT: usize = 4096;

struct RelayShard {
    zone: ZoneId,
    epoch: Epoch,
    seq: Seq,
    digest: Digest,
    horizon: Seq,
    objects: BTreeMap<ObjectId, (Seq, ObjectState)>,
    /// (seq, id) of objects that left, oldest first.
    tombstones: VecDeque<(Seq, ObjectId)>,
    proof: HeadProof,
}

impl RelayShard {
    fn head(&self, shard: ShardId) -> ShardHead {
        ShardHead {
            shard,
            zone: self.zone.clone(),
            epoch: self.epoch,
            seq: self.seq,
            digest: self.digest,
            horizon: self.horizon,
            scope: ShardScope::Shared,
        }
    }

    fn tombstone(&mut self, seq: Seq, id: ObjectId) {
        if self.tombstones.len() >= TOMBSTONES_KEPT
            && let Some((dropped, _)) = self.tombstones.pop_front()
        {
            self.horizon = self.horizon.max(dropped);
        }
        self.tombstones.push_back((seq, id));
    }
}

#[derive(Default)]
struct Held {
    zones: BTreeMap<ZoneId, Vec<ShardId>>,
    shards: BTreeMap<ShardId, RelayShard>,
}

/// The shards a relay follows, served read-only: plain data, changed by
/// its owner (`install`, `apply`) and read in the world store's terms and
/// as a [`ProofSource`]. A driver that shares it between its upstream and
/// its sessions puts it behind a lock (`hoard_engine::store::Locked`).
#[derive(Default)]
pub struct RelayStore {
    held: Held,
}

impl std::fmt::Debug for RelayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.read();
        f.debug_struct("RelayStore")
            .field("zones", &held.zones.len())
            .field("shards", &held.shards.len())
            .finish()
    }
}

fn wire(id: ObjectId, version: Seq, state: &ObjectState) -> WireObject {
    WireObject {
        id,
        version,
        state: state.as_bytes().to_vec(),
    }
}

impl RelayStore {
    /// An empty relay store.
    pub fn new() -> RelayStore {
        RelayStore::default()
    }

    fn read(&self) -> &Held {
        &self.held
    }

    /// The zones held, and how many shards.
    pub fn counts(&self) -> (usize, usize) {
        let held = self.read();
        (held.zones.len(), held.shards.len())
    }

    /// A zone's shards as the upstream entry verified them (each with the
    /// origin's proof), replacing what was held. For a shard already held
    /// in the same epoch and behind, the difference comes back as a delta
    /// for subscribers; a shard new, reset or unchanged gives none.
    pub fn install(&mut self, zone: &ZoneId, shards: &[(&CachedShard, &HeadProof)]) -> Vec<Delta> {
        let held = &mut self.held;
        held.zones
            .insert(zone.clone(), shards.iter().map(|(s, _)| s.header.key.shard).collect());
        shards
            .iter()
            .filter_map(|(copy, proof)| install_one(held, zone, copy, proof))
            .collect()
    }

    /// Installs a zone the upstream entered, each shard with its signed
    /// head (see [`RelayStore::install`]); the first shard that came
    /// without one refuses the zone.
    pub fn install_loaded(
        &mut self,
        zone: &ZoneId,
        shards: &[std::sync::Arc<CachedShard>],
        proofs: &[HeadProof],
    ) -> Result<Vec<Delta>, ShardId> {
        let by_shard: std::collections::HashMap<_, _> = proofs.iter().map(|p| (p.shard, p)).collect();
        let pairs = shards
            .iter()
            .map(|s| {
                let id = s.header.key.shard;
                by_shard.get(&id).map(|p| (&**s, *p)).ok_or(id)
            })
            .collect::<Result<Vec<_>, ShardId>>()?;
        Ok(self.install(zone, &pairs))
    }

    /// Takes one update of the relay's upstream client in: a live change
    /// applied, a zone (re)entered installed; returns what the relay's
    /// sessions are to get ([`RelayCore::pass_on`]), or the upstream's end.
    pub fn take_upstream(&mut self, update: crate::client::ClientUpdate) -> Upstream {
        use crate::client::{ClientEvent, ClientUpdate};
        match update {
            ClientUpdate::Objects {
                zone,
                upserts,
                removed,
                head,
                proof: Some(proof),
                ..
            } => self
                .apply(&zone, &head, &upserts, &removed, &proof)
                .map_or(Upstream::Nothing, Upstream::Changed),
            ClientUpdate::ZoneLoaded { zone, shards, proofs } => match self.install_loaded(&zone, &shards, &proofs) {
                Ok(deltas) => Upstream::Loaded(deltas),
                Err(shard) => Upstream::Unsigned { zone, shard },
            },
            ClientUpdate::Event(ClientEvent::Disconnected { reason }) => Upstream::Ended(reason),
            ClientUpdate::Event(ClientEvent::GameMessage { kind, zone, payload }) => {
                Upstream::Message(crate::wire::GameMessage { kind, zone, payload })
            }
            _ => Upstream::Nothing,
        }
    }

    /// A live change of a held shard, verified upstream: `removed` left,
    /// `upserts` were written, and `after` is the whole shard now. Returns
    /// the delta for subscribers, or `None` if the shard is not held or the
    /// change is not newer (then the copy is installed whole).
    pub fn apply(
        &mut self,
        zone: &ZoneId,
        after: &CachedShard,
        upserts: &[CachedObject],
        removed: &[ObjectId],
        proof: &HeadProof,
    ) -> Option<Delta> {
        let shard = after.header.key.shard;
        {
            let held = &mut self.held;
            if let Some(old) = held.shards.get_mut(&shard)
                && old.epoch == after.header.epoch
                && old.seq < after.header.hwm
                && count_after(old, upserts, removed) == after.header.digest.count()
            {
                let seq = after.header.hwm;
                let base = old.seq;
                for id in removed {
                    if old.objects.remove(id).is_some() {
                        old.tombstone(seq, *id);
                    }
                }
                for o in upserts {
                    old.objects.insert(o.id, (o.version, o.state.clone()));
                }
                old.seq = seq;
                old.digest = after.header.digest;
                old.proof = proof.clone();
                return Some(Delta {
                    zone: zone.clone(),
                    shard,
                    epoch: old.epoch,
                    base,
                    seq,
                    digest: after.header.digest,
                    tombstones: removed.to_vec(),
                    upserts: upserts.iter().map(|o| wire(o.id, o.version, &o.state)).collect(),
                });
            }
        }
        // Not a change of the copy held (a repair upstream replaced more
        // than it named, or the shard is new here): take it whole.
        let held = &mut self.held;
        let listed = held.zones.entry(zone.clone()).or_default();
        if !listed.contains(&shard) {
            listed.push(shard);
            listed.sort_unstable();
        }
        install_one(held, zone, after, proof)
    }

    fn shard<T>(&self, shard: ShardId, f: impl FnOnce(&RelayShard) -> T) -> Result<T, ReadError> {
        self.read()
            .shards
            .get(&shard)
            .map(f)
            .ok_or(ReadError::UnknownShard(shard))
    }
}

/// How many objects `shard` holds once `removed` left and `upserts` were
/// written: the change fits the copy only if that is the new count.
fn count_after(shard: &RelayShard, upserts: &[CachedObject], removed: &[ObjectId]) -> u64 {
    let gone: std::collections::BTreeSet<ObjectId> = removed
        .iter()
        .filter(|id| shard.objects.contains_key(id))
        .copied()
        .collect();
    let added = upserts
        .iter()
        .filter(|o| gone.contains(&o.id) || !shard.objects.contains_key(&o.id))
        .count();
    (shard.objects.len() - gone.len() + added) as u64
}

/// Replaces one held shard by a verified whole copy; the difference from
/// a copy of the same epoch behind it comes back as a delta.
fn install_one(held: &mut Held, zone: &ZoneId, copy: &CachedShard, proof: &HeadProof) -> Option<Delta> {
    let shard = copy.header.key.shard;
    let objects: BTreeMap<ObjectId, (Seq, ObjectState)> = copy
        .objects
        .iter()
        .map(|o| (o.id, (o.version, o.state.clone())))
        .collect();
    let seq = copy.header.hwm;
    match held.shards.get_mut(&shard) {
        Some(old) if old.epoch == copy.header.epoch && old.seq <= seq => {
            let removed: Vec<ObjectId> = old
                .objects
                .keys()
                .filter(|id| !objects.contains_key(id))
                .copied()
                .collect();
            let upserts: Vec<WireObject> = objects
                .iter()
                .filter(|(id, (v, s))| old.objects.get(id).is_none_or(|(ov, os)| ov != v || os != s))
                .map(|(id, (v, s))| wire(*id, *v, s))
                .collect();
            for id in &removed {
                old.tombstone(seq, *id);
            }
            let delta = (old.seq < seq).then(|| Delta {
                zone: zone.clone(),
                shard,
                epoch: old.epoch,
                base: old.seq,
                seq,
                digest: copy.header.digest,
                tombstones: removed,
                upserts,
            });
            old.objects = objects;
            old.seq = seq;
            old.digest = copy.header.digest;
            old.proof = proof.clone();
            delta
        }
        _ => {
            held.shards.insert(
                shard,
                RelayShard {
                    zone: zone.clone(),
                    epoch: copy.header.epoch,
                    seq,
                    digest: copy.header.digest,
                    horizon: seq,
                    objects,
                    tombstones: VecDeque::new(),
                    proof: proof.clone(),
                },
            );
            None
        }
    }
}

/// Reads of what the relay holds, in the world store's terms (its driver
/// serves them to its sessions as a read-only `WorldStore`).
impl RelayStore {
    /// Every zone held.
    pub fn zones(&self) -> Vec<ZoneId> {
        self.read().zones.keys().cloned().collect()
    }

    /// The shards of a zone held.
    pub fn zone_shards(&self, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
        self.read()
            .zones
            .get(zone)
            .cloned()
            .ok_or_else(|| ReadError::UnknownZone(zone.clone()))
    }

    /// A shard's head.
    pub fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError> {
        self.shard(shard, |s| s.head(shard))
    }

    /// A shard's changes after `since`, as far as the relay's tombstones
    /// reach (behind them: `BehindHorizon`).
    pub fn changes_since(&self, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
        self.shard(shard, |s| {
            if since > s.seq {
                return Err(ReadError::FutureSeq {
                    shard,
                    asked: since,
                    head: s.seq,
                });
            }
            if since < s.horizon {
                return Ok(ChangesSince::BehindHorizon { head: s.head(shard) });
            }
            let upserts = s
                .objects
                .iter()
                .filter(|(_, (v, _))| *v > since)
                .map(|(id, (v, st))| StoredObject {
                    id: *id,
                    version: *v,
                    state: st.clone(),
                })
                .collect();
            let tombstones = s
                .tombstones
                .iter()
                .filter(|(seq, id)| *seq > since && !s.objects.contains_key(id))
                .map(|(seq, id)| Tombstone { id: *id, seq: *seq })
                .collect();
            Ok(ChangesSince::Changes {
                head: s.head(shard),
                upserts,
                tombstones,
            })
        })?
    }

    /// A shard's head and the version of each live object.
    pub fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
        self.shard(shard, |s| {
            (s.head(shard), s.objects.iter().map(|(id, (v, _))| (*id, *v)).collect())
        })
    }

    /// A shard's live objects with their head.
    pub fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
        self.shard(shard, |s| ShardSnapshot {
            head: s.head(shard),
            objects: s
                .objects
                .iter()
                .map(|(id, (v, st))| StoredObject {
                    id: *id,
                    version: *v,
                    state: st.clone(),
                })
                .collect(),
        })
    }
}

impl ProofSource for RelayStore {
    fn prove(&self, snap: &ShardSnapshot) -> Result<HeadProof, String> {
        let head = &snap.head;
        self.read()
            .shards
            .get(&head.shard)
            .map(|s| s.proof.clone())
            .filter(|p| p.epoch == head.epoch && p.seq == head.seq && p.digest == head.digest)
            .ok_or_else(|| format!("the relay holds no signed head of shard {} at {}", head.shard, head.seq))
    }

    fn held(&self, shard: ShardId, seq: Seq) -> Option<HeadProof> {
        self.read()
            .shards
            .get(&shard)
            .map(|s| s.proof.clone())
            .filter(|p| p.seq == seq)
    }
}

/// What one update of the relay's upstream brought
/// ([`RelayStore::take_upstream`]), to send on ([`RelayCore::pass_on`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Upstream {
    /// A shard's live change, applied.
    Changed(Delta),
    /// A zone installed whole: its changes for current subscribers.
    Loaded(Vec<Delta>),
    /// A game message to a zone's players.
    Message(crate::wire::GameMessage),
    /// A zone came with a shard lacking its signed head: not served.
    Unsigned {
        /// The zone.
        zone: ZoneId,
        /// The shard without a signed head.
        shard: ShardId,
    },
    /// The upstream connection ended, for this reason.
    Ended(String),
    /// Nothing for the relay's sessions.
    Nothing,
}

/// Most messages a relay core holds for its driver (deltas of one
/// upstream change for every subscriber); a driver drains them after each
/// input, so this is only a backstop.
const MAX_OUTPUT: usize = 1 << 20;

/// The relay's side of its sessions, sans-IO: which session follows which
/// shard (the server's [`Hub`](crate::sync::hub::Hub)), and the messages each gets when a change
/// comes from upstream or the upstream comes and goes. A relay's clients
/// always get signed heads; a relay carries no intents (the origin is the
/// only writer, and a player acts there).
pub struct RelayCore {
    hub: crate::sync::hub::Hub,
    sessions: std::collections::BTreeSet<crate::sync::hub::SessionId>,
    out: VecDeque<crate::sync::tick::TickOutput>,
    /// Why the upstream is gone, while it is.
    stale: Option<String>,
}

impl std::fmt::Debug for RelayCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayCore")
            .field("hub", &self.hub)
            .field("sessions", &self.sessions.len())
            .field("out", &self.out.len())
            .field("stale", &self.stale)
            .finish_non_exhaustive()
    }
}

impl RelayCore {
    /// A core serving what the driver's [`RelayStore`] holds (read through
    /// [`RelayCore::poll_read`]), each shard with the proof `proofs` holds.
    pub fn new(proofs: std::sync::Arc<dyn crate::proof::ProofSource>) -> RelayCore {
        RelayCore {
            hub: crate::sync::hub::Hub::new().with_proofs(proofs),
            sessions: std::collections::BTreeSet::new(),
            out: VecDeque::new(),
            stale: None,
        }
    }

    /// The next message for a session.
    pub fn poll_output(&mut self) -> Option<crate::sync::tick::TickOutput> {
        self.out.pop_front()
    }

    /// The next read of the relay's store its subscriptions need: the
    /// driver performs it and hands the reply to [`RelayCore::read_done`].
    pub fn poll_read(&mut self) -> Option<crate::sync::hub::HubRead> {
        self.hub.poll_read()
    }

    /// The reply to the read named `ticket`: the catch-ups it makes are
    /// queued for their sessions.
    pub fn read_done(&mut self, ticket: u64, reply: hoard_engine::store::StoreReply) {
        for fanout in self.hub.read_done(ticket, reply) {
            self.send_fanout(fanout);
        }
    }

    fn send_fanout(&mut self, fanout: crate::sync::hub::Fanout) {
        use crate::wire::Message;
        if let Some((proof, to)) = fanout.proof {
            let proof = std::sync::Arc::new(Message::HeadProof(proof));
            for id in to {
                self.send(id, proof.clone());
            }
        }
        let delta = std::sync::Arc::new(Message::Delta(fanout.delta));
        for id in fanout.to {
            self.send(id, delta.clone());
        }
    }

    /// How many sessions follow at least one shard.
    pub fn subscribers(&self) -> usize {
        self.hub.sessions()
    }

    fn send(&mut self, to: crate::sync::hub::SessionId, message: std::sync::Arc<crate::wire::Message>) {
        if !self.sessions.contains(&to) {
            return;
        }
        if self.out.len() >= MAX_OUTPUT {
            // The driver drains after every input, so this is a driver that
            // stopped draining; the session's next delta will not follow
            // its copy, and the client repairs the shard.
            tracing::warn!(session = to, "relay output full; a message for this session is dropped");
            return;
        }
        self.out.push_back(crate::sync::tick::TickOutput { to, message });
    }

    fn broadcast(&mut self, message: crate::wire::Message) {
        let message = std::sync::Arc::new(message);
        let ids: Vec<_> = self.sessions.iter().copied().collect();
        for id in ids {
            self.send(id, message.clone());
        }
    }

    fn status(&self) -> Option<crate::wire::Message> {
        self.stale.as_ref().map(|reason| {
            crate::wire::Message::Status(crate::wire::Status {
                writable: false,
                message: format!("this relay lost the world's server ({reason}); what you see may be stale"),
            })
        })
    }

    /// Passes on a message of the game that upstream sent to a zone's
    /// players: to this relay's sessions following that zone. A message
    /// without a zone (to everyone, or to one player) was the upstream's to
    /// this relay's own session — the relay cannot tell which — and goes no
    /// further.
    pub fn forward_game_message(&mut self, message: crate::wire::GameMessage) {
        let Some(zone) = message.zone.clone() else {
            return;
        };
        let message = std::sync::Arc::new(crate::wire::Message::GameMessage(message));
        for id in self.hub.sessions_in(&zone) {
            self.send(id, message.clone());
        }
    }

    /// Sends `message` to session `to` (a driver's answer to an intent it
    /// carried upstream).
    pub fn send_to(&mut self, to: crate::sync::hub::SessionId, message: crate::wire::Message) {
        self.send(to, std::sync::Arc::new(message));
    }

    /// What a session did.
    pub fn handle(&mut self, input: crate::sync::tick::TickInput) {
        use crate::sync::tick::TickInput;
        use crate::wire::Message;
        match input {
            TickInput::Register { id } => {
                self.sessions.insert(id);
                if let Some(status) = self.status() {
                    self.send(id, std::sync::Arc::new(status));
                }
            }
            TickInput::Subscribe { id, zone, shards, .. } => {
                if !self.sessions.contains(&id) {
                    return;
                }
                self.hub.subscribe(id, &zone, &shards, true);
            }
            TickInput::Unsubscribe { id, zone } => self.hub.unsubscribe(id, &zone),
            TickInput::Remove { id } => {
                self.sessions.remove(&id);
                self.hub.remove(id);
            }
            TickInput::Intent { id, seq, .. } => {
                let rejected = Message::IntentRejected(crate::wire::IntentRejected {
                    seq,
                    code: crate::wire::ErrorCode::Unavailable as u16,
                    message: "this relay carries the world to you but not your actions: act through the world's server"
                        .into(),
                });
                self.send(id, std::sync::Arc::new(rejected));
            }
            TickInput::Joined { .. } => {}
        }
    }

    /// Changes that came from upstream, already in the store: each goes to
    /// its subscribers with the origin's signed head.
    pub fn publish(&mut self, deltas: Vec<Delta>) {
        for delta in deltas {
            for fanout in self.hub.publish_delta(delta) {
                self.send_fanout(fanout);
            }
        }
    }

    /// Sends on what an update of the relay's upstream brought
    /// ([`RelayStore::take_upstream`], called first, under the driver's lock
    /// of the store; this one after it is released: the core's proofs read
    /// the store): changes to their subscribers with the origin's proofs, a
    /// zone's game message to the zone's sessions.
    pub fn pass_on(&mut self, upstream: Upstream) {
        match upstream {
            Upstream::Changed(delta) => self.publish(vec![delta]),
            Upstream::Loaded(deltas) => self.publish(deltas),
            Upstream::Message(message) => self.forward_game_message(message),
            Upstream::Unsigned { .. } | Upstream::Ended(_) | Upstream::Nothing => {}
        }
    }

    /// The upstream connection is gone: clients keep what they have and
    /// are told it may be stale.
    pub fn upstream_lost(&mut self, reason: &str) {
        if self.stale.is_none() {
            self.stale = Some(reason.to_owned());
            if let Some(status) = self.status() {
                self.broadcast(status);
            }
        }
    }

    /// The upstream is back and every zone caught up.
    pub fn upstream_back(&mut self) {
        if self.stale.take().is_some() {
            self.broadcast(crate::wire::Message::Status(crate::wire::Status {
                writable: true,
                message: "this relay reaches the world's server again".into(),
            }));
        }
    }

    /// Whether the upstream is gone.
    pub fn is_stale(&self) -> bool {
        self.stale.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientEvent, ClientUpdate};
    use hoard_engine::shard::{ShardHeader, ShardKey};
    use hoard_engine::{RegistryHash, ServerIdentity};

    /// A zone whose shard came without a signed head is not served, and
    /// the upstream's end is reported with its reason.
    #[test]
    fn an_unsigned_zone_is_refused_and_the_upstreams_end_reported() {
        let zone = ZoneId::new("meadow").expect("zone");
        let key = ShardKey::new(ServerIdentity([1; 32]), "world", None, zone.clone(), ShardId(3)).expect("key");
        let shard = CachedShard {
            header: ShardHeader {
                key,
                epoch: Epoch(1),
                hwm: Seq(1),
                digest: Digest::EMPTY,
                registry: RegistryHash([2; 32]),
                snapshot_time: chrono::DateTime::UNIX_EPOCH,
            },
            objects: Vec::new(),
        };
        let mut store = RelayStore::new();
        let loaded = ClientUpdate::ZoneLoaded {
            zone: zone.clone(),
            shards: vec![std::sync::Arc::new(shard)],
            proofs: Vec::new(),
        };
        assert_eq!(
            store.take_upstream(loaded),
            Upstream::Unsigned {
                zone,
                shard: ShardId(3)
            }
        );
        assert_eq!(store.counts(), (0, 0), "nothing of it is served");
        let ended = ClientUpdate::Event(ClientEvent::Disconnected { reason: "gone".into() });
        assert_eq!(store.take_upstream(ended), Upstream::Ended("gone".into()));
    }
}
