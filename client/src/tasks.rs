//! The async driver (feature `tokio`): a [`ClientHost`] driven by tokio
//! tasks over any [`ControlLink`], behind the async API a game or a tool
//! calls ([`AsyncClient`]: enter a zone and wait for it, send intents,
//! take what arrived). A transport (hoard-net's QUIC client) opens the
//! connection, reads `Welcome` and then only moves bytes: it writes the
//! messages this driver hands its [`ControlLink`], and hands every whole
//! message it reads to [`SessionTasks::control`] (the control stream's)
//! or [`SessionTasks::apply`] (a batch of one of the server's streams).
//!
//! Where the work runs: a few small messages (live deltas, a warm entry's
//! answer: [`Inbound::inline`]) are applied on the task that read them,
//! only a whole write of a shard going to a blocking thread; a larger
//! batch, cache reads, journal folds and audits run on blocking threads.
//! Nobody — the game, an entry's waiters — is told of a write before it is
//! done (a zone is written before it is announced).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoard_engine::lock::lock;
use hoard_engine::{ObjectId, PublishRegistry, ServerIdentity, ShardId, ZoneId};
use hoard_proto::client::{ClientError, ClientEvent, ClientUpdate};
use hoard_proto::proof::HeadVerifier;
use hoard_proto::sync::client::{EntryProgress, EntryStats};
use hoard_proto::wire::{ErrorCode, Intent, Message, SignedTokenKeys, Welcome};
use hoard_world_cache::{CachedObject, CachedShard, WorldCache};
use serde::Serialize;
use tokio::sync::{Notify, oneshot, watch};

use crate::host::{ApplyError, ClientHost, HostConfig, Inbound, Locked, Outcome, Writes};
use crate::intents::{IntentSigning, NONCE_WAIT, nonce_missing};
use crate::settings::SessionSettings;

/// Longest a zone entry may take before [`AsyncClient::enter_zone`] gives
/// up (a 100,000-object cold entry takes a few seconds on a slow link); the
/// sync's own timer ([`hoard_proto::sync::client::ENTRY_TIMEOUT_SECS`]).
pub const ENTRY_TIMEOUT: Duration = Duration::from_secs(hoard_proto::sync::client::ENTRY_TIMEOUT_SECS as u64);

/// What a transport's connection does for the driver: the control stream's
/// writing side, and the connection's end.
pub trait ControlLink: Send + Sync + 'static {
    /// Writes `messages` on the control stream, in order. Fails when the
    /// connection is gone: the session cannot go on.
    fn send(&self, messages: Vec<Message>) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// The server's refusal, if it closed the connection with a code and
    /// reason (a refused token, a newer session of the player).
    fn refusal(&self) -> Option<ClientError>;
    /// Closes the connection with an application `code` and `reason`.
    fn close(&self, code: u32, reason: &str);
    /// Resolves once the connection has closed.
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

/// What a `hoard://` URL names ([`AsyncClient::resolve`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Resolved {
    /// A zone: its shards this player may see.
    Zone(Vec<Arc<CachedShard>>),
    /// A shard, whole.
    Shard(Arc<CachedShard>),
    /// An object of a shard, or `None` if the shard does not hold it now
    /// (it left, or never was there).
    Object(Option<CachedObject>),
}

/// Where one `enter_zone` caller gets its result.
type EntryWaiter = oneshot::Sender<Result<EntryStats, ClientError>>;

/// What the driver keeps under the connection's one lock, beside the
/// sans-IO session ([`ClientHost::lock`]): callers waiting for each zone
/// entry in flight (a second `enter_zone` of a zone joins the first
/// instead of replacing it). Held only for short, non-blocking steps:
/// never across an await, a cache write or a send.
#[derive(Default)]
pub struct Waiting(HashMap<ZoneId, Vec<EntryWaiter>>);

/// A zone entry started before the client was handed out
/// ([`SessionTasks::wait_for_entry`]).
#[derive(Debug)]
pub struct PendingEntry(oneshot::Receiver<Result<EntryStats, ClientError>>);

