//! The server's tick core as a sans-IO state machine: what connections sent
//! goes into the world before the game's systems run; after them the frame's
//! changes are gathered, committed durably, and only then published.
//!
//! [`TickCore::handle`] takes one [`TickInput`] (a session registered,
//! subscribed, joined, left, or sent an intent) and applies it to the world
//! (`IncomingIntents`, `ConnectedPlayers`) and to the subscription hub;
//! [`TickCore::after_frame`] runs the gather → commit → publish steps at the
//! time it is given. Messages for sessions come out of
//! [`TickCore::poll_output`]; the driver delivers them (and tells the core,
//! with [`TickInput::Remove`], about a session it had to drop). No sockets,
//! threads or clocks inside: the QUIC server's world thread and the Bevy
//! plugin are two drivers of this one core.
//!
//! The invariant this module keeps: **durable before published**. A delta,
//! and the `Processed` confirmation of the intents behind it, is queued only
//! after [`WorldStore::commit`] returned success for the changes it carries.
//! A failed commit keeps its changes (later frames' changes merge over them,
//! the last change of an object winning), tells every session the world is
//! read-only (`Status`), and is retried with a backoff of 250 ms doubling to
//! 5 s; past the retry budget [`TickCore::after_frame`] returns the reason
//! the server cannot go on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bevy_ecs::world::World;
use hoard_engine::store::{CommitError, WorldStore};
use hoard_engine::{ChangeSet, Publisher, Seq, ShardId, ZoneId};

use super::hub::{Hub, SessionId};
use crate::intents::{ConnectedPlayers, IncomingIntents, ReceivedIntent};
use crate::wire::{ErrorCode, IntentRejected, MAX_TRANSIENT_BYTES, Message, Processed, Status, Transient};

/// The first wait after a failed commit, in seconds; it doubles per failure.
const FIRST_BACKOFF_SECS: f64 = 0.25;
/// The longest wait between commit attempts, in seconds.
const MAX_BACKOFF_SECS: f64 = 5.0;
/// Intents waiting for a durable commit, at most; past it an intent is
/// rejected with `Unavailable` (drivers already refuse intents while the
/// store fails, so this bounds only what arrived in between).
pub const MAX_UNCONFIRMED_INTENTS: usize = 65_536;

/// Something a connection did that the world must see.
#[derive(Debug)]
// Deliberately exhaustive: a driver builds these and the core handles each.
pub enum TickInput {
    /// A session opened: it can now be sent messages.
    Register {
        /// The session.
        id: SessionId,
    },
    /// A session's zone answer was sent: subscribe it from these seqs.
    Subscribe {
        /// The session.
        id: SessionId,
        /// The zone.
        zone: ZoneId,
        /// Each shard and the seq its answer was built at.
        shards: Vec<(ShardId, Seq)>,
    },
    /// A session left a zone.
    Unsubscribe {
        /// The session.
        id: SessionId,
        /// The zone.
        zone: ZoneId,
    },
    /// A session's player is known (after `Hello`).
    Joined {
        /// The session.
        id: SessionId,
        /// Its perspective.
        perspective: String,
    },
    /// A session ended (closed, lost, or dropped by the driver).
    Remove {
        /// The session.
        id: SessionId,
    },
    /// An intent for the game's next frame.
    Intent {
        /// The session it came from.
        id: SessionId,
        /// Its seq, confirmed with `Processed` once its frame is durable.
        seq: u32,
        /// The intent.
        intent: ReceivedIntent,
    },
}

/// A message for one session, to go on its delta stream in this order.
/// A delta for many sessions comes out once per session with the same
/// `Arc`, so a driver encodes it once (consecutive outputs sharing one
/// message are the rule).
#[derive(Debug, Clone, PartialEq)]
pub struct TickOutput {
    /// The session.
    pub to: SessionId,
    /// The message.
    pub message: Arc<Message>,
}

