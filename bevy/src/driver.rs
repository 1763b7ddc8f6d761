//! The client machine, driven from the plugin's systems. Once a frame the
//! plugin's system takes what the transport's [`Wire`] delivered, hands it
//! to the connection's [`ClientHost`] (proto's sans-IO session beside the
//! disk cache), carries out the session's steps and turns them into entities
//! and Bevy messages right there; what it has to send goes back to the wire.
//! The transport only moves messages (a task of its own for QUIC). A little
//! of what arrived (live deltas, a warm entry's answer: up to
//! 64 KiB of frames) is applied in the frame it arrives in; the
//! work that blocks or takes long — an entry's cache reads, a large answer
//! and its shard writes, any whole write, journal folds — runs on one worker
//! thread, one job at a time in the order given, each job also applying what
//! arrives while it works, and the frame picks up each result. While a job
//! runs the frame neither takes from the wire nor sends, so messages and
//! cache writes keep their order; a zone reaches the game only once its
//! shards are written. Audits of copies taken on trust run on a thread of
//! their own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bevy_ecs::prelude::*;
use hoard_client::host::{ApplyError, ClientHost, Inbound, Outcome, Writes};
use hoard_client::wire::{Arrival, Wire, WireConnecting};
use hoard_client::{IntentQueue, IntentSigning, SessionSettings, open_cache};
use hoard_engine::lock::lock;
use hoard_engine::{PublishRegistry, ServerIdentity, ShardId, ZoneId};
use hoard_proto::client::{ClientError, ClientEvent, ClientUpdate};
use hoard_proto::sync::client::EntryProgress;
use hoard_proto::wire::{ErrorCode, Message, Welcome};
use hoard_world_cache::{CachedShard, WorldCache};

use crate::client::{HoardConnection, HoardEvent, ZoneRequest};

/// Signed intents held for the session's nonce, at most, and how long;
/// hoard-client's rule ([`IntentQueue`]).
pub use hoard_client::intents::{INTENT_QUEUE, NONCE_WAIT};

/// Zone requests waiting for the connection's host, at most.
pub const REQUESTS_WAITING: usize = 1024;

/// Messages taken from the wire and not yet applied, at most: beyond it
/// they stay with the transport, which then stops reading (pushing back on
/// the server).
const BACKLOG: usize = 256;

/// What arrived is applied in the frame when its frames total at most
/// this (a warm entry's answer, live deltas: well under a millisecond of
/// hashing); more goes to the worker.
pub const INLINE_BYTES: usize = 64 * 1024;

/// Jobs queued for the worker, at most; a frame that would queue more
/// waits for it.
const WORKER_QUEUE: usize = 64;

/// The connection as the game's [`Hoard`](crate::Hoard) resource reaches
/// it: what it is, and its intents.
pub(crate) struct Link {
    pub(crate) host: Arc<ClientHost>,
    pub(crate) wire: Arc<dyn Wire>,
    pub(crate) registry: PublishRegistry,
    pub(crate) perspective: String,
    pub(crate) zones: Vec<ZoneId>,
    pub(crate) world: ServerIdentity,
    intents: Mutex<IntentQueue>,
}

impl Link {
    /// Sends an encoded intent in order (see [`crate::Hoard::send_intent`]).
    pub(crate) fn send_intent(&self, kind: &str, payload: Vec<u8>) -> Result<u32, ClientError> {
        let (seq, ready) = lock(&self.intents).push(Instant::now(), kind, payload)?;
        self.wire.send(ready)?;
        Ok(seq)
    }

    /// Takes the session's nonce and sends what waited for it.
    fn nonce(&self, nonce: [u8; 16]) -> Result<(), ClientError> {
        let ready = lock(&self.intents).nonce(nonce);
        self.wire.send(ready)
    }

    /// Fails the intents that waited for the nonce longer than
    /// [`NONCE_WAIT`]; returns the error once.
    fn nonce_overdue(&self) -> Option<ClientError> {
        lock(&self.intents).overdue(Instant::now())
    }

    /// The latest transient state of an entered zone.
    pub(crate) fn transient(&self, zone: &ZoneId) -> Option<Vec<u8>> {
        self.host.session().transient(zone).map(<[u8]>::to_vec)
    }

