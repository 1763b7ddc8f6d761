//! Shard messages larger than a frame: [`split`] cuts a `Changes`,
//! `Manifest`, `Snapshot` or `Delta` whose objects exceed [`PART_BYTES`] into
//! `Parts { count }`, the message with its first objects, and `count` `More`
//! frames; an [`Assembler`] per stream puts them back together, with limits.

use super::{MAX_ASSEMBLED_BYTES, MAX_PARTS, Message, More, Parts, WireObject};

/// Object bytes one frame carries at most when a message is split (objects
/// are at most 1 MiB, frames at most 32 MiB).
pub const PART_BYTES: usize = 4 * 1024 * 1024;

/// Per-object overhead counted towards a part: id, version and `bin` header.
const OBJECT_OVERHEAD: usize = 24;

/// The object bytes a shard message carries, as counted for splitting (0
/// for other messages).
pub fn object_bytes(msg: &Message) -> usize {
    let objects: &[WireObject] = match msg {
        Message::Changes(m) => &m.upserts,
        Message::Manifest(m) => &m.upserts,
        Message::Snapshot(m) => &m.objects,
        Message::Delta(m) => &m.upserts,
        _ => return 0,
    };
    objects.iter().map(|o| o.state.len() + OBJECT_OVERHEAD).sum()
}

fn objects_of(msg: &mut Message) -> Option<&mut Vec<WireObject>> {
    match msg {
        Message::Changes(m) => Some(&mut m.upserts),
        Message::Manifest(m) => Some(&mut m.upserts),
        Message::Snapshot(m) => Some(&mut m.objects),
        Message::Delta(m) => Some(&mut m.upserts),
        _ => None,
    }
}

/// The frames to send for `msg`: itself, or, when its objects exceed
/// `part_bytes`, `Parts`, itself with its first objects, and `More` frames.
pub fn split(mut msg: Message, part_bytes: usize) -> Vec<Message> {
    if object_bytes(&msg) <= part_bytes {
        return vec![msg];
    }
    let Some(objects) = objects_of(&mut msg) else {
        return vec![msg];
    };
    // Ascending ids in every part, as each list is encoded sorted anyway.
    objects.sort_by_key(|o| o.id);
    let mut groups: Vec<Vec<WireObject>> = vec![Vec::new()];
    let mut size = 0;
    for o in std::mem::take(objects) {
        let len = o.state.len() + OBJECT_OVERHEAD;
        if size + len > part_bytes && groups.last().is_some_and(|g| !g.is_empty()) {
            groups.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(g) = groups.last_mut() {
            g.push(o);
        }
    }
    let mut groups = groups.into_iter();
    *objects = groups.next().unwrap_or_default();
    let rest: Vec<Message> = groups.map(|objects| Message::More(More { objects })).collect();
    let mut out = Vec::with_capacity(rest.len() + 2);
    out.push(Message::Parts(Parts {
        count: rest.len() as u32,
    }));
    out.push(msg);
    out.extend(rest);
    out
}

/// Why parts could not be put together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartsError {
    /// `Parts` announced more frames than allowed.
    #[error("a message announced in {0} parts; the limit is {MAX_PARTS}")]
    TooManyParts(u32),
    /// The parts add up to more than allowed.
    #[error("a message of over {MAX_ASSEMBLED_BYTES} bytes in parts")]
    TooLarge,
    /// A frame out of order: `More` without `Parts`, `Parts` twice, or a
    /// message that cannot be split after `Parts`.
    #[error("{0}")]
    OutOfOrder(String),
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Whole,
    Announced(u32),
    Collecting {
        head: Message,
        remaining: u32,
        bytes: usize,
    },
}

/// Reassembles one stream's split messages. Feed every frame of the stream
/// in order; whole messages come out, each with its bytes on the wire.
#[derive(Debug, Default)]
pub struct Assembler {
    state: State,
}

