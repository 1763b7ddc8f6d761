//! The server's subscription hub, sans-IO: which session follows which
//! shards from which seq, and the live deltas each committed tick produces
//! for each of them.
//!
//! A subscription starts at the seq its zone answer was built from. Deltas
//! are sent only to subscribers exactly one seq behind; one further behind
//! (a commit landed between the answer and the subscription) is caught up
//! from the store first, so there is never a gap and never a duplicate.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hoard_engine::store::{ChangesSince, CommitReceipt, WorldStore};
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
    /// Signs heads for subscribers that want them.
    proofs: Option<Arc<dyn ProofSource>>,
    /// Each shard followed with proofs: its leaves at its last signed head,
    /// kept from the commits' changes, so signing a delta's head costs a
    /// hash over the leaves, not a read of the shard.
    leaves: HashMap<ShardId, Leaves>,
}

/// A shard's live set as (version, BLAKE3(state)) by id, at one head.
#[derive(Debug)]
struct Leaves {
    epoch: hoard_engine::Epoch,
    seq: Seq,
    objects: BTreeMap<hoard_engine::ObjectId, (Seq, hoard_engine::digest::StateHash)>,
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

/// The signed head of `shard` at `seq`, read from one snapshot between
/// commits; `None` when the store has moved past `seq` (a subscriber then
/// gets the delta unsigned, and its own checks ask for a repair, which is
/// signed).
fn prove_at(store: &dyn WorldStore, proofs: &dyn ProofSource, shard: ShardId, seq: Seq) -> Option<HeadProof> {
    if let Some(proof) = proofs.held(shard, seq) {
        return Some(proof);
    }
    let snap = store.snapshot(shard).ok()?;
    if snap.head.seq != seq {
        tracing::debug!(%shard, %seq, now = %snap.head.seq, "store moved on; delta goes unsigned");
        return None;
    }
    match proofs.prove(&snap) {
        Ok(proof) => Some(proof),
        Err(reason) => {
            tracing::warn!(%shard, %reason, "could not sign a shard head");
            None
        }
    }
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

fn catch_up(store: &dyn WorldStore, zone: &ZoneId, shard: ShardId, last: Seq) -> Option<Delta> {
    match store.changes_since(shard, last).ok()? {
        ChangesSince::Changes {
            head,
            upserts,
            tombstones,
        } => (head.seq > last).then(|| Delta {
            zone: zone.clone(),
            shard,
            epoch: head.epoch,
            base: last,
            seq: head.seq,
            digest: head.digest,
            tombstones: tombstones.into_iter().map(|t| t.id).collect(),
            upserts: wire_objects(upserts),
        }),
        // Too far behind for deltas: send the whole live set as upserts; the
        // client's digest check finds any stale extra object and repairs.
        ChangesSince::BehindHorizon { .. } => {
            let snap = store.snapshot(shard).ok()?;
            Some(Delta {
                zone: zone.clone(),
                shard,
                epoch: snap.head.epoch,
                base: last,
                seq: snap.head.seq,
                digest: snap.head.digest,
                tombstones: Vec::new(),
                upserts: wire_objects(snap.objects),
            })
        }
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
        }
        self.uncount(&old.zone, session);
        if let Some(shards) = self.by_session.get_mut(&session) {
            shards.remove(&shard);
            if shards.is_empty() {
                self.by_session.remove(&session);
            }
        }
    }

    /// Subscribes a session to shards of a zone after the given seqs;
    /// returns catch-up deltas for shards that moved on since.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        zone: &ZoneId,
        shards: &[(ShardId, Seq)],
        proofs: bool,
        store: &dyn WorldStore,
    ) -> Vec<(Option<HeadProof>, Delta)> {
        let mut out = Vec::new();
        for &(shard, seq) in shards {
            let mut sub = Sub {
                zone: zone.clone(),
                last: seq,
                proofs,
            };
            if let Ok(head) = store.shard_head(shard)
                && head.seq > seq
                && let Some(delta) = catch_up(store, zone, shard, seq)
            {
                sub.last = delta.seq;
                let proof = match (&self.proofs, proofs) {
                    (Some(source), true) => prove_at(store, &**source, shard, delta.seq),
                    _ => None,
                };
                out.push((proof, delta));
            }
            self.follow(session, shard, sub);
        }
        out
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
    /// the sessions it goes to, then any catch-up a lagging session needs.
    pub fn publish(&mut self, changes: &ChangeSet, receipt: &CommitReceipt, store: &dyn WorldStore) -> Vec<Fanout> {
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
                self.sign_commit(head, shard_changes, store)
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
            out.extend(self.fan_out(head.shard, base, head.seq, build, proof, store));
        }
        out
    }

