//! Every message of the protocol, its type code, and its encoding.
//!
//! Bodies are rmp-serde compact encodings: a struct is a MessagePack array of
//! its fields in declaration order. Hashes, digests and object states are
//! `bin`; ids and seqs are unsigned integers; names are `str`.

use hoard_engine::digest::DIGEST_BYTES;
use hoard_engine::{Digest, Epoch, ObjectId, Seq, ShardId, ZoneId};
use serde::{Deserialize, Serialize};

use super::frame::encode_frame;
use super::packed::Packed;

mod digest_bin {
    use super::{DIGEST_BYTES, Digest};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&d.to_bytes())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let bytes = serde_bytes::ByteArray::<DIGEST_BYTES>::deserialize(d)?;
        Ok(Digest::from_bytes(&bytes))
    }
}

mod hash_bin {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(h)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        Ok(serde_bytes::ByteArray::<32>::deserialize(d)?.into_array())
    }
}

/// Object lists on the wire are columnar, which roughly halves their
/// per-object overhead: `[ids, versions, states]` where `ids` holds the first
/// id, then the (positive) gaps between ascending ids; `versions` holds the
/// highest version, then each object's distance below it; `states` holds each
/// state as `bin`. Small gaps and distances encode as one-byte fixints.
mod object_list {
    use serde::de::Error as _;
    use serde::ser::SerializeTuple;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::WireObject;
    use hoard_engine::{ObjectId, Seq};

    pub(super) fn serialize<S: Serializer>(objects: &[WireObject], s: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<&WireObject> = objects.iter().collect();
        sorted.sort_by_key(|o| o.id);
        let mut ids = Vec::with_capacity(sorted.len());
        let mut previous = None;
        for o in &sorted {
            ids.push(match previous {
                None => o.id.0,
                Some(p) => o.id.0 - p,
            });
            previous = Some(o.id.0);
        }
        let max = sorted.iter().map(|o| o.version.0).max().unwrap_or(0);
        let mut versions = Vec::with_capacity(sorted.len() + 1);
        versions.push(max);
        versions.extend(sorted.iter().map(|o| max - o.version.0));
        let states: Vec<&serde_bytes::Bytes> = sorted.iter().map(|o| serde_bytes::Bytes::new(&o.state)).collect();
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&ids)?;
        t.serialize_element(&versions)?;
        t.serialize_element(&states)?;
        t.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<WireObject>, D::Error> {
        let (ids, versions, states): (Vec<u64>, Vec<u64>, Vec<serde_bytes::ByteBuf>) = Deserialize::deserialize(d)?;
        if versions.len() != ids.len() + 1 || states.len() != ids.len() {
            return Err(D::Error::custom("object list columns differ in length"));
        }
        let max = versions[0];
        let mut out = Vec::with_capacity(ids.len());
        let mut id = 0u64;
        for (i, ((gap, below), state)) in ids.into_iter().zip(&versions[1..]).zip(states).enumerate() {
            id = if i == 0 {
                gap
            } else if gap == 0 {
                return Err(D::Error::custom("object ids are not strictly ascending"));
            } else {
                id.checked_add(gap)
                    .ok_or_else(|| D::Error::custom("object id overflows"))?
            };
            let version = max
                .checked_sub(*below)
                .ok_or_else(|| D::Error::custom("object version below zero"))?;
            out.push(WireObject {
                id: ObjectId(id),
                version: Seq(version),
                state: state.into_vec(),
            });
        }
        Ok(out)
    }
}

/// Id lists on the wire: the first id, then the positive gaps between
/// ascending ids (a dense shard's live list costs about a byte per object).
mod id_list {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use hoard_engine::ObjectId;

