//! The wire protocol: frames, message types and their encoding. The full
//! byte-level specification is `docs/PROTOCOL.md`; this module is its
//! implementation and must agree with it (the golden tests hold both still).
//!
//! A frame is `length (u32, big-endian) ‖ type (u8) ‖ body`, where `length`
//! counts the type byte and the body, and the body is the MessagePack encoding
//! (rmp-serde, compact: structs are arrays of their fields in order) of the
//! message for that type. Each stream kind has a frame size limit; a frame
//! over it, an unknown type or a body that does not decode is a protocol
//! error that closes the connection with a reason.

mod frame;
mod msg;
mod packed;
mod parts;

pub use frame::{FrameDecoder, FrameError, encode_frame};
pub use msg::*;
pub use packed::{
    CODEC_ZSTD, CODECS, MAX_PACK_RATIO, MAX_PACKED_BYTES, PACK_LEVEL, PACK_MIN_BYTES, Packed, PackedError, Packer,
    StreamDecodeError, StreamDecoder, unpack,
};
pub use parts::{Assembler, PART_BYTES, PartsError, object_bytes, split};

/// The ALPN protocol id of hoard over QUIC.
pub const ALPN: &[u8] = b"hoard/1";
/// The protocol version carried in `Hello` and `Welcome`.
pub const PROTOCOL_VERSION: u32 = 11;

/// Largest frame a client may send on the control stream.
pub const MAX_CONTROL_FRAME: usize = 256 * 1024;
/// Largest frame on answer and delta streams (one shard's answer).
pub const MAX_BULK_FRAME: usize = 32 * 1024 * 1024;
/// Largest shard message a client reassembles from `Parts` and `More`.
pub const MAX_ASSEMBLED_BYTES: usize = 1024 * 1024 * 1024;
/// Most `More` frames one message may announce.
pub const MAX_PARTS: u32 = 65_536;
/// Most shards one `EnterZone` may name.
pub const MAX_SHARDS_PER_ENTRY: usize = 4096;
/// Most objects one `Repair` may list: as many as fit one control frame at
/// the largest encoding of an entry ([`MAX_REPAIR_ENTRY_BYTES`]). A client
/// whose copy holds more lists the first `MAX_REPAIR_OBJECTS` by id; the
/// server sends every object not listed, so a shard of any size can be
/// repaired.
pub const MAX_REPAIR_OBJECTS: usize = 8_192;
/// The largest encoding of one `RepairEntry`: a 3-element array header (1),
/// two u64 (9 each), a bin8 (2 + 8).
pub const MAX_REPAIR_ENTRY_BYTES: usize = 1 + 9 + 9 + 10;

// A full `Repair` (entries plus the frame, request, zone, shard and hwm, well
// under 1 KiB) fits one control frame.
const _: () = assert!(MAX_REPAIR_OBJECTS * MAX_REPAIR_ENTRY_BYTES + 1024 <= MAX_CONTROL_FRAME);
/// Largest intent payload.
pub const MAX_INTENT_BYTES: usize = 16 * 1024;
/// The largest transient payload a server sends for one zone.
pub const MAX_TRANSIENT_BYTES: usize = 64 * 1024;
/// Most operations one `TransientPatch` holds.
pub const MAX_TRANSIENT_PATCH_OPS: usize = 4096;
/// Largest payload of one `GameMessage`.
pub const MAX_GAME_MESSAGE_BYTES: usize = 16 * 1024;
/// Longest name of a game message's kind.
pub const MAX_GAME_MESSAGE_KIND: usize = 64;

/// The root of `Fresh`: BLAKE3 of `"hoard-fresh-root-v1"` followed, for each
/// shard in ascending id order, by `u64le(shard) ‖ u64le(epoch) ‖ u64le(seq)
/// ‖ digest` (the digest's 40 wire bytes). Server and client compute it
/// over their own heads of the same shards; equal roots mean equal heads.
pub fn fresh_root(
    heads: &[(
        hoard_engine::ShardId,
        hoard_engine::Epoch,
        hoard_engine::Seq,
        hoard_engine::Digest,
    )],
) -> [u8; 32] {
    let mut sorted: Vec<_> = heads.to_vec();
    sorted.sort_by_key(|(shard, ..)| *shard);
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"hoard-fresh-root-v1");
    for (shard, epoch, seq, digest) in sorted {
        hasher.update(&shard.0.to_le_bytes());
        hasher.update(&epoch.0.to_le_bytes());
        hasher.update(&seq.0.to_le_bytes());
        hasher.update(&digest.to_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// The tag of one head in `Fresh.tags`: the first byte of BLAKE3 of
/// `u64le(shard) ‖ u64le(epoch) ‖ u64le(seq) ‖ digest`. It only points at
/// copies that differ; the root is what confirms the others.
pub fn head_tag(
    shard: hoard_engine::ShardId,
    epoch: hoard_engine::Epoch,
    seq: hoard_engine::Seq,
    digest: &hoard_engine::Digest,
) -> u8 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&shard.0.to_le_bytes());
    hasher.update(&epoch.0.to_le_bytes());
    hasher.update(&seq.0.to_le_bytes());
    hasher.update(&digest.to_bytes());
    hasher.finalize().as_bytes()[0]
}
