//! `Packed` (0x9A): whole frames of an answer or delta stream compressed
//! together, and the stream decoder that expands them.
//!
//! A client lists the codecs it reads in `Hello.codecs`; the server then
//! sends runs of frames as one `Packed` frame where that saves bytes. The
//! content of a `Packed` is a run of ordinary frames (`length ‖ type ‖
//! body`), which the receiver handles in order as if they had come on the
//! stream in its place. Digests are over the canonical objects, never over
//! compressed bytes, so compression changes nothing a client verifies.
//!
//! Limits are checked before anything is decompressed: a known codec, a
//! declared size of at most [`MAX_PACKED_BYTES`], and at most
//! [`MAX_PACK_RATIO`] times the compressed bytes; the decompressor writes
//! into a buffer of exactly the declared size and fails past it, and the
//! result must be exactly that size and hold only whole frames, none of
//! them `Packed`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::frame::{FrameDecoder, FrameError};
use super::msg::{DecodeError, Message};

/// Codec 1: one Zstandard frame (RFC 8878), no dictionary.
pub const CODEC_ZSTD: u8 = 1;
/// The codecs this build reads and writes, in order of preference.
pub const CODECS: &[u8] = &[CODEC_ZSTD];
/// Largest content (the frames inside) of one `Packed`.
pub const MAX_PACKED_BYTES: usize = 8 * 1024 * 1024;
/// Largest declared size of a `Packed` per compressed byte. A sender whose
/// frames compress better than this sends them unpacked instead.
pub const MAX_PACK_RATIO: usize = 64;
/// Runs of frames shorter than this are sent as they are: compression
/// would save a few bytes at most, for a compressor's call on each side.
pub const PACK_MIN_BYTES: usize = 512;
/// The Zstandard level the reference server compresses with. Over the
/// reference zone's objects level 1 gives 0.609 of their bytes at about
/// 300 MB/s a core, level 3 0.591–0.605 at about 165 MB/s (`zstd -b1 -e3`):
/// the objects' strings are mostly random letters, which only entropy
/// coding shrinks, so the slower levels buy little.
pub const PACK_LEVEL: i32 = 1;

/// `0x9A` server → client, on an answer or delta stream: frames compressed
/// together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    /// The codec ([`CODEC_ZSTD`]); one the client listed in `Hello.codecs`.
    pub codec: u8,
    /// The content's length once decompressed.
    pub size: u32,
    /// The compressed content.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Why a `Packed` frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackedError {
    /// The stream does not carry `Packed` (the control stream), or the
    /// client did not ask for compression.
    #[error("a packed frame where none may come")]
    NotAllowed,
    /// The codec is not one this build reads.
    #[error("packed frame of unknown codec {0}")]
    UnknownCodec(u8),
    /// The declared size is over [`MAX_PACKED_BYTES`].
    #[error("packed frame declares {size} bytes, over the {MAX_PACKED_BYTES} byte limit")]
    TooLarge {
        /// The declared size.
        size: usize,
    },
    /// The declared size is over [`MAX_PACK_RATIO`] times the compressed bytes.
    #[error("packed frame declares {size} bytes from {compressed}, over the {MAX_PACK_RATIO}× ratio")]
    Ratio {
        /// The declared size.
        size: usize,
        /// The compressed bytes.
        compressed: usize,
    },
    /// The compressed bytes do not decompress to the declared size.
    #[error("packed frame does not decompress to its {declared} bytes: {reason}")]
    Corrupt {
        /// The declared size.
        declared: usize,
        /// The decompressor's complaint, or the size it got.
        reason: String,
    },
    /// A `Packed` inside a `Packed`.
    #[error("a packed frame inside a packed frame")]
    Nested,
    /// The content is not whole frames.
    #[error("packed content: {0}")]
    Frames(#[from] FrameError),
}

