//! The server's subscription hub, sans-IO: which session follows which
//! shards from which seq, and the live deltas each committed tick produces
//! for each of them.
//!
//! A subscription starts at the seq its zone answer was built from. Deltas
//! are sent only to subscribers exactly one seq behind; one further behind
//! (a commit landed between the answer and the subscription) is caught up
//! from the store first, so there is never a gap and never a duplicate.
//!
//! The hub never touches the store: what it must read (a subscriber's head
//! and the changes it missed, a shard's live set to sign heads from) it asks
//! for with [`Hub::poll_read`], and the driver hands each reply to
//! [`Hub::read_done`]. A subscription being caught up takes no deltas until
//! its catch-up is sent (so its deltas stay in order), then catches up again
//! if commits went by meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use hoard_engine::store::{ChangesSince, CommitReceipt, ShardSnapshot, StoreRead, StoreReply};
use hoard_engine::{Change, ChangeSet, Seq, ShardId, ZoneId};

use std::sync::Arc;

use crate::proof::ProofSource;
use crate::wire::{Delta, HeadProof, WireObject};

/// A session's id within the hub.
pub type SessionId = u64;

#[derive(Debug, Clone)]
struct Sub {
    zone: ZoneId,
    last: Seq,
    /// Whether each delta goes with its signed head.
    proofs: bool,
    /// A catch-up read for it is out: it takes no deltas until it is sent.
    catching: bool,
}

/// Why the hub asked for a read.
#[derive(Debug)]
enum Purpose {
    /// Whether `session`'s subscription to `shard` is behind the store.
    Behind { session: SessionId, shard: ShardId },
    /// The changes `session`'s subscription to `shard` missed since `from`.
    CatchUp {
        session: SessionId,
        shard: ShardId,
        from: Seq,
    },
    /// The same from the whole live set (`from` is behind the store's
    /// tombstone horizon).
    CatchUpWhole {
        session: SessionId,
        shard: ShardId,
        from: Seq,
    },
    /// The head a catch-up delta leads to, to sign it for `session`.
    Prove { session: SessionId, delta: Delta },
    /// A shard's live set, to sign its next heads from.
    Leaves { shard: ShardId },
}

/// A store read the hub asked for: perform [`HubRead::read`] and hand the
/// reply to [`Hub::read_done`] with its `ticket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRead {
    /// Names the read in [`Hub::read_done`].
    pub ticket: u64,
    /// The read.
    pub read: StoreRead,
}

/// Subscriptions of every session, indexed three ways so that each
/// operation costs what it touches, not the number of sessions: by shard
/// (publishing a shard's delta visits its subscribers only), by zone (a
/// zone's transient state goes to its sessions only) and by session (a
/// session that leaves or ends drops its own entries).
#[derive(Debug, Default)]
pub struct Hub {
    /// Shard → its subscribers and where each is.
    by_shard: HashMap<ShardId, BTreeMap<SessionId, Sub>>,
    /// Zone → its sessions, each with how many of its shards it follows.
    by_zone: HashMap<ZoneId, BTreeMap<SessionId, usize>>,
    /// Session → the shards it follows.
    by_session: HashMap<SessionId, BTreeSet<ShardId>>,
    /// The newest seq published of each followed shard: a subscription
    /// caught up to less catches up again.
    published: HashMap<ShardId, Seq>,
    /// Signs heads for subscribers that want them.
    proofs: Option<Arc<dyn ProofSource>>,
    /// Each shard followed with proofs: its leaves at its last signed head,
    /// kept from the commits' changes, so signing a delta's head costs a
    /// hash over the leaves, not a read of the shard.
    leaves: HashMap<ShardId, Leaves>,
    /// Shards whose leaves are being read.
    leaves_reading: BTreeSet<ShardId>,
    /// Reads asked for and not yet handed out.
    reads: VecDeque<HubRead>,
    /// Reads out, by ticket (bounded by the subscriptions and followed shards).
    waiting: HashMap<u64, Purpose>,
    next_ticket: u64,
}

