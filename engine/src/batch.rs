//! Decoding many objects at once and spawning them by archetype: what a
//! client does when a whole zone comes out of its cache.
//!
//! Spawning objects one by one costs an archetype lookup, a boxed value per
//! component and an entity move per further component. Here objects are
//! decoded into one typed column per (component set, component) —
//! [`PublishRegistry::decode_objects`], which callers run on several threads
//! and join with [`DecodedObjects::merge`] or hand over together — and each
//! group of objects with the same components is spawned with one
//! `spawn_batch` of its markers beside its first component and one
//! `insert_batch` per further component ([`PublishRegistry::spawn_decoded`],
//! or [`PublishRegistry::spawn_decoded_all`] for parts decoded apart):
//! objects of one component (most of a world) never move between
//! archetypes, and each archetype's table grows once for all the parts.
//!
//! ```
//! use bevy_ecs::prelude::*;
//! use hoard_engine::prelude::*;
//! use hoard_engine::state::StateBuilder;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Component, Serialize, Deserialize, Debug, PartialEq)]
//! struct House { owner: String }
//!
//! let registry = PublishRegistry::builder().publish::<House>("house", 1).build();
//! let mut b = StateBuilder::new();
//! b.component("house", rmp_serde::to_vec(&House { owner: "ann".into() }).unwrap());
//! let state = b.finish();
//!
//! let decoded = registry.decode_objects([(ObjectId(7), &state)]);
//! let mut world = World::new();
//! let spawned = registry.spawn_decoded(&mut world, decoded, |id| Published::new(*id, ShardId(1)));
//! let (id, entity) = spawned.placed[0];
//! assert_eq!(id, ObjectId(7));
//! assert_eq!(world.get::<House>(entity), Some(&House { owner: "ann".into() }));
//! ```

use std::any::Any;

use bevy_ecs::component::Component;
use bevy_ecs::entity::Entity;
use bevy_ecs::world::World;
use serde::de::DeserializeOwned;

use crate::marker::{Published, Replicated};
use crate::registry::{ComponentDecodeError, ObjectDecodeError, PublishRegistry};
use crate::state::{MAX_COMPONENTS_PER_OBJECT, ObjectState};

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::marker::Published {}
    impl Sealed for crate::marker::Replicated {}
}

/// A marker [`PublishRegistry::spawn_decoded`] spawns objects with:
/// [`Published`] (a server loading its world) or [`Replicated`] (a client
/// materialising its copies). The set is closed so that a component's
/// typed code, made once when it is registered, can spawn the pair in one
/// batch.
pub trait SpawnMarker: Component + sealed::Sealed + Sized {
    #[doc(hidden)]
    fn into_column(markers: Markers<'_, Self>) -> MarkerColumn<'_>;
}

impl SpawnMarker for Published {
    fn into_column(markers: Markers<'_, Self>) -> MarkerColumn<'_> {
        MarkerColumn::Published(markers)
    }
}

impl SpawnMarker for Replicated {
    fn into_column(markers: Markers<'_, Self>) -> MarkerColumn<'_> {
        MarkerColumn::Replicated(markers)
    }
}

/// A group's markers, made one by one as they are spawned (a zone's worth
/// of them is never held in a list), saying exactly how many.
#[doc(hidden)]
pub struct Markers<'a, M> {
    made: Box<dyn Iterator<Item = M> + 'a>,
    left: usize,
}

impl<M> Iterator for Markers<'_, M> {
    type Item = M;

    fn next(&mut self) -> Option<M> {
        let marker = self.made.next()?;
        self.left = self.left.saturating_sub(1);
        Some(marker)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// The markers of one group of objects, of one of the [`SpawnMarker`] types.
#[doc(hidden)]
pub enum MarkerColumn<'a> {
    /// Server-side markers.
    Published(Markers<'a, Published>),
    /// Client-side markers.
    Replicated(Markers<'a, Replicated>),
}

impl MarkerColumn<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            MarkerColumn::Published(m) => m.left,
            MarkerColumn::Replicated(m) => m.left,
        }
    }

    /// Spawns the markers alone.
    pub(crate) fn spawn(self, world: &mut World) -> Vec<Entity> {
        match self {
            MarkerColumn::Published(m) => world.spawn_batch(m).collect(),
            MarkerColumn::Replicated(m) => world.spawn_batch(m).collect(),
        }
    }