impl PendingEntry {
    /// An entry that already ended with `result`.
    pub fn ended(result: Result<EntryStats, ClientError>) -> PendingEntry {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        PendingEntry(rx)
    }

    /// Waits until the zone is verified and written (or the entry failed).
    pub async fn wait(self) -> Result<EntryStats, ClientError> {
        self.0
            .await
            .map_err(|_| ClientError::Lost("the connection closed during zone entry".into()))?
    }
}

/// What a connection's tasks share: its host (the session and the waiters
/// under one lock), the game-facing queue under its own (the game takes it
/// every frame and must never wait behind the network), and the link.
pub struct SessionTasks<L> {
    /// The nonce the server gave for signing intents, once it came.
    intent_nonce: watch::Sender<Option<[u8; 16]>>,
    /// The session, the cache and the waiters.
    host: ClientHost<Waiting>,
    pending: Mutex<Vec<ClientUpdate>>,
    /// Signalled whenever something is pending for [`AsyncClient::take_updates`].
    changed: Notify,
    /// Signalled when an entry starts, so the timer task re-reads the sync's
    /// next timeout.
    timer: Notify,
    link: L,
}

/// Why applying what the server sent failed.
enum Failure {
    /// The server is not faithful to the world (a relay that lied).
    Forged(String),
    /// The runtime is shutting down (the client is being dropped with its
    /// process): nothing failed.
    Cancelled,
    /// Anything else.
    Other(String),
}

impl From<ApplyError> for Failure {
    fn from(e: ApplyError) -> Failure {
        match e {
            ApplyError::Forged(why) => Failure::Forged(why),
            ApplyError::Other(why) => Failure::Other(why),
        }
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Failure {
        if e.is_cancelled() {
            Failure::Cancelled
        } else {
            Failure::Other(e.to_string())
        }
    }
}

impl<L: ControlLink> SessionTasks<L> {
    /// The tasks' shared state for a session over `link`, with `cache`,
    /// speaking as `config` says.
    pub fn new(cache: WorldCache, config: HostConfig, link: L) -> Arc<SessionTasks<L>> {
        Arc::new(SessionTasks {
            intent_nonce: watch::Sender::new(None),
            host: ClientHost::new(cache, config, Waiting::default()),
            pending: Mutex::new(Vec::new()),
            changed: Notify::new(),
            timer: Notify::new(),
            link,
        })
    }

    /// The connection's link.
    pub fn link(&self) -> &L {
        &self.link
    }

    /// The connection's state, locked.
    fn state(&self) -> std::sync::MutexGuard<'_, Locked<Waiting>> {
        self.host.lock()
    }

    /// Checks `Welcome` names the world this client keys its cache by, and,
    /// when shards are checked against signed heads, takes the world's key
    /// from it (`verifier` makes its checker).
    pub fn accept_welcome(
        &self,
        welcome: &Welcome,
        verifier: impl FnOnce(ServerIdentity, &[u8]) -> Result<Box<dyn HeadVerifier>, String>,
    ) -> Result<(), String> {
        self.host.accept_welcome(welcome, verifier)
    }

    /// Marks `zone` as one the game sees (an entry started before
    /// `Welcome`, whose zone the game asked for).
    pub fn show(&self, zone: &ZoneId) {
        self.state().session.show(zone);
    }

    /// Registers a caller waiting for the entry of `zone`; also says whether
    /// an entry of it was already in flight (the caller then joins it).
    pub fn wait_for_entry(&self, zone: &ZoneId) -> (PendingEntry, bool) {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state();
        let waiters = state.driver.0.entry(zone.clone()).or_default();
        waiters.push(tx);
        (PendingEntry(rx), waiters.len() > 1)
    }

