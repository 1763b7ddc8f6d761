//! Applying an answer or delta to a copy, digest-checked: the shard model's
//! (`hoard_engine::shard::apply`), re-exported where the cache's users
//! found it.

pub use hoard_engine::shard::apply::*;
