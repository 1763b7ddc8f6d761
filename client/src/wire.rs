//! The byte link a client transport implements: what a driver of
//! [`ClientHost`](crate::ClientHost) needs of a connection, and nothing
//! more. A [`WireTransport`] opens a connection, says `Hello` and gives back
//! a [`Wire`] at once (messages sent before the server answers go as early
//! data where the transport can; `Welcome` is the first message it
//! delivers); the [`Wire`] sends the client's messages on its control
//! stream in order and delivers the server's messages whole (shard
//! messages reassembled from their parts), each stream's in the order it
//! sent them. Framing, TLS, pinning, 0-RTT and flow control are the
//! transport's; everything else — the session, the cache, the game's
//! updates — is the driver's. hoard-net's QUIC link is one implementation.
//!
//! A transport over some pipe of the game's own (a console's sockets, a
//! relay service): the framing is PROTOCOL.md's (`Message::to_frame`, and
//! `hoard_proto::wire::StreamDecoder` to read).
//!
//! ```
//! use std::sync::Mutex;
//! use hoard_client::wire::{Arrival, Wire, WireConnecting, WireTransport};
//! use hoard_engine::ServerIdentity;
//! use hoard_proto::client::ClientError;
//! use hoard_proto::wire::{Hello, Message};
//!
//! /// Frames out, arrivals in: what the pipe's reader decoded.
//! struct PipeWire {
//!     out: Mutex<Vec<Vec<u8>>>,
//!     arrived: Mutex<Vec<Arrival>>,
//! }
//!
//! struct Pipe;
//!
//! impl WireTransport for Pipe {
//!     fn connect(&self, hello: Hello) -> Box<dyn WireConnecting> {
//!         let wire = PipeWire {
//!             out: Mutex::new(vec![Message::Hello(hello).to_frame()]),
//!             arrived: Mutex::new(Vec::new()),
//!         };
//!         Box::new(Opening(Some(wire)))
//!     }
//! }
//!
//! /// Opened at once here; a real pipe says `None` until it is.
//! struct Opening(Option<PipeWire>);
//!
//! impl WireConnecting for Opening {
//!     fn poll(&mut self) -> Option<Result<Box<dyn Wire>, ClientError>> {
//!         self.0.take().map(|wire| Ok(Box::new(wire) as Box<dyn Wire>))
//!     }
//! }
//!
//! impl Wire for PipeWire {
//!     fn identity(&self) -> ServerIdentity {
//!         ServerIdentity([7; 32]) // what the pipe authenticated
//!     }
//!     fn send(&self, messages: Vec<Message>) -> Result<(), ClientError> {
//!         self.out.lock().unwrap().extend(messages.iter().map(Message::to_frame));
//!         Ok(())
//!     }
//!     fn receive(&self, into: &mut Vec<Arrival>, max: usize) {
//!         let mut arrived = self.arrived.lock().unwrap();
//!         let n = arrived.len().min(max);
//!         into.extend(arrived.drain(..n));
//!     }
//!     fn close(&self, _code: u32, _reason: &str) {}
//!     fn as_any(&self) -> &dyn std::any::Any {
//!         self
//!     }
//! }
//!
//! let hello = Hello {
//!     protocol: hoard_proto::wire::PROTOCOL_VERSION,
//!     registry: [0; 32],
//!     service: "world".into(),
//!     token: "dev:ann".into(),
//!     codecs: Vec::new(),
//!     token_keys: false,
//! };
//! let wire = Pipe.connect(hello).poll().expect("open").expect("no error");
//! wire.send(Vec::new()).expect("sent");
//! let pipe = wire.as_any().downcast_ref::<PipeWire>().expect("ours");
//! assert_eq!(pipe.out.lock().unwrap().len(), 1, "Hello went out first");
//! ```
//!
//! `HoardClientPlugin::with_transport(settings, Pipe)` (hoard-bevy) then
//! drives a session over it.

use hoard_engine::ServerIdentity;
use hoard_proto::client::ClientError;
use hoard_proto::wire::{Hello, Message};

use crate::host::Inbound;

/// What a [`Wire`] delivers.
#[derive(Debug)]
pub enum Arrival {
    /// The next whole message of one of the server's streams.
    Message(Inbound),
    /// The connection ended (closed here, by the server with its reason, or
    /// because the server sent bytes that are not the protocol); nothing
    /// follows.
    Ended(ClientError),
}

/// A transport that opens client connections.
pub trait WireTransport: Send + Sync + 'static {
    /// Starts connecting and saying `hello`; the caller polls what this
    /// returns once in a while (once a frame).
    fn connect(&self, hello: Hello) -> Box<dyn WireConnecting>;
}

/// A connection being opened.
pub trait WireConnecting: Send + Sync + 'static {
    /// The connection, with `Hello` sent, once it is open (`None` while it
    /// is under way), or why it could not be opened. Never blocks.
    fn poll(&mut self) -> Option<Result<Box<dyn Wire>, ClientError>>;
}

/// An open connection, as a driver moves its messages. Nothing here blocks.
pub trait Wire: Send + Sync + 'static {
    /// Who answered: the identity the transport verified (pinned, or
    /// trusted on first use).
    fn identity(&self) -> ServerIdentity;
    /// Sends `messages` on the control stream, in order. Fails when the
    /// connection is gone or more is queued than the link holds (the
    /// server is not reading): the session cannot go on.
    fn send(&self, messages: Vec<Message>) -> Result<(), ClientError>;
    /// Moves what arrived since the last call into `into`, at most `max`
    /// arrivals (the rest waits, and the transport stops reading when its
    /// bounded queue is full, so a slow driver pushes back on the server).
    /// The control stream's first message (the server's answer to
    /// `Hello`) comes before anything from its other streams, however they
    /// arrived: a driver reads `Welcome` before the session's messages.
    fn receive(&self, into: &mut Vec<Arrival>, max: usize);
    /// Closes the connection with an application `code` and `reason`,
    /// waiting briefly until the server was told. Called from outside any
    /// async runtime.
    fn close(&self, code: u32, reason: &str);
    /// The transport's own connection object, for what hoard does not
    /// wrap (downcast it).
    fn as_any(&self) -> &dyn std::any::Any;
}
