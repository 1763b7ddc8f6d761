//! Length-prefixed frames, and a sans-IO decoder that takes bytes as they
//! arrive and yields whole frames, never buffering more than the limit.

/// Why a byte stream is not a valid frame sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame announces more bytes than the stream's limit.
    #[error("frame of {len} bytes is over the {limit} byte limit")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A frame with no type byte.
    #[error("empty frame")]
    Empty,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} of {want} bytes)")]
    Truncated {
        /// Bytes received of the frame.
        have: usize,
        /// Bytes announced.
        want: usize,
    },
}

/// Encodes one frame: `length u32 BE ‖ type ‖ body`.
pub fn encode_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// Splits a byte stream into frames. Feed bytes with [`FrameDecoder::push`],
/// take frames with [`FrameDecoder::next_frame`].
#[derive(Debug)]
pub struct FrameDecoder {
    limit: usize,
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`: frames are taken by moving
    /// it, and the bytes before it are dropped only when more arrive (one
    /// move per push, not one per frame taken).
    start: usize,
}

impl FrameDecoder {
    /// A decoder for a stream whose frames may be at most `limit` bytes.
    pub fn new(limit: usize) -> FrameDecoder {
        FrameDecoder {
            limit,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes are buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame as `(type, body)`, `Ok(None)` if more bytes are
    /// needed. The length is checked against the limit as soon as its four
    /// bytes arrive, so an oversized frame is refused before it is buffered.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
        let rest = &self.buf[self.start..];
        if rest.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge { len, limit: self.limit });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if rest.len() < 4 + len {
            return Ok(None);
        }
        let kind = rest[4];
        let body = rest[5..4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some((kind, body)))
    }

    /// Checks that the stream did not end inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        let rest = &self.buf[self.start..];
        if rest.is_empty() {
            return Ok(());
        }
        let want = if rest.len() >= 4 {
            u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize + 4
        } else {
            4
        };
        Err(FrameError::Truncated { have: rest.len(), want })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_any_boundary() {
        let mut stream = encode_frame(1, b"hello");
        stream.extend(encode_frame(2, b""));
        stream.extend(encode_frame(3, &[9; 300]));
        for chunk in [1, 2, 3, 7, 1000] {
            let mut d = FrameDecoder::new(1024);
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().expect("valid") {
                    frames.push(f);
                }
            }
            assert_eq!(frames, vec![(1, b"hello".to_vec()), (2, vec![]), (3, vec![9; 300])]);
            d.finish().expect("clean end");
        }
    }

    #[test]
    fn oversized_and_empty_frames_are_refused_early() {
        let mut d = FrameDecoder::new(100);
        d.push(&[0, 0, 1, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { len: 256, limit: 100 }));
        let mut d = FrameDecoder::new(100);
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        let mut d = FrameDecoder::new(100);
        d.push(&[0, 0, 0, 9, 1]);
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.finish().is_err());
    }
}
