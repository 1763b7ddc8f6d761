//! Where a cached shard lives: its [`ShardKey`] (the shard model's, in
//! `hoard_engine::shard`) names its file
//! `<root>/<server identity>/<service>/<perspective or "shared">/<zone>/<shard>.shard`.

pub use hoard_engine::shard::key::*;
