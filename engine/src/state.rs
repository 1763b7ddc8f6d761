//! The canonical encoding of an object's state.
//!
//! An object's state is its publishable components, each under its stable
//! registered name. The bytes are a MessagePack map whose keys are the
//! component names as `str`, in ascending byte order, each mapped to a `bin`
//! holding that component's own MessagePack encoding (rmp-serde, compact). Map,
//! string and binary headers use the shortest MessagePack form. Because the
//! order and the header forms are fixed, the same state always produces the
//! same bytes and so the same hash — the digest depends on it.
//!
//! Components are wrapped in `bin` so a reader can split an object into its
//! components without understanding them (and skip ones it does not know);
//! the whole is still self-describing MessagePack for tools that dump it.
//!
//! The decoder ([`ObjectState::components`]) never trusts a length: every
//! length is checked against the remaining input and the limits below before
//! anything is allocated, and non-canonical input is rejected.

use std::fmt;

use bytes::Bytes;

/// Most components one object may carry.
pub const MAX_COMPONENTS_PER_OBJECT: usize = 64;
/// Longest component name.
pub const MAX_COMPONENT_NAME_LEN: usize = 64;
/// Largest encoded state of one object.
pub const MAX_STATE_BYTES: usize = 1 << 20;

/// Canonically encoded object state. Construct with [`StateBuilder`] or
/// [`ObjectState::from_bytes`], which checks the encoding.
///
/// The bytes are shared, not copied, when a state is cloned: a shard copy
/// that takes a live delta keeps every unchanged object, and a clone of
/// each is a reference count, not an allocation and a copy of its bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ObjectState(Bytes);

/// Why bytes are not a canonical object state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The input is longer than [`MAX_STATE_BYTES`].
    #[error("state is {len} bytes, the limit is {MAX_STATE_BYTES}")]
    TooLarge {
        /// The length found.
        len: usize,
    },
    /// The input does not start with a MessagePack map.
    #[error("state does not start with a messagepack map")]
    NotAMap,
    /// The map has more entries than [`MAX_COMPONENTS_PER_OBJECT`].
    #[error("state has {count} components, the limit is {MAX_COMPONENTS_PER_OBJECT}")]
    TooManyComponents {
        /// The entry count claimed by the map header.
        count: u64,
    },
    /// A key is not a string, or is too long, or not UTF-8.
    #[error("component {index}: name is not a utf-8 string of at most {MAX_COMPONENT_NAME_LEN} bytes")]
    BadName {
        /// Position of the entry in the map.
        index: usize,
    },
    /// A value is not a `bin`.
    #[error("component {name:?}: value is not a messagepack bin")]
    NotBinary {
        /// The component's name.
        name: String,
    },
    /// Names are not strictly ascending (unsorted or duplicated).
    #[error("component {name:?} is out of order or duplicated")]
    NotCanonical {
        /// The name found out of order.
        name: String,
    },
    /// A header claims more bytes than remain.
    #[error("state is truncated")]
    Truncated,
    /// A header uses a longer form than needed.
    #[error("state uses a non-shortest messagepack header")]
    LongHeader,
    /// Bytes remain after the map.
    #[error("{extra} bytes after the end of the state")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

impl ObjectState {
    /// The empty state (an object with no publishable components).
    pub fn empty() -> ObjectState {
        StateBuilder::new().finish()
    }

    /// Checks that `bytes` are a canonical state and wraps them.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<ObjectState, StateError> {
        Self::validate(&bytes)?;
        Ok(ObjectState(Bytes::from(bytes)))
    }

    /// Checks that `bytes` are a canonical state without allocating.
    pub fn validate(bytes: &[u8]) -> Result<(), StateError> {
        walk(bytes, |_, _| ())
    }

    /// Wraps bytes that were validated before (by the store on write, say),
    /// without checking them again. Reading code must still expect
    /// [`ObjectState::components`] to fail.
    pub fn from_trusted_bytes(bytes: Vec<u8>) -> ObjectState {
        ObjectState(Bytes::from(bytes))
    }

    /// The canonical bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Consumes the state, returning its bytes (without a copy when no
    /// clone of the state is left).
    pub fn into_bytes(self) -> Vec<u8> {
        Vec::from(self.0)
    }

    /// The blake3 hash of the bytes, as used in the digest.
    pub fn hash(&self) -> crate::digest::StateHash {
        crate::digest::state_hash(&self.0)
    }

    /// The `(name, component bytes)` pairs, in canonical order.
    pub fn components(&self) -> Result<Vec<(&str, &[u8])>, StateError> {
        parse(&self.0)
    }

    /// Hands each `(name, component bytes)` pair to `visit` in canonical
    /// order, without allocating; fails (possibly after some visits) on a
    /// damaged encoding.
    pub fn visit_components<'a>(&'a self, visit: impl FnMut(&'a str, &'a [u8])) -> Result<(), StateError> {
        walk(&self.0, visit)
    }
}

