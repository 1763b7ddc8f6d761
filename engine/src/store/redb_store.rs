//! The embedded, durable world store: one redb file in the server's data
//! directory, nothing to install.
//!
//! redb gives atomic, durable (fsync on commit), copy-on-write transactions
//! and a file lock against a second process. This module maps the store's
//! tables (see [`super::logic`]) onto redb tables and redb's errors onto the
//! store's. The `meta` table records the store format version so a newer
//! file is refused by name rather than misread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use redb::{
    Database, DatabaseError, ReadOnlyTable, ReadableDatabase, ReadableTable, StorageBackend, StorageError, Table,
    TableDefinition, WriteTransaction,
};

use super::error::{CommitError, OpenError, ReadError, StoreFault, WriteError};
use super::logic::{self, Tables, TablesMut};
use super::record::{ShardRecord, encode_object, scope_key, split_object};
use super::{
    ChangesSince, CommitReceipt, ShardHead, ShardScope, ShardSnapshot, ShardSpec, StoredObject, Tombstone, TrimReport,
    WorldStore,
};
use crate::changeset::ChangeSet;
use crate::digest::{StateHash, state_hash};
use crate::ids::{Epoch, ObjectId, Seq, ShardId, ZoneId};
use crate::state::ObjectState;

/// The store format this build writes and the newest it reads.
pub const STORE_FORMAT_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Zone → a marker (format 2; format 1 kept the zone's whole shard list here).
const ZONES: TableDefinition<&str, &[u8]> = TableDefinition::new("zones");
/// (zone, scope key, shard): the zone's shards indexed by who may see them
/// (see [`scope_key`]), so a zone's shards for one perspective are two range
/// scans and adding a shard writes one row.
const ZONE_SHARDS: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("zone_shards");
const SHARDS: TableDefinition<u64, &[u8]> = TableDefinition::new("shards");
const OBJECTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("objects");
const VERSIONS: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("versions");
const TOMBSTONES: TableDefinition<(u64, u64), u64> = TableDefinition::new("tombstones");
const TOMBSTONES_BY_SEQ: TableDefinition<(u64, u64, u64), i64> = TableDefinition::new("tombstones_by_seq");

const FORMAT_KEY: &str = "format_version";
/// Key of the `meta` table counting the write transactions ever committed:
/// a read-only view after a failed write is trusted only if it holds the
/// count of the last one acknowledged (see [`open_view`]).
const WRITES_KEY: &str = "writes";
/// Key of the `meta` table holding the next object id to reserve (absent
/// until the first reservation, which starts past the largest id held).
const NEXT_OBJECT_ID_KEY: &str = "next_object_id";
/// Keys of the `meta` table recording each component's schema version.
const SCHEMA_PREFIX: &str = "schema:";
/// Most shards one zone record may list.
const MAX_SHARDS_PER_ZONE: usize = 1 << 20;

/// Makes the storage backend a store is opened on (and reopened on, after a
/// failed write). Tests use it to inject faults and simulate power loss.
pub type BackendFactory = Arc<dyn Fn() -> std::io::Result<Box<dyn StorageBackend>> + Send + Sync>;

/// Where the store's bytes live.
#[derive(Clone)]
enum Source {
    File,
    Backend(BackendFactory),
}

/// The redb-backed world store.
pub struct RedbStore {
    /// `None` only between closing and reopening in [`WorldStore::recover`]
    /// (or after a reopen and a read-only view both failed: every call then
    /// reports the store closed).
    db: RwLock<Option<Handle>>,
    path: PathBuf,
    source: Source,
    /// The `writes` count of the last write transaction acknowledged.
    acknowledged: std::sync::atomic::AtomicU64,
}

/// The open database, and whether it is the read-only view a store falls
/// back on while its disk refuses writes (see [`super::read_view`]).
struct Handle {
    db: Database,
    view: bool,
}

/// The `writes` count a database holds (0 for a store from before it).
fn write_count(db: &Database) -> Result<u64, StoreFault> {
    let txn = db.begin_read().map_err(fault("beginning a read"))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(StoreFault::backend("opening meta", e)),
    };
    Ok(meta
        .get(WRITES_KEY)
        .map_err(fault("reading the write count"))?
        .map_or(0, |g| g.value()))
}

/// A boxed backend, as redb wants a sized one.
#[derive(Debug)]
struct BoxedBackend(Box<dyn StorageBackend>);

impl StorageBackend for BoxedBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "storage engine failed on damaged data".to_owned())
}

/// Closes a database handle. After the storage engine panicked on damaged
/// data (a panic the store caught), closing it can panic again (a lock it
/// left poisoned): that is caught too, and the handle's memory let go as far
/// as it can be, rather than a refusal of a damaged store ending in a crash.
fn close_quietly(handle: Handle, path: &Path) {
    if super::quiet_panic::catch(move || drop(handle)).is_err() {
        tracing::warn!(path = %path.display(), "the damaged store could not be closed cleanly");
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        let handle = self
            .db
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            close_quietly(handle, &self.path);
        }
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish()
    }
}

fn fault<E: std::error::Error + Send + Sync + 'static>(context: &'static str) -> impl FnOnce(E) -> StoreFault {
    move |e| StoreFault::backend(context, e)
}

impl RedbStore {
    /// The file name used inside a data directory.
    pub const FILE_NAME: &'static str = "world.redb";

