//! [`ClientHost`]: what every driver of a client connection keeps beside
//! proto's sans-IO [`ClientSession`] — the disk cache, the session's clock,
//! the world's key — and the synchronous work it does for it: reading a
//! zone's cached heads and copies for an entry, applying what the server
//! sent, carrying out the session's steps (cache writes before anything
//! the game sees), auditing copies taken on trust, folding journals on
//! leaving. It holds no runtime, socket or thread: hoard-net's async QUIC
//! client and the Bevy plugin's systems both drive it, each deciding where
//! the blocking parts run (a blocking thread, a worker).
//!
//! The session is under one lock, held only for short, non-blocking steps:
//! never across a cache read or write, nor while a driver sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use hoard_engine::lock::lock;
use hoard_engine::{RegistryHash, ServerIdentity, ShardId, ZoneId};
use hoard_proto::client::{ClientError, ClientUpdate};
use hoard_proto::proof::{HeadVerifier, ProofChecker};
use hoard_proto::sync::client::{ClientConfig, EntryStats, SyncError};
use hoard_proto::sync::session::{ClientSession, ClientStep};
use hoard_proto::wire::{Message, Welcome};
use hoard_world_cache::{CachedShard, KeptFile, ShardHeader, ShardKey, ShardUpdate, WorldCache};

/// The cache is trimmed to this size (least recently used shards first)
/// once a session ([`ClientHost::trim`]).
pub const CACHE_BUDGET_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Cached shards unused for this long are dropped by [`ClientHost::trim`].
pub const CACHE_MAX_AGE: Duration = Duration::from_secs(180 * 24 * 3600);

/// Messages an async driver applies where they arrive (on the stream's
/// task) rather than handing them to a blocking thread, at most
/// ([`Inbound::inline`]): each applies in memory and appends to a journal
/// in microseconds, where a hand-off to a thread and back costs two
/// wake-ups per batch (a process of many clients spent a tenth of its time
/// on them). The cost of applying a delta is its shard's (a new copy of
/// it), not its bytes', so the bound is a count: a 1%-changed answer's 64
/// deltas applied on the task were slower than on threads. Whole shard
/// writes, which sync, still go to a thread ([`Writes::Returned`]).
pub const INLINE_BATCH: usize = 8;

/// Who the connection speaks as, and what it checks.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The world the cache is keyed by (the server's identity, or the world
    /// a relay carries).
    pub world: ServerIdentity,
    /// Whether every shard must come with the world's signed head (through
    /// a relay, or when the client hands shards on).
    pub proofs: bool,
    /// The service (world) joined.
    pub service: String,
    /// The player, as the token names them (confirmed by `Welcome`).
    pub perspective: String,
    /// The registry objects are encoded with.
    pub registry: RegistryHash,
    /// Whether the copies an entry takes on trust are audited once the zone
    /// is ready ([`SessionSettings::audit_cached_copies`](crate::SessionSettings::audit_cached_copies)).
    pub audit: bool,
}

/// The world's key, known once `Welcome` is read (answers and deltas are
/// read only after that): checks signed heads.
#[derive(Debug, Default)]
struct WorldKey(OnceLock<Box<dyn HeadVerifier>>);

impl HeadVerifier for WorldKey {
    fn verify(&self, scheme: u16, statement: &[u8], signature: &[u8]) -> bool {
        self.0.get().is_some_and(|k| k.verify(scheme, statement, signature))
    }
}

/// One whole message of one of the server's streams, with its frame length
/// and the answer it belongs to (`None`: the control stream, or the pushed
/// deltas' stream).
#[derive(Debug)]
pub struct Inbound {
    /// The message.
    pub msg: Message,
    /// Its frame's length on the wire (entry statistics count it).
    pub len: usize,
    /// The request its answer stream answers.
    pub request: Option<u32>,
}

