//! A zone's transient state sent as a change of the state sent before it
//! (`TransientPatch`, 0xA4): the server diffs each new payload against the
//! one every session in the zone last got, and the client rebuilds the new
//! payload from the one it holds. A game's transient state (who stands
//! where) mostly repeats from one send to the next, and the whole of it goes
//! to every session in the zone, so sending the whole each time costs the
//! square of the zone's sessions; a patch costs what changed.
//!
//! A patch is a list of operations, each `(offset, len, bytes)`: copy
//! `len` bytes of the base from `offset`, then append `bytes`. Its `base`
//! is the first 8 bytes of the BLAKE3 hash of the payload it applies to
//! ([`base_tag`]), so a client never builds on the wrong one; a client
//! without that base drops the patch and waits for the next whole payload
//! (the server sends one at least every [`WHOLE_EVERY`] sends).

use std::time::{Duration, Instant};

use similar::{Algorithm, DiffTag, capture_diff_slices_deadline};

use crate::wire::{MAX_TRANSIENT_BYTES, MAX_TRANSIENT_PATCH_OPS, PatchOp};

/// A zone's transient state goes whole (not as a patch) at least once in
/// this many sends: a client that somehow lost its base is back in step
/// within this many sends.
pub const WHOLE_EVERY: u32 = 20;

/// Longest a diff may take; a slower one (payloads with little in common)
/// gives up and the payload goes whole. The caller makes it the deadline
/// [`diff`] takes (this module reads no clock).
pub const DIFF_DEADLINE: Duration = Duration::from_millis(2);

/// Bytes of a payload's hash that name it as a patch's base.
pub const BASE_TAG_BYTES: usize = 8;

/// The tag naming `payload` as a patch's base: the first 8 bytes of its
/// BLAKE3 hash.
pub fn base_tag(payload: &[u8]) -> [u8; BASE_TAG_BYTES] {
    let mut tag = [0u8; BASE_TAG_BYTES];
    tag.copy_from_slice(&blake3::hash(payload).as_bytes()[..BASE_TAG_BYTES]);
    tag
}

/// The operations that turn `old` into `new`, or `None` when a patch would
/// not be worth sending: its operations would carry at least half of `new`'s
/// bytes, or there would be more than [`MAX_TRANSIENT_PATCH_OPS`], or the
/// diff ran out of time: `deadline`, on the caller's clock (its now plus
/// [`DIFF_DEADLINE`]).
pub fn diff(old: &[u8], new: &[u8], deadline: Instant) -> Option<Vec<PatchOp>> {
    let ops = capture_diff_slices_deadline(Algorithm::Myers, old, new, Some(deadline));
    let mut out: Vec<PatchOp> = Vec::new();
    let mut cost = 0usize;
    for op in ops {
        let (tag, old_range, new_range) = op.as_tag_tuple();
        match tag {
            DiffTag::Equal => {
                out.push(PatchOp(to_u32(old_range.start)?, to_u32(old_range.len())?, Vec::new()));
                // An operation costs its two numbers (a few bytes each).
                cost += 6;
            }
            DiffTag::Delete => {}
            DiffTag::Insert | DiffTag::Replace => {
                let bytes = &new[new_range];
                match out.last_mut() {
                    Some(last) => last.2.extend_from_slice(bytes),
                    None => out.push(PatchOp(0, 0, bytes.to_vec())),
                }
                cost += bytes.len();
            }
        }
        if out.len() > MAX_TRANSIENT_PATCH_OPS || cost * 2 >= new.len() {
            return None;
        }
    }
    // A diff that gave up at its deadline still describes `new` correctly
    // (the rest as one replacement), but is then rarely worth it: the cost
    // check above decides, as for any other.
    Some(out)
}

fn to_u32(n: usize) -> Option<u32> {
    u32::try_from(n).ok()
}

/// Why a patch does not apply to a base.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// An operation copies bytes the base does not have.
    #[error("operation {index} copies {len} bytes from offset {offset} of a base of {base} bytes")]
    OutOfBase {
        /// The operation's index.
        index: usize,
        /// Its offset.
        offset: u32,
        /// Its length.
        len: u32,
        /// The base's length.
        base: usize,
    },
    /// The result would be longer than a transient state may be.
    #[error("the patched state would exceed {MAX_TRANSIENT_BYTES} bytes")]
    TooLong,
    /// More operations than a patch may hold.
    #[error("{0} operations; a patch holds at most {MAX_TRANSIENT_PATCH_OPS}")]
    TooManyOps(usize),
}