    /// Opens the store in `data_dir` (creating the directory and file if needed).
    pub fn open_dir(data_dir: &Path) -> Result<RedbStore, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        RedbStore::open(&data_dir.join(Self::FILE_NAME))
    }

    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<RedbStore, OpenError> {
        if path.is_dir() {
            return Err(OpenError::Corrupt {
                path: path.to_owned(),
                detail: "is a directory, not a store file".into(),
            });
        }
        // A file that exists but holds nothing is not a new store: a crash
        // or a full disk left it so, and creating a world over it would
        // hide the loss.
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(OpenError::Corrupt {
                path: path.to_owned(),
                detail: "the file is empty (0 bytes); restore it from a backup, or delete it to start a new world"
                    .into(),
            });
        }
        if let Ok(meta) = std::fs::metadata(path)
            && !meta.is_file()
        {
            return Err(OpenError::Corrupt {
                path: path.to_owned(),
                detail: "is not a regular file".into(),
            });
        }
        if !path.exists() {
            create_new(path)?;
        }
        RedbStore::open_source(path, Source::File)
    }

    /// Opens (or creates) a store on the backend `factory` makes; `label`
    /// names it in messages. The factory is called again to reopen the store
    /// after a failed write (see [`WorldStore::recover`]).
    pub fn open_with_backend(label: &Path, factory: BackendFactory) -> Result<RedbStore, OpenError> {
        RedbStore::open_source(label, Source::Backend(factory))
    }

    fn open_source(path: &Path, source: Source) -> Result<RedbStore, OpenError> {
        let db = open_database(path, &source)?;
        let acknowledged = super::quiet_panic::catch(|| write_count(&db))
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let store = RedbStore {
            db: RwLock::new(Some(Handle { db, view: false })),
            path: path.to_owned(),
            source,
            acknowledged: std::sync::atomic::AtomicU64::new(acknowledged),
        };
        // redb panics on some kinds of damage it finds while opening or
        // repairing a file ("malformed allocator state"); `write` turns that
        // into an error.
        store.init()?;
        tracing::debug!(path = %path.display(), "world store open");
        Ok(store)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init(&self) -> Result<(), OpenError> {
        let result = self.write(|txn| self.init_in(txn));
        result.map_err(|e| match e {
            InitFailure::Open(e) => e,
            InitFailure::Fault(StoreFault::Corrupt(detail)) => OpenError::Corrupt {
                path: self.path.clone(),
                detail,
            },
            InitFailure::Fault(source) => OpenError::Init {
                path: self.path.clone(),
                source,
            },
        })
    }

    fn init_in(&self, txn: &WriteTransaction) -> Result<(), InitFailure> {
        let init = InitFailure::Fault;
        let found = {
            let mut meta = txn.open_table(META).map_err(fault("opening meta")).map_err(init)?;
            let found = meta
                .get(FORMAT_KEY)
                .map_err(fault("reading the format version"))
                .map_err(init)?
                .map(|g| g.value());
            if found.is_none() {
                meta.insert(FORMAT_KEY, STORE_FORMAT_VERSION)
                    .map_err(fault("writing the format version"))
                    .map_err(init)?;
            }
            found
        };
        if let Some(found) = found
            && found > STORE_FORMAT_VERSION
        {
            return Err(InitFailure::Open(OpenError::NewerFormat {
                path: self.path.clone(),
                found,
                supported: STORE_FORMAT_VERSION,
            }));
        }
        if found == Some(1) {
            migrate_zone_index(txn).map_err(init)?;
            let mut meta = txn.open_table(META).map_err(fault("opening meta")).map_err(init)?;
            meta.insert(FORMAT_KEY, STORE_FORMAT_VERSION)
                .map_err(fault("writing the format version"))
                .map_err(init)?;
            tracing::info!(path = %self.path.display(), "store migrated from format 1 to 2 (zone shards indexed by scope)");
        }
        // Create every table so read transactions can always open them.
        open_write_tables(txn).map_err(init)?;
        Ok(())
    }

    /// Runs `f` with the open database, turning a panic of the storage
    /// engine (damaged data) into a fault naming the file.
    fn with_db<R, E: From<StoreFault>>(&self, f: impl FnOnce(&Database) -> Result<R, E>) -> Result<R, E> {
        self.with_handle(false, f)
    }

    /// [`Self::with_db`], refusing a read-only view when `for_write`.
    fn with_handle<R, E: From<StoreFault>>(
        &self,
        for_write: bool,
        f: impl FnOnce(&Database) -> Result<R, E>,
    ) -> Result<R, E> {
        let guard = crate::lock::read(&self.db);
        let Some(handle) = guard.as_ref() else {
            return Err(
                StoreFault::Corrupt(format!("store {} is closed after a failed reopen", self.path.display())).into(),
            );
        };
        if for_write && handle.view {
            return Err(StoreFault::backend(
                "writing",
                std::io::Error::other(format!(
                    "store {} is read-only until its disk takes writes again",
                    self.path.display()
                )),
            )
            .into());
        }
        let db = &handle.db;
        match super::quiet_panic::catch(|| f(db)) {
            Ok(result) => result,
            Err(panic) => {
                let detail = panic_message(&*panic);
                tracing::error!(path = %self.path.display(), %detail, "the storage engine failed on damaged data");
                Err(StoreFault::Corrupt(format!("{}: {detail}", self.path.display())).into())
            }
        }
    }

    /// Runs `f` over one consistent read snapshot.
    fn read<R>(&self, f: impl FnOnce(&ReadTables) -> Result<R, ReadError>) -> Result<R, ReadError> {
        self.with_db(|db| Self::read_in(db, f))
    }

    fn read_in<R>(db: &Database, f: impl FnOnce(&ReadTables) -> Result<R, ReadError>) -> Result<R, ReadError> {
        let txn = db.begin_read().map_err(fault("beginning a read"))?;
        let tables = RedbTables {
            zones: txn.open_table(ZONES).map_err(fault("opening zones"))?,
            zone_shards: txn.open_table(ZONE_SHARDS).map_err(fault("opening zone_shards"))?,
            shards: txn.open_table(SHARDS).map_err(fault("opening shards"))?,
            objects: txn.open_table(OBJECTS).map_err(fault("opening objects"))?,
            versions: txn.open_table(VERSIONS).map_err(fault("opening versions"))?,
            tombstones: txn.open_table(TOMBSTONES).map_err(fault("opening tombstones"))?,
            tombstones_by_seq: txn
                .open_table(TOMBSTONES_BY_SEQ)
                .map_err(fault("opening tombstones_by_seq"))?,
        };
        f(&tables)
    }

    /// Runs `f` in a write transaction; commits (durably) only if it succeeds.
    /// Runs `f` in a write transaction; commits (durably) only if it
    /// succeeds. A write the disk fails leaves redb refusing reads as well,
    /// so the store reopens at once (falling back on a read-only view of
    /// what is durable) rather than waiting for the caller's retry: zone
    /// entries go on being answered meanwhile.
    fn write<R, E: From<StoreFault>>(&self, f: impl FnOnce(&WriteTransaction) -> Result<R, E>) -> Result<R, E> {
        let mut failed_io = false;
        let result = self.with_handle(true, |db| {
            Self::write_in(db, &self.acknowledged, f).inspect_err(|_| {
                // redb latches a failed write: every later call fails
                // (a write transaction is the cheapest call that says so;
                // this one is dropped unused).
                failed_io = !matches!(db.try_begin_write(), Ok(_) | Err(redb::TransactionError::WouldBlock));
            })
        });
        if failed_io && let Err(e) = self.recover() {
            tracing::error!(path = %self.path.display(), error = %e, "the store cannot be read after a failed write");
        }
        result
    }

    fn write_tables<R, E: From<StoreFault>>(
        &self,
        f: impl FnOnce(&mut WriteTables<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        self.write(|txn| {
            let mut tables = open_write_tables(txn)?;
            f(&mut tables)
        })
    }

    fn write_in<R, E: From<StoreFault>>(
        db: &Database,
        acknowledged: &std::sync::atomic::AtomicU64,
        f: impl FnOnce(&WriteTransaction) -> Result<R, E>,
    ) -> Result<R, E> {
        let txn = db.begin_write().map_err(fault("beginning a write"))?;
        let result = f(&txn);
        match result {
            Ok(value) => {
                let count = {
                    let mut meta = txn.open_table(META).map_err(fault("opening meta"))?;
                    let count = meta
                        .get(WRITES_KEY)
                        .map_err(fault("reading the write count"))?
                        .map_or(0, |g| g.value())
                        + 1;
                    meta.insert(WRITES_KEY, count)
                        .map_err(fault("writing the write count"))?;
                    count
                };
                txn.commit().map_err(fault("committing"))?;
                acknowledged.store(count, std::sync::atomic::Ordering::SeqCst);
                Ok(value)
            }
            Err(e) => {
                txn.abort().map_err(fault("aborting"))?;
                Err(e)
            }
        }
    }
}

/// Why the init transaction failed.
enum InitFailure {
    Open(OpenError),
    Fault(StoreFault),
}

impl From<StoreFault> for InitFailure {
    fn from(e: StoreFault) -> InitFailure {
        InitFailure::Fault(e)
    }
}

/// Creates a new, empty store at `path` as a whole: made and initialised
/// under a temporary name (`<path>.creating`, replacing one a crash left),
/// fsynced, renamed into place and the directory fsynced. A crash or power
/// cut while a store is being created leaves no `path` at all — the next
/// start creates it again — rather than a half-written file that would be
/// refused as damaged.
fn create_new(path: &Path) -> Result<(), OpenError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| OpenError::Io { path, source }
    };
    let mut creating = path.as_os_str().to_owned();
    creating.push(".creating");
    let creating = std::path::PathBuf::from(creating);
    match std::fs::remove_file(&creating) {
        Ok(()) => tracing::info!(path = %creating.display(), "removed a store a crash left half-created"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&creating)(e)),
    }
    drop(RedbStore::open_source(&creating, Source::File)?);
    std::fs::File::open(&creating)
        .and_then(|f| f.sync_all())
        .map_err(io(&creating))?;
    std::fs::rename(&creating, path).map_err(io(path))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    tracing::info!(path = %path.display(), "created a new world store");
    Ok(())
}