    /// Spawns each marker with its value, in one batch; `values` has one
    /// value per marker.
    pub(crate) fn spawn_with<C: Component>(self, world: &mut World, values: Exact<C>) -> Vec<Entity> {
        match self {
            MarkerColumn::Published(m) => world.spawn_batch(m.zip(values)).collect(),
            MarkerColumn::Replicated(m) => world.spawn_batch(m.zip(values)).collect(),
        }
    }
}

/// The values of several columns of one type, in order, saying exactly how
/// many they are: a batch spawn or insert reserves its table once for all
/// of them (growing it part by part copies it, and touches fresh memory,
/// again and again).
pub(crate) struct Exact<C> {
    values: std::iter::Flatten<std::vec::IntoIter<Vec<C>>>,
    left: usize,
}

impl<C> Exact<C> {
    pub(crate) fn new(parts: Vec<Vec<C>>) -> Exact<C> {
        let left = parts.iter().map(Vec::len).sum();
        Exact {
            values: parts.into_iter().flatten(),
            left,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.left
    }
}

impl<C> Iterator for Exact<C> {
    type Item = C;

    fn next(&mut self) -> Option<C> {
        let value = self.values.next()?;
        self.left -= 1;
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<C> ExactSizeIterator for Exact<C> {}

/// The typed values of columns made by one registry entry's `new_column`
/// (the slot ties them, so every downcast succeeds).
pub(crate) fn typed_columns<C: 'static>(columns: Vec<Box<dyn ErasedColumn>>) -> Exact<C> {
    Exact::new(
        columns
            .into_iter()
            .filter_map(|c| c.into_any().downcast::<Column<C>>().ok())
            .map(|c| c.values)
            .collect(),
    )
}

/// A growable column of one component type's decoded values (type-erased).
pub(crate) trait ErasedColumn: Send {
    /// Decodes `bytes` and appends the value.
    fn push_decoded(&mut self, bytes: &[u8]) -> Result<(), rmp_serde::decode::Error>;
    /// Drops values past `len` (undoes a partly decoded object).
    fn truncate(&mut self, len: usize);
    /// Appends another column of the same type (made by the same entry).
    fn append(&mut self, other: Box<dyn ErasedColumn>);
    /// For the typed side to take the values back.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// The typed column behind [`ErasedColumn`].
pub(crate) struct Column<C> {
    pub(crate) values: Vec<C>,
}

impl<C> Default for Column<C> {
    fn default() -> Self {
        Column { values: Vec::new() }
    }
}

impl<C: Component + DeserializeOwned> ErasedColumn for Column<C> {
    fn push_decoded(&mut self, bytes: &[u8]) -> Result<(), rmp_serde::decode::Error> {
        self.values.push(rmp_serde::from_slice(bytes)?);
        Ok(())
    }

    fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
    }

    fn append(&mut self, other: Box<dyn ErasedColumn>) {
        if let Ok(mut other) = other.into_any().downcast::<Column<C>>() {
            self.values.append(&mut other.values);
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Objects that have the same set of components: their tags and one column
/// per component, all of the same length.
struct Group<K> {
    /// Bit `slot` set for each component the objects have.
    mask: u64,
    tags: Vec<K>,
    /// `(slot, column)`, ascending by slot.
    columns: Vec<(usize, Box<dyn ErasedColumn>)>,
}

/// Objects decoded by [`PublishRegistry::decode_objects`], grouped by their
/// set of components, each tagged with the caller's `K` (an object id, say).
pub struct DecodedObjects<K> {
    groups: Vec<Group<K>>,
    failed: Vec<(K, ObjectDecodeError)>,
}

impl<K> Default for DecodedObjects<K> {
    fn default() -> Self {
        DecodedObjects {
            groups: Vec::new(),
            failed: Vec::new(),
        }
    }
}

impl<K> std::fmt::Debug for DecodedObjects<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedObjects")
            .field("groups", &self.groups.len())
            .field("objects", &self.len())
            .field("failed", &self.failed.len())
            .finish()
    }
}

impl<K> DecodedObjects<K> {
    /// Objects decoded (those that failed are not counted).
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.tags.len()).sum()
    }