    /// Starts an entry (or prefetch) of `zone`: reads the cached heads,
    /// sends `EnterZone`, then loads and checks the cached copies while it
    /// is in flight.
    pub async fn start_entry(self: &Arc<Self>, zone: &ZoneId, subscribe: bool) -> Result<(), ClientError> {
        // Small files are read whole with their heads, for the load below.
        let reader = self.clone();
        let read = zone.clone();
        let cached = blocking(move || reader.host.read_cached(&read)).await?;
        let (request, messages) = self.host.begin_entry(zone, &cached, subscribe);
        self.timer.notify_one();
        self.link.send(messages).await?;
        // Load the full copies while the request is in flight. Each file's
        // checksums are checked as it is read; its digest, which its writer
        // checked before writing, is audited once the zone is ready (see
        // `Outcome::Audit`), off the path to the player's world.
        let loader = self.clone();
        let copies = blocking(move || loader.host.load_copies(cached)).await?;
        // The game may prepare the copies while the answer is on its way; a
        // current copy becomes the live one as it is (the same `Arc`).
        self.host.provide_copies(request, zone, copies)?;
        // Effects write cache files: off the async workers.
        let effects = self.clone();
        blocking(move || effects.process_effects()).await?;
        self.flush().await
    }

    /// Applies one message of the control stream, carries out its effects
    /// and sends what the session has to say; `false` once the session
    /// cannot go on (the transport stops reading, and ends it with
    /// [`SessionTasks::ended`]).
    pub async fn control(self: &Arc<Self>, inbound: Inbound) -> bool {
        let failed = self.host.handle(vec![inbound]).is_err();
        self.process_effects();
        !failed && self.flush().await.is_ok()
    }

    /// The connection (or one of its streams) ended: the session ends,
    /// with the server's reason when it closed the connection with one (a
    /// newer session of this player, a slow consumer, a failing server),
    /// else as lost with `lost`.
    pub fn ended(&self, lost: &str) {
        match self.link.refusal() {
            Some(error) => self.fail_with(&error.to_string(), error),
            None => self.fail(lost),
        }
    }

    /// Applies a batch of one of the server's streams, in order; `false`
    /// if that ended the session (the transport then stops reading the
    /// stream). A server caught serving what the world did not sign is
    /// disconnected, and every waiter told [`ClientError::Forged`].
    pub async fn apply(self: &Arc<Self>, messages: Vec<Inbound>) -> bool {
        if messages.is_empty() {
            return true;
        }
        match self.try_apply(messages).await {
            Ok(()) => true,
            Err(Failure::Cancelled) => {
                // The runtime is shutting down (the client is being dropped
                // with its process): nothing failed.
                tracing::debug!("stream ended with the runtime");
                false
            }
            Err(Failure::Forged(why)) => {
                // Nothing of it was written or shown; this route to the
                // world is not to be used.
                tracing::error!(%why, "the server is not faithful to the world; disconnecting");
                // Waiters learn why before the close ends the other streams
                // with a vaguer reason.
                self.fail_with(&why, ClientError::Forged(why.clone()));
                self.link.close(ErrorCode::Protocol as u32, "not faithful to the world");
                false
            }
            Err(Failure::Other(e)) => {
                tracing::warn!(error = %e, "sync failed");
                self.fail(&e);
                false
            }
        }
    }

    /// Applies `messages` in order (one lock of the sync for all of them),
    /// carries out their effects, then sends what the sync has to say.
    /// Small batches are applied here; others on a blocking thread.
    async fn try_apply(self: &Arc<Self>, messages: Vec<Inbound>) -> Result<(), Failure> {
        if Inbound::inline(&messages) {
            let result = self.host.handle(messages).map_err(Failure::from);
            // What was applied before a failure is still carried out; whole
            // writes on a thread, and nobody is told of them before they
            // are done.
            let mut outcomes = Vec::new();
            let whole = self.host.carry_out(Writes::Returned, &mut |o| outcomes.push(o));
            if !whole.is_empty() {
                let writer = self.clone();
                tokio::task::spawn_blocking(move || writer.host.write_shards(whole)).await?;
            }
            for outcome in outcomes {
                self.tell(outcome);
            }
            result?;
        } else {
            let applier = self.clone();
            tokio::task::spawn_blocking(move || {
                let result = applier.host.handle(messages).map_err(Failure::from);
                // What was applied before a failure is still carried out.
                applier.process_effects();
                result
            })
            .await??;
        }
        self.flush().await.map_err(|e| Failure::Other(e.to_string()))
    }

