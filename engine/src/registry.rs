//! The publish registry: which component types are published, under which
//! stable names and schema versions.
//!
//! A game registers each publishable component once
//! (`PublishRegistry::builder().publish::<House>("house", 1)`), in the spirit
//! of bevy_replicon's `replicate::<C>()`. The name, not the Rust type, is what
//! goes to disk and the wire, so renaming a Rust type breaks nothing. The
//! [`RegistryHash`] covers every (name, schema version) pair; server and client
//! compare it at handshake, and caches are keyed by it, so a schema change
//! can never be read with the wrong decoder.

use std::any::{Any, TypeId, type_name};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bevy_ecs::component::{Component, Mutable};
use bevy_ecs::entity::Entity;
use bevy_ecs::schedule::Schedule;
use bevy_ecs::world::{EntityRef, EntityWorldMut, World};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ids::validate_name;
use crate::marker::Published;
use crate::state::{MAX_COMPONENT_NAME_LEN, MAX_COMPONENTS_PER_OBJECT, StateError};

/// The hash both ends compare: blake3 over the sorted (name, schema version) list.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RegistryHash(pub [u8; 32]);

impl fmt::Display for RegistryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&blake3::Hash::from_bytes(self.0).to_hex())
    }
}

impl fmt::Debug for RegistryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryHash({self})")
    }
}

/// A decoded component value, ready to insert into an entity.
pub struct DecodedComponent {
    pub(crate) slot: usize,
    pub(crate) value: Box<dyn Any + Send>,
}

/// Why a component's bytes did not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentDecodeError {
    /// The name is not registered.
    #[error("component {name:?} is not registered")]
    Unknown {
        /// The stored name.
        name: String,
    },
    /// The bytes do not match the registered type.
    #[error("component {name:?} (schema v{version}) does not decode: {source}")]
    Schema {
        /// The component's name.
        name: String,
        /// Its registered schema version.
        version: u32,
        /// The decoder's complaint.
        source: rmp_serde::decode::Error,
    },
}

