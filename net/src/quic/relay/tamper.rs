//! A relay that lies, for hoard's own tests: what it serves is altered the
//! way an adversarial relay would, consistently (digests recomputed over
//! the altered set), so that only the origin's signature can give it away.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::RelayWorld;
use hoard_engine::digest::state_hash;
use hoard_engine::store::Locked;
use hoard_engine::store::{ChangesSince, ReadError, ShardHead, ShardSnapshot, StoreLayer, WorldStore};
use hoard_engine::{Digest, ObjectId, ObjectState, Seq, ShardId};
use hoard_proto::proof::ProofSource;
use hoard_proto::wire::HeadProof;

/// How a relay tampers with its players' signed intents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentTamper {
    /// Flips a bit of each intent's payload.
    Alter,
    /// Drops each player's first intent.
    Drop,
    /// Holds each player's first intent and sends it after the second.
    Reorder,
    /// Sends every intent twice.
    Replay,
}

/// How the relay lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Flips a bit of the first object of each shard it serves.
    FlipByte,
    /// Keeps serving objects that left a shard (drops the tombstones).
    DropTombstone,
    /// Serves each shard as it was when the relay started, with the
    /// origin's signed head of then (a replay).
    ReplayOldHead,
}

/// The relay's store, served with lies.
#[derive(Debug)]
pub struct TamperingStore {
    inner: Arc<Locked<RelayWorld>>,
    tamper: Tamper,
    /// Each shard as first served, with its signed head.
    #[allow(clippy::type_complexity)]
    first: Mutex<HashMap<ShardId, (ShardSnapshot, HeadProof)>>,
}

impl TamperingStore {
    /// Lies about what `inner` holds.
    pub fn new(inner: Arc<Locked<RelayWorld>>, tamper: Tamper) -> TamperingStore {
        let mut first = HashMap::new();
        for zone in inner.zones().unwrap_or_default() {
            for shard in inner.zone_shards(&zone).unwrap_or_default() {
                if let Ok(snap) = inner.snapshot(shard)
                    && let Some(proof) = inner.held(shard, snap.head.seq)
                {
                    first.insert(shard, (snap, proof));
                }
            }
        }
        TamperingStore {
            inner,
            tamper,
            first: Mutex::new(first),
        }
    }

    fn first(&self, shard: ShardId) -> Option<(ShardSnapshot, HeadProof)> {
        self.first.lock().ok()?.get(&shard).cloned()
    }

    fn lie(&self, mut snap: ShardSnapshot) -> ShardSnapshot {
        match self.tamper {
            Tamper::FlipByte => {
                if let Some(o) = snap.objects.first_mut() {
                    let mut bytes = o.state.as_bytes().to_vec();
                    if let Some(last) = bytes.last_mut() {
                        *last ^= 1;
                    }
                    if let Ok(state) = ObjectState::from_bytes(bytes) {
                        o.state = state;
                    }
                }
            }
            Tamper::DropTombstone => {
                if let Some((old, _)) = self.first(snap.head.shard) {
                    let mut all: BTreeMap<ObjectId, _> = old.objects.into_iter().map(|o| (o.id, o)).collect();
                    for o in snap.objects {
                        all.insert(o.id, o);
                    }
                    snap.objects = all.into_values().collect();
                }
            }
            Tamper::ReplayOldHead => {
                if let Some((old, _)) = self.first(snap.head.shard) {
                    return old;
                }
            }
        }
        let mut digest = Digest::EMPTY;
        for o in &snap.objects {
            digest.add(o.id, o.version, &state_hash(o.state.as_bytes()));
        }
        snap.head.digest = digest;
        snap
    }
}

impl StoreLayer for TamperingStore {
    fn inner(&self) -> &dyn WorldStore {
        &*self.inner
    }
    fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError> {
        Ok(StoreLayer::snapshot(self, shard)?.head)
    }
    fn changes_since(&self, shard: ShardId, _: Seq) -> Result<ChangesSince, ReadError> {
        Ok(ChangesSince::BehindHorizon {
            head: StoreLayer::shard_head(self, shard)?,
        })
    }
    fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
        let snap = StoreLayer::snapshot(self, shard)?;
        Ok((snap.head, snap.objects.iter().map(|o| (o.id, o.version)).collect()))
    }
    fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
        Ok(self.lie(self.inner.snapshot(shard)?))
    }
}

impl ProofSource for TamperingStore {
    /// The origin's real signature, whatever is served with it.
    fn prove(&self, snap: &ShardSnapshot) -> Result<HeadProof, String> {
        let shard = snap.head.shard;
        if self.tamper == Tamper::ReplayOldHead
            && let Some((_, proof)) = self.first(shard)
        {
            return Ok(proof);
        }
        let head = self.inner.shard_head(shard).map_err(|e| e.to_string())?;
        self.inner
            .held(shard, head.seq)
            .ok_or_else(|| format!("no signed head of shard {shard}"))
    }
}