/// Running totals of the core, for a driver's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickCounters {
    /// Frames finished.
    pub ticks: u64,
    /// Objects committed.
    pub committed_objects: u64,
    /// Commits that failed.
    pub failed_commits: u64,
}

/// Why commits fail, since when, and when to try again (seconds on the
/// driver's clock).
struct Failing {
    since: f64,
    error: String,
    retry_at: f64,
    backoff: f64,
}

/// The tick core: sessions, subscriptions and pending changes of one world.
pub struct TickCore {
    store: Arc<dyn WorldStore>,
    retry_for_secs: f64,
    hub: Hub,
    /// Registered sessions (those messages may go to), and their perspective
    /// once joined.
    sessions: BTreeMap<SessionId, Option<String>>,
    last_transient: HashMap<ZoneId, Vec<u8>>,
    /// Intents given to the game whose frame is not yet durable.
    unconfirmed: Vec<(SessionId, u32)>,
    /// Every change not yet committed.
    pending: ChangeSet,
    failing: Option<Failing>,
    out: VecDeque<TickOutput>,
    counters: TickCounters,
}

impl std::fmt::Debug for TickCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickCore")
            .field("sessions", &self.sessions.len())
            .field("pending", &self.pending.len())
            .field("writable", &self.writable())
            .finish_non_exhaustive()
    }
}

fn paused() -> Message {
    Message::Status(Status {
        writable: false,
        message: "the server cannot save the world right now; actions are paused".into(),
    })
}

impl TickCore {
    /// A core committing to `store`, which gives up after commits have failed
    /// for `retry_for_secs`.
    pub fn new(store: Arc<dyn WorldStore>, retry_for_secs: f64) -> TickCore {
        TickCore {
            store,
            retry_for_secs,
            hub: Hub::new(),
            sessions: BTreeMap::new(),
            last_transient: HashMap::new(),
            unconfirmed: Vec::new(),
            pending: ChangeSet::new(),
            failing: None,
            out: VecDeque::new(),
            counters: TickCounters::default(),
        }
    }

    /// Adds the resources the core fills to `world`: call once, before the
    /// first frame.
    pub fn prepare(&self, world: &mut World) {
        world.init_resource::<IncomingIntents>();
        world.init_resource::<ConnectedPlayers>();
    }

    /// Whether the store takes commits now (false while commits fail: the
    /// driver refuses intents with `Unavailable` meanwhile).
    pub fn writable(&self) -> bool {
        self.failing.is_none()
    }