    pub(super) fn serialize<S: Serializer>(ids: &[ObjectId], s: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<u64> = ids.iter().map(|i| i.0).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut gaps = Vec::with_capacity(sorted.len());
        let mut previous = None;
        for id in sorted {
            gaps.push(previous.map_or(id, |p| id - p));
            previous = Some(id);
        }
        gaps.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ObjectId>, D::Error> {
        let gaps: Vec<u64> = Deserialize::deserialize(d)?;
        let mut out = Vec::with_capacity(gaps.len());
        let mut id = 0u64;
        for (i, gap) in gaps.into_iter().enumerate() {
            id = if i == 0 {
                gap
            } else if gap == 0 {
                return Err(D::Error::custom("ids are not strictly ascending"));
            } else {
                id.checked_add(gap).ok_or_else(|| D::Error::custom("id overflows"))?
            };
            out.push(ObjectId(id));
        }
        Ok(out)
    }
}

/// `[shards, hwms]`: the shards a client holds, as an IdList (first id,
/// then gaps ≥ 1), and their hwms as a column like ObjectList's versions
/// (the highest hwm `V`, then `V − hwm` per shard, in shard order). A warm
/// zone whose shards last changed together costs about two bytes a shard.
mod held_list {
    use serde::de::Error as _;
    use serde::ser::SerializeTuple;
    use serde::{Deserialize, Deserializer, Serializer};

    use hoard_engine::{Seq, ShardId};

    pub(super) fn serialize<S: Serializer>(held: &[(ShardId, Seq)], s: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<(u64, u64)> = held.iter().map(|(sh, seq)| (sh.0, seq.0)).collect();
        sorted.sort_unstable();
        sorted.dedup_by_key(|(sh, _)| *sh);
        let mut gaps = Vec::with_capacity(sorted.len());
        let mut previous = None;
        for (shard, _) in &sorted {
            gaps.push(previous.map_or(*shard, |p| shard - p));
            previous = Some(*shard);
        }
        let max = sorted.iter().map(|(_, h)| *h).max().unwrap_or(0);
        let mut hwms = Vec::with_capacity(sorted.len() + 1);
        hwms.push(max);
        hwms.extend(sorted.iter().map(|(_, h)| max - h));
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&gaps)?;
        t.serialize_element(&hwms)?;
        t.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(ShardId, Seq)>, D::Error> {
        let (gaps, hwms): (Vec<u64>, Vec<u64>) = Deserialize::deserialize(d)?;
        if hwms.len() != gaps.len() + 1 {
            return Err(D::Error::custom("held shards and hwms differ in length"));
        }
        let max = hwms[0];
        let mut out = Vec::with_capacity(gaps.len());
        let mut shard = 0u64;
        for (i, (gap, below)) in gaps.into_iter().zip(&hwms[1..]).enumerate() {
            shard = if i == 0 {
                gap
            } else if gap == 0 {
                return Err(D::Error::custom("held shards are not strictly ascending"));
            } else {
                shard
                    .checked_add(gap)
                    .ok_or_else(|| D::Error::custom("shard id overflows"))?
            };
            let hwm = max
                .checked_sub(*below)
                .ok_or_else(|| D::Error::custom("hwm below zero"))?;
            out.push((ShardId(shard), Seq(hwm)));
        }
        Ok(out)
    }
}

/// A client's cached copy of one shard, as named in `EnterZone`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHave {
    /// The shard.
    pub shard: ShardId,
    /// The copy's epoch.
    pub epoch: Epoch,
    /// The seq the copy is complete up to.
    pub hwm: Seq,
    /// The copy's digest.
    #[serde(with = "digest_bin")]
    pub digest: Digest,
}

/// An object on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireObject {
    /// Its id.
    pub id: ObjectId,
    /// Its version.
    pub version: Seq,
    /// Its canonical state bytes.
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

/// One entry of a repair request: what the client holds of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairEntry {
    /// The object.
    pub id: ObjectId,
    /// Its version in the copy.
    pub version: Seq,
    /// The first 8 bytes of blake3 of its state in the copy.
    #[serde(with = "serde_bytes")]
    pub hash: [u8; 8],
}

