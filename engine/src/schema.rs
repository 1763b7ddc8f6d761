//! Schema evolution: a persisted world outlives the code that wrote it.
//!
//! The store records the schema version each published component's bytes
//! are at. On start, [`prepare`] compares that record with the registry:
//! a component registered at a newer version with a migration (see
//! `RegistryBuilder::migrate`) has every stored object holding it rewritten
//! at the new version, in one transaction together with the new record (so
//! a crash leaves the old world or the migrated one, never bytes read with
//! the wrong decoder); a component whose version changed without a
//! migration, or that is stored but no longer registered, is refused, naming
//! it and how many objects hold it. A store with no record yet (a new store,
//! or one written before records existed) is taken to be at the registry's
//! versions and recorded so. Client caches are keyed by the registry hash,
//! so a copy written under another schema is discarded and fetched again,
//! never misdecoded.

use std::collections::BTreeMap;

use crate::changeset::ChangeSet;
use crate::registry::PublishRegistry;
use crate::state::StateBuilder;
use crate::store::{CommitError, ReadError, WorldStore};

/// What [`prepare`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// The store had no schema record; the registry's versions were recorded.
    pub recorded: bool,
    /// `(component, from version, to version, objects migrated)`.
    pub migrated: Vec<(String, u32, u32, usize)>,
}

/// Why the stored world cannot be used with this registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A component's version changed and no migration from the stored one
    /// is registered.
    #[error(
        "component {component:?} is stored at schema version {from} in {objects} objects, but registered at version {to} with no migration from {from}; register one with RegistryBuilder::migrate"
    )]
    NoMigration {
        /// The component.
        component: String,
        /// The stored version.
        from: u32,
        /// The registered version.
        to: u32,
        /// Objects holding it.
        objects: usize,
    },
    /// A component is stored but no longer registered.
    #[error("component {component:?} (schema version {version}) is stored in {objects} objects but not registered")]
    Unregistered {
        /// The component.
        component: String,
        /// Its stored version.
        version: u32,
        /// Objects holding it.
        objects: usize,
    },
    /// A migration refused an object's bytes.
    #[error("migrating component {component:?} of object {object}: {message}")]
    Migration {
        /// The component.
        component: String,
        /// The object.
        object: crate::ids::ObjectId,
        /// The migration's complaint.
        message: String,
    },
    /// The store could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The migrated world could not be committed.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// Brings the store's objects to the registry's schema versions; see the
/// module documentation.
pub fn prepare(store: &dyn WorldStore, registry: &PublishRegistry) -> Result<SchemaReport, SchemaError> {
    let current: BTreeMap<String, u32> = registry.components().map(|(n, v)| (n.to_owned(), v)).collect();
    let stored = store.schema()?;
    let mut report = SchemaReport::default();
    if stored == current {
        return Ok(report);
    }
    if stored.is_empty() {
        store.commit_with_schema(&ChangeSet::new(), &current)?;
        report.recorded = true;
        tracing::info!(?current, "schema versions recorded");
        return Ok(report);
    }
    // Which stored components need what.
    let changed: BTreeMap<&str, u32> = stored
        .iter()
        .filter(|(name, version)| current.get(*name) != Some(version))
        .map(|(name, version)| (name.as_str(), *version))
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut changes = ChangeSet::new();
    let entries = registry.entries();
    let mut problems = Vec::new();
    for zone in store.zones()? {
        for shard in store.zone_shards(&zone)? {
            for object in store.snapshot(shard)?.objects {
                let Ok(components) = object.state.components() else {
                    continue; // verify reports damaged states
                };
                if !components.iter().any(|(name, _)| changed.contains_key(name)) {
                    continue;
                }
                let mut builder = StateBuilder::new();
                for (name, bytes) in components {
                    let Some(&from) = changed.get(name) else {
                        builder.component(name, bytes.to_vec());
                        continue;
                    };
                    if let Some((&key, _)) = changed.get_key_value(name) {
                        *counts.entry(key).or_default() += 1;
                    }
                    let migration = entries
                        .iter()
                        .find(|e| e.name == name)
                        .and_then(|e| e.migrations.iter().find(|(f, _)| *f == from));
                    match migration {
                        Some((_, migrate)) => match migrate(bytes) {
                            Ok(new) => {
                                builder.component(name, new);
                            }
                            Err(message) => problems.push(SchemaError::Migration {
                                component: name.to_owned(),
                                object: object.id,
                                message,
                            }),
                        },
                        None => {
                            builder.component(name, bytes.to_vec());
                        }
                    }
                }
                changes.upsert(shard, object.id, builder.finish());
            }
        }
    }
    // Refusals first: nothing is written unless every change can be made.
    for (&name, &from) in &changed {
        let objects = counts.get(name).copied().unwrap_or(0);
        match (entries.iter().find(|e| e.name == name), objects) {
            (_, 0) => {}
            (None, objects) => {
                return Err(SchemaError::Unregistered {
                    component: name.to_owned(),
                    version: from,
                    objects,
                });
            }
            (Some(entry), objects) if !entry.migrations.iter().any(|(f, _)| *f == from) => {
                return Err(SchemaError::NoMigration {
                    component: name.to_owned(),
                    from,
                    to: entry.version,
                    objects,
                });
            }
            _ => {}
        }
    }
    if let Some(problem) = problems.into_iter().next() {
        return Err(problem);
    }
    store.commit_with_schema(&changes, &current)?;
    for (&name, &from) in &changed {
        if let (Some(&to), Some(&objects)) = (current.get(name), counts.get(name)) {
            tracing::info!(component = name, from, to, objects, "stored objects migrated");
            report.migrated.push((name.to_owned(), from, to, objects));
        }
    }
    Ok(report)
}