    /// The shards of `zone` held live.
    pub(crate) fn zone_shards(&self, zone: &ZoneId) -> Vec<ShardId> {
        self.host
            .session()
            .sync()
            .live_shards(zone)
            .map(|shards| shards.iter().map(|s| s.header.key.shard).collect())
            .unwrap_or_default()
    }
}

/// A job for the worker thread.
type Job = Box<dyn FnOnce() -> Done + Send>;

/// What a worker job gives back to the frame.
enum Done {
    /// The cache, opened (or why not).
    Opened(Result<WorldCache, ClientError>),
    /// Session work done on the worker (see [`Run`]).
    Ran(Run),
}

/// What a worker job did with the session: its steps carried out, cache
/// writes first, the rest (`outcomes`, for the frame) in order; what it
/// had to send sent; and, once the connection is up, what arrived on the
/// wire meanwhile applied too, so a burst (a cold zone's answer) does not
/// wait a frame per batch. `failed` ends the session.
#[derive(Default)]
struct Run {
    outcomes: Vec<Outcome>,
    failed: Option<ClientError>,
}

/// Rounds of taking what arrived on the wire at the end of one job, at
/// most (the frame takes over after them).
const PULL_ROUNDS: usize = 16;

impl Run {
    /// Carries out the session's steps (cache writes first) and sends what
    /// the session has to send.
    fn steps(&mut self, host: &ClientHost, wire: &dyn Wire) {
        host.carry_out(Writes::Now, &mut |o| self.outcomes.push(o));
        if let Err(e) = wire.send(host.transmit()) {
            self.fail(e);
        }
    }

    /// Applies `batch`, then its steps.
    fn apply(&mut self, host: &ClientHost, wire: &dyn Wire, batch: Vec<Inbound>) {
        let result = host.handle(batch);
        // What was applied before a failure is still carried out.
        self.steps(host, wire);
        if let Err(e) = result {
            self.fail(refuse_route(wire, e));
        }
    }