/// `0x01` client → server, first on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`super::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The client's component registry hash.
    #[serde(with = "hash_bin")]
    pub registry: [u8; 32],
    /// The service to use.
    pub service: String,
    /// The perspective's token.
    pub token: String,
    /// The codecs the client reads `Packed` frames in ([`super::CODECS`]),
    /// in its order of preference; empty: send nothing packed. Absent in
    /// an encoding means empty.
    #[serde(default)]
    pub codecs: Vec<u8>,
    /// Whether the client wants the world's signed token keys in `Welcome`
    /// (a relay does, to check its own players' world tokens). Absent in an
    /// encoding means false, and false is not encoded.
    #[serde(default, skip_serializing_if = "is_false")]
    pub token_keys: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `0x02` client → server: bring a zone's shards up to date (and subscribe).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterZone {
    /// Request id, echoed in the answer.
    pub request: u32,
    /// The zone.
    pub zone: ZoneId,
    /// Whether to receive live deltas afterwards.
    pub subscribe: bool,
    /// Cached copies named by their full head (epoch, hwm, digest): the
    /// server compares each with its own.
    pub have: Vec<ShardHave>,
    /// Cached copies named by their hwm only (the compact form): a shard at
    /// the server's seq is confirmed for all of them at once by `Fresh`.
    /// Shards in neither list are fetched whole.
    #[serde(with = "held_list")]
    pub held: Vec<(ShardId, Seq)>,
    /// Whether each shard answer (and each live delta) should come with the
    /// origin's signed head, `HeadProof` (relays ask for it; a relay's own
    /// clients always get it). Absent in an encoding means `false`.
    #[serde(default)]
    pub proofs: bool,
}

/// `0x03` client → server: stop live deltas of a zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveZone {
    /// The zone.
    pub zone: ZoneId,
}

/// `0x04` client → server: a shard's digest did not match after applying;
/// here is what the copy holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    /// Request id, echoed in the answer.
    pub request: u32,
    /// The zone.
    pub zone: ZoneId,
    /// The shard.
    pub shard: ShardId,
    /// The hwm of the copy (before the update that did not match).
    pub hwm: Seq,
    /// Every object of the copy.
    pub have: Vec<RepairEntry>,
}

/// `0x05` client → server: a game intent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Client-chosen sequence number, echoed in a rejection.
    pub seq: u32,
    /// The registered intent name.
    pub kind: String,
    /// The intent's MessagePack encoding.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The player's Ed25519 signature over the intent
    /// ([`crate::intent_sig::intent_statement`]) when the session's token
    /// binds a key; empty (and not encoded) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The world's token keys, signed by the world's key: what lets a relay
/// (and a relay of relays) check world tokens without trusting whoever
/// passed the list on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTokenKeys {
    /// The accepted token keys, each a 32-byte Ed25519 public key, at most
    /// [`crate::world_token::MAX_TOKEN_KEYS`].
    pub keys: Vec<serde_bytes::ByteArray<32>>,
    /// The TLS `SignatureScheme` code of `signature`.
    pub scheme: u16,
    /// The world key's signature over
    /// [`crate::world_token::token_keys_statement`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// `0x86` server → client: sign your intents under this nonce (the session's
/// token binds a key). Sent once, after `Welcome`; through a relay, the
/// origin's nonce passed down when the relay's session for the player
/// opens. Intents are numbered 1, 2, 3, … under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentNonce {
    /// 16 random bytes.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
}

/// `0x81` server → client: the handshake succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// [`super::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The server identity (cache namespace).
    #[serde(with = "hash_bin")]
    pub server: [u8; 32],
    /// The authenticated perspective.
    pub perspective: String,
    /// The zones this perspective may enter.
    pub zones: Vec<ZoneId>,
    /// Server ticks per second (live deltas arrive at most this often).
    pub tick_hz: u32,
    /// The world's public key (the SubjectPublicKeyInfo DER whose BLAKE3 is
    /// `server`), which verifies signed shard heads; at most
    /// [`MAX_WORLD_KEY_BYTES`]. Absent in an encoding means empty (a server
    /// that signs nothing).
    #[serde(default, with = "serde_bytes")]
    pub world_key: Vec<u8>,
    /// The world's signed token keys, when `Hello.token_keys` asked for
    /// them and the server has them; absent (not encoded) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_keys: Option<SignedTokenKeys>,
}

