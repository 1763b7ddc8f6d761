//! The server's streams to a client (answers, live deltas, transient
//! states), read whole and handed to the async driver
//! ([`SessionTasks::apply`]) in the order sent, in batches. An answer
//! stream is read by one task and handed over by another: applying an
//! answer hashes and merges objects and writes (and syncs) cache files,
//! while the next shards are read. The applier takes everything the reader
//! has queued since its last batch (up to [`APPLY_BATCH`]) in one hand-off;
//! the queue between them is bounded ([`READ_AHEAD`]). The delta stream is
//! read and handed over by one task, a batch of what arrived together at a
//! time: its messages apply in microseconds (the driver applies a few small
//! ones on this task: `Inbound::inline`), and a hand-off per message
//! between two tasks cost a process of many clients (the bots) two
//! wake-ups per live delta. Either way a client that cannot keep up stops
//! reading, and QUIC's flow control pushes back on the server, whose own
//! bounded queue then ends the slow session.

use std::sync::Arc;

use hoard_client::host::Inbound;
use hoard_client::tasks::SessionTasks;
use hoard_proto::wire::{Assembler, Message};
use quinn::{Connection, RecvStream};
use tokio::sync::mpsc;

use super::QuicLink;
use crate::quic::stream::{FrameReader, StreamError};

/// The driver the readers hand what they read to.
type Tasks = Arc<SessionTasks<QuicLink>>;

/// Messages read from one stream ahead of the applier, at most.
const READ_AHEAD: usize = 256;
/// Messages applied in one hand-off to a blocking thread, at most.
const APPLY_BATCH: usize = 64;

/// Why a stream stopped yielding messages.
pub(crate) enum StreamEnd {
    /// The connection ended (closed here, or by the server with its reason).
    Closed(String),
    /// The server sent bytes that are not a valid stream.
    Bad(String),
}

/// Accepts the server's streams until the connection ends.
pub(super) async fn accept_streams(conn: Connection, tasks: Tasks) {
    while let Ok(recv) = conn.accept_uni().await {
        tokio::spawn(serve_stream(recv, conn.clone(), tasks.clone()));
    }
    tasks.ended("connection closed");
}

/// Reads one of the server's streams and applies what it carries. An
/// answer stream (its first message an `AnswerBegin`) gets a reader and an
/// applier of its own, so the next shards are read while one is written;
/// the delta stream is read and applied by this one task, a batch of what
/// arrived together at a time: its messages apply in microseconds, and a
/// hand-off between two tasks for each cost a process of many clients (the
/// bots) two wake-ups per live delta.
async fn serve_stream(recv: RecvStream, conn: Connection, tasks: Tasks) {
    let mut reader = Reader::bulk(recv);
    let first = match reader.next(&conn).await {
        Ok(Some(first)) => first,
        Ok(None) => return,
        Err(end) => return finish(&tasks, end),
    };
    if first.request.is_some() {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::spawn(apply_stream(rx, tasks));
        if tx.send(Ok(first)).await.is_ok() {
            read_stream(reader, &conn, tx).await;
        }
        return;
    }
    let mut batch = vec![first];
    loop {
        // What else arrived with it, up to a batch.
        while batch.len() < APPLY_BATCH {
            match reader.next_buffered(&conn) {
                Ok(Some(more)) => batch.push(more),
                Ok(None) => break,
                Err(end) => {
                    // What came before the end is applied; then the end.
                    if tasks.apply(std::mem::take(&mut batch)).await {
                        finish(&tasks, end);
                    }
                    return;
                }
            }
        }
        if !tasks.apply(std::mem::take(&mut batch)).await {
            return;
        }
        match reader.next(&conn).await {
            Ok(Some(next)) => batch.push(next),
            Ok(None) => return,
            Err(end) => return finish(&tasks, end),
        }
    }
}

