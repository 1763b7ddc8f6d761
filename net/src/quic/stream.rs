//! Reading and writing frames on quinn streams.

// Reached from other crates only through `hoard_net::testing`.
#![cfg_attr(not(feature = "testing"), allow(unreachable_pub))]

use quinn::{RecvStream, SendStream};

use hoard_proto::wire::{DecodeError, FrameDecoder, FrameError, Message};

/// Why a stream could not be read as frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The bytes are not frames.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame is not a message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The stream failed.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
}

/// Reads frames from a quinn stream.
pub struct FrameReader {
    recv: RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    /// Reads frames of at most `limit` bytes.
    pub fn new(recv: RecvStream, limit: usize) -> FrameReader {
        FrameReader {
            recv,
            decoder: FrameDecoder::new(limit),
        }
    }

    /// The next message and its frame length; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<(Message, usize)>, StreamError> {
        loop {
            if let Some((kind, body)) = self.decoder.next_frame()? {
                let len = body.len() + 5;
                return Ok(Some((Message::decode(kind, &body)?, len)));
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