impl Inbound {
    /// Whether an async driver may apply `messages` where they arrived
    /// (see [`INLINE_BATCH`]): a few live deltas, transient states and
    /// statuses, or a small answer (a warm entry's `AnswerBegin`, `Fresh`,
    /// a few deltas, `AnswerEnd`) — never a snapshot, manifest or repair,
    /// which build or rewrite whole shards.
    pub fn inline(messages: &[Inbound]) -> bool {
        messages.len() <= INLINE_BATCH
            && messages.iter().all(|m| {
                matches!(
                    m.msg,
                    Message::Delta(_)
                        | Message::Transient(_)
                        | Message::TransientPatch(_)
                        | Message::Status(_)
                        | Message::Processed(_)
                        | Message::AnswerBegin(_)
                        | Message::Fresh(_)
                        | Message::AnswerEnd(_)
                )
            })
    }
}

/// Why applying what the server sent failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The server is not faithful to the world (a relay that lied): this
    /// route to the world is not to be used again.
    Forged(String),
    /// Anything else (a protocol error): the session ends.
    Other(String),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Forged(why) | ApplyError::Other(why) => f.write_str(why),
        }
    }
}

/// Where the whole shard writes of [`ClientHost::carry_out`] (each synced)
/// happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    /// Here: the caller may block (a blocking thread, a worker).
    Now,
    /// Later: returned to the caller, which must not block (an async task,
    /// a game's frame) and does them before the next effects of the same
    /// shards are carried out. Journal appends, which do not sync, happen
    /// here either way.
    Returned,
}

/// A session step that is the driver's to carry out (the cache writes are
/// done by [`ClientHost::carry_out`]), in order.
#[derive(Debug)]
pub enum Outcome {
    /// Hand this to the game.
    Update(ClientUpdate),
    /// Audit these copies, taken on trust when `zone` was entered, off the
    /// game's path ([`ClientHost::audit`]).
    Audit {
        /// The zone.
        zone: ZoneId,
        /// The copies.
        copies: Vec<Arc<CachedShard>>,
    },
    /// The entry of `zone` ended: its waiters get `result`.
    EntryFinished {
        /// The zone.
        zone: ZoneId,
        /// Its statistics, or why it failed.
        result: Result<EntryStats, ClientError>,
    },
    /// The session failed: every waiting entry gets this error.
    FailAll(ClientError),
}

/// A zone's cached state as read for an entry: the heads to name in
/// `EnterZone`, and the small files read whole with them, to load the
/// copies from while the request is in flight.
#[derive(Debug, Default)]
pub struct CachedZone {
    heads: Vec<ShardHeader>,
    kept: Vec<(ShardKey, Option<KeptFile>)>,
}

impl CachedZone {
    /// The cached shards' heads.
    pub fn heads(&self) -> &[ShardHeader] {
        &self.heads
    }
}

/// What is under a connection's one lock: the session, and what its driver
/// keeps beside it (`D`: its entries' waiters, say).
#[derive(Debug)]
pub struct Locked<D> {
    /// The sans-IO session.
    pub session: ClientSession,
    /// The driver's own state.
    pub driver: D,
}

/// The session under the connection's lock ([`ClientHost::session`]).
pub struct SessionGuard<'a, D>(MutexGuard<'a, Locked<D>>);

impl<D> std::ops::Deref for SessionGuard<'_, D> {
    type Target = ClientSession;
    fn deref(&self) -> &ClientSession {
        &self.0.session
    }
}

impl<D> std::ops::DerefMut for SessionGuard<'_, D> {
    fn deref_mut(&mut self) -> &mut ClientSession {
        &mut self.0.session
    }
}

/// A client connection's host side (see the module docs), with `D` the
/// driver's own state under the same lock ([`ClientHost::lock`]).
pub struct ClientHost<D = ()> {
    state: Mutex<Locked<D>>,
    cache: WorldCache,
    /// The session's clock reads 0 here ([`ClientHost::now`]).
    started: Instant,
    world_key: Arc<WorldKey>,
    /// [`HostConfig::audit`].
    audit: bool,
}

impl<D> std::fmt::Debug for ClientHost<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHost")
            .field("cache", &self.cache.root())
            .finish_non_exhaustive()
    }
}