    /// Whether no object decoded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Objects that did not decode, and why (they are left out of the groups).
    pub fn failed(&self) -> &[(K, ObjectDecodeError)] {
        &self.failed
    }

    /// Adds `other`'s objects (decoded with the same registry) to these.
    pub fn merge(&mut self, other: DecodedObjects<K>) {
        self.failed.extend(other.failed);
        for group in other.groups {
            match self.groups.iter_mut().find(|g| g.mask == group.mask) {
                Some(mine) => {
                    mine.tags.extend(group.tags);
                    for ((_, column), (_, theirs)) in mine.columns.iter_mut().zip(group.columns) {
                        column.append(theirs);
                    }
                }
                None => self.groups.push(group),
            }
        }
    }
}

/// What [`PublishRegistry::spawn_decoded`] spawned.
#[derive(Debug)]
#[non_exhaustive]
pub struct Spawned<K> {
    /// Each decoded object's tag and its new entity.
    pub placed: Vec<(K, Entity)>,
    /// Objects that did not decode, and why (nothing was spawned for them).
    pub failed: Vec<(K, ObjectDecodeError)>,
}

impl PublishRegistry {
    /// Decodes objects' states into columns grouped by their set of
    /// components (all of an object's components or none: an object with a
    /// damaged state or a component that does not decode is listed in
    /// [`DecodedObjects::failed`]). Run it on slices of a zone on several
    /// threads and [`merge`](DecodedObjects::merge) the results.
    pub fn decode_objects<'a, K>(&self, objects: impl IntoIterator<Item = (K, &'a ObjectState)>) -> DecodedObjects<K> {
        let mut out = DecodedObjects::default();
        let mut parts: Vec<(&'a str, &'a [u8])> = Vec::with_capacity(4);
        // The group the previous object went to: a shard's objects mostly
        // share their components, so this rarely searches.
        let mut last = 0usize;
        for (tag, state) in objects {
            parts.clear();
            if let Err(e) = state.visit_components(|name, bytes| parts.push((name, bytes))) {
                out.failed.push((tag, e.into()));
                continue;
            }
            let mut mask = 0u64;
            let mut unknown = None;
            for (name, _) in &parts {
                match self.slot(name) {
                    Some(slot) if slot < MAX_COMPONENTS_PER_OBJECT => mask |= 1 << slot,
                    _ => {
                        unknown = Some(*name);
                        break;
                    }
                }
            }
            if let Some(name) = unknown {
                let e = ComponentDecodeError::Unknown { name: name.to_owned() };
                out.failed.push((tag, e.into()));
                continue;
            }
            if out.groups.get(last).is_none_or(|g| g.mask != mask) {
                last = match out.groups.iter().position(|g| g.mask == mask) {
                    Some(i) => i,
                    None => {
                        out.groups.push(self.new_group(mask));
                        out.groups.len() - 1
                    }
                };
            }
            let group = &mut out.groups[last];
            let before = group.tags.len();
            // A canonical state lists components in name order, which is
            // slot order: the columns line up with the parts.
            let mut result = Ok(());
            for ((_, bytes), (slot, column)) in parts.iter().zip(group.columns.iter_mut()) {
                if let Err(source) = column.push_decoded(bytes) {
                    let (name, version) = self.name_and_version(*slot);
                    result = Err(ComponentDecodeError::Schema { name, version, source });
                    break;
                }
            }
            match result {
                Ok(()) => group.tags.push(tag),
                Err(e) => {
                    for (_, column) in &mut group.columns {
                        column.truncate(before);
                    }
                    out.failed.push((tag, e.into()));
                }
            }
        }
        out
    }

    /// Spawns decoded objects: per group, one `spawn_batch` of the markers
    /// `marker` makes from each tag beside the group's first component,
    /// then one `insert_batch` per further component.
    pub fn spawn_decoded<K, M: SpawnMarker>(
        &self,
        world: &mut World,
        decoded: DecodedObjects<K>,
        marker: impl FnMut(&K) -> M,
    ) -> Spawned<K> {
        self.spawn_decoded_all(world, [decoded], marker)
    }

