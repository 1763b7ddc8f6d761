//! Where a cached shard lives: its [`ShardKey`] and the directory layout
//! `<root>/<server identity>/<service>/<perspective or "shared">/<zone>/<shard>.shard`.
//!
//! Every path component is a validated name (a-z, 0-9, `_`, `-`), a decimal
//! shard id or a hex identity, so no component can escape its folder, and a
//! whole server, service, player or zone is dropped by removing one folder.

use std::fmt;
use std::path::PathBuf;

use crate::ids::{NameError, validate_name};
use crate::{ServerIdentity, ShardId, ZoneId};

/// The folder name of shards every account on the machine shares.
pub const SHARED: &str = "shared";
/// File extension of a shard file.
pub const SHARD_EXT: &str = "shard";
/// File extension of a shard's journal of live deltas.
pub const JOURNAL_EXT: &str = "journal";

/// Identifies one cached shard: which world, which service, whose view, which zone and shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKey {
    /// The server identity the shard came from.
    pub server: ServerIdentity,
    /// The service (`world`, `arena`, ...).
    pub service: String,
    /// The perspective for perspective-scoped shards; `None` for shared ones.
    pub perspective: Option<String>,
    /// The zone.
    pub zone: ZoneId,
    /// The shard.
    pub shard: ShardId,
}

/// Why a key cannot name a cache path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The service name breaks the naming rules.
    #[error("bad service name: {0}")]
    Service(NameError),
    /// The perspective name breaks the naming rules, or is the reserved word.
    #[error("bad perspective name {name:?}: {reason}")]
    Perspective {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl ShardKey {
    /// Builds a key, checking that every part is safe as a path component.
    pub fn new(
        server: ServerIdentity,
        service: &str,
        perspective: Option<&str>,
        zone: ZoneId,
        shard: ShardId,
    ) -> Result<ShardKey, KeyError> {
        validate_name(service).map_err(KeyError::Service)?;
        if let Some(p) = perspective {
            validate_name(p).map_err(|e| KeyError::Perspective {
                name: p.to_owned(),
                reason: e.to_string(),
            })?;
            if p == SHARED {
                return Err(KeyError::Perspective {
                    name: p.to_owned(),
                    reason: format!("{SHARED:?} is reserved for shared shards"),
                });
            }
        }
        Ok(ShardKey {
            server,
            service: service.to_owned(),
            perspective: perspective.map(str::to_owned),
            zone,
            shard,
        })
    }

    /// The zone folder, relative to the cache root.
    pub fn zone_dir(&self) -> PathBuf {
        PathBuf::from(self.zone_dir_string(0))
    }

    /// The shard file, relative to the cache root.
    pub fn file(&self) -> PathBuf {
        self.in_zone_dir(SHARD_EXT)
    }

    /// The shard's journal, relative to the cache root.
    pub fn journal(&self) -> PathBuf {
        self.in_zone_dir(JOURNAL_EXT)
    }

    /// `<zone dir>/<shard>.<ext>`, built in one string: a client builds
    /// these paths for every live delta it journals.
    fn in_zone_dir(&self, ext: &str) -> PathBuf {
        use std::fmt::Write as _;
        let mut path = self.zone_dir_string(24 + ext.len());
        let _ = write!(path, "/{}.{ext}", self.shard);
        PathBuf::from(path)
    }

    /// The zone folder as a string with room for `extra` more bytes.
    fn zone_dir_string(&self, extra: usize) -> String {
        let perspective = self.perspective.as_deref().unwrap_or(SHARED);
        let zone = self.zone.as_str();
        let mut dir = String::with_capacity(64 + self.service.len() + perspective.len() + zone.len() + 3 + extra);
        dir.push_str(&self.server.to_hex());
        for part in [self.service.as_str(), perspective, zone] {
            dir.push('/');
            dir.push_str(part);
        }
        dir
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}",
            &self.server.to_hex()[..12],
            self.service,
            self.perspective.as_deref().unwrap_or(SHARED),
            self.zone,
            self.shard
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn layout_names_every_part() {
        let server = ServerIdentity([0xab; 32]);
        let zone = ZoneId::new("meadow").expect("zone");
        let shared = ShardKey::new(server, "world", None, zone.clone(), ShardId(12)).expect("key");
        assert_eq!(
            shared.file(),
            Path::new(&"ab".repeat(32)).join("world/shared/meadow/12.shard")
        );
        let own = ShardKey::new(server, "world", Some("ann"), zone.clone(), ShardId(3)).expect("key");
        assert_eq!(
            own.journal(),
            Path::new(&"ab".repeat(32)).join("world/ann/meadow/3.journal")
        );
        assert!(ShardKey::new(server, "world", Some("shared"), zone.clone(), ShardId(1)).is_err());
        assert!(ShardKey::new(server, "../x", None, zone.clone(), ShardId(1)).is_err());
        assert!(ShardKey::new(server, "world", Some("a/b"), zone, ShardId(1)).is_err());
    }
}
