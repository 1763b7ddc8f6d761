//! The shard digest: an incremental set hash of a shard's live objects.
//!
//! `digest = Σ leaf(id, version, state) mod 2^256`, plus the object count, where
//! `leaf = blake3(id_le64 ‖ version_le64 ‖ blake3(state))` read as a
//! little-endian 256-bit integer. Adding or removing one object is one 256-bit
//! addition or subtraction, so the server keeps digests current on every commit
//! and a client recomputes one in a single pass over its cache.
//!
//! Modular addition rather than XOR: with XOR, two equal leaves cancel, so a
//! duplicated object (or a pair of them) would be invisible. With a sum, a
//! duplicate shifts the digest, and the count catches a leaf added and removed
//! in the wrong place.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ObjectId, Seq};

/// The blake3 hash of an object's canonical state bytes.
pub type StateHash = [u8; 32];

/// Hashes canonical state bytes.
pub fn state_hash(state: &[u8]) -> StateHash {
    *blake3::hash(state).as_bytes()
}

/// The digest of a set of `(id, version, state)` objects.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Digest {
    /// The sum of leaves, as four little-endian 64-bit limbs.
    sum: [u64; 4],
    /// How many objects the sum covers.
    count: u64,
}

/// Encoded size of a digest: 32 bytes of sum then an 8-byte count.
pub const DIGEST_BYTES: usize = 40;

impl Digest {
    /// The digest of the empty set.
    pub const EMPTY: Digest = Digest { sum: [0; 4], count: 0 };

    /// The leaf of one object, as a 256-bit integer in limbs.
    pub fn leaf(id: ObjectId, version: Seq, state_hash: &StateHash) -> [u64; 4] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&id.0.to_le_bytes());
        hasher.update(&version.0.to_le_bytes());
        hasher.update(state_hash);
        limbs(hasher.finalize().as_bytes())
    }

    /// Adds one object.
    pub fn add(&mut self, id: ObjectId, version: Seq, state_hash: &StateHash) {
        self.add_leaf(&Digest::leaf(id, version, state_hash));
    }

    /// Removes one object previously added with the same arguments.
    pub fn remove(&mut self, id: ObjectId, version: Seq, state_hash: &StateHash) {
        self.remove_leaf(&Digest::leaf(id, version, state_hash));
    }

    /// Adds a precomputed leaf.
    pub fn add_leaf(&mut self, leaf: &[u64; 4]) {
        let mut carry = false;
        for (acc, &x) in self.sum.iter_mut().zip(leaf) {
            let (s1, c1) = acc.overflowing_add(x);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *acc = s2;
            carry = c1 || c2;
        }
        self.count = self.count.wrapping_add(1);
    }

    /// Removes a precomputed leaf.
    pub fn remove_leaf(&mut self, leaf: &[u64; 4]) {
        let mut borrow = false;
        for (acc, &x) in self.sum.iter_mut().zip(leaf) {
            let (d1, b1) = acc.overflowing_sub(x);
            let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
            *acc = d2;
            borrow = b1 || b2;
        }
        self.count = self.count.wrapping_sub(1);
    }

    /// Combines two digests of disjoint sets (used when digests are computed in parallel).
    #[must_use]
    pub fn merged(mut self, other: &Digest) -> Digest {
        self.add_leaf(&other.sum);
        // add_leaf counted one object; correct to the other set's count.
        self.count = self.count.wrapping_sub(1).wrapping_add(other.count);
        self
    }

    /// How many objects the digest covers.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The 40-byte encoding: the sum little-endian, then the count little-endian.
    pub fn to_bytes(&self) -> [u8; DIGEST_BYTES] {
        let mut out = [0u8; DIGEST_BYTES];
        for (chunk, limb) in out[..32].chunks_exact_mut(8).zip(self.sum) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out[32..].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// Decodes [`Digest::to_bytes`]; every 40-byte string is a valid digest.
    pub fn from_bytes(bytes: &[u8; DIGEST_BYTES]) -> Digest {
        let mut sum_bytes = [0u8; 32];
        sum_bytes.copy_from_slice(&bytes[..32]);
        let mut count = [0u8; 8];
        count.copy_from_slice(&bytes[32..]);
        Digest {
            sum: limbs(&sum_bytes),
            count: u64::from_le_bytes(count),
        }
    }
}

fn limbs(bytes: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (limb, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        *limb = u64::from_le_bytes(word);
    }
    out
}

