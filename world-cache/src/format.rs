//! The shard file format: a fixed header with its own checksum, the objects,
//! and a blake3 checksum of everything before it. See `docs/CACHE-FORMAT.md`
//! for the byte diagram, invariants and crash analysis.
//!
//! The header comes first and carries its own checksum, so a zone's heads are
//! read from the first bytes of each file without reading or decoding the
//! objects. Every length is checked against the bytes actually present before
//! anything is allocated: a file claiming gigabytes costs nothing.

use chrono::{TimeZone, Utc};
use hoard_engine::digest::DIGEST_BYTES;
use hoard_engine::state::{MAX_STATE_BYTES, StateError};
use hoard_engine::{Digest, Epoch, ObjectId, ObjectState, RegistryHash, Seq, ServerIdentity, ShardId, ZoneId};

use hoard_engine::shard::ShardKey;
pub use hoard_engine::shard::{CachedObject, CachedShard, ShardHeader, recompute_digest};

/// First bytes of every shard file.
pub const MAGIC: [u8; 8] = *b"HOARDSHD";
/// The format this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Longest header: fixed fields, three names of at most 64 bytes, checksum.
pub const MAX_HEADER_BYTES: usize = 512;
/// Bytes of a blake3 checksum.
pub const CHECKSUM_BYTES: usize = 32;
/// Bytes of the fixed part of the header, before the names.
const FIXED_HEADER_BYTES: usize = 164;
/// Bytes of one object record before its state.
const OBJECT_RECORD_HEADER: usize = 20;

/// Why bytes are not a valid shard file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than the smallest possible file or header.
    #[error("file is truncated: {len} bytes")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// The magic bytes are wrong: not a shard file.
    #[error("not a hoard shard file (bad magic)")]
    BadMagic,
    /// Written by a newer format.
    #[error("format version {found} is newer than {FORMAT_VERSION}, the newest this build reads")]
    FutureVersion {
        /// The version in the file.
        found: u16,
    },
    /// A version no build ever wrote.
    #[error("format version {found} was never written")]
    UnknownVersion {
        /// The version in the file.
        found: u16,
    },
    /// The header length field is out of range.
    #[error("header length {0} is out of range")]
    HeaderLength(usize),
    /// The header checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// A name in the header is invalid.
    #[error("header field {field} is invalid")]
    BadName {
        /// Which field.
        field: &'static str,
    },
    /// The file is not as long as the header says.
    #[error("file is {actual} bytes but its header describes {expected}")]
    Length {
        /// Length implied by the header.
        expected: u64,
        /// Length found.
        actual: u64,
    },
    /// The whole-file checksum does not match.
    #[error("file checksum mismatch")]
    Checksum,
    /// An object record runs past the body.
    #[error("object record {index} runs past the end of the body")]
    ObjectTruncated {
        /// Position of the record.
        index: u64,
    },
    /// An object's state is too large or not canonical.
    #[error("object {id}: {error}")]
    State {
        /// The object.
        id: ObjectId,
        /// What is wrong.
        error: StateError,
    },
    /// Objects are not in strictly ascending id order.
    #[error("object {0} is out of order or duplicated")]
    Order(ObjectId),
    /// The header's object count disagrees with the body.
    #[error("header counts {header} objects, the body holds {body}")]
    Count {
        /// Count in the header.
        header: u64,
        /// Objects in the body.
        body: u64,
    },
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names are validated to at most 64 bytes when keys are built.
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

