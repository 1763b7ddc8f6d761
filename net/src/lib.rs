//! hoard-net: the QUIC drivers of hoard (server, client, relay), thin loops
//! around the sans-IO machines of `hoard-proto`, and the transport of the
//! drivers that have none: hoard-client's async client, hoard-server's
//! world link. Who a server is and what its world signs is
//! `hoard-trust`'s; the server's metrics are `hoard-metrics`'.

pub mod quic;

/// Internals that hoard's own benches and tests reach (the `testing`
/// feature): reading raw frames off a stream, and the transport settings,
/// so a raw-quinn baseline runs with exactly hoard's. Not part of the API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    pub use crate::hostile::{
        FROZEN_WINDOW, FrozenReader, frozen_endpoint, frozen_reader, hello_and_cold_entries, stalled,
    };
    pub use crate::quic::stream::{FrameReader, StreamError};
    pub use crate::quic::transport::{client as client_transport, server as server_transport};
}

#[cfg(feature = "testing")]
mod hostile;
