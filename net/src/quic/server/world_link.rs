//! [`WorldLink`]: the world's side of the server — the sans-IO
//! [`TickCore`] driven around the game's frames, its commit jobs on the
//! commit thread, its outputs to the connections — and the world thread
//! a standalone server runs it on.

use super::*;

/// The server's link to the world it serves: the commands from connections
/// (joins, subscriptions, intents) going in before each frame of the world,
/// and after each frame the gather, the durable commit and the publishing.
/// [`start`] drives it from its own world thread; [`start_linked`] hands it
/// to a caller whose world runs elsewhere (a `bevy_app` App), which calls
/// [`WorldLink::before_frame`] and [`WorldLink::after_frame`] around the
/// game's systems. The steps themselves are `hoard_proto`'s sans-IO
/// [`TickCore`]; the link only carries its inputs and outputs to and from
/// the connections.
pub struct WorldLink {
    pub(super) core: TickCore,
    /// Where the core's reads go (on this thread, between frames: the
    /// store is then at the last commit the core published).
    pub(super) store: Arc<dyn WorldStore>,
    /// Runs the core's commit jobs, so a frame never waits for an fsync.
    pub(super) committer: Committer,
    /// A failure met between frames, reported by the next `after_frame`.
    pub(super) fatal: Option<String>,
    pub(super) commands: std_mpsc::Receiver<Command>,
    pub(super) stats: Arc<ServerStats>,
    pub(super) metrics: Arc<ServerMetrics>,
    /// When the current frame's inputs started going in (for `tick_seconds`).
    pub(super) frame_started: Option<Instant>,
    /// Each zone's subscriber count as last reported, to update only changes.
    pub(super) subscribers: HashMap<ZoneId, usize>,
    pub(super) writable: Arc<AtomicBool>,
    pub(super) failure: watch::Sender<Option<String>>,
    /// The raw QUIC endpoint and the WebTransport one, if any.
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) conns: Outbox,
    /// The core's clock: seconds since this instant.
    pub(super) started: Instant,
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
pub(super) const FINISH_COMMIT_WAIT: Duration = Duration::from_secs(30);

/// How long a stopping server waits for its closed connections to drain.
pub(super) const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// What the world thread owns besides the game and its link.
pub(super) struct WorldThread {
    pub(super) link: WorldLink,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) tick: Duration,
}

impl WorldThread {
    /// Runs the world until stopped. A panic in the game's systems, or a
    /// store that stays broken, ends it with a failure report.
    pub(super) fn run(mut self, mut game: Game) -> Game {
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
    /// [`ServerOptions::store_retry_for`], or the commit thread died): call
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
    /// reported through [`ServerHandle::failed`].
    pub fn fail(&mut self, reason: String) {
        tracing::error!(%reason, "the server stops");
        for endpoint in &self.endpoints {
            endpoint.close(close_code(ErrorCode::Server), b"server failed");
        }
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
