//! hoard-proto: hoard's wire protocol ([`wire`]), tokens ([`auth`],
//! [`world_token`]), signed intents ([`intent_sig`])
//! and the sync logic as sans-IO state machines ([`sync`]).
//!
//! Nothing in this crate opens a socket, spawns a thread, takes a lock,
//! reads a clock or calls the world store: bytes and messages go in,
//! messages and effects come out, and time is an argument (the shape of
//! quinn-proto). A store read is an effect too — a
//! [`StoreRead`](hoard_engine::store::StoreRead) the machine asks for
//! (`server::Output::Read`, `answer::AnswerStep::Read`,
//! `tick::TickCore::poll_read`) and whose reply comes back as an input — and
//! so is a commit (`tick::CommitJob`), so a driver decides where the store
//! is touched: a blocking thread for PostgreSQL, inline for memory, later
//! for a simulated slow store. The QUIC drivers of `hoard-net` are thin
//! loops around it, and a client in another runtime could be too. The
//! byte-level specification is `docs/PROTOCOL.md`.

pub mod auth;
pub mod client;
pub mod intent_sig;
pub mod intents;
pub mod messages;
pub mod proof;
pub mod relay;
pub mod sync;
pub mod transient;
pub mod wire;
pub mod world_token;