/// Longest world key a `Welcome` may carry.
pub const MAX_WORLD_KEY_BYTES: usize = 1024;

/// `0x82` server → client: a fatal error; the connection closes after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// An [`ErrorCode`] value.
    pub code: u16,
    /// A sentence for people.
    pub message: String,
}

/// `0x83` server → client: an `EnterZone` or `Repair` was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneDenied {
    /// The request.
    pub request: u32,
    /// The zone.
    pub zone: ZoneId,
    /// An [`ErrorCode`] value.
    pub code: u16,
    /// A sentence for people.
    pub message: String,
}

/// `0x85` server → client: the zone of an `EnterZone` is served by another
/// server of the same world: connect there (the world's identity is the
/// same, so the cache stays valid) and enter it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneElsewhere {
    /// The request.
    pub request: u32,
    /// The zone.
    pub zone: ZoneId,
    /// The serving server's address, `host:port`, at most
    /// [`MAX_ADDRESS_BYTES`] bytes.
    pub address: String,
}

/// Longest server address a `ZoneElsewhere` may carry.
pub const MAX_ADDRESS_BYTES: usize = 255;

/// `0x84` server → client: an intent was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRejected {
    /// The intent's seq.
    pub seq: u32,
    /// An [`ErrorCode`] value.
    pub code: u16,
    /// A sentence for people.
    pub message: String,
}

/// `0x90` server → client, first on an answer stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerBegin {
    /// The request answered.
    pub request: u32,
    /// The zone.
    pub zone: ZoneId,
    /// How many shard answers follow.
    pub shards: u32,
}

/// `0x91`: the copy is current.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpToDate {
    /// The shard.
    pub shard: ShardId,
    /// The server's seq (equal to the copy's hwm).
    pub seq: Seq,
}

/// `0x92`: the changes after the copy's hwm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// The shard.
    pub shard: ShardId,
    /// Its epoch.
    pub epoch: Epoch,
    /// The copy's hwm the changes follow.
    pub base: Seq,
    /// The seq they lead to.
    pub seq: Seq,
    /// The digest at `seq`.
    #[serde(with = "digest_bin")]
    pub digest: Digest,
    /// Objects that left after `base`.
    #[serde(with = "id_list")]
    pub tombstones: Vec<ObjectId>,
    /// Objects changed after `base`.
    #[serde(with = "object_list")]
    pub upserts: Vec<WireObject>,
}

/// `0x93`: the copy is behind the tombstone horizon (or being repaired):
/// every live id, and the objects the copy lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The shard.
    pub shard: ShardId,
    /// Its epoch.
    pub epoch: Epoch,
    /// The copy's hwm.
    pub base: Seq,
    /// The seq it leads to.
    pub seq: Seq,
    /// The digest at `seq`.
    #[serde(with = "digest_bin")]
    pub digest: Digest,
    /// Every live id, ascending.
    #[serde(with = "id_list")]
    pub live: Vec<ObjectId>,
    /// Objects newer than `base` (or, in a repair, differing from the copy).
    #[serde(with = "object_list")]
    pub upserts: Vec<WireObject>,
}

/// `0x94`: the whole shard (no copy, or another epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The shard.
    pub shard: ShardId,
    /// Its epoch.
    pub epoch: Epoch,
    /// The seq of the snapshot.
    pub seq: Seq,
    /// The digest at `seq`.
    #[serde(with = "digest_bin")]
    pub digest: Digest,
    /// The perspective it is scoped to, if any (the client caches it there).
    pub perspective: Option<String>,
    /// Every live object, ascending by id.
    #[serde(with = "object_list")]
    pub objects: Vec<WireObject>,
}