/// Decompresses `packed`'s content: whole frames, checked against every
/// limit first.
pub fn unpack(packed: &Packed) -> Result<Vec<u8>, PackedError> {
    if !CODECS.contains(&packed.codec) {
        return Err(PackedError::UnknownCodec(packed.codec));
    }
    let size = packed.size as usize;
    if size > MAX_PACKED_BYTES {
        return Err(PackedError::TooLarge { size });
    }
    if size > packed.data.len().saturating_mul(MAX_PACK_RATIO) {
        return Err(PackedError::Ratio {
            size,
            compressed: packed.data.len(),
        });
    }
    let corrupt = |reason: String| PackedError::Corrupt { declared: size, reason };
    // The output buffer is exactly the declared size: content past it is
    // an error from the decompressor, not an allocation. Each thread keeps
    // one decompressor: making one allocates and clears its tables, which
    // cost a process of a thousand clients more than the decompressing.
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let out = DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new()?);
        }
        match cell.as_mut() {
            Some(d) => d.decompress(&packed.data, size),
            None => Err(std::io::Error::other("no decompressor")),
        }
    });
    let out = out.map_err(|e| corrupt(e.to_string()))?;
    if out.len() != size {
        return Err(corrupt(format!("{} bytes", out.len())));
    }
    Ok(out)
}

/// Compresses runs of whole frames into `Packed` frames where that saves
/// bytes. One per thread or task that sends; it keeps its compressor's
/// memory between calls.
pub struct Packer {
    compressor: zstd::bulk::Compressor<'static>,
    codec: u8,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer").field("codec", &self.codec).finish()
    }
}

impl Packer {
    /// A packer for `codec`; `None` if this build does not write it (or the
    /// compressor cannot be made).
    pub fn new(codec: u8) -> Option<Packer> {
        if codec != CODEC_ZSTD {
            return None;
        }
        let mut compressor = zstd::bulk::Compressor::new(PACK_LEVEL).ok()?;
        // QUIC protects the bytes and the digests check the objects: the
        // frame checksum would be 4 bytes for nothing.
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(false))
            .ok()?;
        Some(Packer { compressor, codec })
    }

    /// The codec it writes.
    pub fn codec(&self) -> u8 {
        self.codec
    }

    /// The first codec of `offered` this build writes.
    pub fn choose(offered: &[u8]) -> Option<u8> {
        offered.iter().copied().find(|c| CODECS.contains(c))
    }

    /// Appends `frames` (whole frames, back to back) to `out`: runs of
    /// them packed where that is smaller, each run at most
    /// [`MAX_PACKED_BYTES`]; a run under [`PACK_MIN_BYTES`], a frame larger
    /// than a run, or a run that would not shrink (or would pass the ratio
    /// cap) as it is.
    pub fn pack_into(&mut self, frames: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        while start < frames.len() {
            let end = run_end(frames, start);
            if end == start {
                // Not a whole frame (a caller's bug): sent as it is, so the
                // receiver reports it rather than this side hiding it.
                out.extend_from_slice(&frames[start..]);
                return;
            }
            self.pack_run(&frames[start..end], out);
            start = end;
        }
    }

    fn pack_run(&mut self, run: &[u8], out: &mut Vec<u8>) {
        if run.len() < PACK_MIN_BYTES || run.len() > MAX_PACKED_BYTES {
            out.extend_from_slice(run);
            return;
        }
        let Ok(data) = self.compressor.compress(run) else {
            out.extend_from_slice(run);
            return;
        };
        // The frame header and the message's own bytes: under 16.
        let packed_len = data.len() + 16;
        if packed_len >= run.len() || run.len() > data.len() * MAX_PACK_RATIO {
            out.extend_from_slice(run);
            return;
        }
        let message = Message::Packed(Packed {
            codec: self.codec,
            size: run.len() as u32,
            data,
        });
        out.extend_from_slice(&message.to_frame());
    }
}

/// The end of the run of frames starting at `start`: as many whole frames
/// as fit [`MAX_PACKED_BYTES`], or the one frame there if it alone is
/// larger. `start` itself if no whole frame starts there.
fn run_end(frames: &[u8], start: usize) -> usize {
    let mut end = start;
    while let Some(len) = frame_len(&frames[end..]) {
        if end > start && end + len - start > MAX_PACKED_BYTES {
            break;
        }
        end += len;
        if end - start > MAX_PACKED_BYTES {
            break;
        }
    }
    end
}

/// The whole length (header included) of the frame at the start of
/// `bytes`, if one is there whole.
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let head: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let len = 4 + u32::from_be_bytes(head) as usize;
    (len > 4 && bytes.len() >= len).then_some(len)
}

/// Why a stream's bytes are not messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamDecodeError {
    /// The bytes are not frames.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame is not a message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A `Packed` frame was refused.
    #[error(transparent)]
    Packed(#[from] PackedError),
}