/// A stream's messages, whole (shard messages larger than a frame arrive
/// in parts), each with the answer it belongs to.
pub(crate) struct Reader {
    frames: FrameReader,
    parts: Assembler,
    request: Option<u32>,
}

impl Reader {
    /// Reads one of the server's unidirectional streams.
    pub(crate) fn bulk(recv: RecvStream) -> Reader {
        Reader {
            frames: FrameReader::bulk(recv),
            parts: Assembler::default(),
            request: None,
        }
    }

    /// The next whole message; `None` at a clean end of the stream.
    pub(crate) async fn next(&mut self, conn: &Connection) -> Result<Option<Inbound>, StreamEnd> {
        loop {
            match self.frames.next().await {
                Ok(Some(read)) => {
                    if let Some(whole) = self.assemble(read)? {
                        return Ok(Some(whole));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(stream_end(e, conn)),
            }
        }
    }

    /// The next whole message already received, without waiting; `None` if
    /// it would have to wait for the network.
    fn next_buffered(&mut self, conn: &Connection) -> Result<Option<Inbound>, StreamEnd> {
        loop {
            match self.frames.next_buffered() {
                Ok(Some(read)) => {
                    if let Some(whole) = self.assemble(read)? {
                        return Ok(Some(whole));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(stream_end(e, conn)),
            }
        }
    }

    fn assemble(&mut self, (msg, len): (Message, usize)) -> Result<Option<Inbound>, StreamEnd> {
        match self.parts.push(msg, len) {
            Ok(Some((msg, len))) => {
                if let Message::AnswerBegin(b) = &msg {
                    self.request = Some(b.request);
                }
                Ok(Some(Inbound {
                    msg,
                    len,
                    request: self.request,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(StreamEnd::Bad(e.to_string())),
        }
    }
}

/// Why reading stopped, as the applier reports it.
fn stream_end(e: StreamError, conn: &Connection) -> StreamEnd {
    match e {
        StreamError::Read(e) => StreamEnd::Closed(conn.close_reason().map_or_else(|| e.to_string(), |r| r.to_string())),
        e => StreamEnd::Bad(e.to_string()),
    }
}

/// Reads an answer stream's messages into `tx` for its applier; its end,
/// if not a clean finish, goes last.
async fn read_stream(mut reader: Reader, conn: &Connection, tx: mpsc::Sender<Result<Inbound, StreamEnd>>) {
    loop {
        let next = match reader.next(conn).await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => return,
            Err(end) => Err(end),
        };
        let ended = next.is_err();
        // The applier gone (it failed, or the client ended): stop reading.
        if tx.send(next).await.is_err() || ended {
            return;
        }
    }
}

/// Applies an answer stream's messages in the order read, a batch per
/// hand-off; ends the session on the first failure.
async fn apply_stream(mut rx: mpsc::Receiver<Result<Inbound, StreamEnd>>, tasks: Tasks) {
    let mut batch = Vec::with_capacity(APPLY_BATCH);
    while rx.recv_many(&mut batch, APPLY_BATCH).await > 0 {
        // Messages before a stream's end are applied; the end comes after.
        let end = batch.iter().position(Result::is_err).map(|i| batch.drain(i..).next());
        let messages: Vec<Inbound> = batch.drain(..).filter_map(Result::ok).collect();
        if !tasks.apply(messages).await {
            return;
        }
        if let Some(Some(Err(end))) = end {
            return finish(&tasks, end);
        }
    }
}

/// A stream that ended other than by finishing: the session fails with why.
fn finish(tasks: &Tasks, end: StreamEnd) {
    match end {
        StreamEnd::Closed(why) => {
            tracing::debug!(reason = %why, "stream ended with the connection");
            tasks.ended(&format!("connection closed: {why}"));
        }
        StreamEnd::Bad(e) => {
            tracing::warn!(error = %e, "bad stream from the server");
            tasks.fail(&format!("bad stream from the server: {e}"));
        }
    }
}