    /// Intents waiting for their frame's commit.
    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed.len()
    }

    /// Objects changed but not yet durable.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// How many sessions follow each zone (zones nobody follows are absent).
    pub fn subscribers_by_zone(&self) -> HashMap<ZoneId, usize> {
        self.hub.subscribers_by_zone()
    }

    /// Running totals.
    pub fn counters(&self) -> TickCounters {
        self.counters
    }

    /// The next message for a session, in order.
    pub fn poll_output(&mut self) -> Option<TickOutput> {
        self.out.pop_front()
    }

    fn send(&mut self, to: SessionId, message: Message) {
        self.send_shared(to, Arc::new(message));
    }

    fn send_shared(&mut self, to: SessionId, message: Arc<Message>) {
        if self.sessions.contains_key(&to) {
            self.out.push_back(TickOutput { to, message });
        }
    }

    fn send_all(&mut self, to: &[SessionId], message: Message) {
        let message = Arc::new(message);
        for &id in to {
            self.send_shared(id, message.clone());
        }
    }

    fn broadcast(&mut self, message: Message) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        self.send_all(&ids, message);
    }

    /// Applies what a connection did to the world and the subscriptions.
    pub fn handle(&mut self, world: &mut World, input: TickInput) {
        match input {
            TickInput::Register { id } => {
                self.sessions.insert(id, None);
                if !self.writable() {
                    self.send(id, paused());
                }
            }
            TickInput::Subscribe { id, zone, shards } => {
                if !self.sessions.contains_key(&id) {
                    return;
                }
                for delta in self.hub.subscribe(id, &zone, &shards, &*self.store) {
                    self.send(id, Message::Delta(delta));
                }
                if let Some(payload) = self.last_transient.get(&zone).cloned() {
                    self.send(id, Message::Transient(Transient { zone, payload }));
                }
            }
            TickInput::Unsubscribe { id, zone } => self.hub.unsubscribe(id, &zone),
            TickInput::Joined { id, perspective } => {
                let Some(slot) = self.sessions.get_mut(&id) else { return };
                *slot = Some(perspective.clone());
                *world
                    .resource_mut::<ConnectedPlayers>()
                    .0
                    .entry(perspective)
                    .or_default() += 1;
            }
            TickInput::Remove { id } => {
                self.hub.remove(id);
                self.unconfirmed.retain(|(s, _)| *s != id);
                if let Some(Some(perspective)) = self.sessions.remove(&id) {
                    let mut connected = world.resource_mut::<ConnectedPlayers>();
                    if let Some(n) = connected.0.get_mut(&perspective) {
                        *n -= 1;
                        if *n == 0 {
                            connected.0.remove(&perspective);
                        }
                    }
                }
            }
            TickInput::Intent { id, seq, intent } => {
                if !self.sessions.contains_key(&id) {
                    return;
                }
                // While commits fail the world is read-only: an action that
                // reached the core before the driver knew is refused here.
                let refusal = if !self.writable() {
                    Some("the server cannot save the world right now; actions are paused")
                } else if self.unconfirmed.len() >= MAX_UNCONFIRMED_INTENTS {
                    Some("the server has too many actions waiting to be saved")
                } else {
                    None
                };
                if let Some(message) = refusal {
                    let rejected = IntentRejected {
                        seq,
                        code: ErrorCode::Unavailable as u16,
                        message: message.into(),
                    };
                    self.send(id, Message::IntentRejected(rejected));
                    return;
                }
                world.resource_mut::<IncomingIntents>().0.push(intent);
                self.unconfirmed.push((id, seq));
            }
        }
    }

    /// After the game's systems ran at `now` (seconds on the driver's
    /// clock): intents cleared, each zone's transient state sent where it
    /// changed, the frame's changes gathered, committed durably, and only
    /// then published. An error is a failure the server cannot recover from
    /// (its store stayed broken for the retry budget): the driver stops.
    pub fn after_frame(
        &mut self,
        now: f64,
        world: &mut World,
        publisher: &mut Publisher,
        transients: Vec<(ZoneId, Vec<u8>)>,
    ) -> Result<(), String> {
        world.resource_mut::<IncomingIntents>().0.clear();
        for (zone, payload) in transients {
            if payload.len() > MAX_TRANSIENT_BYTES {
                tracing::warn!(%zone, bytes = payload.len(), "transient state over the limit; not sent");
                continue;
            }
            if self.last_transient.get(&zone) == Some(&payload) {
                continue;
            }
            let message = Message::Transient(Transient {
                zone: zone.clone(),
                payload: payload.clone(),
            });
            self.send_all(&self.hub.sessions_in(&zone), message);
            self.last_transient.insert(zone, payload);
        }
        let gathered = publisher.gather(world);
        self.commit_frame(now, gathered.changes)
    }

    /// The commit step of a frame whose changes were gathered elsewhere:
    /// `changes` join what is pending, everything pending is committed
    /// durably, and only then published ([`TickCore::after_frame`] calls
    /// this after its gather).
    pub fn commit_frame(&mut self, now: f64, changes: ChangeSet) -> Result<(), String> {
        self.pending.extend(changes);
        let result = self.commit(now);
        self.counters.ticks += 1;
        result
    }

    /// A clean stop: a last try to commit what is pending. Returns how many
    /// changed objects could not be saved, with the error.
    pub fn finish(&mut self) -> Result<(), (usize, String)> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.store.commit(&self.pending) {
            Ok(_) => {
                self.pending = ChangeSet::new();
                Ok(())
            }
            Err(e) => Err((self.pending.len(), e.to_string())),
        }
    }

    /// Tells each session which of its intents are processed and durable.
    fn confirm(&mut self) {
        let mut by_session: BTreeMap<SessionId, Vec<u32>> = BTreeMap::new();
        for (id, seq) in self.unconfirmed.drain(..) {
            by_session.entry(id).or_default().push(seq);
        }
        for (id, seqs) in by_session {
            self.send(id, Message::Processed(Processed { seqs }));
        }
    }

    /// Commits everything pending, durably, then publishes it.
    fn commit(&mut self, now: f64) -> Result<(), String> {
        if self.pending.is_empty() {
            // Nothing to make durable: this frame's intents are done.
            self.confirm();
            return Ok(());
        }
        if let Some(f) = &self.failing {
            if now < f.retry_at {
                return Ok(());
            }
            if now - f.since > self.retry_for_secs {
                return Err(format!(
                    "the world store has failed for {:.0} s ({}); {} changed objects could not be saved",
                    now - f.since,
                    f.error,
                    self.pending.len()
                ));
            }
            if let Err(e) = self.store.recover() {
                tracing::warn!(error = %e, "reopening the world store failed");
            }
        }
        // Durable before published: no client may hold state a crash could take back.
        let result = loop {
            match self.store.commit(&self.pending) {
                Err(CommitError::UnknownShard(shard)) => {
                    // A game bug (an object placed in a shard no zone has):
                    // the rest of the frame must not suffer for it. Those
                    // objects' changes are dropped everywhere, so one moved
                    // there stays where the store has it, exactly once.
                    let ids: Vec<_> = self
                        .pending
                        .take_shard(shard)
                        .map(|c| c.iter().map(|(id, _)| id).collect())
                        .unwrap_or_default();
                    for &id in &ids {
                        self.pending.forget(id);
                    }
                    tracing::error!(
                        %shard,
                        objects = ?ids,
                        "objects placed in a shard that does not exist are not saved; the store keeps them where they were"
                    );
                    if self.pending.is_empty() {
                        self.confirm();
                        return Ok(());
                    }
                }
                other => break other,
            }
        };
        match result {
            Ok(receipt) => {
                let changes = std::mem::take(&mut self.pending);
                self.counters.committed_objects += changes.len() as u64;
                if let Some(f) = self.failing.take() {
                    tracing::info!(
                        after_s = now - f.since,
                        "the world store works again; actions are accepted"
                    );
                    self.broadcast(Message::Status(Status {
                        writable: true,
                        message: "the server saves the world again".into(),
                    }));
                }
                for fanout in self.hub.publish(&changes, &receipt, &*self.store) {
                    self.send_all(&fanout.to, Message::Delta(fanout.delta));
                }
                // After the deltas, on the same stream: a client that sees
                // `Processed` has seen what its intents changed.
                self.confirm();
                Ok(())
            }
            Err(e) => {
                self.counters.failed_commits += 1;
                let error = e.to_string();
                match &mut self.failing {
                    Some(f) => {
                        f.backoff = (f.backoff * 2.0).min(MAX_BACKOFF_SECS);
                        f.retry_at = now + f.backoff;
                        tracing::warn!(error = %error, objects = self.pending.len(), "commit failed again; retrying");
                        f.error = error;
                    }
                    None => {
                        tracing::error!(
                            error = %error,
                            objects = self.pending.len(),
                            "commit failed; changes kept, actions paused, retrying"
                        );
                        self.failing = Some(Failing {
                            since: now,
                            error,
                            retry_at: now + FIRST_BACKOFF_SECS,
                            backoff: FIRST_BACKOFF_SECS,
                        });
                        self.broadcast(paused());
                    }
                }
                Ok(())
            }
        }
    }
}