impl<D> ClientHost<D> {
    /// The host of a connection about to speak as `config` says, caching in
    /// `cache`, with `driver` the driver's own state.
    pub fn new(cache: WorldCache, config: HostConfig, driver: D) -> ClientHost<D> {
        let world_key = Arc::new(WorldKey::default());
        let session = ClientSession::new(ClientConfig {
            server: config.world,
            service: config.service.clone(),
            perspective: config.perspective,
            registry: config.registry,
            wall_clock_at_zero: chrono::Utc::now(),
            proofs: config
                .proofs
                .then(|| ProofChecker::new(config.world, &config.service, world_key.clone())),
        });
        ClientHost {
            state: Mutex::new(Locked { session, driver }),
            cache,
            started: Instant::now(),
            world_key,
            audit: config.audit,
        }
    }

    /// The session's clock: seconds since the host was made.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// When the session's clock reads `at`.
    pub fn instant_at(&self, at: f64) -> Instant {
        self.started + Duration::from_secs_f64(at.max(0.0))
    }

    /// The connection's state, locked: for short, non-blocking steps only
    /// (never across a cache read or write, nor a send).
    pub fn lock(&self) -> MutexGuard<'_, Locked<D>> {
        lock(&self.state)
    }

    /// The session, locked (see [`ClientHost::lock`]).
    pub fn session(&self) -> SessionGuard<'_, D> {
        SessionGuard(self.lock())
    }

    /// The cache the session reads and writes.
    pub fn cache(&self) -> &WorldCache {
        &self.cache
    }

    /// The session's configuration (world, service, perspective, registry).
    pub fn config(&self) -> ClientConfig {
        self.session().sync().config().clone()
    }

    /// Checks `Welcome` names the world the cache is keyed by and carries a
    /// key of a bounded size; when shards are checked against signed heads,
    /// takes the world's key from it through `verifier` (the transport's
    /// signature scheme). Says what is wrong otherwise.
    pub fn accept_welcome(
        &self,
        welcome: &Welcome,
        verifier: impl FnOnce(ServerIdentity, &[u8]) -> Result<Box<dyn HeadVerifier>, String>,
    ) -> Result<(), String> {
        let (world, proven) = {
            let session = self.session();
            let config = session.sync().config();
            (config.server, config.proofs.is_some())
        };
        if welcome.server != world.0 {
            return Err(format!(
                "the server relays world {}, not {world}: connect with that world named",
                ServerIdentity(welcome.server)
            ));
        }
        if welcome.world_key.len() > hoard_proto::wire::MAX_WORLD_KEY_BYTES {
            return Err(format!(
                "a world key of {} bytes; the limit is {}",
                welcome.world_key.len(),
                hoard_proto::wire::MAX_WORLD_KEY_BYTES
            ));
        }
        if proven {
            let key = verifier(world, &welcome.world_key)?;
            let _ = self.world_key.0.set(key);
        }
        Ok(())
    }

    /// Reads the cached heads of `zone`'s shards (this perspective's and
    /// the shared ones), keeping small files whole for
    /// [`ClientHost::load_copies`]. Blocks on the disk.
    pub fn read_cached(&self, zone: &ZoneId) -> CachedZone {
        let config = self.config();
        let keys = self
            .cache
            .zone_keys(config.server, &config.service, Some(&config.perspective), zone);
        let (heads, kept) = self
            .cache
            .read_heads_keeping(&keys, config.registry)
            .into_iter()
            .flatten()
            .map(|(head, file)| {
                let key = head.key.clone();
                (head, (key, file))
            })
            .unzip();
        CachedZone { heads, kept }
    }

    /// Starts the entry (or, without `subscribe`, the prefetch) of `zone`
    /// from its cached heads: returns the request's id and what to send
    /// (its `EnterZone`, and anything else queued).
    pub fn begin_entry(&self, zone: &ZoneId, cached: &CachedZone, subscribe: bool) -> (u32, Vec<Message>) {
        let now = self.now();
        let mut session = self.session();
        let request = session
            .sync_mut()
            .enter_zone(now, zone.clone(), &cached.heads, subscribe);
        let messages = std::iter::from_fn(|| session.poll_transmit()).collect();
        (request, messages)
    }

    /// Loads the cached copies whose heads [`ClientHost::read_cached`]
    /// read, checking each file's checksums (their digests are audited once
    /// the zone is ready). Blocks on the disk.
    pub fn load_copies(&self, cached: CachedZone) -> Vec<Arc<CachedShard>> {
        let registry = self.config().registry;
        self.cache
            .load_many_kept(cached.kept, registry)
            .into_iter()
            .flatten()
            .map(Arc::new)
            .collect()
    }

    /// Hands the loaded copies to the entry `request` of `zone` (see
    /// [`ClientSession::provide_copies`]).
    pub fn provide_copies(
        &self,
        request: u32,
        zone: &ZoneId,
        copies: Vec<Arc<CachedShard>>,
    ) -> Result<(), ClientError> {
        let now = self.now();
        self.session().provide_copies(now, request, zone, copies)
    }

    /// Hands `messages` to the session in order, under one lock.
    pub fn handle(&self, messages: Vec<Inbound>) -> Result<(), ApplyError> {
        let now = self.now();
        let mut session = self.session();
        let sync = session.sync_mut();
        for Inbound { msg, len, request } in messages {
            match request {
                Some(r) => sync.handle_answer(now, r, msg, len),
                None => sync.handle(now, msg, len),
            }
            .map_err(|e| match e {
                SyncError::Forged(f) => ApplyError::Forged(f.to_string()),
                other => ApplyError::Other(other.to_string()),
            })?;
        }
        Ok(())
    }

    /// What the session has to send (repairs, leaves, acknowledgments).
    pub fn transmit(&self) -> Vec<Message> {
        let mut session = self.session();
        std::iter::from_fn(|| session.poll_transmit()).collect()
    }

    /// When the session's next timer is due, if it has one.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.session().sync().poll_timeout().map(|at| self.instant_at(at))
    }

    /// Lets the session abandon what waited too long (an entry without an
    /// answer); its steps follow.
    pub fn handle_timeout(&self) {
        let now = self.now();
        self.session().sync_mut().handle_timeout(now);
    }

    /// Carries out the session's steps in order: cache writes first (a zone
    /// is written before it is announced), the rest handed to `sink`. Whole
    /// shard writes are done here or returned, as `writes` says; returned
    /// ones are to be done ([`ClientHost::write_shards`]) before the next
    /// steps of the same shards are carried out.
    pub fn carry_out(&self, writes: Writes, sink: &mut dyn FnMut(Outcome)) -> Vec<Arc<CachedShard>> {
        let mut whole: Vec<Arc<CachedShard>> = Vec::new();
        let steps: Vec<ClientStep> = {
            let mut session = self.session();
            std::iter::from_fn(|| session.poll_step()).collect()
        };
        for step in steps {
            match step {
                ClientStep::WriteShard(shard) => match writes {
                    Writes::Now => self.write_shards(vec![shard]),
                    Writes::Returned => whole.push(shard),
                },
                ClientStep::JournalShard { shard, update } => {
                    if self.journal(writes, &whole, &shard, &update) {
                        whole.push(shard);
                    }
                }
                ClientStep::Update(update) => sink(Outcome::Update(update)),
                ClientStep::Audit { zone, copies } => {
                    if self.audit {
                        sink(Outcome::Audit { zone, copies });
                    }
                }
                ClientStep::EntryFinished { zone, result } => sink(Outcome::EntryFinished { zone, result }),
                ClientStep::FailAll(error) => sink(Outcome::FailAll(error)),
            }
        }
        whole
    }

    /// Journals a change onto its cached copy; true if the shard is to be
    /// written whole instead (also when a whole write of it is already
    /// waiting: a journal must not get ahead of its file).
    fn journal(
        &self,
        writes: Writes,
        whole: &[Arc<CachedShard>],
        shard: &Arc<CachedShard>,
        update: &ShardUpdate,
    ) -> bool {
        if whole.iter().any(|w| w.header.key == shard.header.key) {
            return true;
        }
        let journaled = match writes {
            Writes::Now => self.cache.record_delta(shard, update).map(Some),
            Writes::Returned => self.cache.journal_delta(shard, update),
        };
        match journaled {
            Ok(written) => written.is_none(),
            Err(e) => {
                tracing::warn!(shard = %shard.header.key, error = %e, "could not journal a change");
                false
            }
        }
    }

    /// Writes shards whole, the newest copy of each once (a later copy of a
    /// shard includes an earlier one's changes). Blocks on the disk (each
    /// write syncs).
    pub fn write_shards(&self, shards: Vec<Arc<CachedShard>>) {
        let mut newest: HashMap<ShardKey, Arc<CachedShard>> = HashMap::new();
        for shard in shards {
            newest.insert(shard.header.key.clone(), shard);
        }
        for shard in newest.into_values() {
            if let Err(e) = self.cache.write(&shard) {
                tracing::warn!(shard = %shard.header.key, error = %e, "could not cache shard");
            }
        }
    }

    /// Recomputes the digests of the copies an entry of `zone` took on
    /// trust (as loaded, in memory) and has the server repair each live
    /// shard whose copy's objects do not give its stated digest (only a
    /// writer's bug could cause it: the checksums held). True if repairs
    /// were queued ([`ClientHost::transmit`] sends them). Blocks for the
    /// hashing: one copy after another, not on rayon's pool, which the game
    /// may be materialising the zone on.
    pub fn audit(&self, zone: &ZoneId, copies: &[Arc<CachedShard>]) -> bool {
        let failed: Vec<ShardId> = copies
            .iter()
            .filter(|c| !self.cache.audit_copy(c))
            .map(|c| c.header.key.shard)
            .collect();
        if failed.is_empty() {
            return false;
        }
        let mut session = self.session();
        for shard in failed {
            session.sync_mut().repair_live_shard(zone, shard);
        }
        true
    }

    /// Leaves `zone`: no more deltas; its `ZoneLeft` is the next step.
    /// Returns the live copies as they stand (to [`ClientHost::fold`]) and
    /// what to send. The copies and the leave are taken under one lock: no
    /// delta is applied after the copies are taken, so they are the zone's
    /// last state.
    pub fn leave(&self, zone: &ZoneId) -> (Vec<Arc<CachedShard>>, Vec<Message>) {
        let mut session = self.session();
        let shards = session.leave(zone);
        let messages = std::iter::from_fn(|| session.poll_transmit()).collect();
        (shards, messages)
    }

    /// Folds each journaled shard of a left zone: writes the copy whole. A
    /// shard with no journal is on disk as it stands (no write, no sync).
    /// Blocks on the disk.
    pub fn fold(&self, shards: &[Arc<CachedShard>]) {
        for s in shards {
            if let Err(e) = self.cache.fold_journal(s) {
                tracing::warn!(shard = %s.header.key, error = %e, "could not write shard on leaving");
            }
        }
    }

    /// Keeps the cache bounded ([`CACHE_BUDGET_BYTES`], [`CACHE_MAX_AGE`]):
    /// once a session. Blocks on the disk.
    pub fn trim(&self) {
        if self.cache.is_read_only() {
            return;
        }
        match self.cache.evict(CACHE_BUDGET_BYTES, CACHE_MAX_AGE) {
            Ok(report) => tracing::debug!(?report, "cache trimmed"),
            Err(e) => tracing::warn!(error = %e, "could not trim the cache"),
        }
    }

    /// Shows `zone` to the game (its updates are no longer held back as a
    /// prefetch's). When the zone is already held live (prefetched, or
    /// entered before), its entry costs nothing: returns its statistics and
    /// what the game gets at once, its objects and its `ZoneReady`.
    pub fn show(&self, zone: &ZoneId) -> Option<(EntryStats, [ClientUpdate; 2])> {
        let (shards, proofs) = {
            let mut session = self.session();
            session.show(zone);
            let sync = session.sync();
            let shards = sync.live_shards(zone)?;
            let proofs = shards
                .iter()
                .filter_map(|c| sync.proof(c.header.key.shard).cloned())
                .collect();
            (shards, proofs)
        };
        let stats = EntryStats {
            shards: shards.len() as u32,
            shards_fresh: shards.len() as u32,
            objects: shards.iter().map(|s| s.objects.len() as u64).sum(),
            ..EntryStats::default()
        };
        let updates = [
            ClientUpdate::ZoneLoaded {
                zone: zone.clone(),
                shards,
                proofs,
            },
            ClientUpdate::Event(hoard_proto::client::ClientEvent::ZoneReady {
                zone: zone.clone(),
                stats: stats.clone(),
            }),
        ];
        Some((stats, updates))
    }

    /// Whether the game is to see `update` (its zone was entered, not only
    /// prefetched, and not left since).
    pub fn for_game(&self, update: &ClientUpdate) -> bool {
        self.session().for_game(update)
    }
}