    /// Signs a committed head of a shard followed with proofs, from its
    /// leaves brought forward by the commit's changes (read from the store
    /// once, when the shard is first signed or the leaves fell behind).
    fn sign_commit(
        &mut self,
        head: &hoard_engine::store::ShardHead,
        changes: &hoard_engine::ShardChanges,
        store: &dyn WorldStore,
    ) -> Option<HeadProof> {
        let source = self.proofs.clone()?;
        let base = Seq(head.seq.0.saturating_sub(1));
        let current = match self.leaves.get_mut(&head.shard) {
            Some(leaves) if leaves.epoch == head.epoch && leaves.seq == base => {
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
                true
            }
            _ => false,
        };
        if !current {
            // Between commits the store is at this head (one commit in
            // flight at a time).
            let snap = store.snapshot(head.shard).ok()?;
            if snap.head.seq != head.seq || snap.head.epoch != head.epoch {
                self.leaves.remove(&head.shard);
                return None;
            }
            let objects = snap
                .objects
                .iter()
                .map(|o| (o.id, (o.version, hoard_engine::digest::state_hash(o.state.as_bytes()))))
                .collect();
            self.leaves.insert(
                head.shard,
                Leaves {
                    epoch: head.epoch,
                    seq: head.seq,
                    objects,
                },
            );
        }
        let leaves = self.leaves.get(&head.shard)?;
        if leaves.objects.len() as u64 != head.digest.count() {
            // Not the store's set: start again from the store next time.
            tracing::warn!(shard = %head.shard, "a shard's leaves disagree with its head; signing from the store");
            self.leaves.remove(&head.shard);
            return prove_at(store, &*source, head.shard, head.seq);
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
    pub fn publish_delta(&mut self, delta: Delta, store: &dyn WorldStore) -> Vec<Fanout> {
        let (shard, base, seq) = (delta.shard, delta.base, delta.seq);
        self.fan_out(shard, base, seq, || delta, None, store)
    }

    /// Sends a shard's change from `base` to `seq` (built only if someone is
    /// at `base`) to the subscribers at `base`, and catches up the others.
    fn fan_out(
        &mut self,
        shard: ShardId,
        base: Seq,
        seq: Seq,
        build: impl FnOnce() -> Delta,
        signed: Option<HeadProof>,
        store: &dyn WorldStore,
    ) -> Vec<Fanout> {
        let mut out = Vec::new();
        let Some(subs) = self.by_shard.get_mut(&shard) else {
            return out;
        };
        let mut to = Vec::new();
        let mut proven = Vec::new();
        let mut caught = Vec::new();
        for (&session, sub) in subs.iter_mut() {
            if sub.last >= seq {
                continue;
            }
            if sub.last == base {
                sub.last = seq;
                to.push(session);
                if sub.proofs {
                    proven.push(session);
                }
            } else if let Some(delta) = catch_up(store, &sub.zone, shard, sub.last) {
                sub.last = delta.seq;
                caught.push((session, sub.proofs, delta));
            }
        }
        // One signature per shard and change, whoever wants it.
        let proof = match (&self.proofs, proven.is_empty() && caught.iter().all(|c| !c.1)) {
            (Some(source), false) => signed.or_else(|| prove_at(store, &**source, shard, seq)),
            _ => None,
        };
        let caught: Vec<Fanout> = caught
            .into_iter()
            .map(|(session, wants, delta)| Fanout {
                to: vec![session],
                proof: proof
                    .clone()
                    .filter(|p| wants && p.seq == delta.seq)
                    .map(|p| (p, vec![session])),
                delta,
            })
            .collect();
        if !to.is_empty() {
            let proof = proof.filter(|_| !proven.is_empty()).map(|p| (p, proven));
            out.push(Fanout {
                to,
                delta: build(),
                proof,
            });
        }
        out.extend(caught);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_engine::state::StateBuilder;
    use hoard_engine::store::ShardSpec;
    use hoard_engine::{MemoryStore, ObjectId, ObjectState};

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
        hub.subscribe(
            7,
            &zone("a"),
            &[(ShardId(1), Seq(0)), (ShardId(2), Seq(0))],
            false,
            &store,
        );
        hub.subscribe(8, &zone("a"), &[(ShardId(1), Seq(0))], false, &store);
        hub.subscribe(8, &zone("b"), &[(ShardId(3), Seq(0))], false, &store);
        assert_eq!(hub.sessions_in(&zone("a")), vec![7, 8]);
        assert_eq!(hub.sessions_in(&zone("b")), vec![8]);
        assert_eq!(hub.subscribers_by_zone().get(&zone("a")), Some(&2));
        // Subscribing again to the same shards does not count twice.
        hub.subscribe(7, &zone("a"), &[(ShardId(1), Seq(0))], false, &store);
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
            hub.subscribe(session, &zone("a"), &[(ShardId(1), Seq(0))], false, &store);
        }
        let mut first = ChangeSet::new();
        first.upsert(ShardId(1), ObjectId(10), state(1));
        let receipt = store.commit(&first).expect("commit");
        // Session 3 falls behind: it missed the first commit.
        hub.by_shard
            .get_mut(&ShardId(1))
            .and_then(|s| s.get_mut(&3))
            .expect("sub")
            .last = Seq(0);
        let out = hub.publish(&first, &receipt, &store);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, vec![1, 2, 3]);
        let mut second = ChangeSet::new();
        second.upsert(ShardId(1), ObjectId(11), state(2));
        let receipt = store.commit(&second).expect("commit");
        hub.by_shard
            .get_mut(&ShardId(1))
            .and_then(|s| s.get_mut(&3))
            .expect("sub")
            .last = Seq(0);
        let out = hub.publish(&second, &receipt, &store);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].to, vec![1, 2]);
        assert_eq!(out[0].delta.base, Seq(1));
        assert_eq!(out[1].to, vec![3], "the lagging one gets a catch-up from its own seq");
        assert_eq!(out[1].delta.base, Seq(0));
        assert_eq!(out[1].delta.upserts.len(), 2);
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
        hub.subscribe(1, &zone("a"), &[(ShardId(1), Seq(0))], true, &store);
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
            let out = hub.publish(tick, &receipt, &store);
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
