//! Building a zone answer shard by shard, sans-IO: up to date, the changes
//! since the client's hwm, the live manifest when the hwm is behind the
//! tombstone horizon (or a repair), or a full snapshot. The plan never
//! touches the store: it asks for each read as a [`StoreRead`] and takes
//! the reply in [`AnswerPlan::supply`]. Each shard's answer is built from
//! reads that agree (a snapshot is one read, so its seq, digest and objects
//! agree; changes carry the head they lead to).

use std::collections::VecDeque;

use hoard_engine::store::{
    ChangesSince, ReadError, ShardScope, ShardSnapshot, StoreFault, StoreRead, StoreReply, StoredObject,
};
use hoard_engine::{Digest, Epoch, Seq, ShardId, ZoneId};

use std::sync::Arc;

use crate::proof::ProofSource;
use crate::wire::{
    AnswerBegin, AnswerEnd, Changes, Fresh, Manifest, Message, RepairEntry, ShardHave, Snapshot, UpToDate, WireObject,
    fresh_root, head_tag,
};

/// What a client said it holds of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// Nothing: the shard is sent whole.
    Nothing,
    /// A copy named by its full head.
    Head(ShardHave),
    /// A copy named by its hwm only (the compact form): at the server's seq
    /// it is confirmed, with every other such shard, by one `Fresh`.
    Hwm(Seq),
}

/// What a plan does for one shard.
#[derive(Debug)]
enum Job {
    /// Answer an entry for a client holding this.
    Entry(Held),
    /// Answer a repair: every live id, and every object the client lacks
    /// or holds differently.
    Repair {
        /// The hwm the client's copy claims.
        base: Seq,
        /// What the client holds.
        have: Vec<RepairEntry>,
    },
}

/// The read a shard's answer waits for, and what its reply is for.
#[derive(Debug)]
enum Awaiting {
    /// The shard's head, to compare with the client's copy.
    Head(Held),
    /// The changes since `hwm` of a copy of the current epoch; `digest` is
    /// the copy's at `hwm`, if the client named it.
    Changes { hwm: Seq, digest: Option<Digest> },
    /// A snapshot, for this use.
    Snapshot(SnapshotFor),
}

#[derive(Debug)]
enum SnapshotFor {
    /// The whole shard.
    Whole,
    /// The live ids and the objects newer than this hwm (behind the horizon).
    Manifest(Seq),
    /// An answer with its signed head (see [`answer_proven`]).
    Proven(Held),
    /// A repair's answer.
    Repair { base: Seq, have: Vec<RepairEntry> },
}

impl Awaiting {
    fn read(&self, shard: ShardId) -> StoreRead {
        match self {
            Awaiting::Head(_) => StoreRead::Head(shard),
            Awaiting::Changes { hwm, .. } => StoreRead::ChangesSince { shard, since: *hwm },
            Awaiting::Snapshot(_) => StoreRead::Snapshot(shard),
        }
    }
}

/// The next thing an [`AnswerPlan`] needs from its driver.
#[derive(Debug)]
pub enum AnswerStep {
    /// Send this message on the answer's stream, then ask again.
    Send(Message),
    /// Perform this read (see [`StoreRead::run`]) and hand the reply to
    /// [`AnswerPlan::supply`]; asking again before that asks for the same read.
    Read(StoreRead),
    /// Every message was sent: the answer is complete.
    Done,
}

/// A zone answer to be built shard by shard as it is sent: `AnswerBegin`,
/// one message per shard (each read from the store only when its turn
/// comes, so no whole-zone answer is ever held), `AnswerEnd`. The driver
/// loops on [`AnswerPlan::step`]: it sends what it is given and performs
/// the reads it is asked for. After the last message,
/// [`AnswerPlan::subscription`] gives the seqs each shard's answer was
/// built from, where live deltas continue.
#[derive(Debug)]
pub struct AnswerPlan {
    request: u32,
    zone: ZoneId,
    /// Messages ready to go (the begin; a shard's proof and answer).
    ready: VecDeque<Message>,
    /// Shards still to answer, with what to do for each.
    shards: VecDeque<(ShardId, Job)>,
    /// The shard whose read is out, and what its reply is for.
    awaiting: Option<(ShardId, Awaiting)>,
    /// Compact shards found at the server's seq, with the server's head.
    fresh: Vec<(ShardId, Epoch, Seq, Digest)>,
    /// The entry's `held` list as the client sent it (ascending): the
    /// order of `Fresh.mask`.
    held: Vec<ShardId>,
    end: bool,
    subscribe: bool,
    subscriptions: Vec<(ShardId, Seq)>,
    kinds: Vec<AnswerKind>,
    /// Signed heads go before each shard's answer (see [`answer_proven`]).
    proofs: Option<Arc<dyn ProofSource>>,
}

