//! [`Outbox`]: the sessions' delta streams as a driver (the world's link,
//! a relay's) feeds them — each message encoded once for the sessions it
//! goes to, and a session whose queue is full closed as a slow consumer —
//! and the [`Command`]s connections send their driver. A session's
//! connection is the transport's ([`CloseLink`]: all the driver does with
//! it is close it).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hoard_metrics::ServerMetrics;
use hoard_proto::sync::hub::SessionId;
use hoard_proto::sync::tick::TickInput;
use hoard_proto::wire::{ErrorCode, Message, PART_BYTES, split};
use tokio::sync::mpsc;

use crate::log_limit::LogLimit;

/// A session's connection, as the world's driver holds it: to close it
/// (a slow consumer, a server stopping). The transport implements it.
pub trait CloseLink: Send + Sync {
    /// Closes the connection with `code` and `reason`.
    fn close(&self, code: ErrorCode, reason: &[u8]);
}

/// What a connection tells the world: a session to deliver to (with its
/// delta queue and connection, which only the driver holds), or an input of
/// the tick core.
pub enum Command {
    /// A new session: its delta queue and its connection.
    Register {
        /// The session.
        id: SessionId,
        /// Its delta stream's queue (bounded: a full one is a slow consumer).
        deltas: mpsc::Sender<Frames>,
        /// Its connection.
        link: Box<dyn CloseLink>,
    },
    /// An input of the tick core.
    Tick(TickInput),
}

/// A message for the delta stream, encoded: its frames (a delta of any
/// allowed size is split into frames under the limit). One encoding is
/// shared by every session a delta goes to.
pub type Frames = Arc<Vec<Vec<u8>>>;

/// `message`'s frames for a delta stream.
pub fn encode_frames(message: &Message) -> Frames {
    Arc::new(
        split(message.clone(), PART_BYTES)
            .iter()
            .map(Message::to_frame)
            .collect(),
    )
}

/// One session as the outbox holds it.
pub struct Conn {
    /// Its delta stream's queue.
    pub deltas: mpsc::Sender<Frames>,
    /// Its connection.
    pub link: Box<dyn CloseLink>,
}

/// Sessions' delta streams, as a driver (a world's link, a relay's) feeds
/// them: each message encoded once for the sessions it goes to in a row,
/// and a session whose queue is full closed as a slow consumer.
#[derive(Default)]
pub struct Outbox {
    conns: HashMap<SessionId, Conn>,
    /// The last message encoded: the outputs of one fan-out come in a row.
    encoded: Option<(Arc<Message>, Frames)>,
}

impl Outbox {
    /// Takes a connection's command in: a new connection's delta stream is
    /// registered, a closed one's dropped; returns the core's input for it.
    /// The world's link and a relay's both feed their cores through it.
    pub fn take(&mut self, command: Command) -> TickInput {
        match command {
            Command::Register { id, deltas, link } => {
                self.register(id, Conn { deltas, link });
                TickInput::Register { id }
            }
            Command::Tick(input) => {
                if let TickInput::Remove { id } = input {
                    self.remove(id);
                }
                input
            }
        }
    }

    /// Registers a session's delta stream.
    pub fn register(&mut self, id: SessionId, conn: Conn) {
        self.conns.insert(id, conn);
    }

    /// Forgets a session.
    pub fn remove(&mut self, id: SessionId) {
        self.conns.remove(&id);
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Queues `message` for `to`. `false`: `to` reads too slowly and was
    /// closed (and forgotten here); the caller removes its session.
    /// `slow` is counted before the close (whoever sees the connection
    /// closed sees it counted).
    pub fn queue(
        &mut self,
        to: SessionId,
        message: Arc<Message>,
        metrics: &ServerMetrics,
        slow: Option<&AtomicU64>,
    ) -> bool {
        let Some(c) = self.conns.get(&to) else { return true };
        let frames = match &self.encoded {
            Some((last, frames)) if Arc::ptr_eq(last, &message) => frames.clone(),
            _ => {
                let frames = encode_frames(&message);
                self.encoded = Some((message, frames.clone()));
                frames
            }
        };
        if c.deltas.try_send(frames).is_ok() {
            return true;
        }
        static UNREAD_DELTAS: LogLimit = LogLimit::new();
        if let Some(left_out) = UNREAD_DELTAS.allow() {
            tracing::warn!(
                session = to,
                left_out,
                "client does not read its deltas fast enough; disconnecting"
            );
        }
        metrics.disconnect("slow_consumer");
        if let Some(slow) = slow {
            slow.fetch_add(1, Ordering::Relaxed);
        }
        c.link.close(ErrorCode::SlowConsumer, b"slow consumer: deltas not read");
        self.conns.remove(&to);
        false
    }

    /// Closes every connection with `reason`.
    pub fn close_all(&self, reason: &[u8]) {
        for c in self.conns.values() {
            c.link.close(ErrorCode::Server, reason);
        }
    }

    /// Forgets the last encoding (a batch of outputs ended).
    pub fn flush(&mut self) {
        self.encoded = None;
    }
}