impl Assembler {
    /// Takes one frame's message; returns a whole message when one is complete.
    pub fn push(&mut self, msg: Message, frame_len: usize) -> Result<Option<(Message, usize)>, PartsError> {
        match (std::mem::take(&mut self.state), msg) {
            (State::Whole, Message::Parts(p)) => {
                if p.count > MAX_PARTS {
                    return Err(PartsError::TooManyParts(p.count));
                }
                self.state = State::Announced(p.count);
                Ok(None)
            }
            (State::Whole, Message::More(_)) => Err(PartsError::OutOfOrder("`More` without `Parts`".into())),
            (State::Whole, msg) => Ok(Some((msg, frame_len))),
            (State::Announced(count), mut msg) => {
                if objects_of(&mut msg).is_none() {
                    return Err(PartsError::OutOfOrder(format!(
                        "`Parts` followed by message type 0x{:02x}",
                        msg.kind()
                    )));
                }
                if count == 0 {
                    return Ok(Some((msg, frame_len)));
                }
                self.state = State::Collecting {
                    head: msg,
                    remaining: count,
                    bytes: frame_len,
                };
                Ok(None)
            }
            (
                State::Collecting {
                    mut head,
                    remaining,
                    bytes,
                },
                Message::More(more),
            ) => {
                let bytes = bytes + frame_len;
                if bytes > MAX_ASSEMBLED_BYTES {
                    return Err(PartsError::TooLarge);
                }
                if let Some(objects) = objects_of(&mut head) {
                    objects.extend(more.objects);
                }
                if remaining == 1 {
                    return Ok(Some((head, bytes)));
                }
                self.state = State::Collecting {
                    head,
                    remaining: remaining - 1,
                    bytes,
                };
                Ok(None)
            }
            (State::Collecting { .. }, other) => Err(PartsError::OutOfOrder(format!(
                "message type 0x{:02x} before the announced `More` frames",
                other.kind()
            ))),
        }
    }

    /// Whether a split message is half received.
    pub fn in_progress(&self) -> bool {
        !matches!(self.state, State::Whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Snapshot;
    use hoard_engine::{Digest, Epoch, ObjectId, Seq, ShardId};

    fn snapshot(n: u64, size: usize) -> Message {
        Message::Snapshot(Snapshot {
            shard: ShardId(1),
            epoch: Epoch(2),
            seq: Seq(3),
            digest: Digest::EMPTY,
            perspective: None,
            objects: (0..n)
                .map(|i| WireObject {
                    id: ObjectId(i),
                    version: Seq(1),
                    state: vec![i as u8; size],
                })
                .collect(),
        })
    }

    #[test]
    fn a_large_message_splits_under_the_part_size_and_reassembles_exactly() {
        let original = snapshot(40, 1000);
        let frames = split(original.clone(), 8 * 1024);
        assert!(frames.len() > 3, "split into parts: {}", frames.len());
        assert!(matches!(frames[0], Message::Parts(Parts { count }) if count as usize == frames.len() - 2));
        for f in &frames {
            assert!(f.body().len() < 8 * 1024 + 512, "a part stays near the part size");
        }
        let mut assembler = Assembler::default();
        let mut out = None;
        for f in frames {
            let len = f.to_frame().len();
            if let Some(done) = assembler.push(f, len).expect("in order") {
                out = Some(done.0);
            }
        }
        assert_eq!(out, Some(original));
        assert!(!assembler.in_progress());
    }

    #[test]
    fn a_small_message_is_sent_whole_and_passes_through() {
        let msg = snapshot(3, 10);
        assert_eq!(split(msg.clone(), PART_BYTES), vec![msg.clone()]);
        let mut assembler = Assembler::default();
        assert_eq!(assembler.push(msg.clone(), 5).expect("whole"), Some((msg, 5)));
    }

    #[test]
    fn parts_out_of_order_or_over_the_limits_are_errors() {
        let mut a = Assembler::default();
        assert!(a.push(Message::More(More { objects: vec![] }), 1).is_err());
        let mut a = Assembler::default();
        assert!(a.push(Message::Parts(Parts { count: MAX_PARTS + 1 }), 1).is_err());
        let mut a = Assembler::default();
        a.push(Message::Parts(Parts { count: 2 }), 1).expect("announce");
        assert!(
            a.push(Message::Parts(Parts { count: 1 }), 1).is_err(),
            "not a shard message"
        );
        let mut a = Assembler::default();
        a.push(Message::Parts(Parts { count: 2 }), 1).expect("announce");
        a.push(snapshot(1, 1), 10).expect("head");
        assert!(
            a.push(snapshot(1, 1), 10).is_err(),
            "a message before the announced parts"
        );
        let mut a = Assembler::default();
        a.push(Message::Parts(Parts { count: 2 }), 1).expect("announce");
        a.push(snapshot(1, 1), 10).expect("head");
        assert!(
            matches!(
                a.push(Message::More(More { objects: vec![] }), MAX_ASSEMBLED_BYTES),
                Err(PartsError::TooLarge)
            ),
            "over the assembled limit"
        );
    }
}