impl AnswerPlan {
    fn new(request: u32, zone: ZoneId, shards: VecDeque<(ShardId, Job)>, subscribe: bool) -> AnswerPlan {
        let begin = Message::AnswerBegin(AnswerBegin {
            request,
            zone: zone.clone(),
            shards: shards.len() as u32,
        });
        AnswerPlan {
            request,
            zone,
            ready: VecDeque::from([begin]),
            subscriptions: Vec::with_capacity(shards.len()),
            kinds: Vec::with_capacity(shards.len()),
            shards,
            awaiting: None,
            fresh: Vec::new(),
            held: Vec::new(),
            end: true,
            subscribe,
            proofs: None,
        }
    }

    /// An entry's answer for `shards` (each with what the client holds).
    pub fn entry(request: u32, zone: ZoneId, shards: Vec<(ShardId, Held)>, subscribe: bool) -> AnswerPlan {
        let jobs = shards
            .into_iter()
            .map(|(shard, held)| (shard, Job::Entry(held)))
            .collect();
        AnswerPlan::new(request, zone, jobs, subscribe)
    }

    /// A repair's answer for `shard`, whose copy the client says is
    /// complete up to `base` and holds `have`: every live id, and every
    /// object it lacks or holds differently (by version or state hash).
    pub fn repair(request: u32, zone: ZoneId, shard: ShardId, base: Seq, have: Vec<RepairEntry>) -> AnswerPlan {
        AnswerPlan::new(
            request,
            zone,
            VecDeque::from([(shard, Job::Repair { base, have })]),
            false,
        )
    }

    /// Each shard's answer is built from one snapshot and preceded by the
    /// head's proof from `proofs`, so the answer and the proof describe the
    /// same head: a copy at the head is up to date, a copy of the epoch
    /// behind it gets a manifest (no tombstones needed, which a relay does
    /// not keep), anything else the whole shard.
    #[must_use]
    pub fn with_proofs(mut self, proofs: Arc<dyn ProofSource>) -> AnswerPlan {
        self.proofs = Some(proofs);
        self
    }

    /// Whether the answer carries signed heads (its live deltas should too).
    pub fn proves(&self) -> bool {
        self.proofs.is_some()
    }

    /// The entry's compact `held` list, ascending, as the client sent it:
    /// `Fresh` names shards by their place in it.
    #[must_use]
    pub fn held_in_order(mut self, held: Vec<ShardId>) -> AnswerPlan {
        self.held = held;
        self
    }

    /// The request answered.
    pub fn request(&self) -> u32 {
        self.request
    }

    /// The zone.
    pub fn zone(&self) -> &ZoneId {
        &self.zone
    }

    /// Whether live deltas start once the answer is complete.
    pub fn subscribes(&self) -> bool {
        self.subscribe
    }

    /// What to do next: a message to send, a read to perform, or nothing
    /// more (the answer is complete).
    pub fn step(&mut self) -> AnswerStep {
        if let Some(m) = self.ready.pop_front() {
            return AnswerStep::Send(m);
        }
        if let Some((shard, awaiting)) = &self.awaiting {
            return AnswerStep::Read(awaiting.read(*shard));
        }
        if let Some((shard, job)) = self.shards.pop_front() {
            let awaiting = match job {
                // Proven answers come from one snapshot, proof and all.
                Job::Entry(held) if self.proofs.is_some() => Awaiting::Snapshot(SnapshotFor::Proven(held)),
                Job::Entry(Held::Nothing) => Awaiting::Snapshot(SnapshotFor::Whole),
                Job::Entry(held) => Awaiting::Head(held),
                Job::Repair { base, have } => Awaiting::Snapshot(SnapshotFor::Repair { base, have }),
            };
            return self.wait(shard, awaiting);
        }
        if !self.fresh.is_empty() {
            return AnswerStep::Send(self.fresh_message());
        }
        if self.end {
            self.end = false;
            tracing::debug!(zone = %self.zone, kinds = ?self.kinds, "zone answer sent");
            return AnswerStep::Send(Message::AnswerEnd(AnswerEnd { request: self.request }));
        }
        AnswerStep::Done
    }

    fn wait(&mut self, shard: ShardId, awaiting: Awaiting) -> AnswerStep {
        let read = awaiting.read(shard);
        self.awaiting = Some((shard, awaiting));
        AnswerStep::Read(read)
    }

