//! hoard-client's byte link over QUIC ([`QuicWire`]): a connection whose
//! tasks only move messages, on the async client's own pieces (dialing,
//! [`QuicLink`], the stream readers). One task writes the client's messages
//! on the control stream in order; one settles a 0-RTT connection (for one
//! the server refused the early data of, a new control stream carries
//! `Hello` and everything sent early again) and then reads the control
//! stream; one reads each of the server's streams, handing whole messages to a bounded queue the
//! driver takes from ([`Wire::receive`]). When the queue is full the
//! readers wait, so a driver that falls behind stops the reading and QUIC's
//! flow control pushes back on the server. The session, the cache and the
//! game's updates are the driver's (the Bevy client plugin's systems, with
//! [`hoard_client::ClientHost`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoard_client::host::Inbound;
use hoard_client::wire::{Arrival, Wire, WireConnecting, WireTransport};
use hoard_engine::ServerIdentity;
use hoard_engine::lock::lock;
use hoard_proto::client::ClientError;
use hoard_proto::wire::{Hello, MAX_CONTROL_FRAME, Message};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::mpsc;

use super::client::inbound::{Reader, StreamEnd};
use super::client::{ClientOptions, Dialed, QuicLink, finish_early, refusal_of, say_hello};
use super::stream::FrameReader;
use hoard_client::tasks::ControlLink;

/// Messages the driver may queue for sending, at most (the control
/// stream's writer takes them as fast as QUIC does; a full queue means the
/// server stopped reading).
pub const SEND_QUEUE: usize = 1024;

/// Arrivals held for the driver, at most: beyond it the readers wait.
pub const RECEIVE_QUEUE: usize = 256;

/// How long closing waits for the server to have been told.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// QUIC as a [`WireTransport`]: connects with `options` (the server's
/// address, a pinned identity, the `known_servers` file in its cache
/// folder, a shared endpoint), each connection on a tokio runtime of its
/// own (one worker thread).
#[derive(Clone, Debug)]
pub struct QuicWireTransport {
    options: ClientOptions,
}

impl QuicWireTransport {
    /// Connects as `options` say.
    pub fn new(options: ClientOptions) -> QuicWireTransport {
        QuicWireTransport { options }
    }
}

impl WireTransport for QuicWireTransport {
    fn connect(&self, hello: Hello) -> Box<dyn WireConnecting> {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hoard-wire")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                return Box::new(QuicConnecting::Failed(Some(ClientError::Lost(format!(
                    "cannot start the client's runtime: {e}"
                )))));
            }
        };
        let options = self.options.clone();
        let task = runtime.spawn(async move { open(options, hello).await });
        Box::new(QuicConnecting::Opening {
            runtime: Some(runtime),
            task,
        })
    }
}

enum QuicConnecting {
    Opening {
        runtime: Option<tokio::runtime::Runtime>,
        task: tokio::task::JoinHandle<Result<Parts, ClientError>>,
    },
    Failed(Option<ClientError>),
}

impl WireConnecting for QuicConnecting {
    fn poll(&mut self) -> Option<Result<Box<dyn Wire>, ClientError>> {
        match self {
            QuicConnecting::Failed(failed) => failed.take().map(Err),
            QuicConnecting::Opening { runtime, task } => {
                if !task.is_finished() {
                    return None;
                }
                let runtime = runtime.take()?;
                let result = finished(task).unwrap_or_else(|e| Err(ClientError::Lost(e)));
                Some(result.map(|parts| Box::new(QuicWire::start(parts, runtime)) as Box<dyn Wire>))
            }
        }
    }
}

/// A connection opened, its `Hello` sent, before its tasks start.
struct Parts {
    conn: Connection,
    endpoint: Endpoint,
    own_endpoint: bool,
    identity: ServerIdentity,
    send: SendStream,
    recv: RecvStream,
    /// A 0-RTT connection's handshake, still under way.
    early: Option<quinn::ZeroRttAccepted>,
    hello: Message,
    addr: std::net::SocketAddr,
}

/// Connects and says `hello`.
async fn open(options: ClientOptions, hello: Hello) -> Result<Parts, ClientError> {
    let addr = options.server;
    let dialed = Dialed::dial(&options).await?;
    let hello = Message::Hello(hello);
    let (send, recv, early, _) = say_hello(&dialed.conn, addr, dialed.identity, dialed.early, &hello).await?;
    Ok(Parts {
        conn: dialed.conn,
        endpoint: dialed.endpoint,
        own_endpoint: dialed.own_endpoint,
        identity: dialed.identity,
        send,
        recv,
        early,
        hello,
        addr,
    })
}

