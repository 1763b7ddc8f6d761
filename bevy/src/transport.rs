//! The client plugin's transport: a [`WireTransport`] opens a connection
//! and gives back a [`Wire`] that only moves messages — the client's out on
//! its control stream, the server's in, whole and in order per stream. The
//! plugin's systems drive the session over it ([`crate::client`]); nothing
//! in them is tied to a transport. [`QuicWireTransport`] (hoard-net, a
//! tokio task per connection) is the one hoard ships; another transport
//! implements the two traits of [`hoard_client::wire`] and is given to
//! [`HoardClientPlugin::with_transport`](crate::HoardClientPlugin::with_transport).

pub use hoard_client::SessionSettings;
pub use hoard_client::host::Inbound;
pub use hoard_client::wire::{Arrival, Wire, WireConnecting, WireTransport};
pub use hoard_net::quic::wire::{QuicWire, QuicWireTransport};

pub use crate::driver::{INTENT_QUEUE, NONCE_WAIT};