    /// Runs the sync's timers: sleeps until its next timeout (or a new
    /// entry), then lets it abandon what waited too long. Ends with the
    /// connection.
    async fn drive_timeouts(self: Arc<Self>) {
        loop {
            let next = self.host.next_timeout();
            let wake = async {
                match next {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = self.link.closed() => return,
                () = self.timer.notified() => continue,
                () = wake => {}
            }
            self.host.handle_timeout();
            let effects = self.clone();
            let _ = tokio::task::spawn_blocking(move || effects.process_effects()).await;
            // An abandoned entry leaves its zone.
            if self.flush().await.is_err() {
                return;
            }
        }
    }

    /// Audits the copies an entry took on trust ([`ClientHost::audit`]),
    /// on a blocking thread once the zone is ready, and sends the repairs
    /// of any that fail.
    async fn audit_copies(self: Arc<Self>, zone: ZoneId, copies: Vec<Arc<CachedShard>>) {
        let auditor = self.clone();
        let repairs = tokio::task::spawn_blocking(move || auditor.host.audit(&zone, &copies))
            .await
            .unwrap_or_default();
        if repairs && let Err(e) = self.flush().await {
            tracing::debug!(error = %e, "could not send the audit's repairs");
        }
    }

    /// Sends whatever the sync has queued (repairs, leaves).
    async fn flush(&self) -> Result<(), ClientError> {
        let messages = self.host.transmit();
        if messages.is_empty() {
            return Ok(());
        }
        self.link.send(messages).await
    }

    fn push(&self, update: ClientUpdate) {
        if let ClientUpdate::Event(ClientEvent::IntentNonce { nonce }) = &update {
            self.intent_nonce.send_replace(Some(*nonce));
        }
        lock(&self.pending).push(update);
        self.changed.notify_one();
    }

    /// Carries out the sync's steps with every shard written before this
    /// returns: cache writes here, what the game and waiters are told
    /// handed to [`SessionTasks::tell`].
    fn process_effects(self: &Arc<Self>) {
        let deferred = self.host.carry_out(Writes::Now, &mut |outcome| self.tell(outcome));
        debug_assert!(deferred.is_empty());
    }

    /// Tells the game, the entry's waiters or the auditor what a step says.
    fn tell(self: &Arc<Self>, outcome: Outcome) {
        match outcome {
            Outcome::Update(update) => self.push(update),
            Outcome::Audit { zone, copies } => match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn(self.clone().audit_copies(zone, copies))),
                Err(e) => tracing::warn!(%zone, error = %e, "no runtime to audit the cached copies on"),
            },
            Outcome::EntryFinished { zone, result } => self.finish_waiters(&zone, result),
            Outcome::FailAll(error) => self.fail_waiters(&error),
        }
    }

    /// Answers everyone waiting for `zone`'s entry.
    fn finish_waiters(&self, zone: &ZoneId, result: Result<EntryStats, ClientError>) {
        let waiters = self.state().driver.0.remove(zone).unwrap_or_default();
        for tx in waiters {
            let _ = tx.send(result.clone());
        }
    }

    fn fail_waiters(&self, error: &ClientError) {
        let waiting = std::mem::take(&mut self.state().driver.0);
        for tx in waiting.into_values().flatten() {
            let _ = tx.send(Err(error.clone()));
        }
    }

    /// Ends the session as lost, for `reason`.
    pub fn fail(&self, reason: &str) {
        self.fail_with(reason, ClientError::Lost(reason.to_owned()));
    }

    /// Ends the session: the game is told (`Disconnected` with `reason`),
    /// and every entry waiting gets `error`.
    pub fn fail_with(&self, reason: &str, error: ClientError) {
        self.push(ClientUpdate::Event(ClientEvent::Disconnected {
            reason: reason.to_owned(),
        }));
        self.fail_waiters(&error);
    }
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ClientError::Lost(e.to_string()))
}