/// `0x98` server → client on an answer stream, just before `AnswerEnd`: which
/// shards of the entry's compact `held` list are at the server's seq, and
/// the root over the server's heads of exactly those shards
/// ([`fresh_root`](super::fresh_root)). A client whose own heads give the
/// same root holds every one of them up to date; otherwise the tags point
/// at the copies to repair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fresh {
    /// One bit per shard of the entry's `held` list in ascending shard
    /// order (bit 0 is the lowest bit of the first byte): set when that
    /// shard is at the server's seq. `ceil(len(held) / 8)` bytes; bits past
    /// the list are 0.
    #[serde(with = "serde_bytes")]
    pub mask: Vec<u8>,
    /// One byte per set bit, in the same order: the tag of the server's
    /// head ([`head_tag`](super::head_tag)).
    #[serde(with = "serde_bytes")]
    pub tags: Vec<u8>,
    /// The root over the server's heads of the shards the mask selects.
    #[serde(with = "serde_bytes")]
    pub root: [u8; 32],
}

impl Fresh {
    /// The shards `mask` selects from `held` (ascending, as sent), or why
    /// the mask does not fit the list.
    pub fn selected(&self, held: &[ShardId]) -> Result<Vec<ShardId>, String> {
        if self.mask.len() != held.len().div_ceil(8) {
            return Err(format!(
                "Fresh has a {}-byte mask for {} held shards",
                self.mask.len(),
                held.len()
            ));
        }
        let mut out = Vec::new();
        for (i, byte) in self.mask.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    let shard = held
                        .get(i * 8 + bit)
                        .ok_or_else(|| "Fresh sets a bit past the held list".to_owned())?;
                    out.push(*shard);
                }
            }
        }
        if out.len() != self.tags.len() {
            return Err(format!(
                "Fresh selects {} shards but has {} tags",
                out.len(),
                self.tags.len()
            ));
        }
        Ok(out)
    }
}

/// `0x99` server → client, on an answer or delta stream just before the
/// shard message it proves (an `UpToDate`, `Changes`, `Manifest`,
/// `Snapshot` or `Delta` of the same shard): the origin's signature over
/// the shard's head after that message. Sent when the entry asked for
/// proofs, and always by a relay. The statement signed is
/// [`signed_statement`](crate::proof::signed_statement).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadProof {
    /// The shard.
    pub shard: ShardId,
    /// Its epoch.
    pub epoch: Epoch,
    /// The seq of the head.
    pub seq: Seq,
    /// The digest (and count) at `seq`.
    #[serde(with = "digest_bin")]
    pub digest: Digest,
    /// The set root of the live objects at `seq`
    /// ([`set_root`](hoard_engine::set_root)).
    #[serde(with = "hash_bin")]
    pub root: [u8; 32],
    /// The signature scheme, by its TLS 1.3 `SignatureScheme` code
    /// (`0x0403` ECDSA P-256 SHA-256, `0x0503` ECDSA P-384 SHA-384,
    /// `0x0807` Ed25519).
    pub scheme: u16,
    /// The signature over the statement, at most [`MAX_SIGNATURE_BYTES`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Longest signature a `HeadProof` may carry.
pub const MAX_SIGNATURE_BYTES: usize = 512;

/// `0x95` server → client, last on an answer stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerEnd {
    /// The request answered.
    pub request: u32,
}

/// `0xA1` server → client on the delta stream: a zone's transient state —
/// game data that is never stored (who stands where), each one replacing the
/// previous for its zone. Sent when it changes, and once on subscribing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transient {
    /// The zone.
    pub zone: ZoneId,
    /// The game's encoding of the state (at most [`super::MAX_TRANSIENT_BYTES`]).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// `0xA4` server → client on the delta stream: a zone's transient state as
