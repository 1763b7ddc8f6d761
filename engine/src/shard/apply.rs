//! Applying a server answer or a live delta to a cached shard, in memory,
//! with the digest checked before anything may be written or shown.
//!
//! The new digest is computed incrementally from the copy's digest: each
//! object removed or replaced subtracts its leaf, each object written adds
//! one, so the cost follows the size of the update, not of the shard.

use std::collections::BTreeMap;

use crate::{Digest, Epoch, ObjectId, RegistryHash, Seq};
use chrono::{DateTime, Utc};

use super::copy::{CachedObject, CachedShard, ShardHeader};
use super::key::ShardKey;

/// How an update relates to the copy it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateKind {
    /// The changes after `base` (the copy's hwm): tombstones, then upserts.
    Delta {
        /// The hwm the copy must be at.
        base: Seq,
        /// Objects that left the shard after `base`.
        tombstones: Vec<ObjectId>,
    },
    /// The live id list at the new hwm, plus every object changed after
    /// `base`: used when `base` is behind the server's tombstone horizon.
    /// Cached objects not in the list are dropped.
    Manifest {
        /// The hwm the copy must be at.
        base: Seq,
        /// Every live id, ascending.
        live: Vec<ObjectId>,
    },
    /// The whole shard, replacing any copy.
    Snapshot,
}

/// A verified-on-apply update of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardUpdate {
    /// The shard's epoch on the server.
    pub epoch: Epoch,
    /// The seq the update brings the copy to.
    pub new_hwm: Seq,
    /// The server's digest at `new_hwm`.
    pub digest: Digest,
    /// What the update is relative to.
    pub kind: UpdateKind,
    /// Objects written (new or changed), in any order.
    pub upserts: Vec<CachedObject>,
}

/// Why an update could not be applied. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A delta or manifest arrived without a copy to apply it to.
    #[error("shard {key}: no cached copy to apply a delta to")]
    NoBase {
        /// The shard.
        key: Box<ShardKey>,
    },
    /// The copy is of another epoch or hwm than the update expects.
    #[error("shard {key}: update expects epoch {want_epoch} at {want_base}, the copy is epoch {epoch} at {hwm}")]
    Base {
        /// The shard.
        key: Box<ShardKey>,
        /// The epoch the update is for.
        want_epoch: Epoch,
        /// The hwm it applies to.
        want_base: Seq,
        /// The copy's epoch.
        epoch: Epoch,
        /// The copy's hwm.
        hwm: Seq,
    },
    /// After applying, the copy's digest differs from the server's: the copy
    /// (or the update) is damaged, and the shard needs a repair.
    #[error("shard {key}: digest after applying is {computed}, the server's is {expected}")]
    DigestMismatch {
        /// The shard.
        key: Box<ShardKey>,
        /// The server's digest.
        expected: Digest,
        /// The digest computed from the copy.
        computed: Digest,
    },
    /// Two upserts name the same object.
    #[error("shard {key}: object {id} appears twice in one update")]
    Duplicate {
        /// The shard.
        key: Box<ShardKey>,
        /// The object.
        id: ObjectId,
    },
}

/// Applies `update` to `copy` (or builds a new copy from a snapshot),
/// returning the new copy only if its digest equals the server's.
pub fn apply(
    key: &ShardKey,
    registry: RegistryHash,
    copy: Option<&CachedShard>,
    update: ShardUpdate,
    now: DateTime<Utc>,
) -> Result<CachedShard, ApplyError> {
    let header = header_after(key, registry, &update, now);
    let upserts = sorted_upserts(key, update.upserts)?;
    let (objects, digest) = match &update.kind {
        UpdateKind::Snapshot => {
            let digest = super::copy::recompute_digest(&upserts);
            (upserts, digest)
        }
        UpdateKind::Delta { base, .. } | UpdateKind::Manifest { base, .. } => {
            let copy = copy.ok_or_else(|| ApplyError::NoBase {
                key: Box::new(key.clone()),
            })?;
            check_base(key, &copy.header, update.epoch, *base)?;
            let (objects, digest) = merge(copy, &update.kind, upserts);
            match update.kind {
                // A manifest also serves repairs, when the copy's own digest
                // is in doubt: recompute rather than trust it.
                UpdateKind::Manifest { .. } => {
                    let digest = super::copy::recompute_digest(&objects);
                    (objects, digest)
                }
                _ => (objects, digest),
            }
        }
    };
    check_digest(key, header.digest, digest)?;
    Ok(CachedShard { header, objects })
}

