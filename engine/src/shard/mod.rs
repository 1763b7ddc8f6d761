//! The shard model: a copy of a shard as its holders keep it — a client's
//! sync, its disk cache, a relay — and how an answer or a delta applies to
//! it, digest-checked. No I/O here: the world cache (`hoard-world-cache`)
//! stores copies on disk, the protocol (`hoard-proto`) brings the updates.
//!
//! - [`key`]: [`ShardKey`], which copy of which shard (and its relative
//!   path in a cache);
//! - [`copy`]: [`CachedShard`] — header and objects — and its digest;
//! - [`mod@apply`]: applying a snapshot, delta, manifest or repair to a copy.

pub mod apply;
pub mod copy;
pub mod key;

pub use apply::{ApplyError, ShardUpdate, UpdateKind, apply, apply_in_place, apply_repair};
pub use copy::{CachedObject, CachedShard, ShardHeader, recompute_digest};
pub use key::{KeyError, SHARED, ShardKey};