fn open_database(path: &Path, source: &Source) -> Result<Database, OpenError> {
    let opened = super::quiet_panic::catch(|| match source {
        Source::File => Database::builder().create(path).map_err(|e| map_open_error(path, e)),
        Source::Backend(factory) => {
            let backend = factory().map_err(|source| OpenError::Io {
                path: path.to_owned(),
                source,
            })?;
            Database::builder()
                .create_with_backend(BoxedBackend(backend))
                .map_err(|e| map_open_error(path, e))
        }
    });
    opened.unwrap_or_else(|panic| {
        Err(OpenError::Corrupt {
            path: path.to_owned(),
            detail: panic_message(&*panic),
        })
    })
}

/// Reads every entry of `table` (keys and values decoded), counting them.
fn scan_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<K, V>,
    name: &str,
) -> Result<u64, StoreFault> {
    let read = |e: redb::StorageError| StoreFault::backend(format!("reading table {name}"), e);
    let opened = match txn.open_table(table) {
        Ok(opened) => opened,
        // Tables are made on first open; a store may predate one.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(StoreFault::backend(format!("opening table {name}"), e)),
    };
    let mut records = 0;
    for entry in opened.iter().map_err(read)? {
        let (key, value) = entry.map_err(read)?;
        let _ = (key.value(), value.value());
        records += 1;
    }
    Ok(records)
}

