//! hoard-net: the wire protocol, the sans-IO sync state machines, and the
//! QUIC drivers (server, client) plus a UDP network simulator.

pub mod auth;
pub mod netsim;
pub mod quic;
pub mod sync;
pub mod tls;
pub mod wire;
