//! hoard-server: a hoard server's side that has nothing to do with a
//! transport. The game it runs and the rules its sessions follow
//! ([`game`]); the world link ([`world_link`]): proto's sans-IO
//! `TickCore` driven around the game's frames — the connections' commands
//! in before a frame, after it the gather, the durable commit on the commit
//! thread ([`committer`]) and the publishing — with its outputs queued on
//! the sessions' delta streams ([`outbox`]). hoard-net's QUIC server (and
//! its relay) accepts the connections, runs a session per connection, and
//! feeds this; another transport could too.

pub mod committer;
pub mod game;
pub mod log_limit;
pub mod outbox;
pub mod world_link;

pub use game::{Game, GameRules, JoinHook, LeaveHook, ServerStats, TransientHook};
pub use outbox::{CloseLink, Command, Frames, Outbox};
pub use world_link::{WorldLink, WorldLinkParts, WorldThread};