/// Splits a stream's bytes into messages, expanding `Packed` frames where
/// the stream may carry them. Each message comes with the bytes it cost on
/// the stream: its frame's length, or for a message that came packed its
/// share of the `Packed` frame (the shares of one `Packed` add up to its
/// length exactly).
#[derive(Debug)]
pub struct StreamDecoder {
    frames: FrameDecoder,
    packed_allowed: bool,
    unpacked: VecDeque<(Message, usize)>,
}

impl StreamDecoder {
    /// A decoder for a stream whose frames may be at most `limit` bytes and
    /// that carries no `Packed` (the control stream).
    pub fn new(limit: usize) -> StreamDecoder {
        StreamDecoder {
            frames: FrameDecoder::new(limit),
            packed_allowed: false,
            unpacked: VecDeque::new(),
        }
    }

    /// A decoder for an answer or delta stream: frames up to
    /// [`super::MAX_BULK_FRAME`], `Packed` expanded.
    pub fn bulk() -> StreamDecoder {
        StreamDecoder {
            frames: FrameDecoder::new(super::MAX_BULK_FRAME),
            packed_allowed: true,
            unpacked: VecDeque::new(),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
    }

    /// The next message and what it cost on the stream; `Ok(None)` if more
    /// bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<(Message, usize)>, StreamDecodeError> {
        if let Some(next) = self.unpacked.pop_front() {
            return Ok(Some(next));
        }
        let Some((kind, body)) = self.frames.next_frame()? else {
            return Ok(None);
        };
        let len = body.len() + 5;
        match Message::decode(kind, &body)? {
            Message::Packed(packed) => {
                if !self.packed_allowed {
                    return Err(PackedError::NotAllowed.into());
                }
                self.unpacked = expand(&packed, len)?;
                Ok(self.unpacked.pop_front())
            }
            msg => Ok(Some((msg, len))),
        }
    }

    /// Checks that the stream did not end inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        self.frames.finish()
    }
}