    /// [`spawn_decoded`](Self::spawn_decoded) for objects decoded in parts
    /// (a shard each, on several threads): the groups of one set of
    /// components are spawned together, as one batch whose tables grow
    /// once, without first copying the parts into one.
    pub fn spawn_decoded_all<K, M: SpawnMarker>(
        &self,
        world: &mut World,
        parts: impl IntoIterator<Item = DecodedObjects<K>>,
        marker: impl FnMut(&K) -> M,
    ) -> Spawned<K> {
        let mut placed = Vec::new();
        let failed = self.spawn_decoded_with(world, parts, marker, |tag, entity| placed.push((tag, entity)));
        Spawned { placed, failed }
    }

    /// [`spawn_decoded_all`](Self::spawn_decoded_all) handing each object's
    /// tag and entity to `placed` as they are spawned (no list of them is
    /// made); returns the objects that did not decode.
    pub fn spawn_decoded_with<K, M: SpawnMarker>(
        &self,
        world: &mut World,
        parts: impl IntoIterator<Item = DecodedObjects<K>>,
        mut marker: impl FnMut(&K) -> M,
        mut placed: impl FnMut(K, Entity),
    ) -> Vec<(K, ObjectDecodeError)> {
        let mut failed = Vec::new();
        // The parts' groups by set of components, in the order first met.
        let mut sets: Vec<(u64, Vec<Group<K>>)> = Vec::new();
        for part in parts {
            failed.extend(part.failed);
            for group in part.groups {
                match sets.iter_mut().find(|(mask, _)| *mask == group.mask) {
                    Some((_, groups)) => groups.push(group),
                    None => sets.push((group.mask, vec![group])),
                }
            }
        }
        for (_, groups) in sets {
            // One mask, so the same slots in the same order in every group.
            let slots: Vec<usize> = groups
                .first()
                .map(|g| g.columns.iter().map(|(slot, _)| *slot).collect())
                .unwrap_or_default();
            let mut tags = Vec::with_capacity(groups.iter().map(|g| g.tags.len()).sum());
            let mut by_slot: Vec<Vec<Box<dyn ErasedColumn>>> = slots.iter().map(|_| Vec::new()).collect();
            for group in groups {
                tags.extend(group.tags);
                for (parts, (_, column)) in by_slot.iter_mut().zip(group.columns) {
                    parts.push(column);
                }
            }
            let markers = M::into_column(Markers {
                made: Box::new(tags.iter().map(&mut marker)),
                left: tags.len(),
            });
            let mut columns = slots.into_iter().zip(by_slot);
            let entities = match columns.next() {
                Some((slot, parts)) => match self.entries().get(slot) {
                    Some(entry) => entry.ops.spawn_column(world, markers, parts),
                    None => markers.spawn(world),
                },
                None => markers.spawn(world),
            };
            for (slot, parts) in columns {
                if let Some(entry) = self.entries().get(slot) {
                    entry.ops.insert_column(world, &entities, parts);
                }
            }
            for (tag, entity) in tags.into_iter().zip(entities) {
                placed(tag, entity);
            }
        }
        failed
    }

    fn new_group<K>(&self, mask: u64) -> Group<K> {
        let columns = self
            .entries()
            .iter()
            .enumerate()
            .filter(|(slot, _)| mask & (1 << slot) != 0)
            .map(|(slot, entry)| (slot, entry.ops.new_column()))
            .collect();
        Group {
            mask,
            tags: Vec::new(),
            columns,
        }
    }