/// Opens a read-only view of the store (see [`super::read_view`]): what is
/// durable, with redb's repair kept in memory. Refused unless the view
/// holds exactly the last write acknowledged (`acknowledged`, the `writes`
/// count): after a failed fsync the file may show a commit that was never
/// acknowledged and may not survive a power cut, and nothing of it may
/// reach a client.
fn open_view(path: &Path, source: &Source, acknowledged: u64) -> Result<Database, OpenError> {
    let io = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let base: Box<dyn StorageBackend> = match source {
        Source::File => Box::new(super::read_view::ReadOnlyFile::open(path).map_err(io)?),
        Source::Backend(factory) => factory().map_err(io)?,
    };
    let view = super::read_view::ReadView::new(base).map_err(io)?;
    let opened = super::quiet_panic::catch(|| {
        let db = Database::builder()
            .create_with_backend(view)
            .map_err(|e| map_open_error(path, e))?;
        let holds = write_count(&db).map_err(|source| OpenError::Init {
            path: path.to_owned(),
            source,
        })?;
        if holds != acknowledged {
            return Err(OpenError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "the file holds write {holds}, the last acknowledged was {acknowledged} \
                     (a failed fsync): nothing is served from it until it reopens"
                ),
            });
        }
        Ok(db)
    });
    opened.unwrap_or_else(|panic| {
        Err(OpenError::Corrupt {
            path: path.to_owned(),
            detail: panic_message(&*panic),
        })
    })
}

fn map_open_error(path: &Path, e: DatabaseError) -> OpenError {
    let path = path.to_owned();
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => OpenError::Locked { path },
        DatabaseError::UpgradeRequired(version) => OpenError::OldEngineFormat { path, version },
        DatabaseError::Storage(StorageError::Io(source)) => OpenError::Io { path, source },
        DatabaseError::Storage(StorageError::Corrupted(detail)) => OpenError::Corrupt { path, detail },
        other => OpenError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

type ReadTables = RedbTables<
    ReadOnlyTable<&'static str, &'static [u8]>,
    ReadOnlyTable<(&'static str, &'static str, u64), ()>,
    ReadOnlyTable<u64, &'static [u8]>,
    ReadOnlyTable<(u64, u64), &'static [u8]>,
    ReadOnlyTable<(u64, u64, u64), ()>,
    ReadOnlyTable<(u64, u64), u64>,
    ReadOnlyTable<(u64, u64, u64), i64>,
>;

type WriteTables<'txn> = RedbTables<
    Table<'txn, &'static str, &'static [u8]>,
    Table<'txn, (&'static str, &'static str, u64), ()>,
    Table<'txn, u64, &'static [u8]>,
    Table<'txn, (u64, u64), &'static [u8]>,
    Table<'txn, (u64, u64, u64), ()>,
    Table<'txn, (u64, u64), u64>,
    Table<'txn, (u64, u64, u64), i64>,
>;

fn open_write_tables(txn: &WriteTransaction) -> Result<WriteTables<'_>, StoreFault> {
    Ok(RedbTables {
        zones: txn.open_table(ZONES).map_err(fault("opening zones"))?,
        zone_shards: txn.open_table(ZONE_SHARDS).map_err(fault("opening zone_shards"))?,
        shards: txn.open_table(SHARDS).map_err(fault("opening shards"))?,
        objects: txn.open_table(OBJECTS).map_err(fault("opening objects"))?,
        versions: txn.open_table(VERSIONS).map_err(fault("opening versions"))?,
        tombstones: txn.open_table(TOMBSTONES).map_err(fault("opening tombstones"))?,
        tombstones_by_seq: txn
            .open_table(TOMBSTONES_BY_SEQ)
            .map_err(fault("opening tombstones_by_seq"))?,
    })
}

/// The store's tables inside one redb transaction (read-only or writable).
struct RedbTables<Z, ZS, S, O, V, T, TS> {
    zones: Z,
    zone_shards: ZS,
    shards: S,
    objects: O,
    versions: V,
    tombstones: T,
    tombstones_by_seq: TS,
}

/// Format 1 → 2: each zone's shard list becomes rows of [`ZONE_SHARDS`]
/// keyed by the shard's scope, and the zone record a marker. Runs inside
/// the opening transaction, so a crash leaves format 1 whole or format 2.
fn migrate_zone_index(txn: &WriteTransaction) -> Result<(), StoreFault> {
    let mut zones = txn.open_table(ZONES).map_err(fault("opening zones"))?;
    let shards = txn.open_table(SHARDS).map_err(fault("opening shards"))?;
    let mut index = txn.open_table(ZONE_SHARDS).map_err(fault("opening zone_shards"))?;
    let mut lists = Vec::new();
    for entry in zones.iter().map_err(fault("listing zones"))? {
        let (key, value) = entry.map_err(fault("listing zones"))?;
        let zone = ZoneId::new(key.value()).map_err(|e| StoreFault::Corrupt(format!("zone name in store: {e}")))?;
        let list = decode_zone(&zone, value.value())?;
        lists.push((zone, list));
    }
    for (zone, list) in &lists {
        for &shard in list {
            let record = shards
                .get(shard.0)
                .map_err(fault("reading a shard record"))?
                .ok_or_else(|| StoreFault::Corrupt(format!("zone {zone} lists shard {shard}, which has no record")))?;
            let record = ShardRecord::decode(shard, record.value())?;
            let key = scope_key(&record.scope);
            index
                .insert((zone.as_str(), key.as_str(), shard.0), ())
                .map_err(fault("writing a zone's shard"))?;
        }
        zones
            .insert(zone.as_str(), [].as_slice())
            .map_err(fault("writing a zone"))?;
    }
    Ok(())
}

