//! hoard-proto: hoard's wire protocol ([`wire`]), perspective tokens
//! ([`auth`]) and the sync logic as sans-IO state machines ([`sync`]).
//!
//! Nothing in this crate opens a socket, spawns a thread or reads a clock:
//! bytes and messages go in, messages and effects come out, and time is an
//! argument (the shape of quinn-proto). The QUIC drivers of `hoard-net` are
//! thin loops around it, and a client in another runtime could be too. The
//! byte-level specification is `docs/PROTOCOL.md`.

pub mod auth;
pub mod intents;
pub mod messages;
pub mod proof;
pub mod relay;
pub mod sync;
pub mod transient;
pub mod wire;