    fn name_and_version(&self, slot: usize) -> (String, u32) {
        self.entries()
            .get(slot)
            .map_or_else(|| (String::new(), 0), |e| (e.name.clone(), e.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ObjectId, ShardId};
    use crate::marker::Published;
    use crate::state::StateBuilder;
    use serde::{Deserialize, Serialize};

    #[derive(Component, Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct A(u32);
    #[derive(Component, Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct B(String);

    fn registry() -> PublishRegistry {
        PublishRegistry::builder()
            .publish::<A>("a", 1)
            .publish::<B>("b", 2)
            .build()
    }

    fn state(a: Option<u32>, b: Option<&str>) -> ObjectState {
        let mut s = StateBuilder::new();
        if let Some(a) = a {
            s.component("a", rmp_serde::to_vec(&A(a)).unwrap_or_default());
        }
        if let Some(b) = b {
            s.component("b", rmp_serde::to_vec(&B(b.into())).unwrap_or_default());
        }
        s.finish()
    }

    /// Objects of three archetypes, decoded in two halves and merged, spawn
    /// with exactly their own components; the damaged ones are reported and
    /// spawn nothing, and a failure midway through an object leaves no value
    /// behind in the columns (the next object still lines up).
    #[test]
    fn groups_spawn_with_their_own_components_and_failures_leave_nothing() {
        let registry = registry();
        let mut bad_b = StateBuilder::new();
        bad_b.component("a", rmp_serde::to_vec(&A(99)).unwrap_or_default());
        bad_b.component("b", vec![0xc1]); // never valid MessagePack
        let mut unknown = StateBuilder::new();
        unknown.component("zzz", vec![0xc0]);
        let states = [
            state(Some(1), None),
            state(Some(2), Some("two")),
            bad_b.finish(),
            state(None, Some("three")),
            state(Some(4), Some("four")),
            unknown.finish(),
            ObjectState::from_trusted_bytes(vec![0xff]),
            state(Some(5), None),
        ];
        let tagged: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(i, s)| (ObjectId(i as u64), s))
            .collect();
        let (first, second) = tagged.split_at(4);
        let mut decoded = registry.decode_objects(first.iter().copied());
        decoded.merge(registry.decode_objects(second.iter().copied()));
        assert_eq!(decoded.len(), 5);
        let failed: Vec<u64> = decoded.failed().iter().map(|(id, _)| id.0).collect();
        assert_eq!(failed, vec![2, 5, 6]);

        let mut world = World::new();
        let spawned = registry.spawn_decoded(&mut world, decoded, |id| Published::new(*id, ShardId(1)));
        assert_eq!(spawned.placed.len(), 5);
        assert_eq!(world.query::<&Published>().iter(&world).count(), 5);
        let expect: [(u64, Option<A>, Option<B>); 5] = [
            (0, Some(A(1)), None),
            (1, Some(A(2)), Some(B("two".into()))),
            (3, None, Some(B("three".into()))),
            (4, Some(A(4)), Some(B("four".into()))),
            (7, Some(A(5)), None),
        ];
        for (id, entity) in check_components(&world, &spawned.placed, &expect) {
            assert_eq!(world.get::<Published>(entity).map(|p| p.object), Some(ObjectId(id)));
        }

        // The same parts spawned together without merging them first, with
        // the client's marker: the same entities, each group in one batch.
        let parts = [
            registry.decode_objects(first.iter().copied()),
            registry.decode_objects(second.iter().copied()),
        ];
        let mut world = World::new();
        let spawned = registry.spawn_decoded_all(&mut world, parts, |id| crate::marker::Replicated {
            object: *id,
            shard: ShardId(1),
        });
        let failed: Vec<u64> = spawned.failed.iter().map(|(id, _)| id.0).collect();
        assert_eq!(failed, vec![2, 5, 6]);
        assert_eq!(spawned.placed.len(), 5);
        assert_eq!(world.query::<&crate::marker::Replicated>().iter(&world).count(), 5);
        for (id, entity) in check_components(&world, &spawned.placed, &expect) {
            assert_eq!(
                world.get::<crate::marker::Replicated>(entity).map(|p| p.object),
                Some(ObjectId(id))
            );
        }
    }

    /// Checks each expected object's components on its spawned entity;
    /// returns `(id, entity)` for the marker checks.
    fn check_components(
        world: &World,
        placed: &[(ObjectId, Entity)],
        expect: &[(u64, Option<A>, Option<B>)],
    ) -> Vec<(u64, Entity)> {
        expect
            .iter()
            .map(|(id, a, b)| {
                let (_, entity) = placed
                    .iter()
                    .find(|(tag, _)| tag.0 == *id)
                    .copied()
                    .unwrap_or_else(|| panic!("object {id} spawned"));
                assert_eq!(world.get::<A>(entity), a.as_ref(), "object {id}");
                assert_eq!(world.get::<B>(entity), b.as_ref(), "object {id}");
                (*id, entity)
            })
            .collect()
    }
}