/// The middle part of a [`ZONE_SHARDS`] key: `""` for a shared shard,
/// `"@"` and the perspective for one only that perspective sees (so no
/// perspective's key can equal the shared one).
/// A format 1 zone record: the zone's whole shard list.
pub(crate) fn decode_zone(zone: &ZoneId, bytes: &[u8]) -> Result<Vec<ShardId>, StoreFault> {
    if bytes.len() > 10 * MAX_SHARDS_PER_ZONE {
        return Err(StoreFault::Corrupt(format!(
            "zone {zone}: record of {} bytes",
            bytes.len()
        )));
    }
    rmp_serde::from_slice(bytes).map_err(|e| StoreFault::Corrupt(format!("zone {zone}: record does not decode: {e}")))
}

impl<Z, ZS, S, O, V, T, TS> RedbTables<Z, ZS, S, O, V, T, TS>
where
    O: ReadableTable<(u64, u64), &'static [u8]>,
{
    fn stored(&self, shard: ShardId, id: ObjectId) -> Result<StoredObject, StoreFault> {
        let guard = self
            .objects
            .get((shard.0, id.0))
            .map_err(fault("reading an object"))?
            .ok_or_else(|| StoreFault::Corrupt(format!("shard {shard}: version index names missing object {id}")))?;
        stored_from(shard, id, guard.value())
    }
}

fn stored_from(shard: ShardId, id: ObjectId, bytes: &[u8]) -> Result<StoredObject, StoreFault> {
    let (version, state) = split_object(shard, id, bytes)?;
    Ok(StoredObject {
        id,
        version,
        // Validated when written; component decoding reports damage with the URL.
        state: ObjectState::from_trusted_bytes(state.to_vec()),
    })
}