/// a change of the one sent before it (see [`crate::transient`]). It
/// replaces the previous state as a [`Transient`] would.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransientPatch {
    /// The zone.
    pub zone: ZoneId,
    /// The state it applies to: the first 8 bytes of the BLAKE3 hash of
    /// that payload ([`crate::transient::base_tag`]).
    #[serde(with = "serde_bytes")]
    pub base: Vec<u8>,
    /// The operations, in order (at most [`super::MAX_TRANSIENT_PATCH_OPS`]).
    pub ops: Vec<PatchOp>,
}

/// `0xA5` server → client on the delta stream: a message of the game to
/// this player (to them alone, to everyone in a zone, or to everyone), of a
/// kind both ends registered. Not stored; sent after the deltas of the
/// frame that wrote it, once they are durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameMessage {
    /// Its registered kind (at most [`super::MAX_GAME_MESSAGE_KIND`] bytes).
    pub kind: String,
    /// The zone it was sent to, if it went to a zone's players.
    pub zone: Option<ZoneId>,
    /// Its MessagePack encoding (at most [`super::MAX_GAME_MESSAGE_BYTES`]).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// One operation of a [`TransientPatch`]: copy `.1` bytes of the base from
/// offset `.0`, then append the bytes `.2`. Encoded as a 3-array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchOp(pub u32, pub u32, #[serde(with = "serde_bytes")] pub Vec<u8>);

/// `0xA0` server → client on the delta stream: one shard's committed change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The zone.
    pub zone: ZoneId,
    /// The shard.
    pub shard: ShardId,
    /// Its epoch.
    pub epoch: Epoch,
    /// The seq this delta follows.
    pub base: Seq,
    /// The seq it leads to.
    pub seq: Seq,
    /// The digest at `seq`.
    #[serde(with = "digest_bin")]
    pub digest: Digest,
    /// Objects that left.
    #[serde(with = "id_list")]
    pub tombstones: Vec<ObjectId>,
    /// Objects written.
    #[serde(with = "object_list")]
    pub upserts: Vec<WireObject>,
}

/// `0xA2` server → client on the delta stream: whether the server accepts
/// actions. Sent to every connection when the world store starts failing
/// (intents are then rejected with [`ErrorCode::Unavailable`]) and when it
/// recovers; a client shows the message to its player.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Whether intents are accepted.
    pub writable: bool,
    /// A sentence for people.
    pub message: String,
}

/// `0x96` server → client, on an answer or delta stream: the next message
/// on this stream (a `Changes`, `Manifest`, `Snapshot` or `Delta`) carries
/// only the first part of its object list; `count` `More` frames follow it
/// at once with the rest. A shard message of any allowed size thus travels in
/// frames under the limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts {
    /// How many `More` frames follow the announced message.
    pub count: u32,
}

/// `0x97` server → client: more objects of the message announced by `Parts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct More {
    /// Further objects, ascending by id (each part in itself).
    #[serde(with = "object_list")]
    pub objects: Vec<WireObject>,
}

/// `0xA3` server → client on the delta stream: these intents were processed
/// by a tick whose changes are now durable, and the deltas they caused were
/// sent before this message on the same stream. An intent the game ignored
/// (a move into a wall) is processed too; a refused one gets
/// `IntentRejected` instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processed {
    /// The intents' seqs, as the client sent them.
    pub seqs: Vec<u32>,
}

/// Error codes carried by `Error`, `ZoneDenied` and `IntentRejected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Bytes that are not a frame, an unknown type, a body that does not decode.
    Protocol = 1,
    /// The client speaks another protocol version.
    Version = 2,
    /// The client's component registry differs from the server's.
    Registry = 3,
    /// The token is malformed, forged or for another server.
    BadToken = 4,
    /// The token has expired.
    Expired = 5,
    /// No such service.
    UnknownService = 6,
    /// No such zone.
    UnknownZone = 7,
    /// The perspective may not read that zone or shard.
    Forbidden = 8,
    /// A limit was exceeded (shards per entry, frame size, ...).
    Limit = 9,
    /// Too many messages too fast.
    RateLimited = 10,
    /// The client names a seq or epoch the server never issued.
    BadCursor = 11,
    /// The client does not read fast enough.
    SlowConsumer = 12,
    /// The server is shutting down or failed internally.
    Server = 13,
    /// The token is already in use by another live connection.
    TokenInUse = 14,
    /// The server cannot apply actions now (its store is failing); retry later.
    Unavailable = 15,
    /// The connection did not finish its handshake or `Hello` in time.
    Timeout = 16,
    /// A signed intent did not verify or came out of order: it was altered,
    /// lost, reordered or replayed on the way (the session ends).
    BadIntent = 17,
}