    /// The reply to the read [`AnswerPlan::step`] asked for. A failed read
    /// fails the answer (the error is returned; the driver ends the answer
    /// and tells the client).
    pub fn supply(&mut self, reply: StoreReply) -> Result<(), ReadError> {
        let Some((shard, awaiting)) = self.awaiting.take() else {
            return Err(ReadError::Fault(StoreFault::Corrupt(
                "a store reply came for an answer that asked for no read".into(),
            )));
        };
        match awaiting {
            Awaiting::Head(held) => {
                let head = reply.into_head()?;
                let next = match held {
                    // Another epoch, or a hwm this history never reached:
                    // the copy is of no use, whatever produced it.
                    Held::Head(have) if have.epoch != head.epoch || have.hwm > head.seq => {
                        Awaiting::Snapshot(SnapshotFor::Whole)
                    }
                    Held::Head(have) => Awaiting::Changes {
                        hwm: have.hwm,
                        digest: Some(have.digest),
                    },
                    Held::Hwm(hwm) if head.seq == hwm => {
                        // Confirmed with the others by one `Fresh`: nothing
                        // is sent for it on its own.
                        self.fresh.push((shard, head.epoch, head.seq, head.digest));
                        self.subscriptions.push((shard, head.seq));
                        self.kinds.push(AnswerKind::UpToDate);
                        return Ok(());
                    }
                    // Ahead of this history: of no use.
                    Held::Hwm(hwm) if hwm > head.seq => Awaiting::Snapshot(SnapshotFor::Whole),
                    // Behind: the answer for a copy of this epoch at `hwm`
                    // (a copy of another epoch fails to apply it and is
                    // repaired).
                    Held::Hwm(hwm) => Awaiting::Changes { hwm, digest: None },
                    Held::Nothing => Awaiting::Snapshot(SnapshotFor::Whole),
                };
                self.awaiting = Some((shard, next));
            }
            Awaiting::Changes { hwm, digest } => match since(shard, hwm, digest, reply.into_changes()) {
                Since::Answer(answer) => self.answered(shard, answer),
                Since::Snapshot(use_) => self.awaiting = Some((shard, Awaiting::Snapshot(use_))),
                Since::Failed(e) => return Err(e),
            },
            Awaiting::Snapshot(use_) => {
                let snap = reply.into_snapshot()?;
                if let Some(proofs) = &self.proofs {
                    let proof = proofs.prove(&snap).map_err(|reason| no_proof(shard, &reason))?;
                    self.ready.push_back(Message::HeadProof(proof));
                }
                let answer = match use_ {
                    SnapshotFor::Whole => snapshot_answer(snap),
                    SnapshotFor::Manifest(hwm) => manifest(shard, hwm, snap, |o| o.version > hwm),
                    SnapshotFor::Proven(held) => answer_proven(shard, &held, snap),
                    SnapshotFor::Repair { base, have } => repair_manifest(shard, base, snap, &have),
                };
                self.answered(shard, answer);
            }
        }
        Ok(())
    }

    fn answered(&mut self, shard: ShardId, answer: ShardAnswer) {
        self.subscriptions.push((shard, answer.seq));
        self.kinds.push(answer.kind);
        self.ready.push_back(answer.message);
    }

    /// One `Fresh` for every compact shard found at the server's seq.
    fn fresh_message(&mut self) -> Message {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.sort_by_key(|(shard, ..)| *shard);
        let mut mask = vec![0u8; self.held.len().div_ceil(8)];
        let mut tags = Vec::with_capacity(fresh.len());
        let mut next = fresh.iter().peekable();
        for (i, shard) in self.held.iter().enumerate() {
            if let Some((s, epoch, seq, digest)) = next.peek()
                && s == shard
            {
                mask[i / 8] |= 1 << (i % 8);
                tags.push(head_tag(*s, *epoch, *seq, digest));
                next.next();
            }
        }
        Message::Fresh(Fresh {
            mask,
            tags,
            root: fresh_root(&fresh),
        })
    }

    /// Whether every message was returned.
    pub fn is_done(&self) -> bool {
        self.ready.is_empty() && self.awaiting.is_none() && self.shards.is_empty() && self.fresh.is_empty() && !self.end
    }

    /// Once done, and if the entry asked for live deltas: the zone and, per
    /// shard, the seq its answer brought the client to.
    pub fn subscription(&self) -> Option<(ZoneId, Vec<(ShardId, Seq)>)> {
        (self.subscribe && self.is_done()).then(|| (self.zone.clone(), self.subscriptions.clone()))
    }

    /// The kind of each shard's answer so far, in order.
    pub fn kinds(&self) -> &[AnswerKind] {
        &self.kinds
    }
}