/// A shard's live set as (version, BLAKE3(state)) by id, at one head.
#[derive(Debug)]
struct Leaves {
    epoch: hoard_engine::Epoch,
    seq: Seq,
    objects: BTreeMap<hoard_engine::ObjectId, (Seq, hoard_engine::digest::StateHash)>,
}

impl Leaves {
    fn of(snap: &ShardSnapshot) -> Leaves {
        Leaves {
            epoch: snap.head.epoch,
            seq: snap.head.seq,
            objects: snap
                .objects
                .iter()
                .map(|o| (o.id, (o.version, hoard_engine::digest::state_hash(o.state.as_bytes()))))
                .collect(),
        }
    }
}

/// One delta and every session it goes to (the same bytes for each).
#[derive(Debug, Clone, PartialEq)]
pub struct Fanout {
    /// The sessions, ascending.
    pub to: Vec<SessionId>,
    /// The delta.
    pub delta: Delta,
    /// The signed head after the delta, and the sessions of `to` that get
    /// it (just before the delta).
    pub proof: Option<(HeadProof, Vec<SessionId>)>,
}

fn wire_objects(objects: Vec<hoard_engine::store::StoredObject>) -> Vec<WireObject> {
    objects
        .into_iter()
        .map(|o| WireObject {
            id: o.id,
            version: o.version,
            state: o.state.into_bytes(),
        })
        .collect()
}