/// Declares [`Message`] and its type codes once, so encoding, decoding and
/// the code of each variant cannot disagree.
macro_rules! messages {
    ($($code:literal => $variant:ident($body:ty),)*) => {
        /// Every message, by type code.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Message {
            $(
                #[doc = concat!("`", stringify!($code), "`")]
                $variant($body),
            )*
        }

        impl Message {
            /// The message's type code.
            pub fn kind(&self) -> u8 {
                match self {
                    $(Message::$variant(_) => $code,)*
                }
            }

            /// The body bytes.
            pub fn body(&self) -> Vec<u8> {
                match self {
                    $(Message::$variant(m) => body(m),)*
                }
            }

            /// Decodes a frame's type and body.
            pub fn decode(kind: u8, bytes: &[u8]) -> Result<Message, DecodeError> {
                Ok(match kind {
                    $($code => Message::$variant(decode_body(kind, bytes)?),)*
                    other => return Err(DecodeError::UnknownType(other)),
                })
            }
        }
    };
}

messages! {
    0x01 => Hello(Hello),
    0x02 => EnterZone(EnterZone),
    0x03 => LeaveZone(LeaveZone),
    0x04 => Repair(Repair),
    0x05 => Intent(Intent),
    0x81 => Welcome(Welcome),
    0x82 => Error(ErrorMsg),
    0x83 => ZoneDenied(ZoneDenied),
    0x84 => IntentRejected(IntentRejected),
    0x85 => ZoneElsewhere(ZoneElsewhere),
    0x86 => IntentNonce(IntentNonce),
    0x90 => AnswerBegin(AnswerBegin),
    0x91 => UpToDate(UpToDate),
    0x92 => Changes(Changes),
    0x93 => Manifest(Manifest),
    0x94 => Snapshot(Snapshot),
    0x95 => AnswerEnd(AnswerEnd),
    0x96 => Parts(Parts),
    0x97 => More(More),
    0x98 => Fresh(Fresh),
    0x99 => HeadProof(HeadProof),
    0x9A => Packed(Packed),
    0xA0 => Delta(Delta),
    0xA1 => Transient(Transient),
    0xA2 => Status(Status),
    0xA3 => Processed(Processed),
    0xA4 => TransientPatch(TransientPatch),
    0xA5 => GameMessage(GameMessage),
}

/// Why a frame's body is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The type code is not one of the protocol's.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The body does not decode as that type.
    #[error("message type 0x{kind:02x} does not decode: {reason}")]
    Body {
        /// The type code.
        kind: u8,
        /// The decoder's complaint.
        reason: String,
    },
}

fn body<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    rmp_serde::to_vec(value).unwrap_or_default()
}

fn decode_body<T: for<'de> Deserialize<'de>>(kind: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    let mut de = rmp_serde::Deserializer::new(bytes);
    let value = T::deserialize(&mut de).map_err(|e| DecodeError::Body {
        kind,
        reason: e.to_string(),
    })?;
    let rest = de.into_inner();
    if !rest.is_empty() {
        return Err(DecodeError::Body {
            kind,
            reason: format!("{} bytes after the message", rest.len()),
        });
    }
    Ok(value)
}

impl Message {
    /// The whole frame.
    pub fn to_frame(&self) -> Vec<u8> {
        encode_frame(self.kind(), &self.body())
    }
}