/// A connected client, as a game or a tool uses it: zones entered and
/// left, intents sent, what arrived taken ([`AsyncClient::take_updates`]).
/// A transport builds it once `Welcome` is read ([`AsyncClient::start`]).
pub struct AsyncClient<L> {
    tasks: Arc<SessionTasks<L>>,
    registry: PublishRegistry,
    perspective: String,
    zones: Vec<ZoneId>,
    /// The seq of the last intent given out (the first is 1).
    next_intent: std::sync::atomic::AtomicU32,
    /// How intents are signed (see [`IntentSigning`]).
    signing: IntentSigning,
    /// The world's signed token keys, if `Welcome` brought them.
    token_keys: Option<SignedTokenKeys>,
    /// The world's identity (the cache namespace) and key, from `Welcome`.
    world: ServerIdentity,
    world_key: Vec<u8>,
}

impl<L: ControlLink> AsyncClient<L> {
    /// The client of a session whose `Welcome` was read and accepted
    /// ([`SessionTasks::accept_welcome`]): starts its timer task and trims
    /// its cache once, off the runtime. The transport's readers feed
    /// `tasks` from now on.
    pub fn start(
        tasks: Arc<SessionTasks<L>>,
        welcome: Welcome,
        settings: &SessionSettings,
        registry: PublishRegistry,
    ) -> AsyncClient<L> {
        let world = ServerIdentity(welcome.server);
        let signing = IntentSigning::new(settings, world, &welcome.perspective);
        tokio::spawn(tasks.clone().drive_timeouts());
        // Keep the cache bounded: trim it once per session.
        let trim = tasks.clone();
        tokio::task::spawn_blocking(move || trim.host.trim());
        AsyncClient {
            tasks,
            registry,
            perspective: welcome.perspective,
            zones: welcome.zones,
            next_intent: std::sync::atomic::AtomicU32::new(0),
            signing,
            token_keys: welcome.token_keys,
            world,
            world_key: welcome.world_key,
        }
    }

    /// The connection's link (the transport's connection object).
    pub fn link(&self) -> &L {
        &self.tasks.link
    }

    /// The world this client's cache and checks are for: the server's own
    /// identity, or, through a relay, the world the relay carries.
    pub fn world(&self) -> ServerIdentity {
        self.world
    }

    /// The world's public key (SubjectPublicKeyInfo DER) as `Welcome` gave
    /// it: empty from a server that signs nothing.
    pub fn world_key(&self) -> &[u8] {
        &self.world_key
    }

    /// The perspective the server authenticated.
    pub fn perspective(&self) -> &str {
        &self.perspective
    }

    /// The zones this perspective may enter.
    pub fn zones(&self) -> &[ZoneId] {
        &self.zones
    }

    /// How far the entry of `zone` in flight has come (for a progress
    /// display while [`AsyncClient::enter_zone`] runs); `None` when none is.
    pub fn entry_progress(&self, zone: &ZoneId) -> Option<EntryProgress> {
        self.tasks.state().session.sync().entry_progress(zone)
    }

    /// The latest transient state of `zone` (game data the server never
    /// stores, such as who stands where), as the game encoded it; `None`
    /// before any arrived, or after the zone was left.
    pub fn transient(&self, zone: &ZoneId) -> Option<Vec<u8>> {
        self.tasks.state().session.transient(zone).map(<[u8]>::to_vec)
    }

    /// The shards of `zone` this client holds live (after its entry or
    /// prefetch): what the zone holds, for finding its objects by
    /// `Replicated::shard` (hoard-bevy). Empty for a zone not entered.
    pub fn zone_shards(&self, zone: &ZoneId) -> Vec<ShardId> {
        self.tasks
            .state()
            .session
            .sync()
            .live_shards(zone)
            .map(|shards| shards.iter().map(|s| s.header.key.shard).collect())
            .unwrap_or_default()
    }

    /// The cache this client writes.
    pub fn cache(&self) -> &WorldCache {
        self.tasks.host.cache()
    }

    /// Enters a zone: brings its shards up to date in one round trip (plus
    /// one per repaired shard), subscribes to live deltas, and returns once
    /// the zone is verified and written; its objects come with the next
    /// [`AsyncClient::take_updates`]. A prefetched zone is entered at once.
    pub async fn enter_zone(&self, zone: &ZoneId) -> Result<EntryStats, ClientError> {
        if let Some((stats, updates)) = self.tasks.host.show(zone) {
            for update in updates {
                self.tasks.push(update);
            }
            return Ok(stats);
        }
        self.entry(zone).await
    }

