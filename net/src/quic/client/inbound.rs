//! The server's streams to a client (answers, live deltas, transient
//! states), applied in the order sent, in batches. An answer stream is read
//! by one task and applied by another: applying an answer hashes and merges
//! objects and writes (and syncs) cache files on a blocking thread, while
//! the next shards are read. The applier takes everything the reader has
//! queued since its last batch (up to [`APPLY_BATCH`]) in one hand-off; the
//! queue between them is bounded ([`READ_AHEAD`]). The delta stream is read
//! and applied by one task, a batch of what arrived together at a time: its
//! messages apply in microseconds, and a hand-off per message between two
//! tasks cost a process of many clients (the bots) two wake-ups per live
//! delta. What arrived together is applied on the task itself when it is
//! a few small messages ([`Inbound::inline`]: live deltas, a warm answer),
//! only a whole write of a shard going to a thread, the game and the
//! entry's waiters told once it is done. Either way
//! a client that cannot keep up stops reading, and QUIC's flow control
//! pushes back on the server, whose own bounded queue then ends the slow
//! session.

use std::sync::Arc;

use hoard_proto::wire::{Assembler, ErrorCode, Message};
use quinn::{Connection, RecvStream};
use tokio::sync::mpsc;

use super::{ClientError, Failure, Inner, Writes, fail_all, fail_closed, fail_with, flush, process_effects, tell};
use crate::quic::stream::{FrameReader, StreamError};
use hoard_client::host::Inbound;

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
pub(super) async fn accept_streams(conn: Connection, inner: Arc<Inner>) {
    while let Ok(recv) = conn.accept_uni().await {
        tokio::spawn(serve_stream(recv, conn.clone(), inner.clone()));
    }
    fail_closed(&inner, &conn, "connection closed");
}

/// Reads one of the server's streams and applies what it carries. An
/// answer stream (its first message an `AnswerBegin`) gets a reader and an
/// applier of its own, so the next shards are read while one is written;
/// the delta stream is read and applied by this one task, a batch of what
/// arrived together at a time: its messages apply in microseconds, and a
/// hand-off between two tasks for each cost a process of many clients (the
/// bots) two wake-ups per live delta.
async fn serve_stream(recv: RecvStream, conn: Connection, inner: Arc<Inner>) {
    let mut reader = Reader::bulk(recv);
    let first = match reader.next(&conn).await {
        Ok(Some(first)) => first,
        Ok(None) => return,
        Err(end) => return finish(&inner, &conn, end),
    };
    if first.request.is_some() {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::spawn(apply_stream(rx, conn.clone(), inner));
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
                    if apply_or_end(&inner, &conn, std::mem::take(&mut batch)).await {
                        finish(&inner, &conn, end);
                    }
                    return;
                }
            }
        }
        if !apply_or_end(&inner, &conn, std::mem::take(&mut batch)).await {
            return;
        }
        match reader.next(&conn).await {
            Ok(Some(next)) => batch.push(next),
            Ok(None) => return,
            Err(end) => return finish(&inner, &conn, end),
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
async fn apply_stream(mut rx: mpsc::Receiver<Result<Inbound, StreamEnd>>, conn: Connection, inner: Arc<Inner>) {
    let mut batch = Vec::with_capacity(APPLY_BATCH);
    while rx.recv_many(&mut batch, APPLY_BATCH).await > 0 {
        // Messages before a stream's end are applied; the end comes after.
        let end = batch.iter().position(Result::is_err).map(|i| batch.drain(i..).next());
        let messages: Vec<Inbound> = batch.drain(..).filter_map(Result::ok).collect();
        if !apply_or_end(&inner, &conn, messages).await {
            return;
        }
        if let Some(Some(Err(end))) = end {
            return finish(&inner, &conn, end);
        }
    }
}

/// Applies `messages`; `false` if that ended the session (a failure, or
/// the runtime shutting down).
async fn apply_or_end(inner: &Arc<Inner>, conn: &Connection, messages: Vec<Inbound>) -> bool {
    if messages.is_empty() {
        return true;
    }
    match apply(inner, messages).await {
        Ok(()) => true,
        Err(Failure::Cancelled) => {
            // The runtime is shutting down (the client is being dropped
            // with its process): nothing failed.
            tracing::debug!("stream ended with the runtime");
            false
        }
        Err(Failure::Forged(why)) => {
            // Nothing of it was written or shown; this route to the world
            // is not to be used.
            tracing::error!(server = %conn.remote_address(), %why, "the server is not faithful to the world; disconnecting");
            // Waiters learn why before the close ends the other streams
            // with a vaguer reason.
            fail_with(inner, &why, ClientError::Forged(why.clone()));
            conn.close(
                quinn::VarInt::from_u32(ErrorCode::Protocol as u32),
                b"not faithful to the world",
            );
            false
        }
        Err(Failure::Other(e)) => {
            tracing::warn!(error = %e, "sync failed");
            fail_all(inner, &e);
            false
        }
    }
}

/// A stream that ended other than by finishing: the session fails with why.
fn finish(inner: &Arc<Inner>, conn: &Connection, end: StreamEnd) {
    match end {
        StreamEnd::Closed(why) => {
            tracing::debug!(reason = %why, "stream ended with the connection");
            fail_closed(inner, conn, &format!("connection closed: {why}"));
        }
        StreamEnd::Bad(e) => {
            tracing::warn!(error = %e, "bad stream from the server");
            fail_all(inner, &format!("bad stream from the server: {e}"));
        }
    }
}

/// Applies `messages` in order (one lock of the sync for all of them),
/// carries out their effects, then sends what the sync has to say. Small
/// batches of pushed messages are applied here; others on a blocking thread.
async fn apply(inner: &Arc<Inner>, messages: Vec<Inbound>) -> Result<(), Failure> {
    if Inbound::inline(&messages) {
        let result = inner.host.handle(messages).map_err(Failure::from);
        // What was applied before a failure is still carried out; whole
        // writes on a thread, and nobody is told of them before they are
        // done (a zone is written before it is announced).
        let mut outcomes = Vec::new();
        let whole = inner.host.carry_out(Writes::Returned, &mut |o| outcomes.push(o));
        if !whole.is_empty() {
            let writer = inner.clone();
            match tokio::task::spawn_blocking(move || writer.host.write_shards(whole)).await {
                Ok(()) => {}
                Err(e) if e.is_cancelled() => return Err(Failure::Cancelled),
                Err(e) => return Err(Failure::Other(e.to_string())),
            }
        }
        for outcome in outcomes {
            tell(inner, outcome);
        }
        result?;
    } else {
        let applier = inner.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let result = applier.host.handle(messages).map_err(Failure::from);
            // What was applied before a failure is still carried out.
            process_effects(&applier);
            result
        })
        .await;
        match applied {
            Ok(result) => result?,
            Err(e) if e.is_cancelled() => return Err(Failure::Cancelled),
            Err(e) => return Err(Failure::Other(e.to_string())),
        }
    }
    flush(inner).await.map_err(|e| Failure::Other(e.to_string()))
}