impl fmt::Debug for ObjectState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.components() {
            Ok(parts) => f.debug_map().entries(parts.iter().map(|(n, b)| (n, b.len()))).finish(),
            Err(e) => write!(f, "ObjectState(invalid: {e})"),
        }
    }
}

/// Builds a canonical state from components given in any order.
#[derive(Default)]
pub struct StateBuilder {
    parts: Vec<(String, Vec<u8>)>,
}

impl StateBuilder {
    /// An empty builder.
    pub fn new() -> StateBuilder {
        StateBuilder::default()
    }

    /// Adds one component's encoded bytes under its name. A later call with
    /// the same name replaces the earlier one.
    pub fn component(&mut self, name: &str, bytes: Vec<u8>) -> &mut Self {
        match self.parts.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = bytes,
            None => self.parts.push((name.to_owned(), bytes)),
        }
        self
    }

    /// Produces the canonical bytes.
    pub fn finish(&mut self) -> ObjectState {
        self.parts.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let payload: usize = self.parts.iter().map(|(n, b)| n.len() + b.len() + 10).sum();
        let mut out = Vec::with_capacity(payload + 5);
        // Writing into a Vec cannot fail.
        let _ = rmp::encode::write_map_len(&mut out, self.parts.len() as u32);
        for (name, bytes) in &self.parts {
            let _ = rmp::encode::write_str(&mut out, name);
            let _ = rmp::encode::write_bin(&mut out, bytes);
        }
        ObjectState(Bytes::from(out))
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, StateError> {
        let b = *self.bytes.get(self.at).ok_or(StateError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn uint(&mut self, width: usize) -> Result<u64, StateError> {
        let slice = self.take(width)?;
        Ok(slice.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], StateError> {
        let end = self.at.checked_add(len).ok_or(StateError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(StateError::Truncated)?;
        self.at = end;
        Ok(slice)
    }
}

/// Rejects a length written in a wider form than MessagePack's shortest.
fn shortest(len: u64, min_for_form: u64) -> Result<u64, StateError> {
    if len < min_for_form {
        Err(StateError::LongHeader)
    } else {
        Ok(len)
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<(&str, &[u8])>, StateError> {
    let mut parts = Vec::new();
    walk(bytes, |name, value| parts.push((name, value)))?;
    Ok(parts)
}

/// Checks the whole encoding, handing each component to `visit` in order.
fn walk<'a>(bytes: &'a [u8], mut visit: impl FnMut(&'a str, &'a [u8])) -> Result<(), StateError> {
    if bytes.len() > MAX_STATE_BYTES {
        return Err(StateError::TooLarge { len: bytes.len() });
    }
    let mut cur = Cursor { bytes, at: 0 };
    let count = match cur.byte().map_err(|_| StateError::NotAMap)? {
        m @ 0x80..=0x8f => u64::from(m & 0x0f),
        0xde => shortest(cur.uint(2)?, 16)?,
        0xdf => shortest(cur.uint(4)?, 1 << 16)?,
        _ => return Err(StateError::NotAMap),
    };
    if count > MAX_COMPONENTS_PER_OBJECT as u64 {
        return Err(StateError::TooManyComponents { count });
    }
    let mut previous: Option<&str> = None;
    for index in 0..count as usize {
        let name_len = match cur.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => shortest(cur.uint(1)?, 32)?,
            _ => return Err(StateError::BadName { index }),
        };
        if name_len > MAX_COMPONENT_NAME_LEN as u64 {
            return Err(StateError::BadName { index });
        }
        let name = std::str::from_utf8(cur.take(name_len as usize)?).map_err(|_| StateError::BadName { index })?;
        let value_len = match cur.byte()? {
            0xc4 => cur.uint(1)?,
            0xc5 => shortest(cur.uint(2)?, 1 << 8)?,
            0xc6 => shortest(cur.uint(4)?, 1 << 16)?,
            _ => {
                return Err(StateError::NotBinary { name: name.to_owned() });
            }
        };
        let value = cur.take(usize::try_from(value_len).map_err(|_| StateError::Truncated)?)?;
        if let Some(prev) = previous
            && prev.as_bytes() >= name.as_bytes()
        {
            return Err(StateError::NotCanonical { name: name.to_owned() });
        }
        previous = Some(name);
        visit(name, value);
    }
    if cur.at != bytes.len() {
        return Err(StateError::TrailingBytes {
            extra: bytes.len() - cur.at,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_insertion_does_not_change_bytes() {
        let a = StateBuilder::new()
            .component("position", vec![1, 2])
            .component("house", vec![3])
            .finish();
        let b = StateBuilder::new()
            .component("house", vec![3])
            .component("position", vec![1, 2])
            .finish();
        assert_eq!(a, b);
        assert_eq!(
            a.components().expect("valid"),
            vec![("house", &[3u8][..]), ("position", &[1u8, 2][..])]
        );
    }

    /// Golden bytes of the canonical encoding. A change here is a format
    /// change: caches and peers would disagree on every digest.
    #[test]
    fn golden_canonical_bytes() {
        let state = StateBuilder::new()
            .component("terrain", vec![0x92, 0x01, 0xa4, b'r', b'o', b'c', b'k'])
            .component("height", vec![0x05])
            .finish();
        let expected: &[u8] = &[
            0x82, // map of 2
            0xa6, b'h', b'e', b'i', b'g', b'h', b't', // "height"
            0xc4, 0x01, 0x05, // bin8 [5]
            0xa7, b't', b'e', b'r', b'r', b'a', b'i', b'n', // "terrain"
            0xc4, 0x07, 0x92, 0x01, 0xa4, b'r', b'o', b'c', b'k', // bin8 [1, "rock"]
        ];
        assert_eq!(state.as_bytes(), expected);
        assert_eq!(ObjectState::empty().as_bytes(), &[0x80]);
    }

    #[test]
    fn rejects_non_canonical_and_hostile_input() {
        let unsorted = [0x82, 0xa1, b'b', 0xc4, 0x00, 0xa1, b'a', 0xc4, 0x00];
        assert!(matches!(
            ObjectState::from_bytes(unsorted.to_vec()),
            Err(StateError::NotCanonical { .. })
        ));
        let duplicate = [0x82, 0xa1, b'a', 0xc4, 0x00, 0xa1, b'a', 0xc4, 0x00];
        assert!(ObjectState::from_bytes(duplicate.to_vec()).is_err());
        let huge_map = [0xdf, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            ObjectState::from_bytes(huge_map.to_vec()),
            Err(StateError::TooManyComponents { count: u32::MAX.into() })
        );
        let huge_bin = [0x81, 0xa1, b'a', 0xc6, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(ObjectState::from_bytes(huge_bin.to_vec()), Err(StateError::Truncated));
        let long_form = [0xde, 0x00, 0x00];
        assert_eq!(ObjectState::from_bytes(long_form.to_vec()), Err(StateError::LongHeader));
        assert_eq!(
            ObjectState::from_bytes(vec![0x80, 0x00]),
            Err(StateError::TrailingBytes { extra: 1 })
        );
        assert_eq!(ObjectState::from_bytes(vec![]), Err(StateError::NotAMap));
    }

    proptest::proptest! {
        #[test]
        fn built_states_always_parse_back(
            parts in proptest::collection::btree_map("[a-z]{1,20}", proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..10)
        ) {
            let mut builder = StateBuilder::new();
            for (name, bytes) in &parts {
                builder.component(name, bytes.clone());
            }
            let state = builder.finish();
            let parsed = ObjectState::from_bytes(state.as_bytes().to_vec()).expect("canonical");
            let back: Vec<(String, Vec<u8>)> = parsed.components().expect("valid")
                .into_iter().map(|(n, b)| (n.to_owned(), b.to_vec())).collect();
            let want: Vec<(String, Vec<u8>)> = parts.into_iter().collect();
            proptest::prop_assert_eq!(back, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = ObjectState::from_bytes(bytes);
        }
    }
}