    /// Starts (or joins) the entry of `zone`, live deltas following, and
    /// waits for it.
    async fn entry(&self, zone: &ZoneId) -> Result<EntryStats, ClientError> {
        let (pending, in_flight) = self.tasks.wait_for_entry(zone);
        if !in_flight && let Err(e) = self.tasks.start_entry(zone, true).await {
            self.tasks.finish_waiters(zone, Err(e.clone()));
            return Err(e);
        }
        // The sync's timer fails the entry after ENTRY_TIMEOUT, so this
        // wait ends.
        pending.wait().await
    }

    /// What a `hoard://` URL names, as the world has it now: from the live
    /// copy when this client follows the URL's zone (no network), otherwise
    /// after one round trip that brings the zone's shards up to date (and
    /// keeps following them, as [`AsyncClient::prefetch`] does). The URL's
    /// host names where the world is found; it is resolved against the
    /// world this client is connected to (directly or through relays),
    /// whose service it must name.
    pub async fn resolve(&self, url: &hoard_engine::HoardUrl) -> Result<Resolved, ClientError> {
        let service = self.tasks.state().session.sync().config().service.clone();
        if url.service != service {
            return Err(ClientError::Url(format!(
                "{url} names service {}, this client is in {service}",
                url.service
            )));
        }
        let Some(zone) = &url.zone else {
            return Err(ClientError::Url(format!(
                "{url} names a service, not a zone or what is in one"
            )));
        };
        let live = |client: &AsyncClient<L>| client.tasks.state().session.sync().live_shards(zone);
        let shards = match live(self) {
            Some(shards) => shards,
            None => {
                self.entry(zone).await?;
                live(self).ok_or_else(|| ClientError::Lost(format!("zone {zone} was left while resolving {url}")))?
            }
        };
        let Some(shard) = url.shard else {
            return Ok(Resolved::Zone(shards));
        };
        let copy = shards
            .into_iter()
            .find(|s| s.header.key.shard == shard)
            .ok_or_else(|| ClientError::Url(format!("{url}: zone {zone} has no shard {shard} this player may see")))?;
        Ok(match url.object {
            None => Resolved::Shard(copy),
            Some(id) => Resolved::Object(
                copy.objects
                    .binary_search_by_key(&id, |o| o.id)
                    .ok()
                    .map(|i| copy.objects[i].clone()),
            ),
        })
    }

    /// The URL of an object this client holds, with the world found at
    /// `host:port`.
    pub fn url_of(
        &self,
        host: &str,
        port: u16,
        zone: &ZoneId,
        shard: ShardId,
        object: ObjectId,
    ) -> hoard_engine::HoardUrl {
        let service = self.tasks.state().session.sync().config().service.clone();
        hoard_engine::HoardUrl::service(host, port, service).object(zone.clone(), shard, object)
    }

    /// Prefetches a zone in the background: its shards are brought up to
    /// date, cached and kept current, so a later [`AsyncClient::enter_zone`]
    /// costs nothing on the network.
    pub async fn prefetch(&self, zone: &ZoneId) -> Result<(), ClientError> {
        self.tasks.start_entry(zone, true).await
    }

    /// Leaves a zone: no more deltas; its entities are despawned at the
    /// next update.
    pub async fn leave_zone(&self, zone: &ZoneId) -> Result<(), ClientError> {
        // The copies to keep and the leave itself under one lock: no delta
        // is applied after the copies are taken, so the whole copies written
        // below are the zone's last state (a delta applied in between would
        // be journaled onto a copy that the whole write then replaces by
        // an older one, and the journal would no longer apply).
        let (shards, messages) = self.tasks.host.leave(zone);
        // Fold each journaled shard on exit: write the current copy whole,
        // off the async workers and outside the sync lock. A shard with no
        // journal is already on disk as it stands (its file was written
        // when it was fetched, or loaded from it): no write, no fsync.
        let writer = self.tasks.clone();
        blocking(move || {
            // The leave's steps first (the game's `ZoneLeft`, and anything
            // queued before it).
            writer.process_effects();
            writer.host.fold(&shards);
        })
        .await?;
        self.tasks.link.send(messages).await
    }

