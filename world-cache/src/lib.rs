//! hoard-world-cache: a client's on-disk cache of published shards.
//!
//! Every shard the client has seen stays on its disk between sessions, under
//! `<root>/<server identity>/<service>/<perspective or "shared">/<zone>/<shard>.shard`,
//! tagged with where it came from (server, service, perspective, zone,
//! shard, component registry) and how fresh it is (epoch, hwm, digest), so the
//! next zone entry only has to ask "what changed since this?".
//!
//! What a copy of a shard *is* — [`ShardKey`], [`CachedShard`], applying an
//! answer or delta to it — is the shard model of `hoard_engine::shard`,
//! shared with the protocol and relays (re-exported here as [`key`],
//! [`apply`] and the types below); this crate stores copies:
//!
//! - [`mod@format`]: the shard file (header with its own checksum, objects,
//!   whole-file checksum) — see `docs/CACHE-FORMAT.md`;
//! - [`journal`]: live deltas appended beside a shard, folded in later;
//! - [`cache`]: [`WorldCache`] — heads, loads, atomic writes, the lock;
//!   `known` remembers its own files' lengths, so it asks the file system
//!   less;
//! - [`tools`]: inventory, verify, clear, eviction;
//! - [`storage`]: the file operations, injectable for fault tests.
//!
//! The crate knows nothing of sockets or ECS systems.

pub mod apply;
pub mod cache;
pub mod format;
pub mod journal;
pub mod key;
mod known;
pub mod memory;
pub mod storage;
pub mod tools;

pub use apply::{ApplyError, ShardUpdate, UpdateKind};
pub use cache::{DiscardReason, KeptFile, LockPolicy, WorldCache, WriteReport};
pub use format::{CachedObject, CachedShard, ShardHeader};
pub use key::ShardKey;
pub use memory::MemStorage;
pub use storage::{FsStorage, Storage};
pub use tools::{ClearScope, Damage, EvictReport, ShardEntry};
