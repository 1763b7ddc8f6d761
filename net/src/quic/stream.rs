//! Reading and writing frames on quinn streams.

// Reached from other crates only through `hoard_net::testing`.
#![cfg_attr(not(feature = "testing"), allow(unreachable_pub))]

use quinn::{RecvStream, SendStream};

use hoard_proto::wire::{FrameError, Message, StreamDecodeError, StreamDecoder};

/// Why a stream could not be read as messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The bytes are not frames, a frame not a message, or a packed frame
    /// was refused.
    #[error(transparent)]
    Bytes(#[from] StreamDecodeError),
    /// The stream failed.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
}

impl From<FrameError> for StreamError {
    fn from(e: FrameError) -> StreamError {
        StreamError::Bytes(e.into())
    }
}

/// Reads messages from a quinn stream.
pub struct FrameReader {
    recv: RecvStream,
    decoder: StreamDecoder,
}

impl FrameReader {
    /// Reads frames of at most `limit` bytes, none of them `Packed` (the
    /// control stream).
    pub fn new(recv: RecvStream, limit: usize) -> FrameReader {
        FrameReader {
            recv,
            decoder: StreamDecoder::new(limit),
        }
    }

    /// Reads an answer or delta stream: frames up to the bulk limit,
    /// `Packed` ones expanded.
    pub fn bulk(recv: RecvStream) -> FrameReader {
        FrameReader {
            recv,
            decoder: StreamDecoder::bulk(),
        }
    }

    /// The next message already received and buffered, without waiting:
    /// `Ok(None)` if reading another would have to wait for the network.
    pub fn next_buffered(&mut self) -> Result<Option<(Message, usize)>, StreamError> {
        Ok(self.decoder.next_message()?)
    }

    /// The next message and its frame length; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<(Message, usize)>, StreamError> {
        loop {
            if let Some(next) = self.decoder.next_message()? {
                return Ok(Some(next));
            }
            match self.recv.read_chunk(256 * 1024, true).await? {
                Some(chunk) => self.decoder.push(&chunk.bytes),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }
}

/// Writes one message as a frame.
pub(crate) async fn write_message(send: &mut SendStream, msg: &Message) -> Result<usize, StreamError> {
    let frame = msg.to_frame();
    send.write_all(&frame).await?;
    Ok(frame.len())
}

/// Frames for one connection as they go on the wire: with `codec` (the
/// session's, from its `Hello`) runs of them packed where that saves bytes,
/// otherwise as they are. Each thread keeps one compressor (its memory is
/// reused from call to call).
pub(crate) fn packed(codec: Option<u8>, frames: Vec<u8>) -> Vec<u8> {
    use hoard_proto::wire::{PACK_MIN_BYTES, Packer};
    use std::cell::RefCell;
    thread_local! {
        static PACKER: RefCell<Option<Packer>> = const { RefCell::new(None) };
    }
    let Some(codec) = codec else { return frames };
    if frames.len() < PACK_MIN_BYTES {
        return frames;
    }
    PACKER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|p| p.codec() != codec) {
            *cell = Packer::new(codec);
        }
        match cell.as_mut() {
            Some(packer) => {
                let mut out = Vec::with_capacity(frames.len() / 2);
                packer.pack_into(&frames, &mut out);
                out
            }
            None => frames,
        }
    })
}