/// Encodes the header (with its checksum) for a body of `body_len` bytes.
fn encode_header(shard: &CachedShard, body_len: u64) -> Vec<u8> {
    let h = &shard.header;
    let mut out = Vec::with_capacity(MAX_HEADER_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]); // header length, patched below
    out.extend_from_slice(&h.key.server.0);
    out.extend_from_slice(&h.registry.0);
    out.extend_from_slice(&h.key.shard.0.to_le_bytes());
    out.extend_from_slice(&h.epoch.0.to_le_bytes());
    out.extend_from_slice(&h.hwm.0.to_le_bytes());
    out.extend_from_slice(&h.digest.to_bytes());
    out.extend_from_slice(&(shard.objects.len() as u64).to_le_bytes());
    out.extend_from_slice(&h.snapshot_time.timestamp_millis().to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    debug_assert_eq!(out.len(), FIXED_HEADER_BYTES);
    put_name(&mut out, &h.key.service);
    put_name(&mut out, h.key.perspective.as_deref().unwrap_or(""));
    put_name(&mut out, h.key.zone.as_str());
    let header_len = (out.len() + CHECKSUM_BYTES) as u16;
    out[10..12].copy_from_slice(&header_len.to_le_bytes());
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

/// Encodes a whole shard file.
pub fn encode_shard(shard: &CachedShard) -> Vec<u8> {
    let body_len: usize = shard
        .objects
        .iter()
        .map(|o| OBJECT_RECORD_HEADER + o.state.as_bytes().len())
        .sum();
    let mut out = encode_header(shard, body_len as u64);
    out.reserve(body_len + CHECKSUM_BYTES);
    for object in &shard.objects {
        out.extend_from_slice(&object.id.0.to_le_bytes());
        out.extend_from_slice(&object.version.0.to_le_bytes());
        out.extend_from_slice(&(object.state.as_bytes().len() as u32).to_le_bytes());
        out.extend_from_slice(object.state.as_bytes());
    }
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn name_at<'a>(b: &'a [u8], at: &mut usize, end: usize, field: &'static str) -> Result<&'a str, FormatError> {
    let len = *b.get(*at).ok_or(FormatError::BadName { field })? as usize;
    let start = *at + 1;
    if start + len > end {
        return Err(FormatError::BadName { field });
    }
    *at = start + len;
    std::str::from_utf8(&b[start..start + len]).map_err(|_| FormatError::BadName { field })
}

/// A decoded header and the lengths it implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The header.
    pub header: ShardHeader,
    /// The object count it states.
    pub count: u64,
    /// Header length in bytes.
    pub header_len: usize,
    /// Body length in bytes.
    pub body_len: u64,
}

impl HeaderInfo {
    /// The file length the header implies.
    pub fn file_len(&self) -> u64 {
        self.header_len as u64 + self.body_len + CHECKSUM_BYTES as u64
    }
}

/// Decodes and checks a header from the first bytes of a file (at least the
/// header; more is ignored).
pub fn decode_header(prefix: &[u8]) -> Result<HeaderInfo, FormatError> {
    if prefix.len() < 12 {
        return Err(FormatError::Truncated { len: prefix.len() });
    }
    if prefix[..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u16_at(prefix, 8);
    if version > FORMAT_VERSION {
        return Err(FormatError::FutureVersion { found: version });
    }
    if version == 0 {
        return Err(FormatError::UnknownVersion { found: version });
    }
    let header_len = u16_at(prefix, 10) as usize;
    if !(FIXED_HEADER_BYTES + 3 + CHECKSUM_BYTES..=MAX_HEADER_BYTES).contains(&header_len) {
        return Err(FormatError::HeaderLength(header_len));
    }
    if prefix.len() < header_len {
        return Err(FormatError::Truncated { len: prefix.len() });
    }
    let body_end = header_len - CHECKSUM_BYTES;
    if blake3::hash(&prefix[..body_end]).as_bytes() != &prefix[body_end..header_len] {
        return Err(FormatError::HeaderChecksum);
    }
    let b = prefix;
    let mut server = [0u8; 32];
    server.copy_from_slice(&b[12..44]);
    let mut registry = [0u8; 32];
    registry.copy_from_slice(&b[44..76]);
    let shard = ShardId(u64_at(b, 76));
    let epoch = Epoch(u64_at(b, 84));
    let hwm = Seq(u64_at(b, 92));
    let mut digest = [0u8; DIGEST_BYTES];
    digest.copy_from_slice(&b[100..140]);
    let count = u64_at(b, 140);
    let time_ms = u64_at(b, 148) as i64;
    let body_len = u64_at(b, 156);
    let mut at = FIXED_HEADER_BYTES;
    let service = name_at(b, &mut at, body_end, "service")?;
    let perspective = name_at(b, &mut at, body_end, "perspective")?;
    let zone = name_at(b, &mut at, body_end, "zone")?;
    if at != body_end {
        return Err(FormatError::HeaderLength(header_len));
    }
    let zone = ZoneId::new(zone).map_err(|_| FormatError::BadName { field: "zone" })?;
    let perspective = (!perspective.is_empty()).then_some(perspective);
    let key =
        ShardKey::new(ServerIdentity(server), service, perspective, zone, shard).map_err(|_| FormatError::BadName {
            field: "service or perspective",
        })?;
    let snapshot_time = Utc
        .timestamp_millis_opt(time_ms)
        .single()
        .ok_or(FormatError::BadName { field: "snapshot time" })?;
    Ok(HeaderInfo {
        header: ShardHeader {
            key,
            epoch,
            hwm,
            digest: Digest::from_bytes(&digest),
            registry: RegistryHash(registry),
            snapshot_time,
        },
        count,
        header_len,
        body_len,
    })
}

/// Decodes a whole shard file, checking the file checksum, the header, every
/// object record, id order and the object count. The digest is not
/// recomputed here (see [`recompute_digest`]): the writer verified it before
/// writing and the checksum proves the bytes are the ones written.
pub fn decode_shard(bytes: &[u8]) -> Result<CachedShard, FormatError> {
    let info = decode_header(bytes)?;
    if info.file_len() != bytes.len() as u64 {
        return Err(FormatError::Length {
            expected: info.file_len(),
            actual: bytes.len() as u64,
        });
    }
    let (content, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    if blake3::hash(content).as_bytes() != checksum {
        return Err(FormatError::Checksum);
    }
    let body = &content[info.header_len..];
    // Each record takes at least its fixed header, so the count is bounded
    // by the body actually present before anything is allocated.
    let max_records = body.len() / OBJECT_RECORD_HEADER;
    if info.count > max_records as u64 {
        return Err(FormatError::Count {
            header: info.count,
            body: max_records as u64,
        });
    }
    let mut objects = Vec::with_capacity(info.count as usize);
    let mut at = 0usize;
    let mut index = 0u64;
    while at < body.len() {
        if body.len() - at < OBJECT_RECORD_HEADER {
            return Err(FormatError::ObjectTruncated { index });
        }
        let id = ObjectId(u64_at(body, at));
        let version = Seq(u64_at(body, at + 8));
        let mut len = [0u8; 4];
        len.copy_from_slice(&body[at + 16..at + 20]);
        let len = u32::from_le_bytes(len) as usize;
        at += OBJECT_RECORD_HEADER;
        if len > MAX_STATE_BYTES {
            return Err(FormatError::State {
                id,
                error: StateError::TooLarge { len },
            });
        }
        if body.len() - at < len {
            return Err(FormatError::ObjectTruncated { index });
        }
        let state =
            ObjectState::from_bytes(body[at..at + len].to_vec()).map_err(|error| FormatError::State { id, error })?;
        at += len;
        if let Some(prev) = objects.last().map(|o: &CachedObject| o.id)
            && prev >= id
        {
            return Err(FormatError::Order(id));
        }
        objects.push(CachedObject { id, version, state });
        index += 1;
    }
    if index != info.count || info.count != info.header.digest.count() {
        return Err(FormatError::Count {
            header: info.count,
            body: index,
        });
    }
    Ok(CachedShard {
        header: info.header,
        objects,
    })
}