/// Type-erased operations on one registered component type.
pub(crate) trait ErasedComponent: Send + Sync {
    fn encode(&self, entity: &EntityRef<'_>) -> Option<Result<Vec<u8>, rmp_serde::encode::Error>>;
    fn decode(&self, bytes: &[u8]) -> Result<Box<dyn Any + Send>, rmp_serde::decode::Error>;
    fn insert(&self, entity: &mut EntityWorldMut<'_>, value: Box<dyn Any + Send>);
    fn spawn_with(&self, world: &mut World, marker: Published, value: Box<dyn Any + Send>) -> Entity;
    fn remove(&self, entity: &mut EntityWorldMut<'_>);
    fn add_change_system(&self, schedule: &mut Schedule);
    /// An empty column of this type, for decoding many objects at once.
    fn new_column(&self) -> Box<dyn crate::batch::ErasedColumn>;
    /// Inserts the values of `columns` (in order) into `entities`, one each.
    fn insert_column(&self, world: &mut World, entities: &[Entity], columns: Vec<Box<dyn crate::batch::ErasedColumn>>);
    /// Spawns one entity per marker with the next value of `columns` (in
    /// order) beside it, in one batch (no entity moves between archetypes).
    fn spawn_column(
        &self,
        world: &mut World,
        markers: crate::batch::MarkerColumn<'_>,
        columns: Vec<Box<dyn crate::batch::ErasedColumn>>,
    ) -> Vec<Entity>;
}

struct Typed<C>(PhantomData<fn() -> C>);

impl<C> ErasedComponent for Typed<C>
where
    C: Component<Mutability = Mutable> + Serialize + DeserializeOwned,
{
    fn encode(&self, entity: &EntityRef<'_>) -> Option<Result<Vec<u8>, rmp_serde::encode::Error>> {
        entity.get::<C>().map(rmp_serde::to_vec)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Box<dyn Any + Send>, rmp_serde::decode::Error> {
        rmp_serde::from_slice::<C>(bytes).map(|c| Box::new(c) as Box<dyn Any + Send>)
    }

    fn insert(&self, entity: &mut EntityWorldMut<'_>, value: Box<dyn Any + Send>) {
        // The slot index ties each decoded value to the entry that decoded it,
        // so the downcast cannot fail.
        if let Ok(component) = value.downcast::<C>() {
            entity.insert(*component);
        }
    }

    fn spawn_with(&self, world: &mut World, marker: Published, value: Box<dyn Any + Send>) -> Entity {
        match value.downcast::<C>() {
            Ok(component) => world.spawn((marker, *component)).id(),
            Err(_) => world.spawn(marker).id(),
        }
    }

    fn remove(&self, entity: &mut EntityWorldMut<'_>) {
        entity.remove::<C>();
    }

    fn add_change_system(&self, schedule: &mut Schedule) {
        schedule.add_systems(crate::marker::mark_changed::<C>);
    }

    fn new_column(&self) -> Box<dyn crate::batch::ErasedColumn> {
        Box::new(crate::batch::Column::<C>::default())
    }

    fn insert_column(&self, world: &mut World, entities: &[Entity], columns: Vec<Box<dyn crate::batch::ErasedColumn>>) {
        // The lengths are equal by construction (one value per tag).
        let values = crate::batch::typed_columns::<C>(columns);
        if values.len() == entities.len() {
            world.insert_batch(entities.iter().copied().zip(values));
        }
    }

    fn spawn_column(
        &self,
        world: &mut World,
        markers: crate::batch::MarkerColumn<'_>,
        columns: Vec<Box<dyn crate::batch::ErasedColumn>>,
    ) -> Vec<Entity> {
        let values = crate::batch::typed_columns::<C>(columns);
        if values.len() == markers.len() {
            markers.spawn_with(world, values)
        } else {
            markers.spawn(world)
        }
    }
}

/// Turns a component's stored bytes at an older schema version into its
/// bytes at the current one.
pub(crate) type MigrateFn = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
    pub(crate) ops: Box<dyn ErasedComponent>,
    /// Migrations to `version`, by the version they start from.
    pub(crate) migrations: Vec<(u32, MigrateFn)>,
}

/// Decodes bytes a component was stored with, as the type it had then (for
/// migrations: `decode_old::<HouseV1>(bytes)`).
pub fn decode_old<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

/// The set of published component types. Cheap to clone (shared).
#[derive(Clone)]
pub struct PublishRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    /// Sorted by name; the slot index is the position here.
    entries: Vec<Entry>,
    /// Sorted by name.
    intents: Vec<IntentEntry>,
    hash: RegistryHash,
}

/// One registered intent type: what a client may ask the server to do.
struct IntentEntry {
    name: String,
    version: u32,
    type_id: TypeId,
    type_name: &'static str,
}

/// Collects registrations; see [`PublishRegistry::builder`].
#[derive(Default)]
pub struct RegistryBuilder {
    entries: Vec<Entry>,
    intents: Vec<IntentEntry>,
}

impl RegistryBuilder {
    /// Publishes component `C` under a stable `name` with a schema `version`.
    /// Bump the version whenever `C`'s serialised form changes.
    ///
    /// # Panics
    ///
    /// On a programming error caught at startup: a name breaking the naming
    /// rules (`a-z0-9_-`, at most 64 bytes), a name or type registered twice,
    /// or more than 64 components.
    #[must_use]
    pub fn publish<C>(mut self, name: &str, version: u32) -> Self
    where
        C: Component<Mutability = Mutable> + Serialize + DeserializeOwned,
    {
        if let Err(e) = validate_name(name) {
            panic!("hoard: cannot publish {}: {e}", type_name::<C>());
        }
        assert!(name.len() <= MAX_COMPONENT_NAME_LEN);
        if let Some(dup) = self
            .entries
            .iter()
            .find(|e| e.name == name || e.type_id == TypeId::of::<C>())
        {
            panic!(
                "hoard: {} published as {name:?}, but {} is already published as {:?}",
                type_name::<C>(),
                dup.type_name,
                dup.name
            );
        }
        assert!(
            self.entries.len() < MAX_COMPONENTS_PER_OBJECT,
            "hoard: at most {MAX_COMPONENTS_PER_OBJECT} published component types"
        );
        self.entries.push(Entry {
            name: name.to_owned(),
            version,
            type_id: TypeId::of::<C>(),
            type_name: type_name::<C>(),
            ops: Box::new(Typed::<C>(PhantomData)),
            migrations: Vec::new(),
        });
        self
    }

    /// Registers how component `C`'s stored bytes at schema version `from`
    /// become a `C` (its current version): stored objects are migrated and
    /// committed at the current version by [`crate::schema::prepare`] on
    /// start. Decode the old bytes with [`decode_old`].
    ///
    /// # Panics
    ///
    /// If `C` is not published yet, or `from` is not older than its version.
    #[must_use]
    pub fn migrate<C>(mut self, from: u32, f: impl Fn(&[u8]) -> Result<C, String> + Send + Sync + 'static) -> Self
    where
        C: Component<Mutability = Mutable> + Serialize + DeserializeOwned,
    {
        let Some(entry) = self.entries.iter_mut().find(|e| e.type_id == TypeId::of::<C>()) else {
            panic!("hoard: publish {} before registering its migrations", type_name::<C>());
        };
        assert!(
            from < entry.version,
            "hoard: a migration of {:?} from version {from} to {}: it must start from an older version",
            entry.name,
            entry.version
        );
        entry.migrations.push((
            from,
            Box::new(move |bytes: &[u8]| f(bytes).and_then(|c| rmp_serde::to_vec(&c).map_err(|e| e.to_string()))),
        ));
        self
    }

    /// Registers intent type `I` under a stable `name` with a schema
    /// `version`, as part of the agreement between client and server: the
    /// registry hash covers it, so a client of another intent schema is told
    /// at `Hello` (error 3, naming both hashes) rather than refused action
    /// by action. A client sends it by type (`Hoard::send(&intent)`); the
    /// server accepts it with `HoardServerPlugin::intent::<I>(name)`.
    ///
    /// # Panics
    ///
    /// On a name breaking the naming rules, or a name or type registered
    /// twice as an intent.
    #[must_use]
    pub fn intent<I: Serialize + DeserializeOwned + 'static>(mut self, name: &str, version: u32) -> Self {
        if let Err(e) = validate_name(name) {
            panic!("hoard: cannot register intent {}: {e}", type_name::<I>());
        }
        if let Some(dup) = self
            .intents
            .iter()
            .find(|e| e.name == name || e.type_id == TypeId::of::<I>())
        {
            panic!(
                "hoard: intent {} registered as {name:?}, but {} is already registered as {:?}",
                type_name::<I>(),
                dup.type_name,
                dup.name
            );
        }
        self.intents.push(IntentEntry {
            name: name.to_owned(),
            version,
            type_id: TypeId::of::<I>(),
            type_name: type_name::<I>(),
        });
        self
    }

    /// Finishes the registry and computes its hash: BLAKE3 of
    /// `"hoard-registry-v1"`, then per component in name order
    /// `u32le(len(name)) ‖ name ‖ u32le(version)`, then per intent in name
    /// order the same over `"intent:" ‖ name` (docs/PROTOCOL.md; a registry
    /// without intents hashes as before intents existed).
    pub fn build(mut self) -> PublishRegistry {
        self.entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        self.intents.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"hoard-registry-v1");
        for entry in &self.entries {
            hasher.update(&(entry.name.len() as u32).to_le_bytes());
            hasher.update(entry.name.as_bytes());
            hasher.update(&entry.version.to_le_bytes());
        }
        for intent in &self.intents {
            let name = format!("intent:{}", intent.name);
            hasher.update(&(name.len() as u32).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update(&intent.version.to_le_bytes());
        }
        let hash = RegistryHash(*hasher.finalize().as_bytes());
        PublishRegistry {
            inner: Arc::new(Inner {
                entries: self.entries,
                intents: self.intents,
                hash,
            }),
        }
    }
}

impl PublishRegistry {
    /// Starts a registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// The hash peers and caches compare.
    pub fn hash(&self) -> RegistryHash {
        self.inner.hash
    }

    /// `(name, schema version)` of every published component, sorted by name.
    pub fn components(&self) -> impl Iterator<Item = (&str, u32)> {
        self.inner.entries.iter().map(|e| (e.name.as_str(), e.version))
    }

    /// `(name, schema version)` of every registered intent, sorted by name.
    pub fn intents(&self) -> impl Iterator<Item = (&str, u32)> {
        self.inner.intents.iter().map(|e| (e.name.as_str(), e.version))
    }

    /// The name intent type `I` is registered under, if it is.
    pub fn intent_name<I: 'static>(&self) -> Option<&str> {
        self.inner
            .intents
            .iter()
            .find(|e| e.type_id == TypeId::of::<I>())
            .map(|e| e.name.as_str())
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.inner.entries
    }

    /// The slot (index in name order) of the component named `name`.
    pub(crate) fn slot(&self, name: &str) -> Option<usize> {
        self.inner
            .entries
            .binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes()))
            .ok()
    }

    /// Encodes the published components of an entity into canonical state bytes.
    pub(crate) fn encode(
        &self,
        entity: &EntityRef<'_>,
    ) -> Result<crate::state::ObjectState, (String, rmp_serde::encode::Error)> {
        let mut builder = crate::state::StateBuilder::new();
        for entry in &self.inner.entries {
            if let Some(bytes) = entry.ops.encode(entity) {
                builder.component(&entry.name, bytes.map_err(|e| (entry.name.clone(), e))?);
            }
        }
        Ok(builder.finish())
    }

    /// Decodes one named component.
    pub fn decode_component(&self, name: &str, bytes: &[u8]) -> Result<DecodedComponent, ComponentDecodeError> {
        let slot = self
            .slot(name)
            .ok_or_else(|| ComponentDecodeError::Unknown { name: name.to_owned() })?;
        let entry = &self.inner.entries[slot];
        let value = entry.ops.decode(bytes).map_err(|source| ComponentDecodeError::Schema {
            name: entry.name.clone(),
            version: entry.version,
            source,
        })?;
        Ok(DecodedComponent { slot, value })
    }

    /// Spawns an object's entity with its marker and decoded components.
    /// The marker and first component are spawned as one bundle, which saves
    /// an archetype move for the common one-component object.
    pub fn spawn(&self, world: &mut World, marker: Published, components: Vec<DecodedComponent>) -> Entity {
        let mut components = components.into_iter();
        let entity = match components.next() {
            Some(first) => match self.inner.entries.get(first.slot) {
                Some(entry) => entry.ops.spawn_with(world, marker, first.value),
                None => world.spawn(marker).id(),
            },
            None => world.spawn(marker).id(),
        };
        let rest: Vec<DecodedComponent> = components.collect();
        if !rest.is_empty() {
            self.insert(&mut world.entity_mut(entity), rest);
        }
        entity
    }

    /// Decodes every component of a state (all or nothing).
    pub fn decode_state(&self, state: &crate::state::ObjectState) -> Result<Vec<DecodedComponent>, ObjectDecodeError> {
        state
            .components()?
            .into_iter()
            .map(|(name, bytes)| self.decode_component(name, bytes).map_err(Into::into))
            .collect()
    }

    /// Makes an entity's published components exactly `decoded`: inserts
    /// (replacing) them and removes the registered components not among them.
    pub fn apply_decoded(&self, entity: &mut EntityWorldMut<'_>, decoded: Vec<DecodedComponent>) {
        let present: Vec<usize> = decoded.iter().map(|d| d.slot).collect();
        for (slot, entry) in self.inner.entries.iter().enumerate() {
            if !present.contains(&slot) {
                entry.ops.remove(entity);
            }
        }
        self.insert(entity, decoded);
    }

    /// Makes an existing entity's published components equal a state:
    /// inserts (replacing) the components in it and removes the registered
    /// components it lacks. Nothing changes if the state does not decode.
    pub fn apply_state(
        &self,
        entity: &mut EntityWorldMut<'_>,
        state: &crate::state::ObjectState,
    ) -> Result<(), ObjectDecodeError> {
        let decoded = self.decode_state(state)?;
        self.apply_decoded(entity, decoded);
        Ok(())
    }

    /// Inserts decoded components into an entity.
    pub fn insert(&self, entity: &mut EntityWorldMut<'_>, components: Vec<DecodedComponent>) {
        for c in components {
            if let Some(entry) = self.inner.entries.get(c.slot) {
                entry.ops.insert(entity, c.value);
            }
        }
    }
}

