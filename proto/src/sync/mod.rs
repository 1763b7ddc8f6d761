//! The sync logic as sans-IO state machines: time and messages in, messages
//! and effects out, no sockets, clocks or threads inside (the shape of
//! quinn-proto's `handle_*` / `poll_*`). The QUIC drivers of `hoard-net`
//! are thin loops around them.

pub mod answer;
pub mod client;
pub mod hub;
pub mod server;
pub mod session;
pub mod tick;