    /// Applies what arrived on the wire since, a batch at a time.
    fn pull(&mut self, host: &ClientHost, wire: &dyn Wire) {
        for _ in 0..PULL_ROUNDS {
            if self.failed.is_some() {
                return;
            }
            let mut arrivals = Vec::new();
            wire.receive(&mut arrivals, BACKLOG);
            if arrivals.is_empty() {
                return;
            }
            let mut batch = Vec::with_capacity(arrivals.len());
            let mut ended = None;
            for arrival in arrivals {
                match arrival {
                    Arrival::Message(inbound) => batch.push(inbound),
                    Arrival::Ended(e) => {
                        ended = Some(e);
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                self.apply(host, wire, batch);
            }
            if let Some(e) = ended {
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: ClientError) {
        self.failed.get_or_insert(e);
    }
}

/// A failure to apply what the server sent: a forgery closes the
/// connection as not faithful to the world (the route is not to be used
/// again).
fn refuse_route(wire: &dyn Wire, e: ApplyError) -> ClientError {
    match e {
        ApplyError::Forged(why) => {
            tracing::error!(%why, "the server is not faithful to the world; disconnecting");
            wire.close(ErrorCode::Protocol as u32, "not faithful to the world");
            ClientError::Forged(why)
        }
        ApplyError::Other(why) => {
            tracing::warn!(error = %why, "sync failed");
            ClientError::Lost(why)
        }
    }
}

/// One thread doing the blocking work, one job at a time, in order.
struct Worker {
    jobs: Option<SyncSender<Job>>,
    done: Mutex<Receiver<Done>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Jobs given and not yet picked up.
    running: usize,
}

impl Worker {
    fn start() -> std::io::Result<Worker> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(WORKER_QUEUE);
        let (results, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hoard-client-worker".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    if results.send(job()).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Worker {
            jobs: Some(jobs),
            done: Mutex::new(done),
            thread: Some(thread),
            running: 0,
        })
    }

    /// Queues `job` (waiting if [`WORKER_QUEUE`] are queued).
    fn submit(&mut self, job: impl FnOnce() -> Done + Send + 'static) -> Result<(), ClientError> {
        let gone = || ClientError::Lost("the client's worker thread stopped".into());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Box::new(job))
            .map_err(|_| gone())?;
        self.running += 1;
        Ok(())
    }

    /// The next finished job's result, without waiting.
    fn finished(&mut self) -> Result<Option<Done>, ClientError> {
        match lock(&self.done).try_recv() {
            Ok(done) => {
                self.running -= 1;
                Ok(Some(done))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(ClientError::Lost(
                "the client's worker thread stopped (a cache write panicked?)".into(),
            )),
        }
    }
}

impl Drop for Worker {
    /// Lets the jobs queued finish (the cache's writes and its lock end
    /// with them).
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Audits waiting for the auditor, at most; beyond it an audit is left
/// out, and said so (it guards against a cache writer's bug only).
const AUDIT_QUEUE: usize = 8;

/// A thread recomputing the digests of copies entries took on trust
/// ([`ClientHost::audit`]), beside the worker so a large zone's audit
/// holds up nothing; the repairs it queues go out with the next frame's
/// or job's messages.
/// One audit: the host, the zone entered and the copies it took on trust.
type Audit = (Arc<ClientHost>, ZoneId, Vec<Arc<CachedShard>>);

struct Auditor {
    audits: Option<SyncSender<Audit>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Auditor {
    fn start() -> std::io::Result<Auditor> {
        let (audits, queue) = std::sync::mpsc::sync_channel::<Audit>(AUDIT_QUEUE);
        let thread = std::thread::Builder::new()
            .name("hoard-client-audit".into())
            .spawn(move || {
                while let Ok((host, zone, copies)) = queue.recv() {
                    if host.audit(&zone, &copies) {
                        tracing::warn!(%zone, "cached copies did not give their digests; repairing them");
                    }
                }
            })?;
        Ok(Auditor {
            audits: Some(audits),
            thread: Some(thread),
        })
    }

    fn audit(&self, host: Arc<ClientHost>, zone: ZoneId, copies: Vec<Arc<CachedShard>>) {
        let Some(audits) = &self.audits else { return };
        if let Err(e) = audits.try_send((host, zone, copies)) {
            let zone = match e {
                std::sync::mpsc::TrySendError::Full((_, zone, _))
                | std::sync::mpsc::TrySendError::Disconnected((_, zone, _)) => zone,
            };
            tracing::warn!(%zone, "the cached copies of this entry were not audited: {AUDIT_QUEUE} audits are waiting");
        }
    }
}

impl Drop for Auditor {
    fn drop(&mut self) {
        self.audits = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The client machine's driver (see the module docs): a resource of the
/// App from the moment the plugin is added.
#[derive(Resource)]
pub(crate) struct Driver {
    settings: SessionSettings,
    registry: PublishRegistry,
    worker: Worker,
    auditor: Auditor,
    connecting: Option<Box<dyn WireConnecting>>,
    wire: Option<Arc<dyn Wire>>,
    cache: Option<WorldCache>,
    host: Option<Arc<ClientHost>>,
    /// The perspective the host was made for before `Welcome` (the token's
    /// player), to be confirmed by it.
    guessed: Option<String>,
    link: Option<Arc<Link>>,
    /// The zone to enter as part of connecting.
    first_zone: Option<ZoneId>,
    /// The game's zone requests, until the host is made.
    requests: Vec<ZoneRequest>,
    backlog: VecDeque<Inbound>,
    /// Zones whose entry is in flight (their progress is reported).
    entering: BTreeSet<ZoneId>,
    reported: BTreeMap<ZoneId, EntryProgress>,
    /// What the frame gives the game, in order.
    updates: Vec<ClientUpdate>,
    failures: Vec<ClientError>,
    /// The session ended (its `Disconnected` was given).
    ended: bool,
    /// When the server must have answered `Hello` by (set once the
    /// connection is open; [`SessionSettings::welcome_timeout`] after it).
    welcome_due: Option<Instant>,
}

impl Driver {
    /// A driver connecting through `connecting` as `settings` say, entering
    /// `first_zone` as part of it.
    pub(crate) fn start(
        settings: SessionSettings,
        registry: PublishRegistry,
        connecting: Box<dyn WireConnecting>,
        first_zone: Option<ZoneId>,
    ) -> Result<Driver, ClientError> {
        let thread_error = |e: std::io::Error| ClientError::Lost(format!("cannot start a thread: {e}"));
        let mut worker = Worker::start().map_err(thread_error)?;
        let auditor = Auditor::start().map_err(thread_error)?;
        let (dir, files) = (settings.cache_dir.clone(), settings.cache_files.clone());
        worker.submit(move || Done::Opened(open_cache(&dir, files)))?;
        let guessed = hoard_proto::auth::named_player(&settings.token);
        Ok(Driver {
            settings,
            registry,
            worker,
            auditor,
            connecting: Some(connecting),
            wire: None,
            cache: None,
            host: None,
            guessed,
            link: None,
            first_zone,
            requests: Vec::new(),
            backlog: VecDeque::new(),
            entering: BTreeSet::new(),
            reported: BTreeMap::new(),
            updates: Vec::new(),
            failures: Vec::new(),
            ended: false,
            welcome_due: None,
        })
    }

    /// The game's zone requests, carried out once the host is made; at
    /// most [`REQUESTS_WAITING`] wait for it, more are refused (in the
    /// frame's `HoardEvent::Failed`).
    pub(crate) fn request(&mut self, request: ZoneRequest) {
        if self.requests.len() >= REQUESTS_WAITING {
            self.failures.push(ClientError::Lost(format!(
                "{request:?} refused: {REQUESTS_WAITING} zone requests are waiting for the connection"
            )));
            return;
        }
        self.requests.push(request);
    }

    /// One frame's work (see the module docs).
    fn frame(&mut self, world: &mut World) {
        if self.ended {
            // A request after the session ended fails at once.
            for request in std::mem::take(&mut self.requests) {
                let e = ClientError::Lost(format!("{request:?} refused: the session has ended"));
                world.write_message(HoardEvent::Failed(e));
            }
            for e in std::mem::take(&mut self.failures) {
                world.write_message(HoardEvent::Failed(e));
            }
            return;
        }
        if let Err(e) = self.step(world) {
            self.end(world, e);
        }
        self.give(world);
    }

    fn step(&mut self, world: &mut World) -> Result<(), ClientError> {
        self.poll_connecting()?;
        while let Some(done) = self.worker.finished()? {
            self.done(done)?;
        }
        self.make_host()?;
        // While a job runs it has the session: the frame takes nothing
        // from the wire and sends nothing, so everything keeps its order.
        let idle = self.worker.running == 0;
        if idle {
            self.receive(world)?;
        }
        if self.link.is_none() && self.welcome_due.is_some_and(|due| Instant::now() >= due) {
            return Err(ClientError::Lost(format!(
                "the server did not answer Hello within {:?}",
                self.settings.welcome_timeout
            )));
        }
        // Zone requests go out as soon as the host is made: before
        // `Welcome` they ride right behind `Hello` (the token named the
        // player), as the first zone's entry does.
        if self.host.is_some() {
            for request in std::mem::take(&mut self.requests) {
                self.zone_request(request)?;
            }
        }
        if let Some(link) = self.link.clone() {
            self.apply()?;
            let host = link.host.clone();
            if self.worker.running == 0 && host.next_timeout().is_some_and(|at| at <= Instant::now()) {
                host.handle_timeout();
                let wire = link.wire.clone();
                self.worker.submit(move || {
                    let mut run = Run::default();
                    run.steps(&host, &*wire);
                    Done::Ran(run)
                })?;
            }
            if let Some(e) = link.nonce_overdue() {
                self.failures.push(e);
            }
            self.progress(world);
        }
        if self.worker.running == 0
            && let (Some(host), Some(wire)) = (&self.host, &self.wire)
        {
            wire.send(host.transmit())?;
        }
        Ok(())
    }

    fn poll_connecting(&mut self) -> Result<(), ClientError> {
        let Some(connecting) = &mut self.connecting else {
            return Ok(());
        };
        if let Some(result) = connecting.poll() {
            self.connecting = None;
            self.wire = Some(Arc::from(result?));
            self.welcome_due = Some(Instant::now() + self.settings.welcome_timeout);
        }
        Ok(())
    }

    /// Makes the host once the connection is open and the cache too, with
    /// the token's player as its perspective (`Welcome` confirms it); the
    /// first zone's entry then starts, riding right behind `Hello`. A token
    /// that names no player waits for `Welcome`.
    fn make_host(&mut self) -> Result<(), ClientError> {
        if self.host.is_some() {
            return Ok(());
        }
        let (Some(wire), Some(guess)) = (&self.wire, &self.guessed) else {
            return Ok(());
        };
        let Some(cache) = self.cache.take() else {
            return Ok(());
        };
        let config = self.settings.host_config(wire.identity(), guess, self.registry.hash());
        self.host = Some(Arc::new(ClientHost::new(cache, config, ())));
        if let Some(zone) = self.first_zone.take() {
            self.enter(&zone)?;
        }
        Ok(())
    }

    /// Takes what the wire delivered: `Welcome` (or the refusal) first,
    /// then messages for the session, up to [`BACKLOG`] waiting.
    fn receive(&mut self, world: &mut World) -> Result<(), ClientError> {
        let Some(wire) = self.wire.clone() else {
            return Ok(());
        };
        // Nothing is read before the cache is open: `Welcome` may need it
        // to make the host.
        if self.host.is_none() && self.cache.is_none() {
            return Ok(());
        }
        let room = BACKLOG.saturating_sub(self.backlog.len());
        let mut arrivals = Vec::new();
        wire.receive(&mut arrivals, room);
        for arrival in arrivals {
            match arrival {
                Arrival::Ended(e) => return Err(e),
                Arrival::Message(inbound) if self.link.is_none() => self.welcome(world, &wire, inbound)?,
                Arrival::Message(inbound) => self.backlog.push_back(inbound),
            }
        }
        Ok(())
    }

    /// The server's answer to `Hello`.
    fn welcome(&mut self, world: &mut World, wire: &Arc<dyn Wire>, inbound: Inbound) -> Result<(), ClientError> {
        let welcome: Welcome = match inbound.msg {
            Message::Welcome(w) => w,
            Message::Error(e) => {
                return Err(ClientError::Refused {
                    code: e.code,
                    message: e.message,
                });
            }
            other => {
                return Err(ClientError::Lost(format!(
                    "the server answered hello with message {:#04x}",
                    other.kind()
                )));
            }
        };
        if let Some(guess) = &self.guessed
            && welcome.perspective != *guess
        {
            // Never act on heads read under another perspective.
            return Err(ClientError::Lost(format!(
                "the token names {guess} but the server says {}",
                welcome.perspective
            )));
        }
        let host = match &self.host {
            Some(host) => host.clone(),
            None => {
                let cache = self
                    .cache
                    .take()
                    .ok_or_else(|| ClientError::Lost("the cache is not open".into()))?;
                let config = self
                    .settings
                    .host_config(wire.identity(), &welcome.perspective, self.registry.hash());
                let host = Arc::new(ClientHost::new(cache, config, ()));
                self.host = Some(host.clone());
                host
            }
        };
        host.accept_welcome(&welcome, |world, key| {
            hoard_trust::heads::KeyVerifier::new(world, key)
                .map(|k| Box::new(k) as Box<dyn hoard_proto::proof::HeadVerifier>)
                .map_err(|e| e.to_string())
        })
        .map_err(|detail| ClientError::Lost(format!("the server's welcome: {detail}")))?;
        let link = Arc::new(Link {
            host: host.clone(),
            wire: wire.clone(),
            registry: self.registry.clone(),
            perspective: welcome.perspective.clone(),
            zones: welcome.zones.clone(),
            world: ServerIdentity(welcome.server),
            intents: Mutex::new(IntentQueue::new(IntentSigning::new(
                &self.settings,
                ServerIdentity(welcome.server),
                &welcome.perspective,
            ))),
        });
        self.link = Some(link.clone());
        // A token naming no player: the first zone is entered now.
        if let Some(zone) = self.first_zone.take() {
            self.enter(&zone)?;
        }
        // Keep the cache bounded: trimmed once a session, on a thread of
        // its own (a large cache's scan must not hold up the session's
        // jobs).
        if let Err(e) = std::thread::Builder::new()
            .name("hoard-cache-trim".into())
            .spawn(move || host.trim())
        {
            tracing::warn!(error = %e, "could not start the cache's trim");
        }
        tracing::info!(perspective = %welcome.perspective, "connected");
        world.insert_resource(HoardConnection::Connected {
            perspective: welcome.perspective.clone(),
        });
        world.insert_resource(crate::client::Hoard { link });
        world.write_message(HoardEvent::Connected {
            perspective: welcome.perspective,
            zones: welcome.zones,
        });
        Ok(())
    }

    fn zone_request(&mut self, request: ZoneRequest) -> Result<(), ClientError> {
        match request {
            ZoneRequest::Enter(zone) => self.enter(&zone),
            ZoneRequest::Prefetch(zone) => self.start_entry(&zone, true),
            ZoneRequest::Leave(zone) => self.leave(&zone),
        }
    }

    /// Enters `zone`: at once if it is held live (prefetched), else by an
    /// entry; an entry of it in flight is joined.
    fn enter(&mut self, zone: &ZoneId) -> Result<(), ClientError> {
        let host = self.host()?;
        if self.entering.contains(zone) {
            host.session().show(zone);
            return Ok(());
        }
        if let Some((_, updates)) = host.show(zone) {
            self.updates.extend(updates);
            return Ok(());
        }
        self.entering.insert(zone.clone());
        self.start_entry(zone, true)
    }

    /// Starts an entry (or prefetch), all on the worker: the cached heads
    /// are read and `EnterZone` goes out at once, the copies load while it
    /// is in flight and are handed in (an answer that came first then
    /// completes the entry: its shards are written before the game sees
    /// it), and what arrived meanwhile is applied.
    fn start_entry(&mut self, zone: &ZoneId, subscribe: bool) -> Result<(), ClientError> {
        let host = self.host()?;
        let wire = self.wire()?.clone();
        // Before `Welcome` (the first zone, entered as part of connecting)
        // the frame alone reads the wire.
        let pull = self.link.is_some();
        let zone = zone.clone();
        self.worker.submit(move || {
            let mut run = Run::default();
            let cached = host.read_cached(&zone);
            let (request, messages) = host.begin_entry(&zone, &cached, subscribe);
            if let Err(e) = wire.send(messages) {
                run.fail(e);
                return Done::Ran(run);
            }
            let copies = host.load_copies(cached);
            if let Err(e) = host.provide_copies(request, &zone, copies) {
                run.fail(e);
            }
            run.steps(&host, &*wire);
            if pull {
                run.pull(&host, &*wire);
            }
            Done::Ran(run)
        })
    }

    /// Leaves `zone`, on the worker in order with everything else: its
    /// `ZoneLeft` (after what was queued before it), `LeaveZone`, then each
    /// journaled shard folded.
    fn leave(&mut self, zone: &ZoneId) -> Result<(), ClientError> {
        let host = self.host()?;
        let wire = self.wire()?.clone();
        self.entering.remove(zone);
        let zone = zone.clone();
        self.worker.submit(move || {
            let mut run = Run::default();
            let (shards, messages) = host.leave(&zone);
            run.steps(&host, &*wire);
            if let Err(e) = wire.send(messages) {
                run.fail(e);
            }
            host.fold(&shards);
            run.pull(&host, &*wire);
            Done::Ran(run)
        })
    }

    fn done(&mut self, done: Done) -> Result<(), ClientError> {
        match done {
            Done::Opened(cache) => self.cache = Some(cache?),
            Done::Ran(run) => {
                for outcome in run.outcomes {
                    self.outcome(outcome)?;
                }
                if let Some(e) = run.failed {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Applies what arrived, in order: a little (up to [`INLINE_BYTES`])
    /// in the frame, more on the worker with what arrives while it works;
    /// nothing while a job runs, so cache writes keep their order.
    fn apply(&mut self) -> Result<(), ClientError> {
        let host = self.host()?;
        let wire = self.wire()?.clone();
        while self.worker.running == 0 && !self.backlog.is_empty() {
            let bytes: usize = self.backlog.iter().map(|m| m.len).sum();
            if bytes <= INLINE_BYTES {
                let batch: Vec<Inbound> = self.backlog.drain(..).collect();
                let result = host.handle(batch);
                // What was applied before a failure is still carried out.
                self.carry_out(&host)?;
                result.map_err(|e| refuse_route(&*wire, e))?;
            } else {
                let batch: Vec<Inbound> = self.backlog.drain(..).collect();
                let (applier, wire) = (host.clone(), wire.clone());
                self.worker.submit(move || {
                    let mut run = Run::default();
                    run.apply(&applier, &*wire, batch);
                    run.pull(&applier, &*wire);
                    Done::Ran(run)
                })?;
            }
        }
        Ok(())
    }

    /// Carries out the steps of what was applied in the frame: journal
    /// appends here; whole writes on the worker, the game getting the
    /// steps only once they are done (a zone is written before it is
    /// announced; nothing applies meanwhile).
    fn carry_out(&mut self, host: &Arc<ClientHost>) -> Result<(), ClientError> {
        let mut outcomes = Vec::new();
        let whole = host.carry_out(Writes::Returned, &mut |o| outcomes.push(o));
        if whole.is_empty() {
            for outcome in outcomes {
                self.outcome(outcome)?;
            }
            return Ok(());
        }
        let writer = host.clone();
        self.worker.submit(move || {
            writer.write_shards(whole);
            Done::Ran(Run { outcomes, failed: None })
        })
    }

    fn outcome(&mut self, outcome: Outcome) -> Result<(), ClientError> {
        let host = self.host()?;
        match outcome {
            Outcome::Update(update) => {
                if let ClientUpdate::Event(ClientEvent::IntentNonce { nonce }) = &update
                    && let Some(link) = &self.link
                {
                    link.nonce(*nonce)?;
                }
                if host.for_game(&update) {
                    self.updates.push(update);
                }
            }
            Outcome::Audit { zone, copies } => self.auditor.audit(host, zone, copies),
            Outcome::EntryFinished { zone, result } => {
                self.entering.remove(&zone);
                if let Err(e) = result {
                    if matches!(e, ClientError::ZoneElsewhere { .. }) {
                        tracing::debug!(%zone, error = %e, "zone entry redirected");
                    } else {
                        tracing::warn!(%zone, error = %e, "zone entry failed");
                    }
                    self.failures.push(e);
                }
            }
            Outcome::FailAll(e) => {
                for _ in std::mem::take(&mut self.entering) {
                    self.failures.push(e.clone());
                }
            }
        }
        Ok(())
    }

    /// Reports how far each entry in flight has come, where it moved.
    fn progress(&mut self, world: &mut World) {
        let Some(host) = &self.host else { return };
        let now: BTreeMap<ZoneId, EntryProgress> = {
            let session = host.session();
            self.entering
                .iter()
                .filter_map(|zone| Some((zone.clone(), session.sync().entry_progress(zone)?)))
                .collect()
        };
        self.reported.retain(|zone, _| now.contains_key(zone));
        for (zone, progress) in now {
            if self.reported.get(&zone) != Some(&progress) {
                self.reported.insert(zone.clone(), progress);
                world.write_message(HoardEvent::EntryProgress { zone, progress });
            }
        }
    }

    /// Ends the session: the game is told why, every entry in flight fails.
    fn end(&mut self, world: &mut World, error: ClientError) {
        self.ended = true;
        if self.link.is_none() {
            tracing::error!(error = %error, "could not connect");
            // An open connection that never got to a session is closed too.
            if let Some(wire) = &self.wire {
                wire.close(0, "could not connect");
            }
            world.insert_resource(HoardConnection::Failed {
                reason: error.to_string(),
            });
            world.write_message(HoardEvent::Failed(error));
            return;
        }
        for _ in std::mem::take(&mut self.entering) {
            self.failures.push(error.clone());
        }
        // The server's session ends at once, not after its idle timeout.
        if let Some(wire) = &self.wire {
            wire.close(0, "session ended");
        }
        self.updates.push(ClientUpdate::Event(ClientEvent::Disconnected {
            reason: error.to_string(),
        }));
    }

    /// Hands the frame's updates to the game: entities first (through the
    /// App's [`Materialiser`](crate::Materialiser)), then failures, then
    /// what the client reported.
    fn give(&mut self, world: &mut World) {
        if self.updates.is_empty() && self.failures.is_empty() {
            return;
        }
        let events = crate::materialise::apply_updates(&self.registry, std::mem::take(&mut self.updates), world);
        for e in std::mem::take(&mut self.failures) {
            world.write_message(HoardEvent::Failed(e));
        }
        for event in events {
            if let ClientEvent::Disconnected { reason } = &event {
                world.insert_resource(HoardConnection::Failed { reason: reason.clone() });
            }
            world.write_message(HoardEvent::Client(event));
        }
    }

    fn host(&self) -> Result<Arc<ClientHost>, ClientError> {
        self.host
            .clone()
            .ok_or_else(|| ClientError::Lost("the connection is not up".into()))
    }

    fn wire(&self) -> Result<&Arc<dyn Wire>, ClientError> {
        self.wire
            .as_ref()
            .ok_or_else(|| ClientError::Lost("the connection is not open".into()))
    }
}

/// The plugin's system: one frame of the driver.
pub(crate) fn drive(world: &mut World) {
    if !world.contains_resource::<Driver>() {
        return;
    }
    world.resource_scope(|world, mut driver: Mut<Driver>| driver.frame(world));
}