/// A QUIC connection as a [`Wire`] (see the module docs).
pub struct QuicWire {
    conn: Connection,
    endpoint: Endpoint,
    own_endpoint: bool,
    identity: ServerIdentity,
    outgoing: mpsc::Sender<Vec<Message>>,
    incoming: Mutex<mpsc::Receiver<Arrival>>,
    /// Why sending failed, once it did.
    failed: Arc<Mutex<Option<ClientError>>>,
    /// Dropped last: the connection's tasks run on it.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for QuicWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicWire")
            .field("server", &self.conn.remote_address())
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl QuicWire {
    fn start(parts: Parts, runtime: tokio::runtime::Runtime) -> QuicWire {
        let (outgoing, out_rx) = mpsc::channel(SEND_QUEUE);
        let (in_tx, incoming) = mpsc::channel(RECEIVE_QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let link = Arc::new(QuicLink::new(parts.conn.clone(), parts.send, parts.early.is_some()));
        runtime.spawn(write_control(link.clone(), out_rx, failed.clone()));
        let settle = Settle {
            early: parts.early,
            addr: parts.addr,
            identity: parts.identity,
            hello: parts.hello,
        };
        let (answered, hello_answered) = tokio::sync::oneshot::channel();
        runtime.spawn(read_control(
            link,
            settle,
            parts.recv,
            Control {
                to: in_tx.clone(),
                answered,
                failed: failed.clone(),
            },
        ));
        runtime.spawn(accept_streams(parts.conn.clone(), hello_answered, in_tx));
        QuicWire {
            conn: parts.conn,
            endpoint: parts.endpoint,
            own_endpoint: parts.own_endpoint,
            identity: parts.identity,
            outgoing,
            incoming: Mutex::new(incoming),
            failed,
            runtime: Some(runtime),
        }
    }

    /// The QUIC connection (its path statistics, say).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Wire for QuicWire {
    fn identity(&self) -> ServerIdentity {
        self.identity
    }

    fn send(&self, messages: Vec<Message>) -> Result<(), ClientError> {
        if let Some(failed) = lock(&self.failed).clone() {
            return Err(failed);
        }
        if messages.is_empty() {
            return Ok(());
        }
        self.outgoing.try_send(messages).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ClientError::Lost(format!(
                "more than {SEND_QUEUE} sends waiting: the server is not reading"
            )),
            mpsc::error::TrySendError::Closed(_) => ClientError::Lost("the connection is closed".into()),
        })
    }

    fn receive(&self, into: &mut Vec<Arrival>, max: usize) {
        let mut incoming = lock(&self.incoming);
        for _ in 0..max {
            match incoming.try_recv() {
                Ok(arrival) => into.push(arrival),
                Err(_) => return,
            }
        }
    }

