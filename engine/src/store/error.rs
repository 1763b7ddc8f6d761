//! Errors of the store's operations. Each operation has its own enum; faults
//! any operation can meet (a broken backend, corrupt records) share
//! [`StoreFault`].

use std::path::PathBuf;

use crate::ids::{Seq, ShardId, ZoneId};

/// A fault below the store's logic: the backend failed or a record is corrupt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreFault {
    /// The storage backend failed.
    #[error("store backend failed while {context}: {}", chain(source.as_ref()))]
    Backend {
        /// What the store was doing.
        context: String,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored record does not decode.
    #[error("corrupt store record: {0}")]
    Corrupt(String),
}

/// An error and the errors beneath it, as one line (a PostgreSQL client
/// error says only "db error"; the server's message is its source).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(inner) = next {
        let text = inner.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = inner.source();
    }
    line
}

impl StoreFault {
    #[cfg_attr(not(any(feature = "redb", feature = "postgres")), allow(dead_code))]
    pub(crate) fn backend(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreFault::Backend {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (another server) has the store open.
    #[error("store {path} is locked by another process; stop the other server or use another --data directory")]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a readable store.
    #[error("store {path} is corrupt: {detail}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file was written by a newer hoard.
    #[error("store {path} has format version {found}, this build reads up to {supported}; upgrade hoard")]
    NewerFormat {
        /// The store file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// The file was written by an older storage engine that needs a manual upgrade.
    #[error("store {path} uses an old redb file format (v{version}) that needs upgrading")]
    OldEngineFormat {
        /// The store file.
        path: PathBuf,
        /// redb's format version.
        version: u8,
    },
    /// Reading or creating the file failed.
    #[error("cannot open store {path}: {source}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database cannot be reached or refused the store's setup.
    #[error("cannot open the world store in {database}: {detail}")]
    Database {
        /// The database, without a password.
        database: String,
        /// What went wrong.
        detail: String,
    },
    /// The database's schema was written by a newer hoard.
    #[error(
        "the world store in {database} has schema migration {found}, this build knows up to {supported}; upgrade hoard"
    )]
    NewerSchema {
        /// The database, without a password.
        database: String,
        /// The newest migration applied to it.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// Setting up the store's tables failed.
    #[error("cannot initialise store {path}: {source}")]
    Init {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: StoreFault,
    },
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No such zone.
    #[error("unknown zone {0}")]
    UnknownZone(ZoneId),
    /// No such shard.
    #[error("unknown shard {0}")]
    UnknownShard(ShardId),
    /// The asked-for seq is newer than the shard's head.
    #[error("shard {shard}: seq {asked} is ahead of the head {head}")]
    FutureSeq {
        /// The shard.
        shard: ShardId,
        /// The seq asked for.
        asked: Seq,
        /// The shard's head seq.
        head: Seq,
    },
    /// A fault below the logic.
    #[error(transparent)]
    Fault(#[from] StoreFault),
}

/// Why a commit failed. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The change set names a shard the world does not have.
    #[error("commit names unknown shard {0}")]
    UnknownShard(ShardId),
    /// The commit writes a zone (or a player's own shard) this server no
    /// longer holds the lease on (another server has taken it over): the
    /// server must stop serving it.
    #[error("commit refused: {lease} is no longer leased to {owner}")]
    Fenced {
        /// What the lease is on: `zone NAME` or `player NAME`.
        lease: String,
        /// This server's lease name.
        owner: String,
    },
    /// A fault below the logic.
    #[error(transparent)]
    Fault(#[from] StoreFault),
}

/// Why a structural write (zones, epochs, trims) failed. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The shard already exists.
    #[error("shard {shard} already exists in zone {zone}")]
    ShardExists {
        /// The shard.
        shard: ShardId,
        /// The zone holding it.
        zone: ZoneId,
    },
    /// No such shard.
    #[error("unknown shard {0}")]
    UnknownShard(ShardId),
    /// A fault below the logic.
    #[error(transparent)]
    Fault(#[from] StoreFault),
}