/// A delta of the whole live set (a subscriber too far behind for the
/// changes): every object as an upsert, no tombstones; the client's digest
/// check finds any stale extra object and repairs.
fn whole_delta(zone: &ZoneId, from: Seq, snap: ShardSnapshot) -> Delta {
    Delta {
        zone: zone.clone(),
        shard: snap.head.shard,
        epoch: snap.head.epoch,
        base: from,
        seq: snap.head.seq,
        digest: snap.head.digest,
        tombstones: Vec::new(),
        upserts: wire_objects(snap.objects),
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Signs heads with `proofs` for subscribers that want them.
    #[must_use]
    pub fn with_proofs(mut self, proofs: Arc<dyn ProofSource>) -> Hub {
        self.proofs = Some(proofs);
        self
    }

    /// The next store read the hub needs, if any.
    pub fn poll_read(&mut self) -> Option<HubRead> {
        self.reads.pop_front()
    }

    /// How many reads are out (asked for, not yet answered).
    pub fn reads_out(&self) -> usize {
        self.waiting.len()
    }

    fn ask(&mut self, read: StoreRead, purpose: Purpose) {
        self.next_ticket += 1;
        self.waiting.insert(self.next_ticket, purpose);
        self.reads.push_back(HubRead {
            ticket: self.next_ticket,
            read,
        });
    }

    fn sub_mut(&mut self, session: SessionId, shard: ShardId) -> Option<&mut Sub> {
        self.by_shard.get_mut(&shard)?.get_mut(&session)
    }

    fn follow(&mut self, session: SessionId, shard: ShardId, sub: Sub) {
        let zone = sub.zone.clone();
        let previous = self.by_shard.entry(shard).or_default().insert(session, sub);
        match previous {
            // Re-subscribed under the same zone: counts are unchanged.
            Some(old) if old.zone == zone => return,
            Some(old) => self.uncount(&old.zone, session),
            None => {}
        }
        *self.by_zone.entry(zone).or_default().entry(session).or_default() += 1;
        self.by_session.entry(session).or_default().insert(shard);
    }

    fn uncount(&mut self, zone: &ZoneId, session: SessionId) {
        if let Some(sessions) = self.by_zone.get_mut(zone) {
            if let Some(n) = sessions.get_mut(&session) {
                *n -= 1;
                if *n == 0 {
                    sessions.remove(&session);
                }
            }
            if sessions.is_empty() {
                self.by_zone.remove(zone);
            }
        }
    }

    fn unfollow(&mut self, session: SessionId, shard: ShardId) {
        let Some(subs) = self.by_shard.get_mut(&shard) else {
            return;
        };
        let Some(old) = subs.remove(&session) else { return };
        if subs.is_empty() {
            self.by_shard.remove(&shard);
            self.leaves.remove(&shard);
            self.published.remove(&shard);
        }
        self.uncount(&old.zone, session);
        if let Some(shards) = self.by_session.get_mut(&session) {
            shards.remove(&shard);
            if shards.is_empty() {
                self.by_session.remove(&session);
            }
        }
    }

    /// Subscribes a session to shards of a zone after the given seqs (where
    /// its answer brought it). Each is checked against the store: one that
    /// moved on since is caught up ([`Hub::read_done`] gives its delta).
    pub fn subscribe(&mut self, session: SessionId, zone: &ZoneId, shards: &[(ShardId, Seq)], proofs: bool) {
        for &(shard, seq) in shards {
            let sub = Sub {
                zone: zone.clone(),
                last: seq,
                proofs,
                catching: true,
            };
            self.follow(session, shard, sub);
            self.ask(StoreRead::Head(shard), Purpose::Behind { session, shard });
            if proofs && self.proofs.is_some() {
                self.read_leaves(shard);
            }
        }
    }

    /// Reads `shard`'s live set to sign its heads from, unless it is kept
    /// or being read.
    fn read_leaves(&mut self, shard: ShardId) {
        if !self.leaves.contains_key(&shard) && self.leaves_reading.insert(shard) {
            self.ask(StoreRead::Snapshot(shard), Purpose::Leaves { shard });
        }
    }

    /// Stops a session's deltas for a zone.
    pub fn unsubscribe(&mut self, session: SessionId, zone: &ZoneId) {
        let shards: Vec<ShardId> = self
            .by_session
            .get(&session)
            .into_iter()
            .flatten()
            .copied()
            .filter(|shard| {
                self.by_shard
                    .get(shard)
                    .and_then(|subs| subs.get(&session))
                    .is_some_and(|sub| &sub.zone == zone)
            })
            .collect();
        for shard in shards {
            self.unfollow(session, shard);
        }
    }

    /// The sessions following at least one shard of `zone`, ascending.
    pub fn sessions_in(&self, zone: &ZoneId) -> Vec<SessionId> {
        self.by_zone
            .get(zone)
            .map(|sessions| sessions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// How many sessions follow each zone (zones nobody follows are absent).
    pub fn subscribers_by_zone(&self) -> HashMap<ZoneId, usize> {
        self.by_zone.iter().map(|(zone, s)| (zone.clone(), s.len())).collect()
    }

    /// Forgets a session.
    pub fn remove(&mut self, session: SessionId) {
        let shards: Vec<ShardId> = self.by_session.get(&session).into_iter().flatten().copied().collect();
        for shard in shards {
            self.unfollow(session, shard);
        }
    }

    /// How many sessions follow at least one shard.
    pub fn sessions(&self) -> usize {
        self.by_session.len()
    }

    /// The deltas a committed tick produces: each shard's delta once, with
    /// the sessions it goes to; a lagging session is caught up from the
    /// store ([`Hub::poll_read`]).
    pub fn publish(&mut self, changes: &ChangeSet, receipt: &CommitReceipt) -> Vec<Fanout> {
        let mut out = Vec::new();
        for head in &receipt.heads {
            let Some(shard_changes) = changes.shard(head.shard) else {
                continue;
            };
            let base = Seq(head.seq.0.saturating_sub(1));
            let proven = self
                .by_shard
                .get(&head.shard)
                .is_some_and(|subs| subs.values().any(|s| s.proofs));
            let proof = if proven {
                self.sign_commit(head, shard_changes)
            } else {
                None
            };
            let build = || {
                let mut tombstones = Vec::new();
                let mut upserts = Vec::new();
                for (id, change) in shard_changes.iter() {
                    match change {
                        Change::Upsert(state) => upserts.push(WireObject {
                            id,
                            version: head.seq,
                            state: state.as_bytes().to_vec(),
                        }),
                        Change::Remove => tombstones.push(id),
                    }
                }
                Delta {
                    zone: head.zone.clone(),
                    shard: head.shard,
                    epoch: head.epoch,
                    base,
                    seq: head.seq,
                    digest: head.digest,
                    tombstones,
                    upserts,
                }
            };
            out.extend(self.fan_out(head.shard, base, head.seq, build, proof));
        }
        out
    }

    /// Signs a committed head of a shard followed with proofs, from its
    /// leaves brought forward by the commit's changes. Leaves not at the
    /// commit's base (not read yet, or another epoch) are read again, and
    /// the delta goes unsigned meanwhile (the subscriber's checks then ask
    /// for a repair, which is signed).
    fn sign_commit(
        &mut self,
        head: &hoard_engine::store::ShardHead,
        changes: &hoard_engine::ShardChanges,
    ) -> Option<HeadProof> {
        let source = self.proofs.clone()?;
        let base = Seq(head.seq.0.saturating_sub(1));
        let leaves = match self.leaves.get_mut(&head.shard) {
            Some(leaves) if leaves.epoch == head.epoch && leaves.seq == base => leaves,
            _ => {
                self.leaves.remove(&head.shard);
                self.read_leaves(head.shard);
                return source.held(head.shard, head.seq);
            }
        };
        for (id, change) in changes.iter() {
            match change {
                Change::Upsert(state) => {
                    leaves
                        .objects
                        .insert(id, (head.seq, hoard_engine::digest::state_hash(state.as_bytes())));
                }
                Change::Remove => {
                    leaves.objects.remove(&id);
                }
            }
        }
        leaves.seq = head.seq;
        if leaves.objects.len() as u64 != head.digest.count() {
            // Not the store's set: read it again.
            tracing::warn!(shard = %head.shard, "a shard's leaves disagree with its head; reading them again");
            self.leaves.remove(&head.shard);
            self.read_leaves(head.shard);
            return source.held(head.shard, head.seq);
        }
        let root = hoard_engine::set_root::set_root_of_hashes(leaves.objects.iter().map(|(id, (v, h))| (*id, *v, *h)))?;
        match source.sign_root(head, root)? {
            Ok(proof) => Some(proof),
            Err(reason) => {
                tracing::warn!(shard = %head.shard, %reason, "could not sign a shard head");
                None
            }
        }
    }

    /// The fan-out of one shard's change that arrived whole (a relay's, from
    /// upstream): to the subscribers at its base, and catch-ups for the
    /// others.
    pub fn publish_delta(&mut self, delta: Delta) -> Vec<Fanout> {
        let (shard, base, seq) = (delta.shard, delta.base, delta.seq);
        self.fan_out(shard, base, seq, || delta, None)
    }

    /// Sends a shard's change from `base` to `seq` (built only if someone is
    /// at `base`) to the subscribers at `base`, and asks for catch-ups of
    /// the others behind it.
    fn fan_out(
        &mut self,
        shard: ShardId,
        base: Seq,
        seq: Seq,
        build: impl FnOnce() -> Delta,
        signed: Option<HeadProof>,
    ) -> Vec<Fanout> {
        let Some(subs) = self.by_shard.get_mut(&shard) else {
            return Vec::new();
        };
        let newest = self.published.entry(shard).or_insert(seq);
        *newest = (*newest).max(seq);
        let mut to = Vec::new();
        let mut proven = Vec::new();
        let mut lagging = Vec::new();
        for (&session, sub) in subs.iter_mut() {
            if sub.catching || sub.last >= seq {
                continue;
            }
            if sub.last == base {
                sub.last = seq;
                to.push(session);
                if sub.proofs {
                    proven.push(session);
                }
            } else {
                sub.catching = true;
                lagging.push((session, sub.last));
            }
        }
        for (session, from) in lagging {
            self.ask(
                StoreRead::ChangesSince { shard, since: from },
                Purpose::CatchUp { session, shard, from },
            );
        }
        if to.is_empty() {
            return Vec::new();
        }
        // One signature per shard and change, whoever wants it.
        let proof = match (&self.proofs, proven.is_empty()) {
            (Some(source), false) => signed.or_else(|| source.held(shard, seq)).map(|p| (p, proven)),
            _ => None,
        };
        vec![Fanout {
            to,
            delta: build(),
            proof,
        }]
    }

    /// The reply to the read named `ticket`: the catch-up deltas it makes
    /// (each for one session, its proof first if it wants one). A failed
    /// read leaves the subscription where it was, caught up at the shard's
    /// next change.
    pub fn read_done(&mut self, ticket: u64, reply: StoreReply) -> Vec<Fanout> {
        let Some(purpose) = self.waiting.remove(&ticket) else {
            tracing::warn!(ticket, "a store reply for no read of the hub; ignored");
            return Vec::new();
        };
        match purpose {
            Purpose::Behind { session, shard } => {
                let Some(sub) = self.sub_mut(session, shard) else {
                    return Vec::new();
                };
                match reply.into_head() {
                    Ok(head) if head.seq > sub.last => {
                        let from = sub.last;
                        self.ask(
                            StoreRead::ChangesSince { shard, since: from },
                            Purpose::CatchUp { session, shard, from },
                        );
                        Vec::new()
                    }
                    Ok(_) => self.settled(session, shard),
                    Err(e) => {
                        tracing::warn!(%shard, error = %e, "reading a subscriber's shard head failed");
                        self.settled(session, shard)
                    }
                }
            }
            Purpose::CatchUp { session, shard, from } => {
                let Some(sub) = self.sub_mut(session, shard) else {
                    return Vec::new();
                };
                let zone = sub.zone.clone();
                match reply.into_changes() {
                    Ok(ChangesSince::Changes {
                        head,
                        upserts,
                        tombstones,
                    }) if head.seq > from => {
                        let delta = Delta {
                            zone,
                            shard,
                            epoch: head.epoch,
                            base: from,
                            seq: head.seq,
                            digest: head.digest,
                            tombstones: tombstones.into_iter().map(|t| t.id).collect(),
                            upserts: wire_objects(upserts),
                        };
                        self.caught_up(session, delta, None)
                    }
                    Ok(ChangesSince::Changes { .. }) => self.settled(session, shard),
                    Ok(ChangesSince::BehindHorizon { .. }) => {
                        self.ask(
                            StoreRead::Snapshot(shard),
                            Purpose::CatchUpWhole { session, shard, from },
                        );
                        Vec::new()
                    }
                    Err(e) => {
                        tracing::warn!(%shard, error = %e, "catching a subscriber up failed; it waits for the next change");
                        self.settled(session, shard)
                    }
                }
            }
            Purpose::CatchUpWhole { session, shard, from } => {
                let Some(sub) = self.sub_mut(session, shard) else {
                    return Vec::new();
                };
                let zone = sub.zone.clone();
                match reply.into_snapshot() {
                    Ok(snap) if snap.head.seq > from => {
                        let proof = self.prove(&snap);
                        self.caught_up(session, whole_delta(&zone, from, snap), proof)
                    }
                    Ok(_) => self.settled(session, shard),
                    Err(e) => {
                        tracing::warn!(%shard, error = %e, "catching a subscriber up failed; it waits for the next change");
                        self.settled(session, shard)
                    }
                }
            }
            Purpose::Prove { session, delta } => {
                // Signed if the store is still at the delta's head; if it
                // moved on, the delta goes unsigned (the subscriber's checks
                // ask for a repair, which is signed).
                let proof = match reply.into_snapshot() {
                    Ok(snap) if snap.head.seq == delta.seq => self.prove(&snap),
                    Ok(snap) => {
                        tracing::debug!(shard = %delta.shard, seq = %delta.seq, now = %snap.head.seq, "store moved on; delta goes unsigned");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(shard = %delta.shard, error = %e, "reading a shard to sign its head failed");
                        None
                    }
                };
                self.send_caught_up(session, delta, proof)
            }
            Purpose::Leaves { shard } => {
                self.leaves_reading.remove(&shard);
                match reply.into_snapshot() {
                    // Kept only while someone follows the shard.
                    Ok(snap) if self.by_shard.contains_key(&shard) => {
                        self.leaves.insert(shard, Leaves::of(&snap));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%shard, error = %e, "reading a shard's leaves failed"),
                }
                Vec::new()
            }
        }
    }

    /// Signs the head of `snap`, if this hub signs.
    fn prove(&self, snap: &ShardSnapshot) -> Option<HeadProof> {
        let source = self.proofs.as_ref()?;
        match source.prove(snap) {
            Ok(proof) => Some(proof),
            Err(reason) => {
                tracing::warn!(shard = %snap.head.shard, %reason, "could not sign a shard head");
                None
            }
        }
    }

    /// A catch-up delta read for `session`: sent, with its proof if the
    /// subscription wants one (read first when it is not at hand).
    fn caught_up(&mut self, session: SessionId, delta: Delta, proof: Option<HeadProof>) -> Vec<Fanout> {
        let wants = self
            .by_shard
            .get(&delta.shard)
            .and_then(|s| s.get(&session))
            .is_some_and(|s| s.proofs);
        let held = match (&self.proofs, wants, proof) {
            (_, _, Some(proof)) => Some(proof),
            (Some(source), true, None) => source.held(delta.shard, delta.seq),
            _ => None,
        };
        if wants && held.is_none() && self.proofs.is_some() {
            self.ask(StoreRead::Snapshot(delta.shard), Purpose::Prove { session, delta });
            return Vec::new();
        }
        self.send_caught_up(session, delta, held)
    }

    /// Sends a catch-up delta to `session`, whose subscription is then at
    /// the delta's seq and takes deltas again (catching up once more if
    /// commits went by meanwhile).
    fn send_caught_up(&mut self, session: SessionId, delta: Delta, proof: Option<HeadProof>) -> Vec<Fanout> {
        let shard = delta.shard;
        let Some(sub) = self.sub_mut(session, shard) else {
            return Vec::new();
        };
        if sub.last != delta.base {
            // Read for an earlier subscription of the same shard (the zone
            // was entered again meanwhile): the newer one catches up itself.
            return Vec::new();
        }
        sub.last = delta.seq;
        let wants = sub.proofs;
        let mut out = vec![Fanout {
            to: vec![session],
            proof: proof
                .filter(|p| wants && p.seq == delta.seq)
                .map(|p| (p, vec![session])),
            delta,
        }];
        out.extend(self.settled(session, shard));
        out
    }

    /// `session`'s subscription to `shard` is where the store was when
    /// read: it takes deltas again, and is caught up again if a newer
    /// change was published meanwhile.
    fn settled(&mut self, session: SessionId, shard: ShardId) -> Vec<Fanout> {
        let newest = self.published.get(&shard).copied();
        let Some(sub) = self.sub_mut(session, shard) else {
            return Vec::new();
        };
        match newest {
            Some(newest) if newest > sub.last => {
                let from = sub.last;
                self.ask(
                    StoreRead::ChangesSince { shard, since: from },
                    Purpose::CatchUp { session, shard, from },
                );
            }
            _ => sub.catching = false,
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_engine::state::StateBuilder;
    use hoard_engine::store::{ShardSpec, WorldStore};
    use hoard_engine::{MemoryStore, ObjectId, ObjectState};

    /// Performs every read the hub asks for against `store`, at once; the
    /// catch-ups they make.
    fn settle(hub: &mut Hub, store: &MemoryStore) -> Vec<Fanout> {
        let mut out = Vec::new();
        while let Some(HubRead { ticket, read }) = hub.poll_read() {
            out.extend(hub.read_done(ticket, read.run(store)));
        }
        out
    }

    fn state(n: u8) -> ObjectState {
        StateBuilder::new().component("n", vec![n]).finish()
    }

    fn zone(name: &str) -> ZoneId {
        ZoneId::new(name).expect("zone")
    }

    #[test]
    fn indexes_follow_subscribe_unsubscribe_and_remove() {
        let store = MemoryStore::new();
        store
            .create_zone(
                &zone("a"),
                &[ShardSpec::shared(ShardId(1)), ShardSpec::shared(ShardId(2))],
            )
            .expect("zone a");
        store
            .create_zone(&zone("b"), &[ShardSpec::shared(ShardId(3))])
            .expect("zone b");
        let mut hub = Hub::new();
        hub.subscribe(7, &zone("a"), &[(ShardId(1), Seq(0)), (ShardId(2), Seq(0))], false);
        hub.subscribe(8, &zone("a"), &[(ShardId(1), Seq(0))], false);
        hub.subscribe(8, &zone("b"), &[(ShardId(3), Seq(0))], false);
        assert_eq!(hub.sessions_in(&zone("a")), vec![7, 8]);
        assert_eq!(hub.sessions_in(&zone("b")), vec![8]);
        assert_eq!(hub.subscribers_by_zone().get(&zone("a")), Some(&2));
        // Subscribing again to the same shards does not count twice.
        hub.subscribe(7, &zone("a"), &[(ShardId(1), Seq(0))], false);
        assert_eq!(hub.subscribers_by_zone().get(&zone("a")), Some(&2));
        hub.unsubscribe(8, &zone("a"));
        assert_eq!(hub.sessions_in(&zone("a")), vec![7]);
        assert_eq!(hub.sessions_in(&zone("b")), vec![8]);
        hub.remove(7);
        assert!(hub.sessions_in(&zone("a")).is_empty());
        assert_eq!(hub.subscribers_by_zone().get(&zone("a")), None);
        assert_eq!(hub.sessions(), 1);
        hub.remove(8);
        assert_eq!(hub.sessions(), 0);
        assert!(hub.by_shard.is_empty() && hub.by_zone.is_empty() && hub.by_session.is_empty());
    }

    #[test]
    fn a_shards_delta_is_built_once_for_every_subscriber_one_behind_and_caught_up_for_the_rest() {
        let store = MemoryStore::new();
        store
            .create_zone(
                &zone("a"),
                &[ShardSpec::shared(ShardId(1)), ShardSpec::shared(ShardId(2))],
            )
            .expect("zone");
        let mut hub = Hub::new();
        for session in [1, 2, 3] {
            hub.subscribe(session, &zone("a"), &[(ShardId(1), Seq(0))], false);
        }
        assert!(settle(&mut hub, &store).is_empty(), "all at the store's head");
        let mut first = ChangeSet::new();
        first.upsert(ShardId(1), ObjectId(10), state(1));
        let receipt = store.commit(&first).expect("commit");
        let out = hub.publish(&first, &receipt);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, vec![1, 2, 3]);
        // Session 3 falls behind: it missed the first commit.
        let mut second = ChangeSet::new();
        second.upsert(ShardId(1), ObjectId(11), state(2));
        let receipt = store.commit(&second).expect("commit");
        hub.by_shard
            .get_mut(&ShardId(1))
            .and_then(|s| s.get_mut(&3))
            .expect("sub")
            .last = Seq(0);
        let out = hub.publish(&second, &receipt);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].to, vec![1, 2]);
        assert_eq!(out[0].delta.base, Seq(1));
        let out = settle(&mut hub, &store);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].to, vec![3], "the lagging one gets a catch-up from its own seq");
        assert_eq!(out[0].delta.base, Seq(0));
        assert_eq!(out[0].delta.upserts.len(), 2);
    }

    /// Reads answered late, with commits published in between: a
    /// subscription being caught up takes no delta meanwhile, and once its
    /// catch-up is sent it catches up again to what went by, so its deltas
    /// chain from the answer's seq to the store's with no gap or overlap.
    #[test]
    fn a_subscription_caught_up_by_late_reads_chains_without_gap_or_overlap() {
        let store = MemoryStore::new();
        store
            .create_zone(&zone("a"), &[ShardSpec::shared(ShardId(1))])
            .expect("zone");
        let mut hub = Hub::new();
        let commit = |hub: &mut Hub, n: u8| {
            let mut tick = ChangeSet::new();
            tick.upsert(ShardId(1), ObjectId(u64::from(n)), state(n));
            let receipt = store.commit(&tick).expect("commit");
            hub.publish(&tick, &receipt)
        };
        commit(&mut hub, 1);
        // Its answer was built at seq 0; the store is at 1.
        hub.subscribe(1, &zone("a"), &[(ShardId(1), Seq(0))], false);
        let mut chain = Vec::new();
        let step = |hub: &mut Hub, chain: &mut Vec<(Seq, Seq)>, n: u8| {
            // Each read is performed, then a commit lands, then the reply
            // arrives: the reply is always one commit old.
            let HubRead { ticket, read } = hub.poll_read().expect("a read");
            let reply = read.run(&store);
            let out = commit(hub, n);
            assert!(out.is_empty(), "no delta while catching up: {out:?}");
            for fanout in hub.read_done(ticket, reply) {
                assert_eq!(fanout.to, vec![1]);
                chain.push((fanout.delta.base, fanout.delta.seq));
            }
        };
        for n in 2..6 {
            step(&mut hub, &mut chain, n);
        }
        // Reads answered at once from here: it settles at the store's head.
        for fanout in settle(&mut hub, &store) {
            chain.push((fanout.delta.base, fanout.delta.seq));
        }
        let head = store.shard_head(ShardId(1)).expect("head").seq;
        assert_eq!(chain.first().map(|c| c.0), Some(Seq(0)), "{chain:?}");
        assert_eq!(chain.last().map(|c| c.1), Some(head), "{chain:?}");
        assert!(chain.windows(2).all(|w| w[0].1 == w[1].0), "links: {chain:?}");
        let out = commit(&mut hub, 9);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].delta.base, out[0].delta.seq), (head, Seq(head.0 + 1)));
        assert_eq!(hub.reads_out(), 0);
    }

    #[derive(Debug)]
    struct KeyedHash;

    impl crate::proof::HeadSigner for KeyedHash {
        fn scheme(&self) -> u16 {
            0xfe00
        }
        fn sign(&self, statement: &[u8]) -> Result<Vec<u8>, String> {
            Ok(blake3::keyed_hash(&[3; 32], statement).as_bytes().to_vec())
        }
    }

    /// The leaves the hub keeps give, commit after commit (upserts, removals,
    /// an object moving away), the root a fresh read of the shard gives.
    #[test]
    fn signed_heads_from_kept_leaves_equal_those_from_the_store() {
        let store = MemoryStore::new();
        store
            .create_zone(
                &zone("a"),
                &[ShardSpec::shared(ShardId(1)), ShardSpec::shared(ShardId(2))],
            )
            .expect("zone");
        let source = Arc::new(crate::proof::OriginProofs::new(
            hoard_engine::ServerIdentity([1; 32]),
            "world",
            Arc::new(KeyedHash),
        ));
        let mut hub = Hub::new().with_proofs(source);
        hub.subscribe(1, &zone("a"), &[(ShardId(1), Seq(0))], true);
        assert!(settle(&mut hub, &store).is_empty());
        let mut ticks = Vec::new();
        let mut t = ChangeSet::new();
        for i in 0..20 {
            t.upsert(ShardId(1), ObjectId(i), state(i as u8));
        }
        ticks.push(t);
        let mut t = ChangeSet::new();
        t.upsert(ShardId(1), ObjectId(3), state(99));
        t.remove(ShardId(1), ObjectId(4));
        ticks.push(t);
        let mut t = ChangeSet::new();
        t.remove(ShardId(1), ObjectId(5));
        t.upsert(ShardId(2), ObjectId(5), state(5));
        t.upsert(ShardId(1), ObjectId(40), state(40));
        ticks.push(t);
        for (i, tick) in ticks.iter().enumerate() {
            let receipt = store.commit(tick).expect("commit");
            let out = hub.publish(tick, &receipt);
            assert!(settle(&mut hub, &store).is_empty(), "nothing to catch up or read again");
            let fanout = out
                .iter()
                .find(|f| f.delta.shard == ShardId(1))
                .expect("shard 1's delta");
            let (proof, to) = fanout.proof.as_ref().expect("signed");
            assert_eq!(to, &vec![1]);
            let snap = store.snapshot(ShardId(1)).expect("snapshot");
            let root =
                hoard_engine::set_root::set_root(snap.objects.iter().map(|o| (o.id, o.version, o.state.as_bytes())));
            assert_eq!(Some(proof.root), root, "tick {i}");
            assert_eq!((proof.seq, proof.digest), (snap.head.seq, snap.head.digest), "tick {i}");
            assert!(hub.leaves.contains_key(&ShardId(1)));
        }
        hub.remove(1);
        assert!(hub.leaves.is_empty(), "leaves go with the last subscriber");
    }
}