    fn close(&self, code: u32, reason: &str) {
        self.conn.close(quinn::VarInt::from_u32(code), reason.as_bytes());
        if self.own_endpoint
            && let Some(runtime) = &self.runtime
        {
            let endpoint = self.endpoint.clone();
            let _ = runtime.block_on(async move { tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await });
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for QuicWire {
    /// Closes the connection; its tasks end with the runtime, which is let
    /// go without waiting (this may run inside another runtime).
    fn drop(&mut self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"bye");
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Writes the driver's messages on the control stream in order; while a
/// 0-RTT handshake is under way the link keeps them, to send again should
/// the server refuse the early data ([`read_control`] settles that).
async fn write_control(
    link: Arc<QuicLink>,
    mut out: mpsc::Receiver<Vec<Message>>,
    failed: Arc<Mutex<Option<ClientError>>>,
) {
    while let Some(messages) = out.recv().await {
        if let Err(e) = link.send(messages).await {
            // The server's reason when it closed the connection (a newer
            // session of this player, say), not the stream's.
            tracing::debug!(error = %e, "control stream write failed");
            *lock(&failed) = Some(closed(link.connection(), &e.to_string()));
            return;
        }
    }
}

/// What settling a 0-RTT connection needs.
struct Settle {
    /// The handshake, still under way (`None`: a full handshake, done).
    early: Option<quinn::ZeroRttAccepted>,
    addr: std::net::SocketAddr,
    identity: ServerIdentity,
    hello: Message,
}

/// Settles a 0-RTT connection once its handshake completes (the server
/// must still be the pinned identity; early data it refused goes again on
/// a new control stream), then reads the control stream (`Welcome` first).
async fn read_control(link: Arc<QuicLink>, settle: Settle, recv: RecvStream, control: Control) {
    let Control { to, answered, failed } = control;
    // Dropped when this returns, so the streams are read even if the
    // control stream ends before answering (its end is queued first).
    let mut answered = Some(answered);
    let conn = link.connection().clone();
    let recv = match settle.early {
        None => recv,
        Some(accepted) => {
            match finish_early(&link, settle.addr, accepted, settle.identity, &settle.hello, recv).await {
                Ok((recv, _)) => recv,
                Err(e) => {
                    let e = conn.close_reason().as_ref().and_then(refusal_of).unwrap_or(e);
                    // Never talk on to a server that is not the pinned one.
                    conn.close(quinn::VarInt::from_u32(0), b"the connection could not be settled");
                    *lock(&failed) = Some(e.clone());
                    let _ = to.send(Arrival::Ended(e)).await;
                    return;
                }
            }
        }
    };
    let mut control = FrameReader::new(recv, MAX_CONTROL_FRAME);
    loop {
        let arrival = match control.next().await {
            Ok(Some((msg, len))) => Arrival::Message(Inbound {
                msg,
                len,
                request: None,
            }),
            Ok(None) => Arrival::Ended(closed(&conn, "the server closed the control stream")),
            Err(super::stream::StreamError::Read(e)) => Arrival::Ended(closed(&conn, &e.to_string())),
            Err(e) => Arrival::Ended(ClientError::Lost(format!("bad control stream from the server: {e}"))),
        };
        let ended = matches!(arrival, Arrival::Ended(_));
        if to.send(arrival).await.is_err() || ended {
            return;
        }
        if let Some(answered) = answered.take() {
            let _ = answered.send(());
        }
    }
}

/// What the control stream's reader hands on: arrivals to the queue, the
/// word that the answer to `Hello` is queued, a failure to the wire.
struct Control {
    to: mpsc::Sender<Arrival>,
    answered: tokio::sync::oneshot::Sender<()>,
    failed: Arc<Mutex<Option<ClientError>>>,
}

/// Accepts the server's streams and reads each into the queue, once the
/// answer to `Hello` is queued: streams are not ordered with each other,
/// and an answer stream the server opened right after `Welcome` (a 0-RTT
/// entry answered at once) may arrive first, but the driver must read
/// `Welcome` before anything of the session. Streams opened meanwhile
/// wait in QUIC, bounded by its stream and flow-control limits.
async fn accept_streams(
    conn: Connection,
    hello_answered: tokio::sync::oneshot::Receiver<()>,
    to: mpsc::Sender<Arrival>,
) {
    let _ = hello_answered.await;
    while let Ok(recv) = conn.accept_uni().await {
        tokio::spawn(read_stream(Reader::bulk(recv), conn.clone(), to.clone()));
    }
}

/// Reads one of the server's streams into the queue, its whole messages
/// in order.
async fn read_stream(mut reader: Reader, conn: Connection, to: mpsc::Sender<Arrival>) {
    loop {
        let arrival = match reader.next(&conn).await {
            Ok(Some(inbound)) => Arrival::Message(inbound),
            Ok(None) => return,
            Err(StreamEnd::Closed(why)) => Arrival::Ended(closed(&conn, &why)),
            Err(StreamEnd::Bad(e)) => Arrival::Ended(ClientError::Lost(format!("bad stream from the server: {e}"))),
        };
        let ended = matches!(arrival, Arrival::Ended(_));
        if to.send(arrival).await.is_err() || ended {
            return;
        }
    }
}

/// Why a connection ended: the server's refusal when it closed with one
/// (a refused token, a newer session of the player), else lost.
fn closed(conn: &Connection, lost: &str) -> ClientError {
    conn.close_reason()
        .as_ref()
        .and_then(refusal_of)
        .unwrap_or_else(|| ClientError::Lost(format!("connection closed: {lost}")))
}

/// The output of a finished task, without blocking.
fn finished<T>(task: &mut tokio::task::JoinHandle<T>) -> Result<T, String> {
    use std::future::Future;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(task).poll(&mut cx) {
        std::task::Poll::Ready(result) => result.map_err(|e| e.to_string()),
        std::task::Poll::Pending => Err("the connection task had not finished".into()),
    }
}
