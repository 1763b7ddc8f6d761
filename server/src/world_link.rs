//! [`WorldLink`]: the world's side of the server — the sans-IO
//! [`TickCore`] driven around the game's frames, its commit jobs on the
//! commit thread, its outputs to the connections — and the world thread
//! a standalone server runs it on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use bevy_ecs::world::World;
use hoard_engine::store::WorldStore;
use hoard_engine::{Publisher, ZoneId};
use hoard_metrics::{ServerMetrics, ZoneLabel};
use hoard_proto::sync::hub::HubRead;
use hoard_proto::sync::tick::{TickCore, TickInput, TickOutput};
use hoard_proto::wire::{ErrorCode, Message};
use tokio::sync::watch;

use crate::committer::Committer;
use crate::game::{Game, ServerStats, TransientHook};
use crate::outbox::{Command, Outbox};

/// Closes every connection of the server (its endpoints) with a code and
/// reason: the transport's, for a server that fails.
pub type CloseAll = Box<dyn Fn(ErrorCode, &[u8]) + Send>;

/// The server's link to the world it serves: the commands from connections
/// (joins, subscriptions, intents) going in before each frame of the world,
/// and after each frame the gather, the durable commit and the publishing.
/// A transport's server drives it from its own world thread
/// ([`WorldThread`]; hoard-net's `start`) or hands it to a caller whose
/// world runs elsewhere (a `bevy_app` App; hoard-net's `start_linked`),
/// which calls
/// [`WorldLink::before_frame`] and [`WorldLink::after_frame`] around the
/// game's systems. The steps themselves are `hoard_proto`'s sans-IO
/// [`TickCore`]; the link only carries its inputs and outputs to and from
/// the connections.
pub struct WorldLink {
    core: TickCore,
    /// Where the core's reads go (on this thread, between frames: the
    /// store is then at the last commit the core published).
    store: Arc<dyn WorldStore>,
    /// Runs the core's commit jobs, so a frame never waits for an fsync.
    committer: Committer,
    /// A failure met between frames, reported by the next `after_frame`.
    fatal: Option<String>,
    commands: std_mpsc::Receiver<Command>,
    stats: Arc<ServerStats>,
    metrics: Arc<ServerMetrics>,
    /// When the current frame's inputs started going in (for `tick_seconds`).
    frame_started: Option<Instant>,
    /// Each zone's subscriber count as last reported, to update only changes.
    subscribers: HashMap<ZoneId, usize>,
    /// Whether the world can save now, for the sessions (which reject
    /// intents while it cannot).
    writable: Arc<AtomicBool>,
    failure: watch::Sender<Option<String>>,
    /// Closes every connection, for a server that fails.
    close_all: CloseAll,
    conns: Outbox,
    /// The core's clock: seconds since this instant.
    started: Instant,
}

/// What a world link is made of ([`WorldLink::new`]).
pub struct WorldLinkParts {
    /// The tick core.
    pub core: TickCore,
    /// The store the core's reads go to (the one the commit thread writes).
    pub store: Arc<dyn WorldStore>,
    /// The commit thread.
    pub committer: Committer,
    /// What the connections send.
    pub commands: std_mpsc::Receiver<Command>,
    /// The server's counters.
    pub stats: Arc<ServerStats>,
    /// The server's metrics.
    pub metrics: Arc<ServerMetrics>,
    /// Whether the world can save now, as the sessions read it.
    pub writable: Arc<AtomicBool>,
    /// Where a failure is reported (the server handle's `failed`).
    pub failure: watch::Sender<Option<String>>,
    /// Closes every connection.
    pub close_all: CloseAll,
}

impl std::fmt::Debug for WorldLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorldLink")
            .field("core", &self.core)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// How long a clean stop waits for the commit in flight.
pub const FINISH_COMMIT_WAIT: Duration = Duration::from_secs(30);

/// What the world thread owns besides the game and its link.
pub struct WorldThread {
    /// The link it drives.
    pub link: WorldLink,
    /// Set to stop it (after the frame running).
    pub stop: Arc<AtomicBool>,
    /// The time between frames.
    pub tick: Duration,
}

impl WorldThread {
    /// Runs the world until stopped. A panic in the game's systems, or a
    /// store that stays broken, ends it with a failure report.
    pub fn run(mut self, mut game: Game) -> Game {
        self.link.prepare(&mut game.world);
        let mut next = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let link = &mut self.link;
            let ticked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                link.before_frame(&mut game.world);
                game.schedule.run(&mut game.world);
                link.after_frame(&mut game.world, &mut game.publisher, game.transient.as_ref())
            }));
            let failure = match ticked {
                Ok(Ok(())) => None,
                Ok(Err(reason)) => Some(reason),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".into());
                    Some(format!("a game system panicked: {message}"))
                }
            };
            if let Some(reason) = failure {
                self.link.fail(reason);
                return game;
            }
            next += self.tick;
            let now = Instant::now();
            if next > now {
                // Between frames: commits that finish are published at once.
                if let Err(reason) = self.link.wait_for_commits(&mut game.world, next) {
                    self.link.fail(reason);
                    return game;
                }
            } else {
                next = now;
            }
        }
        self.link.finish(&mut game.world);
        game
    }
}

