//! The byte layout of the records the store keeps: shard records and object
//! values. Both decoders check lengths and return typed faults, since the
//! bytes come from disk.

use serde::{Deserialize, Serialize};

use super::error::StoreFault;
use super::{ShardHead, ShardScope};
use crate::digest::{DIGEST_BYTES, Digest};
use crate::ids::{Epoch, ObjectId, Seq, ShardId, ZoneId};
use crate::state::MAX_STATE_BYTES;

/// Largest shard record accepted (a zone name, a perspective name and numbers).
const MAX_SHARD_RECORD_BYTES: usize = 4096;

/// A shard's head as stored. MessagePack (rmp-serde, compact: a fixed-order array).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShardRecord {
    pub(crate) zone: ZoneId,
    pub(crate) epoch: Epoch,
    pub(crate) seq: Seq,
    #[serde(with = "digest_bytes")]
    pub(crate) digest: Digest,
    pub(crate) horizon: Seq,
    pub(crate) scope: ShardScope,
}

mod digest_bytes {
    use super::{DIGEST_BYTES, Digest};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&d.to_bytes())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let bytes = serde_bytes_vec(d)?;
        let arr: [u8; DIGEST_BYTES] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("digest must be 40 bytes"))?;
        Ok(Digest::from_bytes(&arr))
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("40 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(V)
    }
}

impl ShardRecord {
    pub(crate) fn new(zone: ZoneId, scope: ShardScope) -> ShardRecord {
        ShardRecord {
            zone,
            epoch: Epoch::random(),
            seq: Seq::ZERO,
            digest: Digest::EMPTY,
            horizon: Seq::ZERO,
            scope,
        }
    }

    pub(crate) fn head(&self, shard: ShardId) -> ShardHead {
        ShardHead {
            shard,
            zone: self.zone.clone(),
            epoch: self.epoch,
            seq: self.seq,
            digest: self.digest,
            horizon: self.horizon,
            scope: self.scope.clone(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(shard: ShardId, bytes: &[u8]) -> Result<ShardRecord, StoreFault> {
        if bytes.len() > MAX_SHARD_RECORD_BYTES {
            return Err(StoreFault::Corrupt(format!(
                "shard {shard}: record is {} bytes, the limit is {MAX_SHARD_RECORD_BYTES}",
                bytes.len()
            )));
        }
        rmp_serde::from_slice(bytes)
            .map_err(|e| StoreFault::Corrupt(format!("shard {shard}: record does not decode: {e}")))
    }
}

/// A shard scope as an index key: `""` for a shared shard, `"@"` and the
/// perspective's name for a private one, so no perspective's key equals
/// the shared one.
pub(crate) fn scope_key(scope: &ShardScope) -> String {
    match scope {
        ShardScope::Shared => String::new(),
        ShardScope::Perspective(p) => format!("@{p}"),
    }
}

/// The scope a [`scope_key`] names (`None`: not a scope key).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn scope_from_key(key: &str) -> Option<ShardScope> {
    match key.strip_prefix('@') {
        Some(name) => Some(ShardScope::Perspective(name.to_owned())),
        None if key.is_empty() => Some(ShardScope::Shared),
        None => None,
    }
}

/// An object value: its version (8 bytes little-endian) then its state bytes.
pub(crate) fn encode_object(version: Seq, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + state.len());
    out.extend_from_slice(&version.0.to_le_bytes());
    out.extend_from_slice(state);
    out
}

/// Splits an object value without validating the state bytes.
pub(crate) fn split_object(shard: ShardId, id: ObjectId, bytes: &[u8]) -> Result<(Seq, &[u8]), StoreFault> {
    if bytes.len() < 8 || bytes.len() > 8 + MAX_STATE_BYTES {
        return Err(StoreFault::Corrupt(format!(
            "shard {shard} object {id}: value of {} bytes",
            bytes.len()
        )));
    }
    let (version, state) = bytes.split_at(8);
    let mut v = [0u8; 8];
    v.copy_from_slice(version);
    Ok((Seq(u64::from_le_bytes(v)), state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ObjectState;

    #[test]
    fn shard_record_round_trips_and_rejects_garbage() {
        let mut rec = ShardRecord::new(
            ZoneId::new("meadow").expect("valid"),
            ShardScope::Perspective("ann".into()),
        );
        rec.seq = Seq(42);
        rec.digest.add(ObjectId(1), Seq(2), &[3; 32]);
        let bytes = rec.encode();
        assert_eq!(ShardRecord::decode(ShardId(1), &bytes).expect("decodes"), rec);
        assert!(ShardRecord::decode(ShardId(1), &bytes[..bytes.len() - 1]).is_err());
        assert!(ShardRecord::decode(ShardId(1), &[0xff; 10]).is_err());
        assert!(ShardRecord::decode(ShardId(1), &vec![0x90; 5000]).is_err());
    }

    #[test]
    fn object_values_split_and_check() {
        let state = ObjectState::empty();
        let bytes = encode_object(Seq(9), state.as_bytes());
        let (version, raw) = split_object(ShardId(1), ObjectId(2), &bytes).expect("valid");
        assert_eq!((version, raw), (Seq(9), state.as_bytes()));
        assert!(split_object(ShardId(1), ObjectId(2), &bytes[..7]).is_err());
    }
}
