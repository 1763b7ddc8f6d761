//! hoard-engine: the object model, publishing bevy_ecs components, and the
//! server's durable world store.
//!
//! - [`ids`], [`digest`], [`state`], [`url`]: the object model — ids, the
//!   shard digest, the canonical object encoding and `hoard://` URLs;
//! - [`registry`] and [`publish`]: which components are published and how
//!   each tick's changes are gathered from a `World`;
//! - [`store`]: the [`WorldStore`] interface, `RedbStore` (the embedded,
//!   durable store; the `redb` feature, on by default) and [`MemoryStore`];
//! - [`load`]: loading a stored world back into a `World`;
//! - [`batch`]: decoding many objects at once and spawning them by archetype.
//!
//! ```
//! use bevy_ecs::prelude::*;
//! use hoard_engine::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Component, Serialize, Deserialize)]
//! struct House { owner: String }
//!
//! let registry = PublishRegistry::builder().publish::<House>("house", 1).build();
//! let mut publisher = Publisher::new(registry);
//! let store = MemoryStore::new();
//! let meadow = ZoneId::new("meadow").unwrap();
//! store.create_zone(&meadow, &[ShardSpec::shared(ShardId(1))]).unwrap();
//!
//! let mut world = World::new();
//! world.spawn((Published::new(ObjectId(7), ShardId(1)), House { owner: "ann".into() }));
//! let tick = publisher.gather(&mut world);
//! let receipt = store.commit(&tick.changes).unwrap();
//! assert_eq!(receipt.heads[0].digest.count(), 1);
//! ```

pub mod batch;
pub mod changeset;
pub mod digest;
pub mod ids;
pub mod load;
pub mod lock;
pub mod marker;
pub mod publish;
pub mod registry;
pub mod schema;
pub mod set_root;
pub mod shard;
pub mod state;
pub mod store;
pub mod url;

pub use changeset::{Change, ChangeSet, ShardChanges};
pub use digest::Digest;
pub use ids::{Epoch, ObjectId, Seq, ServerIdentity, ShardId, ZoneId};
pub use load::{LoadProblem, LoadReport, load_shards, load_world, load_zones};
pub use marker::NewObject;
pub use marker::Replicated;
pub use publish::{Gathered, Published, Publisher};
pub use registry::{PublishRegistry, RegistryHash};
pub use state::ObjectState;
#[cfg(feature = "redb")]
pub use store::RedbStore;
pub use store::{MemoryStore, WorldStore};
pub use url::HoardUrl;

/// The names a game needs most, for `use hoard_engine::prelude::*`.
pub mod prelude {
    pub use crate::changeset::ChangeSet;
    pub use crate::ids::{ObjectId, Seq, ShardId, ZoneId};
    pub use crate::load::load_world;
    pub use crate::marker::NewObject;
    pub use crate::publish::{Published, Publisher};
    pub use crate::registry::PublishRegistry;
    #[cfg(feature = "redb")]
    pub use crate::store::RedbStore;
    pub use crate::store::{MemoryStore, ShardScope, ShardSpec, WorldStore};
    pub use crate::url::HoardUrl;
}
