//! The server's subscription hub, sans-IO: which session follows which
//! shards from which seq, and the live deltas each committed tick produces
//! for each of them.
//!
//! A subscription starts at the seq its zone answer was built from. Deltas
//! are sent only to subscribers exactly one seq behind; one further behind
//! (a commit landed between the answer and the subscription) is caught up
//! from the store first, so there is never a gap and never a duplicate.

use std::collections::BTreeMap;

use hoard_engine::store::{ChangesSince, CommitReceipt, WorldStore};
use hoard_engine::{Change, ChangeSet, Seq, ShardId, ZoneId};

use crate::wire::{Delta, WireObject};

/// A session's id within the hub.
pub type SessionId = u64;

#[derive(Debug, Clone)]
struct Sub {
    zone: ZoneId,
    last: Seq,
}

/// Subscriptions of every session.
#[derive(Debug, Default)]
pub struct Hub {
    sessions: BTreeMap<SessionId, BTreeMap<ShardId, Sub>>,
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

    /// Subscribes a session to shards of a zone after the given seqs;
    /// returns catch-up deltas for shards that moved on since.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        zone: &ZoneId,
        shards: &[(ShardId, Seq)],
        store: &dyn WorldStore,
    ) -> Vec<Delta> {
        let subs = self.sessions.entry(session).or_default();
        let mut out = Vec::new();
        for &(shard, seq) in shards {
            let mut sub = Sub {
                zone: zone.clone(),
                last: seq,
            };
            if let Ok(head) = store.shard_head(shard)
                && head.seq > seq
                && let Some(delta) = catch_up(store, zone, shard, seq)
            {
                sub.last = delta.seq;
                out.push(delta);
            }
            subs.insert(shard, sub);
        }
        out
    }

    /// Stops a session's deltas for a zone.
    pub fn unsubscribe(&mut self, session: SessionId, zone: &ZoneId) {
        if let Some(subs) = self.sessions.get_mut(&session) {
            subs.retain(|_, s| &s.zone != zone);
        }
    }

    /// The sessions following at least one shard of `zone`.
    pub fn sessions_in(&self, zone: &ZoneId) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, subs)| subs.values().any(|s| &s.zone == zone))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets a session.
    pub fn remove(&mut self, session: SessionId) {
        self.sessions.remove(&session);
    }

    /// How many sessions follow at least one shard.
    pub fn sessions(&self) -> usize {
        self.sessions.values().filter(|s| !s.is_empty()).count()
    }

    /// The deltas a committed tick produces, per subscribed session.
    pub fn publish(
        &mut self,
        changes: &ChangeSet,
        receipt: &CommitReceipt,
        store: &dyn WorldStore,
    ) -> Vec<(SessionId, Delta)> {
        let mut out = Vec::new();
        for head in &receipt.heads {
            let Some(shard_changes) = changes.shard(head.shard) else {
                continue;
            };
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
            let delta = Delta {
                zone: head.zone.clone(),
                shard: head.shard,
                epoch: head.epoch,
                base: Seq(head.seq.0.saturating_sub(1)),
                seq: head.seq,
                digest: head.digest,
                tombstones,
                upserts,
            };
            for (&session, subs) in &mut self.sessions {
                let Some(sub) = subs.get_mut(&head.shard) else {
                    continue;
                };
                if sub.last >= head.seq {
                    continue;
                }
                if sub.last == delta.base {
                    sub.last = head.seq;
                    out.push((session, delta.clone()));
                } else if let Some(caught) = catch_up(store, &sub.zone, head.shard, sub.last) {
                    sub.last = caught.seq;
                    out.push((session, caught));
                }
            }
        }
        out
    }
}