/// The upserts sorted by id; two of one id are refused.
fn sorted_upserts(key: &ShardKey, mut upserts: Vec<CachedObject>) -> Result<Vec<CachedObject>, ApplyError> {
    upserts.sort_unstable_by_key(|o| o.id);
    match upserts.windows(2).find(|w| w[0].id == w[1].id) {
        Some(dup) => Err(ApplyError::Duplicate {
            key: Box::new(key.clone()),
            id: dup[0].id,
        }),
        None => Ok(upserts),
    }
}

/// Refuses an update that does not follow the copy (`header`).
fn check_base(key: &ShardKey, header: &ShardHeader, epoch: Epoch, base: Seq) -> Result<(), ApplyError> {
    if header.epoch != epoch || header.hwm != base {
        return Err(ApplyError::Base {
            key: Box::new(key.clone()),
            want_epoch: epoch,
            want_base: base,
            epoch: header.epoch,
            hwm: header.hwm,
        });
    }
    Ok(())
}

/// Refuses a result whose digest is not the one the update states.
fn check_digest(key: &ShardKey, expected: Digest, computed: Digest) -> Result<(), ApplyError> {
    if computed != expected {
        return Err(ApplyError::DigestMismatch {
            key: Box::new(key.clone()),
            expected,
            computed,
        });
    }
    Ok(())
}

/// The header of a copy once `update` is applied (its digest checked).
fn header_after(key: &ShardKey, registry: RegistryHash, update: &ShardUpdate, now: DateTime<Utc>) -> ShardHeader {
    ShardHeader {
        key: key.clone(),
        epoch: update.epoch,
        hwm: update.new_hwm,
        digest: update.digest,
        registry,
        snapshot_time: now,
    }
}

/// [`apply`] of a live delta to a copy the caller owns, changing it in
/// place: only the objects the delta names are touched (hashed, replaced,
/// inserted or removed), where [`apply`] builds a new copy of every object.
/// What a client does with each live delta of a shard it follows. The
/// digest is checked before anything changes: on an error the copy is as
/// it was. A snapshot or manifest is applied by [`apply`].
pub fn apply_in_place(
    key: &ShardKey,
    registry: RegistryHash,
    shard: &mut CachedShard,
    update: ShardUpdate,
    now: DateTime<Utc>,
) -> Result<(), ApplyError> {
    let UpdateKind::Delta { base, tombstones } = &update.kind else {
        *shard = apply(key, registry, Some(shard), update, now)?;
        return Ok(());
    };
    let header = header_after(key, registry, &update, now);
    let upserts = sorted_upserts(key, update.upserts)?;
    check_base(key, &shard.header, update.epoch, *base)?;
    let upserted = |id: ObjectId| upserts.binary_search_by_key(&id, |o| o.id).is_ok();
    let mut removed: Vec<ObjectId> = tombstones.iter().copied().filter(|id| !upserted(*id)).collect();
    removed.sort_unstable();
    removed.dedup();
    let find = |objects: &[CachedObject], id: ObjectId| objects.binary_search_by_key(&id, |o| o.id);
    // The digest first, from the objects that change only.
    let mut digest = shard.header.digest;
    for id in &removed {
        if let Ok(at) = find(&shard.objects, *id) {
            let old = &shard.objects[at];
            digest.remove(old.id, old.version, &old.state.hash());
        }
    }
    for n in &upserts {
        if let Ok(at) = find(&shard.objects, n.id) {
            let old = &shard.objects[at];
            digest.remove(old.id, old.version, &old.state.hash());
        }
        digest.add(n.id, n.version, &n.state.hash());
    }
    check_digest(key, header.digest, digest)?;
    // Then the change: a removal or an insertion shifts the objects after
    // it (a move of their handles, no copy of their bytes).
    if !removed.is_empty() {
        shard.objects.retain(|o| removed.binary_search(&o.id).is_err());
    }
    for n in upserts {
        match find(&shard.objects, n.id) {
            Ok(at) => shard.objects[at] = n,
            Err(at) => shard.objects.insert(at, n),
        }
    }
    shard.header = header;
    Ok(())
}