impl<Z, ZS, S, O, V, T, TS> Tables for RedbTables<Z, ZS, S, O, V, T, TS>
where
    Z: ReadableTable<&'static str, &'static [u8]>,
    ZS: ReadableTable<(&'static str, &'static str, u64), ()>,
    S: ReadableTable<u64, &'static [u8]>,
    O: ReadableTable<(u64, u64), &'static [u8]>,
    V: ReadableTable<(u64, u64, u64), ()>,
    T: ReadableTable<(u64, u64), u64>,
    TS: ReadableTable<(u64, u64, u64), i64>,
{
    fn zones(&self) -> Result<Vec<ZoneId>, StoreFault> {
        let mut out = Vec::new();
        for entry in self.zones.iter().map_err(fault("listing zones"))? {
            let (key, _) = entry.map_err(fault("listing zones"))?;
            out.push(ZoneId::new(key.value()).map_err(|e| StoreFault::Corrupt(format!("zone name in store: {e}")))?);
        }
        Ok(out)
    }

    fn zone_exists(&self, zone: &ZoneId) -> Result<bool, StoreFault> {
        Ok(self
            .zones
            .get(zone.as_str())
            .map_err(fault("reading a zone"))?
            .is_some())
    }

    fn zone_shards(&self, zone: &ZoneId) -> Result<Option<Vec<ShardId>>, StoreFault> {
        if !self.zone_exists(zone)? {
            return Ok(None);
        }
        let mut out = Vec::new();
        let range = self
            .zone_shards
            .range((zone.as_str(), "", 0)..)
            .map_err(fault("scanning a zone's shards"))?;
        for entry in range {
            let (key, ()) = entry
                .map(|(k, v)| (k, v.value()))
                .map_err(fault("scanning a zone's shards"))?;
            let (z, _, shard) = key.value();
            if z != zone.as_str() {
                break;
            }
            if out.len() >= MAX_SHARDS_PER_ZONE {
                return Err(StoreFault::Corrupt(format!(
                    "zone {zone}: more than {MAX_SHARDS_PER_ZONE} shards"
                )));
            }
            out.push(ShardId(shard));
        }
        out.sort_unstable();
        Ok(Some(out))
    }

    fn scoped_zone_shards(&self, zone: &ZoneId, scope: &ShardScope) -> Result<Vec<ShardId>, StoreFault> {
        let key = scope_key(scope);
        let range = self
            .zone_shards
            .range((zone.as_str(), key.as_str(), 0)..=(zone.as_str(), key.as_str(), u64::MAX))
            .map_err(fault("scanning a zone's shards"))?;
        let mut out = Vec::new();
        for entry in range {
            let (key, ()) = entry
                .map(|(k, v)| (k, v.value()))
                .map_err(fault("scanning a zone's shards"))?;
            out.push(ShardId(key.value().2));
        }
        Ok(out)
    }

    fn shard(&self, shard: ShardId) -> Result<Option<ShardRecord>, StoreFault> {
        match self.shards.get(shard.0).map_err(fault("reading a shard record"))? {
            Some(guard) => ShardRecord::decode(shard, guard.value()).map(Some),
            None => Ok(None),
        }
    }

    fn objects_since(&self, shard: ShardId, after: Seq) -> Result<Vec<StoredObject>, StoreFault> {
        if after.0 == u64::MAX {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let range = self
            .versions
            .range((shard.0, after.0 + 1, 0)..=(shard.0, u64::MAX, u64::MAX))
            .map_err(fault("scanning versions"))?;
        for entry in range {
            let (key, ()) = entry.map(|(k, v)| (k, v.value())).map_err(fault("scanning versions"))?;
            let (_, _, id) = key.value();
            out.push(self.stored(shard, ObjectId(id))?);
        }
        Ok(out)
    }

    fn objects(&self, shard: ShardId) -> Result<Vec<StoredObject>, StoreFault> {
        let mut out = Vec::new();
        let range = self
            .objects
            .range((shard.0, 0)..=(shard.0, u64::MAX))
            .map_err(fault("scanning objects"))?;
        for entry in range {
            let (key, value) = entry.map_err(fault("scanning objects"))?;
            out.push(stored_from(shard, ObjectId(key.value().1), value.value())?);
        }
        Ok(out)
    }

    fn manifest(&self, shard: ShardId) -> Result<Vec<(ObjectId, Seq)>, StoreFault> {
        let mut out = Vec::new();
        let range = self
            .objects
            .range((shard.0, 0)..=(shard.0, u64::MAX))
            .map_err(fault("scanning objects"))?;
        for entry in range {
            let (key, value) = entry.map_err(fault("scanning objects"))?;
            let id = ObjectId(key.value().1);
            let (version, _) = split_object(shard, id, value.value())?;
            out.push((id, version));
        }
        Ok(out)
    }

    fn tombstone(&self, shard: ShardId, id: ObjectId) -> Result<Option<Seq>, StoreFault> {
        Ok(self
            .tombstones
            .get((shard.0, id.0))
            .map_err(fault("reading a tombstone"))?
            .map(|g| Seq(g.value())))
    }

    fn tombstones_since(&self, shard: ShardId, after: Seq) -> Result<Vec<Tombstone>, StoreFault> {
        if after.0 == u64::MAX {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let range = self
            .tombstones_by_seq
            .range((shard.0, after.0 + 1, 0)..=(shard.0, u64::MAX, u64::MAX))
            .map_err(fault("scanning tombstones"))?;
        for entry in range {
            let (key, _) = entry.map_err(fault("scanning tombstones"))?;
            let (_, seq, id) = key.value();
            out.push(Tombstone {
                id: ObjectId(id),
                seq: Seq(seq),
            });
        }
        Ok(out)
    }

    fn all_tombstones(&self) -> Result<Vec<(ShardId, Tombstone, i64)>, StoreFault> {
        let mut out = Vec::new();
        for entry in self.tombstones_by_seq.iter().map_err(fault("scanning tombstones"))? {
            let (key, at) = entry.map_err(fault("scanning tombstones"))?;
            let (shard, seq, id) = key.value();
            out.push((
                ShardId(shard),
                Tombstone {
                    id: ObjectId(id),
                    seq: Seq(seq),
                },
                at.value(),
            ));
        }
        Ok(out)
    }
}

impl TablesMut for WriteTables<'_> {
    fn add_zone_marker(&mut self, zone: &ZoneId) -> Result<(), StoreFault> {
        if !self.zone_exists(zone)? {
            self.zones
                .insert(zone.as_str(), [].as_slice())
                .map_err(fault("writing a zone"))?;
        }
        Ok(())
    }

    fn add_zone_shard(&mut self, zone: &ZoneId, scope: &ShardScope, shard: ShardId) -> Result<(), StoreFault> {
        self.add_zone_marker(zone)?;
        let key = scope_key(scope);
        self.zone_shards
            .insert((zone.as_str(), key.as_str(), shard.0), ())
            .map_err(fault("writing a zone's shard"))?;
        Ok(())
    }

    fn put_shard(&mut self, shard: ShardId, record: &ShardRecord) -> Result<(), StoreFault> {
        self.shards
            .insert(shard.0, record.encode().as_slice())
            .map_err(fault("writing a shard record"))?;
        Ok(())
    }

    fn put_object(
        &mut self,
        shard: ShardId,
        id: ObjectId,
        version: Seq,
        state: &[u8],
    ) -> Result<Option<(Seq, StateHash)>, StoreFault> {
        let old = match self
            .objects
            .insert((shard.0, id.0), encode_object(version, state).as_slice())
            .map_err(fault("writing an object"))?
        {
            Some(guard) => {
                let (old, state) = split_object(shard, id, guard.value())?;
                Some((old, state_hash(state)))
            }
            None => None,
        };
        if let Some((old, _)) = old {
            self.versions
                .remove((shard.0, old.0, id.0))
                .map_err(fault("moving a version entry"))?;
        }
        self.versions
            .insert((shard.0, version.0, id.0), ())
            .map_err(fault("writing a version entry"))?;
        Ok(old)
    }

    fn delete_object(&mut self, shard: ShardId, id: ObjectId) -> Result<Option<(Seq, StateHash)>, StoreFault> {
        let (version, hash) = match self
            .objects
            .remove((shard.0, id.0))
            .map_err(fault("removing an object"))?
        {
            Some(guard) => {
                let (version, state) = split_object(shard, id, guard.value())?;
                (version, state_hash(state))
            }
            None => return Ok(None),
        };
        self.versions
            .remove((shard.0, version.0, id.0))
            .map_err(fault("removing a version entry"))?;
        Ok(Some((version, hash)))
    }

    fn put_tombstone(&mut self, shard: ShardId, id: ObjectId, seq: Seq, at_ms: i64) -> Result<(), StoreFault> {
        self.tombstones
            .insert((shard.0, id.0), seq.0)
            .map_err(fault("writing a tombstone"))?;
        self.tombstones_by_seq
            .insert((shard.0, seq.0, id.0), at_ms)
            .map_err(fault("writing a tombstone"))?;
        Ok(())
    }

    fn delete_tombstone(&mut self, shard: ShardId, id: ObjectId, seq: Seq) -> Result<(), StoreFault> {
        self.tombstones
            .remove((shard.0, id.0))
            .map_err(fault("removing a tombstone"))?;
        self.tombstones_by_seq
            .remove((shard.0, seq.0, id.0))
            .map_err(fault("removing a tombstone"))?;
        Ok(())
    }
}

impl WorldStore for RedbStore {
    fn create_zone(&self, zone: &ZoneId, shards: &[ShardSpec]) -> Result<(), WriteError> {
        self.write_tables(|t| logic::create_zone(t, zone, shards))
    }

    fn zones(&self) -> Result<Vec<ZoneId>, ReadError> {
        self.read(|t| Ok(t.zones()?))
    }

    fn zone_shards(&self, zone: &ZoneId) -> Result<Vec<ShardId>, ReadError> {
        self.read(|t| logic::zone_shards(t, zone))
    }

    fn zone_shards_for(&self, zone: &ZoneId, perspective: &str) -> Result<Vec<ShardId>, ReadError> {
        self.read(|t| logic::zone_shards_for(t, zone, perspective))
    }

    fn shard_head(&self, shard: ShardId) -> Result<ShardHead, ReadError> {
        self.read(|t| logic::head(t, shard))
    }

    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        let span = tracing::debug_span!("commit", objects = changes.len());
        let _enter = span.enter();
        self.write_tables(|t| logic::commit(t, changes, Utc::now()))
    }

    fn changes_since(&self, shard: ShardId, since: Seq) -> Result<ChangesSince, ReadError> {
        self.read(|t| logic::changes_since(t, shard, since))
    }

    fn manifest(&self, shard: ShardId) -> Result<(ShardHead, Vec<(ObjectId, Seq)>), ReadError> {
        self.read(|t| logic::manifest(t, shard))
    }

    fn snapshot(&self, shard: ShardId) -> Result<ShardSnapshot, ReadError> {
        self.read(|t| logic::snapshot(t, shard))
    }

    fn trim_tombstones(&self, older_than: DateTime<Utc>) -> Result<TrimReport, WriteError> {
        self.write_tables(|t| logic::trim_tombstones(t, older_than))
    }

    fn reset_epoch(&self, shard: ShardId) -> Result<Epoch, WriteError> {
        self.write_tables(|t| logic::reset_epoch(t, shard))
    }

    fn reserve_object_ids(&self, count: u64, at_least: u64) -> Result<std::ops::Range<u64>, WriteError> {
        self.write(|txn| {
            let mut meta = txn.open_table(META).map_err(fault("opening meta"))?;
            let stored = meta
                .get(NEXT_OBJECT_ID_KEY)
                .map_err(fault("reading the next object id"))?
                .map(|g| g.value());
            let next = match stored {
                Some(next) => next,
                // The first reservation: past every object held or removed
                // (both keyed by shard first, so this reads them all, once).
                None => {
                    let mut past = 0u64;
                    let objects = txn.open_table(OBJECTS).map_err(fault("opening objects"))?;
                    for entry in objects.iter().map_err(fault("reading objects"))? {
                        let (key, _) = entry.map_err(fault("reading objects"))?;
                        past = past.max(key.value().1.saturating_add(1));
                    }
                    let tombstones = txn.open_table(TOMBSTONES).map_err(fault("opening tombstones"))?;
                    for entry in tombstones.iter().map_err(fault("reading tombstones"))? {
                        let (key, _) = entry.map_err(fault("reading tombstones"))?;
                        past = past.max(key.value().1.saturating_add(1));
                    }
                    past
                }
            };
            let range = super::id_range(next, count, at_least)?;
            meta.insert(NEXT_OBJECT_ID_KEY, range.end)
                .map_err(fault("writing the next object id"))?;
            Ok(range)
        })
    }

    fn schema(&self) -> Result<std::collections::BTreeMap<String, u32>, ReadError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(fault("beginning a read"))?;
            let meta = txn.open_table(META).map_err(fault("opening meta"))?;
            let mut out = std::collections::BTreeMap::new();
            for entry in meta.iter().map_err(fault("reading meta"))? {
                let (key, value) = entry.map_err(fault("reading meta"))?;
                if let Some(name) = key.value().strip_prefix(SCHEMA_PREFIX) {
                    let version = u32::try_from(value.value())
                        .map_err(|_| StoreFault::Corrupt(format!("schema version of {name} out of range")))?;
                    out.insert(name.to_owned(), version);
                }
            }
            Ok(out)
        })
    }

    fn commit_with_schema(
        &self,
        changes: &ChangeSet,
        schema: &std::collections::BTreeMap<String, u32>,
    ) -> Result<CommitReceipt, CommitError> {
        self.write(|txn| {
            let receipt = {
                let mut tables = open_write_tables(txn)?;
                logic::commit(&mut tables, changes, Utc::now())?
            };
            let mut meta = txn.open_table(META).map_err(fault("opening meta"))?;
            let old: Vec<String> = meta
                .iter()
                .map_err(fault("reading meta"))?
                .filter_map(|e| e.ok().map(|(k, _)| k.value().to_owned()))
                .filter(|k| k.starts_with(SCHEMA_PREFIX))
                .collect();
            for key in old {
                meta.remove(key.as_str()).map_err(fault("writing meta"))?;
            }
            for (name, version) in schema {
                meta.insert(format!("{SCHEMA_PREFIX}{name}").as_str(), u64::from(*version))
                    .map_err(fault("writing meta"))?;
            }
            Ok(receipt)
        })
    }

    fn scan(&self) -> Result<u64, ReadError> {
        // redb's own check first: every page's checksum, which ordinary
        // reads do not verify (a flipped bit in an index reads as another
        // value, not as an error). It needs the database to itself.
        {
            let mut guard = crate::lock::write(&self.db);
            if let Some(handle) = guard.as_mut().filter(|h| !h.view) {
                let checked = super::quiet_panic::catch(|| handle.db.check_integrity());
                let damaged =
                    |detail: String| ReadError::from(StoreFault::Corrupt(format!("{}: {detail}", self.path.display())));
                match checked {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        return Err(damaged(
                            "pages failed their checksums (the storage engine rolled the file back to its last intact commit)"
                                .into(),
                        ));
                    }
                    Ok(Err(e)) => return Err(damaged(e.to_string())),
                    Err(panic) => return Err(damaged(panic_message(&*panic))),
                }
            }
        }
        self.with_db(|db| {
            let txn = db.begin_read().map_err(fault("beginning a read"))?;
            Ok(scan_table(&txn, META, "meta")?
                + scan_table(&txn, ZONES, "zones")?
                + scan_table(&txn, ZONE_SHARDS, "zone_shards")?
                + scan_table(&txn, SHARDS, "shards")?
                + scan_table(&txn, OBJECTS, "objects")?
                + scan_table(&txn, VERSIONS, "versions")?
                + scan_table(&txn, TOMBSTONES, "tombstones")?
                + scan_table(&txn, TOMBSTONES_BY_SEQ, "tombstones_by_seq")?)
        })
    }

    /// Reopens the store for writing. If the disk still refuses (a reopen
    /// after a failed write repairs the file, which writes), the store
    /// falls back on a read-only view of what is durable, kept until a
    /// later reopen succeeds: reads are answered, writes are refused, and
    /// this returns the reopen's error so the caller keeps retrying.
    fn recover(&self) -> Result<(), StoreFault> {
        let mut guard = crate::lock::write(&self.db);
        // The old handle must be gone (and its file lock released) before the
        // file is opened again.
        let old = guard.take();
        let was_view = old.as_ref().is_some_and(|h| h.view);
        if let Some(old) = old {
            close_quietly(old, &self.path);
        }
        match open_database(&self.path, &self.source) {
            Ok(db) => {
                *guard = Some(Handle { db, view: false });
                tracing::info!(path = %self.path.display(), "world store reopened");
                Ok(())
            }
            Err(e) => {
                let acknowledged = self.acknowledged.load(std::sync::atomic::Ordering::SeqCst);
                match open_view(&self.path, &self.source, acknowledged) {
                    Ok(db) => {
                        if !was_view {
                            tracing::warn!(path = %self.path.display(), error = %e,
                                "the store cannot be reopened for writing; serving reads from what is durable");
                        }
                        *guard = Some(Handle { db, view: true });
                    }
                    Err(view) => {
                        tracing::error!(path = %self.path.display(), error = %view, "the store cannot be read either");
                    }
                }
                Err(StoreFault::backend("reopening the store", e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> ZoneId {
        ZoneId::new(name).expect("zone")
    }

    /// Rewrites a current store file as format 1 wrote it: each zone's
    /// whole shard list in its zone record, no scope index.
    fn downgrade_to_format_1(path: &Path) {
        let db = Database::create(path).expect("open");
        let txn = db.begin_write().expect("write");
        {
            let index = txn.open_table(ZONE_SHARDS).expect("index");
            let mut lists: std::collections::BTreeMap<String, Vec<ShardId>> = Default::default();
            for entry in index.iter().expect("rows") {
                let (key, _) = entry.expect("row");
                let (z, _, shard) = key.value();
                lists.entry(z.to_owned()).or_default().push(ShardId(shard));
            }
            let mut zones = txn.open_table(ZONES).expect("zones");
            for (z, mut list) in lists {
                list.sort_unstable();
                let bytes = rmp_serde::to_vec(&list).expect("encode");
                zones.insert(z.as_str(), bytes.as_slice()).expect("zone");
            }
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(FORMAT_KEY, 1).expect("format");
        }
        txn.delete_table(ZONE_SHARDS).expect("drop the index");
        txn.commit().expect("commit");
    }

    #[test]
    fn a_format_1_store_is_migrated_on_open_and_keeps_every_zone_and_scope() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("world.redb");
        {
            let store = RedbStore::open(&path).expect("store");
            store
                .create_zone(
                    &zone("meadow"),
                    &[ShardSpec::shared(ShardId(1)), ShardSpec::shared(ShardId(2))],
                )
                .expect("meadow");
            for (id, player) in [(10, "ann"), (11, "bob")] {
                let spec = ShardSpec {
                    id: ShardId(id),
                    scope: ShardScope::Perspective(player.into()),
                };
                store.create_zone(&zone("inventory"), &[spec]).expect("inventory");
            }
        }
        downgrade_to_format_1(&path);
        {
            let db = Database::open(&path).expect("open");
            let txn = db.begin_read().expect("read");
            assert!(txn.open_table(ZONE_SHARDS).is_err(), "the file is format 1 now");
        }
        let store = RedbStore::open(&path).expect("a format 1 store opens");
        assert_eq!(store.zones().expect("zones"), vec![zone("inventory"), zone("meadow")]);
        assert_eq!(
            store.zone_shards(&zone("meadow")).expect("meadow"),
            vec![ShardId(1), ShardId(2)]
        );
        assert_eq!(
            store.zone_shards_for(&zone("inventory"), "bob").expect("bob's"),
            vec![ShardId(11)]
        );
        assert_eq!(
            store.zone_shards_for(&zone("meadow"), "bob").expect("shared"),
            vec![ShardId(1), ShardId(2)]
        );
        // A shard added after the migration joins the index.
        let spec = ShardSpec {
            id: ShardId(12),
            scope: ShardScope::Perspective("cy".into()),
        };
        store.create_zone(&zone("inventory"), &[spec]).expect("cy's");
        assert_eq!(
            store.zone_shards(&zone("inventory")).expect("all"),
            vec![ShardId(10), ShardId(11), ShardId(12)]
        );
        drop(store);
        let db = Database::open(&path).expect("open");
        let txn = db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        let format = meta.get(FORMAT_KEY).expect("read").expect("format").value();
        assert_eq!(format, STORE_FORMAT_VERSION);
    }
}