impl WorldLink {
    /// A link of `parts`, its clock starting now.
    pub fn new(parts: WorldLinkParts) -> WorldLink {
        WorldLink {
            core: parts.core,
            store: parts.store,
            committer: parts.committer,
            fatal: None,
            commands: parts.commands,
            stats: parts.stats,
            metrics: parts.metrics,
            frame_started: None,
            subscribers: HashMap::new(),
            writable: parts.writable,
            failure: parts.failure,
            close_all: parts.close_all,
            conns: Outbox::default(),
            started: Instant::now(),
        }
    }

    /// Adds the resources hoard's steps use to `world`: call once, before
    /// the first frame.
    pub fn prepare(&mut self, world: &mut World) {
        self.core.prepare(world);
    }

    /// Before the game's systems run: this frame's intents into
    /// [`IncomingIntents`](hoard_proto::intents::IncomingIntents), joins and leaves into
    /// [`ConnectedPlayers`](hoard_proto::intents::ConnectedPlayers),
    /// subscriptions into the hub.
    pub fn before_frame(&mut self, world: &mut World) {
        self.frame_started = Some(Instant::now());
        while let Ok(cmd) = self.commands.try_recv() {
            let input = self.conns.take(cmd);
            self.core.handle(world, input);
            self.deliver(world);
        }
        if let Err(reason) = self.pump_commits(world) {
            self.fatal.get_or_insert(reason);
        }
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Hands a due commit job to the commit thread, and publishes every job
    /// it finished (which may make the next job due).
    fn pump_commits(&mut self, world: &mut World) -> Result<(), String> {
        loop {
            self.submit_due()?;
            let Some((id, result)) = self.committer.try_done().map_err(|e| e.to_string())? else {
                return Ok(());
            };
            self.finish_job(world, id, result)?;
        }
    }

    /// Hands the core's due commit job, if any, to the commit thread.
    fn submit_due(&mut self) -> Result<(), String> {
        match self.core.poll_commit() {
            Some(job) => self.committer.submit(job).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Tells the core a job is done and delivers what that sends.
    fn finish_job(
        &mut self,
        world: &mut World,
        id: u64,
        result: Result<hoard_engine::store::CommitReceipt, hoard_engine::store::CommitError>,
    ) -> Result<(), String> {
        let now = self.now();
        let outcome = self.core.commit_done(now, id, result);
        self.report();
        self.deliver(world);
        outcome
    }

    /// Until `deadline`: publishes each commit as soon as the commit thread
    /// finishes it. The server's own world thread waits here between
    /// frames; a caller driving its world (a `bevy_app` App) can too,
    /// instead of sleeping, so deltas go out when durable rather than at
    /// the next frame. An error is a failure the server cannot recover from.
    pub fn wait_for_commits(&mut self, world: &mut World, deadline: Instant) -> Result<(), String> {
        loop {
            self.submit_due()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            if !self.core.commit_in_flight() {
                std::thread::sleep(deadline - now);
                return Ok(());
            }
            match self.committer.wait_done(deadline - now).map_err(|e| e.to_string())? {
                Some((id, result)) => self.finish_job(world, id, result)?,
                None => return Ok(()),
            }
        }
    }

    /// Waits (up to `timeout`) until every change of the frames so far is
    /// durable and published: for a caller that drives the world itself
    /// and needs a save point (a test, a scripted shutdown). Fails if the
    /// time runs out or commits are failing (the changes are kept and
    /// retried by later frames).
    pub fn flush(&mut self, world: &mut World, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.submit_due()?;
            if !self.core.commit_in_flight() {
                return match self.core.pending() {
                    0 => Ok(()),
                    n => Err(format!("{n} changed objects are not durable: commits are failing")),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.committer.wait_done(left).map_err(|e| e.to_string())? {
                Some((id, result)) => self.finish_job(world, id, result)?,
                None => return Err(format!("commits did not finish within {} ms", timeout.as_millis())),
            }
        }
    }

    /// Makes the core's state visible to connections and metrics. Called
    /// before anything goes out: a client told the world is read-only must
    /// find its next action refused by its connection, and the statistics
    /// must already count the failure.
    fn report(&mut self) {
        self.writable.store(self.core.writable(), Ordering::SeqCst);
        let counters = self.core.counters();
        self.stats.ticks.store(counters.ticks, Ordering::SeqCst);
        self.stats
            .committed_objects
            .store(counters.committed_objects, Ordering::SeqCst);
        self.stats
            .failed_commits
            .store(counters.failed_commits, Ordering::SeqCst);
        self.metrics.commit_queue.set(self.core.pending() as i64);
        self.metrics.unconfirmed_intents.set(self.core.unconfirmed() as i64);
    }

    /// After the game's systems ran: intents cleared, transient state sent,
    /// the frame's changes gathered and handed to the commit thread; they
    /// are published once durable (at a later frame, or between frames on
    /// the server's own world thread), the frames meanwhile committed
    /// together as the next group. An error is a failure the server cannot
    /// recover from (its store stayed broken past
    /// hoard-net's `ServerOptions::store_retry_for`, or the commit thread died): call
    /// [`WorldLink::fail`] with it and stop.
    pub fn after_frame(
        &mut self,
        world: &mut World,
        publisher: &mut Publisher,
        transient: Option<&TransientHook>,
    ) -> Result<(), String> {
        let transients = transient.map(|hook| hook(world)).unwrap_or_default();
        let now = self.now();
        let mut result = self.core.after_frame(now, Instant::now(), world, publisher, transients);
        self.report();
        self.deliver(world);
        if result.is_ok() {
            result = self.pump_commits(world);
        }
        self.report_subscribers();
        if let Some(started) = self.frame_started.take() {
            self.metrics.tick_seconds.observe(started.elapsed().as_secs_f64());
        }
        match self.fatal.take() {
            Some(reason) => Err(reason),
            None => result,
        }
    }

    /// Queues the core's messages on each session's delta stream; a session
    /// whose queue is full reads too slowly and is disconnected.
    fn deliver(&mut self, world: &mut World) {
        while let Some(HubRead { ticket, read }) = self.core.poll_read() {
            let reply = read.run(&*self.store);
            self.core.read_done(ticket, reply);
        }
        while let Some(TickOutput { to, message }) = self.core.poll_output() {
            match &*message {
                Message::IntentRejected(_) => {
                    self.stats.unavailable_intents.fetch_add(1, Ordering::Relaxed);
                    self.metrics.reject("unavailable");
                }
                Message::Processed(p) => {
                    self.metrics.intents.inc_by(p.seqs.len() as u64);
                }
                Message::Delta(_) => {
                    self.metrics.deltas.inc();
                }
                _ => {}
            }
            if !self
                .conns
                .queue(to, message, &self.metrics, Some(&self.stats.slow_consumers))
            {
                self.core.handle(world, TickInput::Remove { id: to });
            }
        }
        self.conns.flush();
    }

    /// Sets the per-zone subscriber gauges that changed.
    fn report_subscribers(&mut self) {
        let now = self.core.subscribers_by_zone();
        for (zone, n) in &now {
            if self.subscribers.get(zone) != Some(n) {
                self.metrics
                    .zone_subscribers
                    .get_or_create(&ZoneLabel { zone: zone.to_string() })
                    .set(*n as i64);
            }
        }
        for zone in self.subscribers.keys() {
            if !now.contains_key(zone) {
                self.metrics
                    .zone_subscribers
                    .get_or_create(&ZoneLabel { zone: zone.to_string() })
                    .set(0);
            }
        }
        self.subscribers = now;
    }

    /// The server fails for good: every connection closed, the reason
    /// reported through hoard-net's `ServerHandle::failed`.
    pub fn fail(&mut self, reason: String) {
        tracing::error!(%reason, "the server stops");
        (self.close_all)(ErrorCode::Server, b"server failed");
        let _ = self.failure.send(Some(reason));
    }

    /// A clean stop: the commit in flight waited for (a bounded time), a
    /// last try to commit what is pending, then every connection closed.
    pub fn finish(&mut self, world: &mut World) {
        if let Err(e) = self.submit_due() {
            tracing::warn!(error = %e, "the last commit job could not be handed over");
        }
        if self.core.commit_in_flight() {
            match self.committer.wait_done(FINISH_COMMIT_WAIT) {
                Ok(Some((id, result))) => {
                    if let Err(reason) = self.finish_job(world, id, result) {
                        tracing::error!(%reason, "the last commit failed");
                    }
                }
                Ok(None) => tracing::error!(
                    waited_s = FINISH_COMMIT_WAIT.as_secs(),
                    "the commit in flight did not return; trying once more"
                ),
                Err(e) => tracing::error!(error = %e, "the commit in flight is lost; trying once more"),
            }
        }
        if let Some(changes) = self.core.finish()
            && let Err(error) = self.store.commit(&changes)
        {
            tracing::error!(%error, objects = changes.len(), "changes not saved at shutdown");
        }
        self.conns.close_all(b"server shutting down");
    }
}