/// The messages inside `packed` (whose frame was `wire_len` bytes), each
/// with its share of `wire_len`.
fn expand(packed: &Packed, wire_len: usize) -> Result<VecDeque<(Message, usize)>, StreamDecodeError> {
    let content = unpack(packed)?;
    let mut inner = FrameDecoder::new(super::MAX_BULK_FRAME);
    inner.push(&content);
    let mut messages = Vec::new();
    while let Some((kind, body)) = inner.next_frame().map_err(PackedError::from)? {
        let msg = Message::decode(kind, &body)?;
        if matches!(msg, Message::Packed(_)) {
            return Err(PackedError::Nested.into());
        }
        messages.push((msg, body.len() + 5));
    }
    inner.finish().map_err(PackedError::from)?;
    // Shares in proportion to each frame's bytes, the rounding left to
    // the last, so they add up to the packed frame's length.
    let total: usize = messages.iter().map(|(_, len)| len).sum();
    let mut given = 0;
    let count = messages.len();
    Ok(messages
        .into_iter()
        .enumerate()
        .map(|(i, (msg, len))| {
            let share = if i + 1 == count {
                wire_len - given
            } else {
                (wire_len * len).checked_div(total).unwrap_or(0)
            };
            given += share;
            (msg, share)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Transient, encode_frame};

    fn transient(n: usize) -> Vec<u8> {
        Message::Transient(Transient {
            zone: hoard_engine::ZoneId::new("meadow").expect("zone"),
            payload: b"abcdefgh".repeat(n),
        })
        .to_frame()
    }

    #[test]
    fn packed_runs_read_back_as_the_frames_they_hold_with_their_bytes_shared() {
        let mut frames = Vec::new();
        for n in [1, 40, 3, 200] {
            frames.extend(transient(n));
        }
        let mut packer = Packer::new(CODEC_ZSTD).expect("zstd");
        let mut wire = Vec::new();
        packer.pack_into(&frames, &mut wire);
        assert!(wire.len() < frames.len() / 4, "{} of {}", wire.len(), frames.len());
        assert_eq!(wire[4], 0x9A, "one packed frame");
        let mut plain = StreamDecoder::bulk();
        plain.push(&frames);
        let mut packed = StreamDecoder::bulk();
        packed.push(&wire);
        let mut shares = 0;
        for _ in 0..4 {
            let (want, _) = plain.next_message().expect("plain").expect("a message");
            let (got, share) = packed.next_message().expect("packed").expect("a message");
            assert_eq!(got, want);
            shares += share;
        }
        assert_eq!(shares, wire.len());
        assert_eq!(packed.next_message(), Ok(None));
        packed.finish().expect("whole");
    }

    #[test]
    fn small_or_incompressible_runs_go_as_they_are() {
        let mut packer = Packer::new(CODEC_ZSTD).expect("zstd");
        let small = transient(2);
        let mut out = Vec::new();
        packer.pack_into(&small, &mut out);
        assert_eq!(out, small);
        let mut rng = fastrand::Rng::with_seed(1);
        let noise: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
        let frame = encode_frame(0xA1, &noise);
        out.clear();
        packer.pack_into(&frame, &mut out);
        assert_eq!(out, frame);
    }

    #[test]
    fn limits_hold_before_anything_is_decompressed() {
        let content = transient(100);
        let data = zstd::bulk::compress(&content, 1).expect("compress");
        let ok = Packed {
            codec: CODEC_ZSTD,
            size: content.len() as u32,
            data: data.clone(),
        };
        assert_eq!(unpack(&ok), Ok(content.clone()));
        let unknown = Packed { codec: 9, ..ok.clone() };
        assert_eq!(unpack(&unknown), Err(PackedError::UnknownCodec(9)));
        let huge = Packed {
            size: (MAX_PACKED_BYTES + 1) as u32,
            ..ok.clone()
        };
        assert!(matches!(unpack(&huge), Err(PackedError::TooLarge { .. })));
        // A bomb: a megabyte of zeros in a few dozen bytes.
        let zeros = zstd::bulk::compress(&vec![0u8; 1 << 20], 19).expect("compress");
        let bomb = Packed {
            codec: CODEC_ZSTD,
            size: 1 << 20,
            data: zeros,
        };
        assert!(matches!(unpack(&bomb), Err(PackedError::Ratio { .. })));
        // Declared smaller or larger than the content.
        let short = Packed {
            size: content.len() as u32 - 1,
            ..ok.clone()
        };
        assert!(matches!(unpack(&short), Err(PackedError::Corrupt { .. })));
        let long = Packed {
            size: content.len() as u32 + 1,
            ..ok.clone()
        };
        assert!(matches!(unpack(&long), Err(PackedError::Corrupt { .. })));
    }

    #[test]
    fn a_packed_frame_is_refused_where_none_may_come_and_inside_another() {
        let mut packer = Packer::new(CODEC_ZSTD).expect("zstd");
        let mut once = Vec::new();
        packer.pack_into(&transient(100), &mut once);
        let mut control = StreamDecoder::new(1 << 20);
        control.push(&once);
        assert_eq!(
            control.next_message(),
            Err(StreamDecodeError::Packed(PackedError::NotAllowed))
        );
        let twice = Message::Packed(Packed {
            codec: CODEC_ZSTD,
            size: once.len() as u32,
            data: zstd::bulk::compress(&once, 1).expect("compress"),
        })
        .to_frame();
        let mut bulk = StreamDecoder::bulk();
        bulk.push(&twice);
        assert_eq!(bulk.next_message(), Err(StreamDecodeError::Packed(PackedError::Nested)));
        // Content that ends inside a frame.
        let cut = &transient(100)[..50];
        let torn = Message::Packed(Packed {
            codec: CODEC_ZSTD,
            size: cut.len() as u32,
            data: zstd::bulk::compress(cut, 1).expect("compress"),
        })
        .to_frame();
        let mut bulk = StreamDecoder::bulk();
        bulk.push(&torn);
        assert!(matches!(
            bulk.next_message(),
            Err(StreamDecodeError::Packed(PackedError::Frames(_)))
        ));
    }

    #[test]
    fn runs_stay_under_the_packed_limit() {
        // Three frames of 3 MiB: the first two make one run, the third another.
        let big = encode_frame(0xA1, &vec![7u8; 3 << 20]);
        let mut frames = big.clone();
        frames.extend(&big);
        frames.extend(&big);
        assert_eq!(run_end(&frames, 0), 2 * big.len());
        assert_eq!(run_end(&frames, 2 * big.len()), 3 * big.len());
        let huge = encode_frame(0xA1, &vec![7u8; 9 << 20]);
        assert_eq!(
            run_end(&huge, 0),
            huge.len(),
            "a frame over the limit is a run of its own"
        );
    }
}
