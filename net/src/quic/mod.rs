//! The QUIC drivers: thin async loops (quinn, tokio) around the sans-IO
//! state machines in [`hoard_proto::sync`].
//!
//! Streams: the client opens one bidirectional *control* stream (hello,
//! zone enter/leave, repairs, intents; welcome and errors back). The server
//! opens one unidirectional *answer* stream per zone answer, so a large
//! answer never blocks control, and one unidirectional *delta* stream per
//! connection for live deltas. One connection is kept across zones.

pub mod client;
mod link;
pub mod relay;
pub mod resume;
pub mod server;
mod slots;
mod socket;
pub(crate) mod stream;
pub(crate) mod transport;
pub mod wire;