impl fmt::Display for Digest {
    /// Hex of the sum (most significant limb first, as a number reads) and the count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for limb in self.sum.iter().rev() {
            write!(f, "{limb:016x}")?;
        }
        write!(f, "/{}", self.count)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(i: u64) -> (ObjectId, Seq, StateHash) {
        (ObjectId(i), Seq(i * 7 + 1), state_hash(&i.to_le_bytes()))
    }

    #[test]
    fn order_does_not_matter_and_removal_inverts_addition() {
        let mut forward = Digest::EMPTY;
        let mut backward = Digest::EMPTY;
        for i in 0..100 {
            let (id, v, h) = obj(i);
            forward.add(id, v, &h);
        }
        for i in (0..100).rev() {
            let (id, v, h) = obj(i);
            backward.add(id, v, &h);
        }
        assert_eq!(forward, backward);
        for i in 0..100 {
            let (id, v, h) = obj(i);
            forward.remove(id, v, &h);
        }
        assert_eq!(forward, Digest::EMPTY);
    }

    #[test]
    fn duplicates_do_not_cancel() {
        let (id, v, h) = obj(3);
        let mut twice = Digest::EMPTY;
        twice.add(id, v, &h);
        twice.add(id, v, &h);
        assert_ne!(twice, Digest::EMPTY);
        let mut sum_only = twice;
        sum_only.count = 0;
        assert_ne!(sum_only, Digest::EMPTY, "the sum alone must not cancel either");
    }

    #[test]
    fn version_and_state_change_the_digest() {
        let (id, v, h) = obj(1);
        let mut a = Digest::EMPTY;
        a.add(id, v, &h);
        let mut b = Digest::EMPTY;
        b.add(id, v.next(), &h);
        let mut c = Digest::EMPTY;
        c.add(id, v, &state_hash(b"other"));
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn carries_propagate_across_limbs() {
        let mut d = Digest::EMPTY;
        d.add_leaf(&[u64::MAX, u64::MAX, 0, 0]);
        d.add_leaf(&[1, 0, 0, 0]);
        assert_eq!(d.sum, [0, 0, 1, 0]);
        d.remove_leaf(&[1, 0, 0, 0]);
        assert_eq!(d.sum, [u64::MAX, u64::MAX, 0, 0]);
    }

    #[test]
    fn merge_equals_sequential_addition() {
        let mut all = Digest::EMPTY;
        let mut left = Digest::EMPTY;
        let mut right = Digest::EMPTY;
        for i in 0..50 {
            let (id, v, h) = obj(i);
            all.add(id, v, &h);
            if i % 2 == 0 {
                left.add(id, v, &h);
            } else {
                right.add(id, v, &h);
            }
        }
        assert_eq!(left.merged(&right), all);
        assert_eq!(Digest::EMPTY.merged(&all), all);
    }

    #[test]
    fn bytes_round_trip() {
        let (id, v, h) = obj(9);
        let mut d = Digest::EMPTY;
        d.add(id, v, &h);
        assert_eq!(Digest::from_bytes(&d.to_bytes()), d);
    }

    /// Golden value: the digest of a fixed set. If this changes, every cache
    /// and every peer disagrees; bump the cache and protocol versions.
    #[test]
    fn golden_digest_of_a_fixed_set() {
        let mut d = Digest::EMPTY;
        for i in 1..=3u64 {
            d.add(ObjectId(i), Seq(i), &state_hash(format!("state-{i}").as_bytes()));
        }
        assert_eq!(d.count(), 3);
        assert_eq!(d.to_string(), GOLDEN);
    }
    /// Computed independently (Python blake3) from the definition in the module docs.
    const GOLDEN: &str = "d13ac85adf02aa48399630aa09410808de1836401c73b0c6f35636c974644d68/3";
}

/// The worked examples of docs/PROTOCOL.md § Hashes and digests, to the byte.
#[cfg(test)]
mod protocol_examples {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_documented_leaves_and_digests_are_what_the_code_computes() {
        let h1 = state_hash(&[0x81, 0xa1, b'n', 0xc4, 0x01, 0x05]);
        assert_eq!(
            hex(&h1),
            "c3742658d81e23a2c86e72892a1fc92056710adcbd097d132630d66a9691b3f5"
        );
        let leaf1 = blake3::hash(&[&42u64.to_le_bytes()[..], &7u64.to_le_bytes(), &h1].concat());
        assert_eq!(
            leaf1.to_hex().as_str(),
            "b9dd2370a31d986fa7fda5ae22355ed20974a2d4ec656206980d070b037e5979"
        );
        let mut d = Digest::EMPTY;
        d.add(ObjectId(42), Seq(7), &h1);
        assert_eq!(
            hex(&d.to_bytes()),
            "b9dd2370a31d986fa7fda5ae22355ed20974a2d4ec656206980d070b037e59790100000000000000"
        );
        let h2 = state_hash(&[0x81, 0xa1, b'n', 0xc4, 0x01, 0x06]);
        assert_eq!(
            hex(&h2),
            "db1a2d24ea7331977b6374bdea77627b992a45d16e47e7d57d10ada759d17369"
        );
        let leaf2 = blake3::hash(&[&43u64.to_le_bytes()[..], &9u64.to_le_bytes(), &h2].concat());
        assert_eq!(
            leaf2.to_hex().as_str(),
            "e94564b874135f3f41815a99efa308e4192dd2cbdf8f659a16234ad20b3b1fd4"
        );
        d.add(ObjectId(43), Seq(9), &h2);
        assert_eq!(
            hex(&d.to_bytes()),
            "a22388281831f7aee87e004812d966b623a174a0ccf5c7a0ae3051dd0eb9784d0200000000000000"
        );
    }
}