/// Which entry's answer starts each zone's live deltas, for one session.
/// An answer is sent on its own stream while the session goes on, so the
/// session may leave the zone, or enter it again, before the answer is
/// done: live deltas start only if the zone is still wanted, and by that
/// answer (a later entry's answer supersedes an earlier one's). The driver
/// keeps one per connection and asks it at each step. Bounded by the zones
/// the session has entered and not left.
#[derive(Debug, Default)]
pub struct Subscriptions {
    wanted: std::collections::HashMap<ZoneId, u32>,
}

impl Subscriptions {
    /// `plan` is about to be sent: if its entry asked for live deltas, its
    /// zone is wanted from its request on.
    pub fn answering(&mut self, plan: &AnswerPlan) {
        if plan.subscribes() {
            self.wanted.insert(plan.zone().clone(), plan.request());
        }
    }

    /// The session left `zone`: an answer still being sent starts nothing.
    pub fn left(&mut self, zone: &ZoneId) {
        self.wanted.remove(zone);
    }

    /// `plan` was sent whole: the live deltas to start (its zone and, per
    /// shard, the seq its answer brought the client to), if its zone is
    /// still wanted by it.
    pub fn answered(&self, plan: &AnswerPlan) -> Option<(ZoneId, Vec<(ShardId, Seq)>)> {
        let (zone, shards) = plan.subscription()?;
        (self.wanted.get(&zone) == Some(&plan.request())).then_some((zone, shards))
    }
}

/// What kind of answer a shard got (for stats and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerKind {
    /// The copy was current.
    UpToDate,
    /// The changes since the copy's hwm.
    Changes,
    /// The live manifest plus newer objects (behind the horizon).
    Manifest,
    /// The whole shard.
    Snapshot,
}

fn wire(o: StoredObject) -> WireObject {
    WireObject {
        id: o.id,
        version: o.version,
        state: o.state.into_bytes(),
    }
}

/// A built answer and the seq the subscription continues from.
#[derive(Debug)]
struct ShardAnswer {
    /// The message to send.
    message: Message,
    /// Its kind.
    kind: AnswerKind,
    /// The seq the answer brings the client to.
    seq: Seq,
}

fn snapshot_answer(snap: ShardSnapshot) -> ShardAnswer {
    let shard = snap.head.shard;
    let perspective = match snap.head.scope {
        ShardScope::Shared => None,
        ShardScope::Perspective(p) => Some(p),
    };
    ShardAnswer {
        seq: snap.head.seq,
        kind: AnswerKind::Snapshot,
        message: Message::Snapshot(Snapshot {
            shard,
            epoch: snap.head.epoch,
            seq: snap.head.seq,
            digest: snap.head.digest,
            perspective,
            objects: snap.objects.into_iter().map(wire).collect(),
        }),
    }
}

/// What the changes since a copy's hwm make of its answer.
enum Since {
    Answer(ShardAnswer),
    Snapshot(SnapshotFor),
    Failed(ReadError),
}

/// Answers a copy complete up to `hwm` of the shard's current epoch from
/// the changes since: those changes, or the live manifest when `hwm` is
/// behind the horizon. A copy already at the shard's seq is up to date only
/// if its `digest` is known and equal; otherwise it gets a snapshot.
fn since(shard: ShardId, hwm: Seq, digest: Option<Digest>, changes: Result<ChangesSince, ReadError>) -> Since {
    match changes {
        Ok(ChangesSince::Changes {
            head,
            upserts,
            tombstones,
        }) => {
            if head.seq == hwm {
                if digest == Some(head.digest) {
                    return Since::Answer(ShardAnswer {
                        seq: head.seq,
                        kind: AnswerKind::UpToDate,
                        message: Message::UpToDate(UpToDate { shard, seq: head.seq }),
                    });
                }
                // Same seq, another digest: the copy is not what it claims.
                return Since::Snapshot(SnapshotFor::Whole);
            }
            Since::Answer(ShardAnswer {
                seq: head.seq,
                kind: AnswerKind::Changes,
                message: Message::Changes(Changes {
                    shard,
                    epoch: head.epoch,
                    base: hwm,
                    seq: head.seq,
                    digest: head.digest,
                    tombstones: tombstones.into_iter().map(|t| t.id).collect(),
                    upserts: upserts.into_iter().map(wire).collect(),
                }),
            })
        }
        // One consistent read: the live ids and the objects newer than hwm.
        Ok(ChangesSince::BehindHorizon { .. }) => Since::Snapshot(SnapshotFor::Manifest(hwm)),
        Err(ReadError::FutureSeq { .. }) => Since::Snapshot(SnapshotFor::Whole),
        Err(e) => Since::Failed(e),
    }
}