impl fmt::Debug for PublishRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishRegistry")
            .field("components", &self.components().collect::<Vec<_>>())
            .field("hash", &self.hash())
            .finish()
    }
}

/// Why a stored object did not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectDecodeError {
    /// The state bytes are not a canonical state.
    #[error("stored state is damaged: {0}")]
    State(#[from] StateError),
    /// A component does not decode with the registered schema.
    #[error(transparent)]
    Component(#[from] ComponentDecodeError),
}

#[cfg(test)]
mod tests {

    #[test]
    fn intents_are_part_of_the_registry_hash_and_known_by_type() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Light {
            lamp: u64,
        }
        let components = PublishRegistry::builder().build();
        let with_intent = PublishRegistry::builder().intent::<Light>("light", 1).build();
        let bumped = PublishRegistry::builder().intent::<Light>("light", 2).build();
        assert_ne!(components.hash(), with_intent.hash(), "an intent changes the hash");
        assert_ne!(with_intent.hash(), bumped.hash(), "so does its version");
        // The documented bytes: the empty registry's prefix, then the intent.
        let mut expected = blake3::Hasher::new();
        expected.update(b"hoard-registry-v1");
        expected.update(&12u32.to_le_bytes());
        expected.update(b"intent:light");
        expected.update(&1u32.to_le_bytes());
        assert_eq!(with_intent.hash().0, *expected.finalize().as_bytes());
        assert_eq!(with_intent.intent_name::<Light>(), Some("light"));
        assert_eq!(components.intent_name::<Light>(), None);
        assert_eq!(with_intent.intents().collect::<Vec<_>>(), vec![("light", 1)]);
        let _ = Light { lamp: 1 }.lamp;
    }
    use super::*;
    use serde::Deserialize;

    #[derive(Component, Serialize, Deserialize, Debug, PartialEq)]
    struct A(u32);
    #[derive(Component, Serialize, Deserialize, Debug, PartialEq)]
    struct B(String);

    #[test]
    fn hash_depends_on_names_and_versions_not_order() {
        let ab = PublishRegistry::builder()
            .publish::<A>("a", 1)
            .publish::<B>("b", 1)
            .build();
        let ba = PublishRegistry::builder()
            .publish::<B>("b", 1)
            .publish::<A>("a", 1)
            .build();
        let bumped = PublishRegistry::builder()
            .publish::<A>("a", 2)
            .publish::<B>("b", 1)
            .build();
        let renamed = PublishRegistry::builder()
            .publish::<A>("a2", 1)
            .publish::<B>("b", 1)
            .build();
        assert_eq!(ab.hash(), ba.hash());
        assert_ne!(ab.hash(), bumped.hash());
        assert_ne!(ab.hash(), renamed.hash());
    }

    #[test]
    #[should_panic(expected = "already published")]
    fn duplicate_names_are_refused() {
        let _ = PublishRegistry::builder().publish::<A>("a", 1).publish::<B>("a", 1);
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let registry = PublishRegistry::builder()
            .publish::<A>("a", 1)
            .publish::<B>("b", 1)
            .build();
        let mut world = World::new();
        let e = world.spawn((A(7), B("x".into()))).id();
        let state = registry.encode(&world.entity(e)).expect("encodes");
        let target = world.spawn_empty().id();
        let decoded: Vec<_> = state
            .components()
            .expect("valid")
            .into_iter()
            .map(|(n, b)| registry.decode_component(n, b).expect("decodes"))
            .collect();
        registry.insert(&mut world.entity_mut(target), decoded);
        assert_eq!(world.get::<A>(target), Some(&A(7)));
        assert_eq!(world.get::<B>(target), Some(&B("x".into())));
        assert!(matches!(
            registry.decode_component("zzz", &[]),
            Err(ComponentDecodeError::Unknown { .. })
        ));
        assert!(matches!(
            registry.decode_component("a", &[0xc1]),
            Err(ComponentDecodeError::Schema { .. })
        ));
    }

    /// The worked example of docs/PROTOCOL.md § Hashes and digests.
    #[test]
    fn the_documented_registry_hashes_are_what_the_code_computes() {
        #[derive(Component, Serialize, serde::Deserialize)]
        struct House;
        #[derive(Component, Serialize, serde::Deserialize)]
        struct Item;
        let empty = PublishRegistry::builder().build();
        assert_eq!(
            empty.hash().to_string(),
            "f3168bd738b30778c2bd09777e9083849e28b12f6be00fce7a7c2d559137d3fb"
        );
        let two = PublishRegistry::builder()
            .publish::<Item>("item", 2)
            .publish::<House>("house", 1)
            .build();
        assert_eq!(
            two.hash().to_string(),
            "3d209bb8aee0fd6658ea562a2748d5201f35b92990631457f5f050da676a2c36"
        );
        #[derive(Serialize, serde::Deserialize)]
        struct Light;
        let with_intent = PublishRegistry::builder()
            .publish::<Item>("item", 2)
            .intent::<Light>("light", 1)
            .publish::<House>("house", 1)
            .build();
        assert_eq!(
            with_intent.hash().to_string(),
            "2729be52ef3a67edd0f77f1bfa86c59e7a87e738eaa40b73fb491dfcfeac8372"
        );
    }
}
