//! Identifiers of the object model: objects, shards, zones, versions, epochs
//! and the server identity that namespaces every cache.
//!
//! All numeric ids are plain `u64` newtypes so they encode compactly on the
//! wire and on disk; a [`ZoneId`] is a short, human-chosen name because zones
//! are few, named by world builders, and appear in URLs and cache paths.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The stable identity of a published object, unique within a world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(pub u64);

/// A shard: the unit of storage, caching and reconciliation, unique within a world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u64);

/// A shard-local sequence number. The server assigns a shard's next seq to each
/// commit that touches it; an object's version is the seq of its last change.
///
/// `Seq::ZERO` means "nothing yet": a new shard's head and an empty cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The seq before any commit.
    pub const ZERO: Seq = Seq(0);

    /// The seq following this one.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

/// A random id of one shard's history. It changes when the history is broken
/// (a restore from backup, a re-import); a cache holding another epoch is discarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// A fresh epoch from the operating system's random source.
    ///
    /// Never returns 0, so that 0 can mean "no epoch" in cache headers.
    pub fn random() -> Epoch {
        loop {
            let mut bytes = [0u8; 8];
            // The OS random source failing is not recoverable for a server
            // that must issue unguessable ids; fall back to hashing the time
            // and pid rather than panicking.
            if getrandom::fill(&mut bytes).is_err() {
                let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
                let hash = blake3::hash(seed.as_bytes());
                bytes.copy_from_slice(&hash.as_bytes()[..8]);
            }
            let value = u64::from_le_bytes(bytes);
            if value != 0 {
                return Epoch(value);
            }
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

macro_rules! display_decimal {
    ($($ty:ident),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl FromStr for $ty {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($ty)
            }
        }
    )*};
}
display_decimal!(ObjectId, ShardId, Seq);

/// The longest zone name accepted.
pub const MAX_ZONE_NAME_LEN: usize = 64;

/// A zone's name: 1 to 64 characters of `a-z`, `0-9`, `_` and `-`.
///
/// The alphabet keeps names safe as path components of the client cache and as
/// URL segments without escaping.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ZoneId(String);

/// Why a string is not a valid [`ZoneId`] (or service name, which follows the same rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than the limit.
    #[error("name {name:?} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The rejected name, cut to the limit.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character outside `a-z0-9_-`.
    #[error("name {name:?} has {ch:?} at byte {at}; only a-z, 0-9, '_' and '-' are allowed")]
    BadChar {
        /// The rejected name.
        name: String,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

/// Checks a zone or service name against the shared naming rules.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_ZONE_NAME_LEN {
        return Err(NameError::TooLong {
            name: name.chars().take(MAX_ZONE_NAME_LEN).collect(),
            len: name.len(),
            max: MAX_ZONE_NAME_LEN,
        });
    }
    if let Some((at, ch)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
    {
        return Err(NameError::BadChar {
            name: name.to_owned(),
            ch,
            at,
        });
    }
    Ok(())
}

impl ZoneId {
    /// Validates and wraps a zone name.
    pub fn new(name: impl Into<String>) -> Result<ZoneId, NameError> {
        let name = name.into();
        validate_name(&name)?;
        Ok(ZoneId(name))
    }

    /// The zone's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ZoneId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ZoneId::new(s)
    }
}

impl<'de> Deserialize<'de> for ZoneId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ZoneId::new(name).map_err(serde::de::Error::custom)
    }
}

/// The blake3 fingerprint of a world's long-lived key. It names the cache
/// namespace, so one world can never poison another's cache, and it is what
/// clients pin.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServerIdentity(pub [u8; 32]);

impl ServerIdentity {
    /// The identity of a key, given its DER (or any canonical) encoding.
    pub fn of_key(key_der: &[u8]) -> ServerIdentity {
        ServerIdentity(*blake3::hash(key_der).as_bytes())
    }

    /// The 64-character lowercase hex form used in paths, logs and pins.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerIdentity({})", self.to_hex())
    }
}

/// Why a string is not a server identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server identity must be 64 hex characters, got {got:?}")]
pub struct ParseIdentityError {
    got: String,
}

impl FromStr for ServerIdentity {
    type Err = ParseIdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        blake3::Hash::from_hex(s)
            .map(|h| ServerIdentity(*h.as_bytes()))
            .map_err(|_| ParseIdentityError { got: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_follow_the_alphabet() {
        assert!(ZoneId::new("meadow-2_north").is_ok());
        assert_eq!(ZoneId::new(""), Err(NameError::Empty));
        assert!(matches!(
            ZoneId::new("Meadow"),
            Err(NameError::BadChar { ch: 'M', at: 0, .. })
        ));
        assert!(matches!(
            ZoneId::new("a/b"),
            Err(NameError::BadChar { ch: '/', at: 1, .. })
        ));
        assert!(matches!(
            ZoneId::new("x".repeat(65)),
            Err(NameError::TooLong { len: 65, .. })
        ));
    }

    #[test]
    fn identity_hex_round_trips() {
        let id = ServerIdentity::of_key(b"some key");
        let parsed: ServerIdentity = id.to_hex().parse().expect("valid hex");
        assert_eq!(parsed, id);
        assert!("abc".parse::<ServerIdentity>().is_err());
    }

    #[test]
    fn random_epochs_differ_and_are_never_zero() {
        let a = Epoch::random();
        let b = Epoch::random();
        assert_ne!(a, b);
        assert_ne!(a.0, 0);
    }
}