/// A manifest answer: every live id of `snap`, and the objects `send` selects.
fn manifest(shard: ShardId, base: Seq, snap: ShardSnapshot, send: impl Fn(&StoredObject) -> bool) -> ShardAnswer {
    let live = snap.objects.iter().map(|o| o.id).collect();
    let upserts = snap.objects.into_iter().filter(|o| send(o)).map(wire).collect();
    ShardAnswer {
        seq: snap.head.seq,
        kind: AnswerKind::Manifest,
        message: Message::Manifest(Manifest {
            shard,
            epoch: snap.head.epoch,
            base,
            seq: snap.head.seq,
            digest: snap.head.digest,
            live,
            upserts,
        }),
    }
}

/// Answers one shard from the snapshot its signed head was made from, so
/// the answer and the proof describe the same head whatever commits
/// meanwhile. A copy at the head is up to date; a copy of the epoch behind
/// it gets the live ids and the objects newer than its hwm (a manifest: one
/// round trip, no tombstones needed, which a relay does not keep); anything
/// else gets the whole shard.
fn answer_proven(shard: ShardId, held: &Held, snap: ShardSnapshot) -> ShardAnswer {
    let head = &snap.head;
    let (hwm, epoch, digest) = match held {
        Held::Nothing => (None, None, None),
        Held::Head(h) => (Some(h.hwm), Some(h.epoch), Some(h.digest)),
        Held::Hwm(hwm) => (Some(*hwm), None, None),
    };
    match hwm {
        Some(hwm) if epoch.is_none_or(|e| e == head.epoch) && hwm == head.seq && digest == Some(head.digest) => {
            ShardAnswer {
                seq: head.seq,
                kind: AnswerKind::UpToDate,
                message: Message::UpToDate(UpToDate { shard, seq: head.seq }),
            }
        }
        Some(hwm) if epoch.is_none_or(|e| e == head.epoch) && hwm < head.seq => {
            manifest(shard, hwm, snap, |o| o.version > hwm)
        }
        _ => snapshot_answer(snap),
    }
}

fn no_proof(shard: ShardId, reason: &str) -> ReadError {
    ReadError::Fault(StoreFault::Corrupt(format!(
        "no signed head for shard {shard}: {reason}"
    )))
}

/// The first 8 bytes of blake3 of a state, as used in repair entries.
pub fn short_hash(state: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&blake3::hash(state).as_bytes()[..8]);
    out
}

/// A repair's answer: every live id, and every object the client lacks or
/// holds differently (by version or state hash).
fn repair_manifest(shard: ShardId, base: Seq, snap: ShardSnapshot, have: &[RepairEntry]) -> ShardAnswer {
    let mut held: Vec<(&RepairEntry, ())> = have.iter().map(|e| (e, ())).collect();
    held.sort_by_key(|(e, ())| e.id);
    let holds = |o: &StoredObject| {
        held.binary_search_by_key(&o.id, |(e, ())| e.id)
            .ok()
            .is_some_and(|i| held[i].0.version == o.version && held[i].0.hash == short_hash(o.state.as_bytes()))
    };
    manifest(shard, base, snap, |o| !holds(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_engine::MemoryStore;

    /// An entry of `zone` with no shards, answered whole.
    fn answered_entry(request: u32, zone: &ZoneId, subscribe: bool) -> AnswerPlan {
        let mut plan = AnswerPlan::entry(request, zone.clone(), Vec::new(), subscribe);
        let store = MemoryStore::new();
        loop {
            match plan.step() {
                AnswerStep::Send(_) => {}
                AnswerStep::Read(read) => plan.supply(read.run(&store)).expect("read"),
                AnswerStep::Done => break,
            }
        }
        assert!(plan.is_done());
        plan
    }

    #[test]
    fn live_deltas_start_from_the_latest_entry_of_a_zone_still_wanted() {
        let meadow = ZoneId::new("meadow").expect("zone");
        let mut subs = Subscriptions::default();
        let first = answered_entry(1, &meadow, true);
        let second = answered_entry(2, &meadow, true);
        subs.answering(&first);
        subs.answering(&second);
        assert!(subs.answered(&first).is_none(), "superseded by the later entry");
        assert_eq!(subs.answered(&second).map(|(z, _)| z), Some(meadow.clone()));
        subs.left(&meadow);
        assert!(subs.answered(&second).is_none(), "left while its answer was sent");
        let prefetch = answered_entry(3, &meadow, false);
        subs.answering(&prefetch);
        assert!(subs.answered(&prefetch).is_none(), "an entry without live deltas");
    }
}
