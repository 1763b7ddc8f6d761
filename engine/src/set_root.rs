//! The set root: a hash that binds a shard's exact live set.
//!
//! The shard digest ([`crate::digest`]) is an additive set hash: cheap to
//! keep current and enough against accidents, but an adversary who may
//! choose many objects can find another set with the same sum (Wagner's
//! generalized birthday attack). What an origin *signs* for relays must
//! bind the exact set, so it signs this root instead:
//!
//! `root = BLAKE3("hoard-set-root-v1" ‖ for each live object, ascending by
//! id: u64le(id) ‖ u64le(version) ‖ BLAKE3(state))`
//!
//! Every entry is 48 bytes, so the encoding is injective and a second set
//! with the same root is a BLAKE3 collision. Computing it is one pass over
//! the shard (one BLAKE3 per state plus 48 bytes per object); it is only
//! done where a signed head is needed (relays and their clients).

use crate::digest::StateHash;
use crate::ids::{ObjectId, Seq};

/// The prefix hashed before the entries.
pub const SET_ROOT_CONTEXT: &[u8] = b"hoard-set-root-v1";

/// Hashes a shard's live set, given ascending by id. Returns `None` when
/// the ids are not strictly ascending (a set has each id once).
pub fn set_root<'a>(objects: impl IntoIterator<Item = (ObjectId, Seq, &'a [u8])>) -> Option<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SET_ROOT_CONTEXT);
    let mut previous: Option<ObjectId> = None;
    for (id, version, state) in objects {
        if previous.is_some_and(|p| p >= id) {
            return None;
        }
        previous = Some(id);
        update(&mut hasher, id, version, blake3::hash(state).as_bytes());
    }
    Some(*hasher.finalize().as_bytes())
}

/// [`set_root`] over precomputed state hashes (ascending by id).
pub fn set_root_of_hashes(objects: impl IntoIterator<Item = (ObjectId, Seq, StateHash)>) -> Option<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SET_ROOT_CONTEXT);
    let mut previous: Option<ObjectId> = None;
    for (id, version, hash) in objects {
        if previous.is_some_and(|p| p >= id) {
            return None;
        }
        previous = Some(id);
        update(&mut hasher, id, version, &hash);
    }
    Some(*hasher.finalize().as_bytes())
}

fn update(hasher: &mut blake3::Hasher, id: ObjectId, version: Seq, hash: &[u8; 32]) {
    let mut entry = [0u8; 48];
    entry[..8].copy_from_slice(&id.0.to_le_bytes());
    entry[8..16].copy_from_slice(&version.0.to_le_bytes());
    entry[16..].copy_from_slice(hash);
    hasher.update(&entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_root_binds_ids_versions_and_states_and_refuses_unsorted_input() {
        let a = set_root([(ObjectId(1), Seq(3), &b"x"[..]), (ObjectId(2), Seq(4), &b"y"[..])]).expect("sorted");
        let other_version = set_root([(ObjectId(1), Seq(3), &b"x"[..]), (ObjectId(2), Seq(5), &b"y"[..])]);
        let other_state = set_root([(ObjectId(1), Seq(3), &b"x"[..]), (ObjectId(2), Seq(4), &b"z"[..])]);
        let fewer = set_root([(ObjectId(1), Seq(3), &b"x"[..])]);
        assert_ne!(Some(a), other_version);
        assert_ne!(Some(a), other_state);
        assert_ne!(Some(a), fewer);
        assert_eq!(
            set_root([(ObjectId(2), Seq(4), &b"y"[..]), (ObjectId(1), Seq(3), &b"x"[..])]),
            None
        );
        assert_eq!(
            set_root([(ObjectId(1), Seq(3), &b"x"[..]), (ObjectId(1), Seq(3), &b"x"[..])]),
            None
        );
        let hashed = set_root_of_hashes([
            (ObjectId(1), Seq(3), *blake3::hash(b"x").as_bytes()),
            (ObjectId(2), Seq(4), *blake3::hash(b"y").as_bytes()),
        ]);
        assert_eq!(hashed, Some(a));
    }

    /// The worked example of docs/PROTOCOL.md § "Signed shard heads".
    #[test]
    fn worked_example() {
        let empty = set_root([]).expect("empty");
        assert_eq!(hex(&empty), hex(blake3::hash(SET_ROOT_CONTEXT).as_bytes()));
        let root = set_root([(ObjectId(1), Seq(3), &b"x"[..]), (ObjectId(2), Seq(4), &b"y"[..])]).expect("sorted");
        println!("empty {}\nexample {}", hex(&empty), hex(&root));
        let mut manual = Vec::new();
        manual.extend_from_slice(SET_ROOT_CONTEXT);
        for (id, version, state) in [(1u64, 3u64, &b"x"[..]), (2, 4, &b"y"[..])] {
            manual.extend_from_slice(&id.to_le_bytes());
            manual.extend_from_slice(&version.to_le_bytes());
            manual.extend_from_slice(blake3::hash(state).as_bytes());
        }
        assert_eq!(root, *blake3::hash(&manual).as_bytes());
    }
}