/// Walks the copy and the sorted upserts together, dropping tombstoned (or
/// unlisted) objects and replacing upserted ones, keeping the digest current.
fn merge(copy: &CachedShard, kind: &UpdateKind, upserts: Vec<CachedObject>) -> (Vec<CachedObject>, Digest) {
    let mut digest = copy.header.digest;
    let mut removed: Vec<ObjectId> = match kind {
        UpdateKind::Delta { tombstones, .. } => tombstones.clone(),
        _ => Vec::new(),
    };
    removed.sort_unstable();
    let live: Option<&[ObjectId]> = match kind {
        UpdateKind::Manifest { live, .. } => Some(live),
        _ => None,
    };
    let drops =
        |id: ObjectId| removed.binary_search(&id).is_ok() || live.is_some_and(|l| l.binary_search(&id).is_err());
    let mut out = Vec::with_capacity(copy.objects.len() + upserts.len());
    let mut new = upserts.into_iter().peekable();
    for old in &copy.objects {
        while let Some(n) = new.next_if(|n| n.id < old.id) {
            digest.add(n.id, n.version, &n.state.hash());
            out.push(n);
        }
        let replaced = new.next_if(|n| n.id == old.id);
        if replaced.is_some() || drops(old.id) {
            digest.remove(old.id, old.version, &old.state.hash());
        }
        match replaced {
            Some(n) => {
                digest.add(n.id, n.version, &n.state.hash());
                out.push(n);
            }
            None if drops(old.id) => {}
            None => out.push(old.clone()),
        }
    }
    for n in new {
        digest.add(n.id, n.version, &n.state.hash());
        out.push(n);
    }
    (out, digest)
}

