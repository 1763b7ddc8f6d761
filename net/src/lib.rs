//! hoard-net: the QUIC drivers of hoard (server, client), thin loops around
//! the sans-IO machines of `hoard-proto`, plus TLS identity and pinning and
//! a UDP network simulator for tests and measurements.

pub mod netsim;
pub mod quic;
pub mod tls;
