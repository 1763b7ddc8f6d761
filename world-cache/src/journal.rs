//! A shard's journal: live deltas received while in a zone, appended to a
//! file beside the shard so a big shard is not rewritten on every tick. It is
//! folded into the shard file on zone exit or when it grows past a size.
//!
//! Record: `magic "HJR1" (4) ‖ payload length u32 LE ‖ blake3(payload) (32) ‖ payload`.
//! Payload: `epoch u64 ‖ base u64 ‖ new_hwm u64 ‖ digest (40) ‖ tombstone
//! count u32 ‖ ids u64… ‖ upsert count u32 ‖ (id u64 ‖ version u64 ‖ len u32 ‖ state)…`,
//! all little-endian.
//!
//! Appends are not fsynced: a crash can lose or tear the tail, and replay
//! stops at the first record that is incomplete or fails its checksum. Each
//! record names the hwm it applies to, so replay applies a record only to the
//! copy it was written for; the base plus any valid prefix is always a
//! complete copy at some hwm.

use hoard_engine::digest::DIGEST_BYTES;
use hoard_engine::state::MAX_STATE_BYTES;
use hoard_engine::{Digest, Epoch, ObjectId, ObjectState, Seq};

use crate::apply::{ShardUpdate, UpdateKind};
use crate::format::CachedObject;

const MAGIC: [u8; 4] = *b"HJR1";
const RECORD_HEADER: usize = 4 + 4 + 32;
/// Largest payload of one record.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Encodes a delta as a journal record. Only deltas are journalled.
pub fn encode_record(update: &ShardUpdate) -> Option<Vec<u8>> {
    let UpdateKind::Delta { base, tombstones } = &update.kind else {
        return None;
    };
    let mut payload = Vec::new();
    payload.extend_from_slice(&update.epoch.0.to_le_bytes());
    payload.extend_from_slice(&base.0.to_le_bytes());
    payload.extend_from_slice(&update.new_hwm.0.to_le_bytes());
    payload.extend_from_slice(&update.digest.to_bytes());
    payload.extend_from_slice(&(tombstones.len() as u32).to_le_bytes());
    for id in tombstones {
        payload.extend_from_slice(&id.0.to_le_bytes());
    }
    payload.extend_from_slice(&(update.upserts.len() as u32).to_le_bytes());
    for o in &update.upserts {
        payload.extend_from_slice(&o.id.0.to_le_bytes());
        payload.extend_from_slice(&o.version.0.to_le_bytes());
        payload.extend_from_slice(&(o.state.as_bytes().len() as u32).to_le_bytes());
        payload.extend_from_slice(o.state.as_bytes());
    }
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(blake3::hash(&payload).as_bytes());
    out.extend_from_slice(&payload);
    Some(out)
}

/// The records of a journal, and whether it ended in a damaged or torn record.
#[derive(Debug, Default)]
pub struct Replay {
    /// Valid records, in order.
    pub records: Vec<ShardUpdate>,
    /// Whether bytes after the last valid record were ignored.
    pub torn: bool,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| {
            let mut x = [0u8; 8];
            x.copy_from_slice(s);
            u64::from_le_bytes(x)
        })
    }
}

fn decode_payload(payload: &[u8]) -> Option<ShardUpdate> {
    let mut r = Reader { b: payload, at: 0 };
    let epoch = Epoch(r.u64()?);
    let base = Seq(r.u64()?);
    let new_hwm = Seq(r.u64()?);
    let mut digest = [0u8; DIGEST_BYTES];
    digest.copy_from_slice(r.take(DIGEST_BYTES)?);
    let n_tomb = r.u32()? as usize;
    // Counts are bounded by the bytes present before allocating.
    if n_tomb > payload.len() / 8 {
        return None;
    }
    let mut tombstones = Vec::with_capacity(n_tomb);
    for _ in 0..n_tomb {
        tombstones.push(ObjectId(r.u64()?));
    }
    let n_up = r.u32()? as usize;
    if n_up > payload.len() / 20 {
        return None;
    }
    let mut upserts = Vec::with_capacity(n_up);
    for _ in 0..n_up {
        let id = ObjectId(r.u64()?);
        let version = Seq(r.u64()?);
        let len = r.u32()? as usize;
        if len > MAX_STATE_BYTES {
            return None;
        }
        let state = ObjectState::from_bytes(r.take(len)?.to_vec()).ok()?;
        upserts.push(CachedObject { id, version, state });
    }
    if r.at != payload.len() {
        return None;
    }
    Some(ShardUpdate {
        epoch,
        new_hwm,
        digest: Digest::from_bytes(&digest),
        kind: UpdateKind::Delta { base, tombstones },
        upserts,
    })
}

/// Reads every valid record from the start of a journal.
pub fn replay(bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    let mut r = Reader { b: bytes, at: 0 };
    while r.at < bytes.len() {
        let record = (|| {
            if r.take(4)? != MAGIC {
                return None;
            }
            let len = r.u32()? as usize;
            if len > MAX_RECORD_BYTES {
                return None;
            }
            let mut checksum = [0u8; 32];
            checksum.copy_from_slice(r.take(32)?);
            let payload = r.take(len)?;
            if blake3::hash(payload).as_bytes() != &checksum {
                return None;
            }
            decode_payload(payload)
        })();
        match record {
            Some(update) => out.records.push(update),
            None => {
                out.torn = true;
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_engine::state::StateBuilder;

    fn update(n: u64) -> ShardUpdate {
        ShardUpdate {
            epoch: Epoch(3),
            new_hwm: Seq(n + 1),
            digest: Digest::EMPTY,
            kind: UpdateKind::Delta {
                base: Seq(n),
                tombstones: vec![ObjectId(n)],
            },
            upserts: vec![CachedObject {
                id: ObjectId(100 + n),
                version: Seq(n + 1),
                state: StateBuilder::new().component("x", vec![n as u8]).finish(),
            }],
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let mut bytes = Vec::new();
        for n in 0..3 {
            bytes.extend(encode_record(&update(n)).expect("delta"));
        }
        let replay = super::replay(&bytes);
        assert_eq!(replay.records, (0..3).map(update).collect::<Vec<_>>());
        assert!(!replay.torn);
        for cut in 1..bytes.len() {
            let r = super::replay(&bytes[..cut]);
            assert!(r.records.len() <= 3);
            assert_eq!(r.records, (0..r.records.len() as u64).map(update).collect::<Vec<_>>());
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let r = super::replay(&flipped);
        assert_eq!(r.records.len(), 2);
        assert!(r.torn);
    }
}