/// Applies a repair answer: for a manifest, the live ids, each object taken
/// from the upserts or else from the copy (whose digest did not match, so
/// its own digest is not trusted and the whole result is recomputed),
/// checked against the server's digest as a snapshot; any other update as
/// [`apply`] does.
pub fn apply_repair(
    key: &ShardKey,
    registry: RegistryHash,
    copy: Option<&CachedShard>,
    update: ShardUpdate,
    now: DateTime<Utc>,
) -> Result<CachedShard, ApplyError> {
    let UpdateKind::Manifest { live, .. } = &update.kind else {
        return apply(key, registry, copy, update, now);
    };
    let upserts: BTreeMap<ObjectId, &CachedObject> = update.upserts.iter().map(|o| (o.id, o)).collect();
    let held: BTreeMap<ObjectId, &CachedObject> = copy
        .map(|c| c.objects.iter().map(|o| (o.id, o)).collect())
        .unwrap_or_default();
    let objects: Vec<CachedObject> = live
        .iter()
        .filter_map(|id| upserts.get(id).or_else(|| held.get(id)).map(|o| (*o).clone()))
        .collect();
    let snapshot = ShardUpdate {
        epoch: update.epoch,
        new_hwm: update.new_hwm,
        digest: update.digest,
        kind: UpdateKind::Snapshot,
        upserts: objects,
    };
    apply(key, registry, None, snapshot, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::copy::recompute_digest;
    use crate::state::StateBuilder;
    use crate::{ServerIdentity, ShardId, ZoneId};

    fn key() -> ShardKey {
        ShardKey::new(
            ServerIdentity([1; 32]),
            "world",
            None,
            ZoneId::new("z").expect("zone"),
            ShardId(1),
        )
        .expect("key")
    }

    fn obj(id: u64, version: u64) -> CachedObject {
        CachedObject {
            id: ObjectId(id),
            version: Seq(version),
            state: StateBuilder::new().component("v", vec![version as u8]).finish(),
        }
    }

    fn snapshot(objects: Vec<CachedObject>, hwm: u64) -> CachedShard {
        let update = ShardUpdate {
            epoch: Epoch(9),
            new_hwm: Seq(hwm),
            digest: recompute_digest(&objects),
            kind: UpdateKind::Snapshot,
            upserts: objects,
        };
        apply(&key(), RegistryHash([0; 32]), None, update, Utc::now()).expect("snapshot applies")
    }

    #[test]
    fn delta_replaces_removes_and_adds() {
        let copy = snapshot(vec![obj(1, 1), obj(2, 1), obj(4, 1)], 1);
        let want = vec![obj(1, 1), obj(3, 2), obj(4, 2), obj(5, 2)];
        let update = ShardUpdate {
            epoch: Epoch(9),
            new_hwm: Seq(2),
            digest: recompute_digest(&want),
            kind: UpdateKind::Delta {
                base: Seq(1),
                tombstones: vec![ObjectId(2)],
            },
            upserts: vec![obj(5, 2), obj(3, 2), obj(4, 2)],
        };
        let next = apply(&key(), RegistryHash([0; 32]), Some(&copy), update, Utc::now()).expect("applies");
        assert_eq!(next.objects, want);
        assert_eq!(next.header.hwm, Seq(2));
    }

    #[test]
    fn manifest_drops_unlisted_objects() {
        let copy = snapshot(vec![obj(1, 1), obj(2, 1), obj(3, 1)], 5);
        let want = vec![obj(1, 1), obj(3, 7)];
        let update = ShardUpdate {
            epoch: Epoch(9),
            new_hwm: Seq(7),
            digest: recompute_digest(&want),
            kind: UpdateKind::Manifest {
                base: Seq(5),
                live: vec![ObjectId(1), ObjectId(3)],
            },
            upserts: vec![obj(3, 7)],
        };
        let next = apply(&key(), RegistryHash([0; 32]), Some(&copy), update, Utc::now()).expect("applies");
        assert_eq!(next.objects, want);
    }

    #[test]
    fn a_wrong_digest_or_base_is_refused() {
        let copy = snapshot(vec![obj(1, 1)], 1);
        let mut update = ShardUpdate {
            epoch: Epoch(9),
            new_hwm: Seq(2),
            digest: Digest::EMPTY,
            kind: UpdateKind::Delta {
                base: Seq(1),
                tombstones: vec![],
            },
            upserts: vec![obj(2, 2)],
        };
        assert!(matches!(
            apply(&key(), RegistryHash([0; 32]), Some(&copy), update.clone(), Utc::now()),
            Err(ApplyError::DigestMismatch { .. })
        ));
        update.kind = UpdateKind::Delta {
            base: Seq(0),
            tombstones: vec![],
        };
        assert!(matches!(
            apply(&key(), RegistryHash([0; 32]), Some(&copy), update.clone(), Utc::now()),
            Err(ApplyError::Base { .. })
        ));
        assert!(matches!(
            apply(&key(), RegistryHash([0; 32]), None, update, Utc::now()),
            Err(ApplyError::NoBase { .. })
        ));
    }

    use proptest::prelude::*;

    proptest! {
        /// A delta applied in place gives exactly what `apply` gives (the
        /// same objects and header, or the same refusal), and a refused
        /// delta leaves the copy as it was.
        #[test]
        fn in_place_agrees_with_apply(
            base in proptest::collection::btree_set(0u64..40, 0..20),
            upserts in proptest::collection::btree_set(0u64..40, 0..8),
            tombstones in proptest::collection::vec(0u64..40, 0..8),
            honest in any::<bool>(),
            stale in any::<bool>(),
        ) {
            let copy = snapshot(base.iter().map(|id| obj(*id, 1)).collect(), 3);
            let mut update = ShardUpdate {
                epoch: Epoch(9),
                new_hwm: Seq(4),
                digest: Digest::EMPTY,
                kind: UpdateKind::Delta {
                    base: Seq(if stale { 2 } else { 3 }),
                    tombstones: tombstones.iter().map(|id| ObjectId(*id)).collect(),
                },
                upserts: upserts.iter().rev().map(|id| obj(*id, 4)).collect(),
            };
            if honest && !stale {
                match apply(&key(), RegistryHash([0; 32]), Some(&copy), update.clone(), Utc::now()) {
                    Err(ApplyError::DigestMismatch { computed, .. }) => update.digest = computed,
                    // Only an empty result has the empty digest guessed.
                    Ok(next) => prop_assert!(next.objects.is_empty(), "a wrong digest is refused: {next:?}"),
                    other => prop_assert!(false, "a wrong digest is refused: {other:?}"),
                }
            }
            let now = Utc::now();
            let reference = apply(&key(), RegistryHash([0; 32]), Some(&copy), update.clone(), now);
            let mut in_place = copy.clone();
            let result = apply_in_place(&key(), RegistryHash([0; 32]), &mut in_place, update, now);
            match reference {
                Ok(next) => {
                    prop_assert!(result.is_ok());
                    prop_assert_eq!(&in_place.objects, &next.objects);
                    prop_assert_eq!(&in_place.header, &next.header);
                    prop_assert_eq!(recompute_digest(&in_place.objects), in_place.header.digest);
                }
                Err(e) => {
                    prop_assert_eq!(result.map_err(|e| e.to_string()), Err(e.to_string()));
                    prop_assert_eq!(&in_place, &copy);
                }
            }
        }
    }
}