    /// Sends a game intent; returns its seq, which its answer
    /// (`IntentsProcessed` or `IntentRejected`) names.
    pub async fn send_intent<T: Serialize>(&self, kind: &str, intent: &T) -> Result<u32, ClientError> {
        let payload = rmp_serde::to_vec(intent).map_err(|e| ClientError::Lost(e.to_string()))?;
        let seq = self.next_intent_seq();
        self.send_encoded_intent(seq, kind, payload).await?;
        Ok(seq)
    }

    /// The seq for the next intent (for callers that queue intents and send
    /// them later, in order, with [`AsyncClient::send_encoded_intent`]).
    pub fn next_intent_seq(&self) -> u32 {
        self.next_intent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Sends an intent already encoded (MessagePack) under a seq from
    /// [`AsyncClient::next_intent_seq`].
    ///
    /// With a player key (the token binds it) the intent is signed; the
    /// first waits (at most [`NONCE_WAIT`]) for the session's nonce, and
    /// intents must then be sent in seq order, each once (the server ends a
    /// session whose intents skip, repeat or go back).
    pub async fn send_encoded_intent(&self, seq: u32, kind: &str, payload: Vec<u8>) -> Result<(), ClientError> {
        let nonce = if self.signing.signs()? {
            self.intent_nonce().await?
        } else {
            [0; 16]
        };
        self.tasks
            .link
            .send(vec![self.signing.intent(&nonce, seq, kind, payload)])
            .await
    }

    /// Sends an intent with a signature made elsewhere (a relay passing on
    /// its player's signed intents).
    pub async fn send_signed_intent(
        &self,
        seq: u32,
        kind: &str,
        payload: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<(), ClientError> {
        let intent = Message::Intent(Intent {
            seq,
            kind: kind.to_owned(),
            payload,
            signature,
        });
        self.tasks.link.send(vec![intent]).await
    }

    /// The nonce this session's intents are signed under, waiting for it
    /// (at most [`NONCE_WAIT`]) if it has not come yet.
    pub async fn intent_nonce(&self) -> Result<[u8; 16], ClientError> {
        let mut rx = self.tasks.intent_nonce.subscribe();
        match tokio::time::timeout(NONCE_WAIT, rx.wait_for(Option::is_some)).await {
            Ok(Ok(nonce)) => Ok(nonce.unwrap_or_default()),
            _ => Err(nonce_missing()),
        }
    }

    /// The world's token keys, signed by the world's key, if `Welcome`
    /// brought them (a relay asks for them, to check its players' tokens).
    pub fn token_keys(&self) -> Option<&SignedTokenKeys> {
        self.token_keys.as_ref()
    }

    /// Sends anything the sync produced in the background (repairs).
    pub async fn pump(&self) -> Result<(), ClientError> {
        self.tasks.flush().await
    }

    /// Waits until something is pending for [`AsyncClient::take_updates`].
    pub async fn changed(&self) {
        let ready = !lock(&self.tasks.pending).is_empty();
        if !ready {
            self.tasks.changed.notified().await;
        }
    }

    /// Takes what arrived since the last call, in order (see
    /// [`ClientUpdate`]); updates of zones that were only prefetched, or
    /// were left meanwhile, are left out.
    pub fn take_updates(&self) -> Vec<ClientUpdate> {
        let pending = std::mem::take(&mut *lock(&self.tasks.pending));
        let state = self.tasks.state();
        pending.into_iter().filter(|p| state.session.for_game(p)).collect()
    }

    /// The component registry this client decodes objects with.
    pub fn registry(&self) -> &PublishRegistry {
        &self.registry
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.tasks.link.close(0, "bye");
    }
}

impl<L> std::fmt::Debug for AsyncClient<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("world", &self.world)
            .field("perspective", &self.perspective)
            .finish_non_exhaustive()
    }
}