/// Opens the cache at `dir` (its files in `files`, or on disk): another
/// process may be finishing with it (a previous run exiting), so this waits
/// briefly for its lock, then falls back to read-only and says so. Blocks
/// (the wait, and a new folder's sync).
pub fn open_cache(
    dir: &std::path::Path,
    files: Option<Arc<dyn hoard_world_cache::Storage>>,
) -> Result<WorldCache, ClientError> {
    use hoard_world_cache::LockPolicy;
    let files = files.unwrap_or_else(|| Arc::new(hoard_world_cache::FsStorage));
    match WorldCache::open_with(dir, LockPolicy::WaitUpTo(Duration::from_secs(2)), files.clone()) {
        Ok(cache) => Ok(cache),
        Err(hoard_world_cache::cache::OpenError::Busy { .. }) => {
            WorldCache::open_with(dir, LockPolicy::ReadOnlyIfBusy, files).map_err(|e| ClientError::Cache(e.to_string()))
        }
        Err(e) => Err(ClientError::Cache(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_engine::shard::{CachedObject, recompute_digest};
    use hoard_engine::state::StateBuilder;
    use hoard_engine::{Epoch, ObjectId, Seq};
    use hoard_proto::wire::{AnswerBegin, AnswerEnd, Delta, Snapshot, WireObject};

    const WORLD: ServerIdentity = ServerIdentity([1; 32]);

    fn zone() -> ZoneId {
        ZoneId::new("meadow").expect("zone")
    }

    fn host(dir: &std::path::Path) -> ClientHost {
        host_on(dir, Arc::new(hoard_world_cache::MemStorage::new()), true)
    }

    fn host_on(dir: &std::path::Path, files: Arc<dyn hoard_world_cache::Storage>, audit: bool) -> ClientHost {
        let cache = open_cache(dir, Some(files)).expect("cache");
        let config = HostConfig {
            world: WORLD,
            proofs: false,
            service: "world".into(),
            perspective: "ann".into(),
            registry: RegistryHash([3; 32]),
            audit,
        };
        ClientHost::new(cache, config, ())
    }

    fn inbound(messages: Vec<Message>, request: u32) -> Vec<Inbound> {
        messages
            .into_iter()
            .map(|msg| Inbound {
                msg,
                len: 10,
                request: Some(request),
            })
            .collect()
    }

    /// The answer to entry `request` that brings shard 0 as a snapshot of
    /// `objects` at seq 1.
    fn snapshot_answer(request: u32, objects: &[CachedObject]) -> Vec<Message> {
        vec![
            Message::AnswerBegin(AnswerBegin {
                request,
                zone: zone(),
                shards: 1,
            }),
            Message::Snapshot(Snapshot {
                shard: ShardId(0),
                epoch: Epoch(1),
                seq: Seq(1),
                digest: recompute_digest(objects),
                perspective: None,
                objects: wire(objects),
            }),
            Message::AnswerEnd(AnswerEnd { request }),
        ]
    }

    /// A warm entry whose copy the server finds fresh takes it on trust;
    /// the host hands the copies to the driver to audit — unless its
    /// configuration turns audits off, when the entry finishes the same
    /// and nothing is handed on.
    #[test]
    fn copies_taken_on_trust_are_handed_to_the_audit_unless_audits_are_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Arc<dyn hoard_world_cache::Storage> = Arc::new(hoard_world_cache::MemStorage::new());
        let first = objects(2, 1);
        let digest = recompute_digest(&first);
        {
            let cold = host_on(dir.path(), files.clone(), true);
            let cached = cold.read_cached(&zone());
            let (request, _) = cold.begin_entry(&zone(), &cached, true);
            cold.provide_copies(request, &zone(), Vec::new()).expect("no copies");
            cold.handle(inbound(snapshot_answer(request, &first), request))
                .expect("applied");
            cold.carry_out(Writes::Now, &mut |_| {});
        }
        for audit in [true, false] {
            let warm = host_on(dir.path(), files.clone(), audit);
            let cached = warm.read_cached(&zone());
            assert_eq!(cached.heads().len(), 1, "the cold entry's shard is cached");
            let (request, _) = warm.begin_entry(&zone(), &cached, true);
            warm.provide_copies(request, &zone(), warm.load_copies(cached))
                .expect("copies");
            let head = (ShardId(0), Epoch(1), Seq(1), digest);
            let answer = vec![
                Message::AnswerBegin(AnswerBegin {
                    request,
                    zone: zone(),
                    shards: 1,
                }),
                Message::Fresh(hoard_proto::wire::Fresh {
                    mask: vec![1],
                    tags: vec![hoard_proto::wire::head_tag(head.0, head.1, head.2, &head.3)],
                    root: hoard_proto::wire::fresh_root(&[head]),
                }),
                Message::AnswerEnd(AnswerEnd { request }),
            ];
            warm.handle(inbound(answer, request)).expect("applied");
            let mut seen = Vec::new();
            warm.carry_out(Writes::Now, &mut |o| seen.push(o));
            assert!(
                seen.iter()
                    .any(|o| matches!(o, Outcome::EntryFinished { result: Ok(_), .. })),
                "the warm entry finished (audit {audit})"
            );
            let audited: Vec<usize> = seen
                .iter()
                .filter_map(|o| match o {
                    Outcome::Audit { copies, .. } => Some(copies.len()),
                    _ => None,
                })
                .collect();
            assert_eq!(audited, if audit { vec![1] } else { vec![] }, "audit {audit}");
        }
    }

    fn objects(n: u64, version: u64) -> Vec<CachedObject> {
        (1..=n)
            .map(|i| CachedObject {
                id: ObjectId(i),
                version: Seq(version),
                state: StateBuilder::new().component("crate", vec![0x90 + i as u8]).finish(),
            })
            .collect()
    }

    fn wire(objects: &[CachedObject]) -> Vec<WireObject> {
        objects
            .iter()
            .map(|o| WireObject {
                id: o.id,
                version: o.version,
                state: o.state.as_bytes().to_vec(),
            })
            .collect()
    }

    fn welcome(server: ServerIdentity, world_key: Vec<u8>) -> Welcome {
        Welcome {
            protocol: hoard_proto::wire::PROTOCOL_VERSION,
            server: server.0,
            perspective: "ann".into(),
            zones: vec![zone()],
            tick_hz: 10,
            world_key,
            token_keys: None,
        }
    }

    fn no_key(_: ServerIdentity, _: &[u8]) -> Result<Box<dyn HeadVerifier>, String> {
        Err("no key expected".into())
    }

    #[test]
    fn welcome_must_name_the_world_the_cache_is_keyed_by_with_a_bounded_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host(dir.path());
        assert_eq!(host.accept_welcome(&welcome(WORLD, Vec::new()), no_key), Ok(()));
        let other = host
            .accept_welcome(&welcome(ServerIdentity([2; 32]), Vec::new()), no_key)
            .expect_err("another world");
        assert!(other.contains("relays world"), "{other}");
        let long = host
            .accept_welcome(
                &welcome(WORLD, vec![0; hoard_proto::wire::MAX_WORLD_KEY_BYTES + 1]),
                no_key,
            )
            .expect_err("an oversized key");
        assert!(long.contains("the limit is"), "{long}");
    }

    /// An entry from an empty cache: `EnterZone` names no copies; the answer
    /// applied, the shard is written before the zone is handed on (with
    /// `Writes::Now`) or handed back to write (`Writes::Returned`); a live
    /// delta afterwards is journaled, not written whole.
    #[test]
    fn an_entry_is_written_before_it_is_announced_and_a_delta_is_journaled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host(dir.path());
        let cached = host.read_cached(&zone());
        assert!(cached.heads().is_empty());
        let (request, messages) = host.begin_entry(&zone(), &cached, true);
        assert!(matches!(&messages[..], [Message::EnterZone(e)] if e.request == request && e.held.is_empty()));
        host.provide_copies(request, &zone(), host.load_copies(cached))
            .expect("no copies");
        let first = objects(2, 1);
        let inbound = inbound(snapshot_answer(request, &first), request);
        assert!(
            !Inbound::inline(&inbound),
            "an answer with a snapshot is not applied inline"
        );
        host.handle(inbound).expect("applied");
        let mut seen = Vec::new();
        let returned = host.carry_out(Writes::Returned, &mut |o| seen.push(o));
        assert_eq!(returned.len(), 1, "the whole write is handed back");
        assert!(
            seen.iter()
                .any(|o| matches!(o, Outcome::EntryFinished { result: Ok(_), .. }))
        );
        assert!(
            host.read_cached(&zone()).heads().is_empty(),
            "nothing written until the driver writes it"
        );
        host.write_shards(returned);
        let heads = host.read_cached(&zone());
        assert_eq!(heads.heads().len(), 1);
        assert_eq!(heads.heads()[0].hwm, Seq(1));

        // A live change: applied where it arrives, journaled (no whole write).
        let added = objects(3, 2).remove(2);
        let second: Vec<CachedObject> = first.iter().cloned().chain([added]).collect();
        let delta = vec![Inbound {
            msg: Message::Delta(Delta {
                zone: zone(),
                shard: ShardId(0),
                epoch: Epoch(1),
                base: Seq(1),
                seq: Seq(2),
                digest: recompute_digest(&second),
                tombstones: Vec::new(),
                upserts: wire(&second[2..]),
            }),
            len: 10,
            request: None,
        }];
        assert!(Inbound::inline(&delta));
        host.handle(delta).expect("delta");
        let mut updates = Vec::new();
        let whole = host.carry_out(Writes::Returned, &mut |o| {
            if let Outcome::Update(u) = o {
                updates.push(u)
            }
        });
        assert!(whole.is_empty(), "a delta is journaled, not written whole");
        assert_eq!(updates.len(), 1);
        assert!(
            !host.for_game(&updates[0]),
            "the zone was prefetched, not shown to the game"
        );
        host.session().show(&zone());
        assert!(host.for_game(&updates[0]));
        let loaded = host.load_copies(host.read_cached(&zone()));
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            (loaded[0].header.hwm, loaded[0].objects.len()),
            (Seq(2), 3),
            "the journal holds the change"
        );
    }

    #[test]
    fn a_few_small_messages_are_applied_inline_and_no_snapshot_is() {
        let status = || Inbound {
            msg: Message::Status(hoard_proto::wire::Status {
                writable: true,
                message: String::new(),
            }),
            len: 4,
            request: None,
        };
        let eight: Vec<Inbound> = (0..INLINE_BATCH).map(|_| status()).collect();
        assert!(Inbound::inline(&eight));
        let nine: Vec<Inbound> = (0..=INLINE_BATCH).map(|_| status()).collect();
        assert!(!Inbound::inline(&nine));
        assert!(Inbound::inline(&[]));
    }
}