/// Applies `ops` to `base`: the new payload, checked against every limit
/// before anything is copied.
pub fn apply(base: &[u8], ops: &[PatchOp]) -> Result<Vec<u8>, PatchError> {
    if ops.len() > MAX_TRANSIENT_PATCH_OPS {
        return Err(PatchError::TooManyOps(ops.len()));
    }
    let mut total = 0usize;
    for (index, PatchOp(offset, len, bytes)) in ops.iter().enumerate() {
        let end = (*offset as usize).checked_add(*len as usize);
        if end.is_none_or(|end| end > base.len()) {
            return Err(PatchError::OutOfBase {
                index,
                offset: *offset,
                len: *len,
                base: base.len(),
            });
        }
        total = total.saturating_add(*len as usize).saturating_add(bytes.len());
        if total > MAX_TRANSIENT_BYTES {
            return Err(PatchError::TooLong);
        }
    }
    let mut out = Vec::with_capacity(total);
    for PatchOp(offset, len, bytes) in ops {
        let start = *offset as usize;
        out.extend_from_slice(&base[start..start + *len as usize]);
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// A diff's deadline, as a driver gives it.
    fn soon() -> std::time::Instant {
        std::time::Instant::now() + super::DIFF_DEADLINE
    }

    use super::*;
    use proptest::prelude::*;

    /// A presence list like the demo's: sorted names with positions.
    fn presence(moves: &[(usize, u8)]) -> Vec<u8> {
        let mut list: Vec<(String, u16, u16)> = (0..250).map(|i| (format!("bot-{i}"), 10, 20)).collect();
        for &(who, to) in moves {
            list[who].1 = u16::from(to);
        }
        rmp_serde::to_vec(&list).expect("encodes")
    }

    #[test]
    fn a_few_moves_in_a_long_list_make_a_small_patch_that_rebuilds_the_list() {
        let old = presence(&[]);
        let new = presence(&[(3, 11), (100, 200), (249, 0)]);
        let ops = diff(&old, &new, soon()).expect("worth a patch");
        assert_eq!(apply(&old, &ops).expect("applies"), new);
        let bytes: usize = ops.iter().map(|op| op.2.len() + 6).sum();
        assert!(
            bytes * 20 < new.len(),
            "{bytes} bytes of patch for {} of state",
            new.len()
        );
    }

    #[test]
    fn an_unrelated_payload_goes_whole() {
        assert_eq!(diff(b"abcdefghijklmnop", b"0123456789", soon()), None);
    }

    #[test]
    fn a_patch_that_reads_past_its_base_or_grows_past_the_limit_is_refused() {
        assert!(matches!(
            apply(b"abc", &[PatchOp(2, 2, vec![])]),
            Err(PatchError::OutOfBase { index: 0, .. })
        ));
        assert!(matches!(
            apply(b"abc", &[PatchOp(u32::MAX, 1, vec![])]),
            Err(PatchError::OutOfBase { .. })
        ));
        let big = vec![0u8; MAX_TRANSIENT_BYTES];
        assert_eq!(apply(b"abc", &[PatchOp(0, 3, big.clone())]), Err(PatchError::TooLong));
        let many = vec![PatchOp(0, 0, vec![]); MAX_TRANSIENT_PATCH_OPS + 1];
        assert_eq!(
            apply(b"", &many),
            Err(PatchError::TooManyOps(MAX_TRANSIENT_PATCH_OPS + 1))
        );
    }

    #[test]
    fn the_base_tag_is_the_first_bytes_of_the_blake3_hash() {
        // BLAKE3 of the empty input starts af1349b9f5f9a1a6.
        assert_eq!(base_tag(b""), [0xaf, 0x13, 0x49, 0xb9, 0xf5, 0xf9, 0xa1, 0xa6]);
    }

    proptest! {
        #[test]
        fn any_patch_diff_makes_rebuilds_the_new_payload(
            old in proptest::collection::vec(0u8..4, 0..300),
            edits in proptest::collection::vec((0usize..300, 0u8..4), 0..12),
        ) {
            let mut new = old.clone();
            for (at, byte) in edits {
                if new.is_empty() || at % 3 == 0 {
                    new.insert(at.min(new.len()), byte);
                } else if at % 3 == 1 {
                    new.remove(at % new.len());
                } else {
                    let i = at % new.len();
                    new[i] = byte;
                }
            }
            if let Some(ops) = diff(&old, &new, soon()) {
                prop_assert_eq!(apply(&old, &ops).expect("applies"), new);
            }
        }
    }
}
