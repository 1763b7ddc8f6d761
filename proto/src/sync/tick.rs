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
//! threads, clocks or store inside: the reads its subscriptions need come out
//! of [`TickCore::poll_read`] and their replies go back through
//! [`TickCore::read_done`]; commits go out as [`CommitJob`]s. The QUIC
//! server's world thread and the relay are drivers of this one core.
//!
//! Commits are pipelined: the core hands the driver a [`CommitJob`]
//! ([`TickCore::poll_commit`]) and the world keeps ticking while the driver
//! makes it durable on another thread; the frames that end meanwhile are
//! gathered into one group, committed as the next job once the driver
//! reports the first one done ([`TickCore::commit_done`]). At most one job
//! is in flight, so the store sees commits in frame order. A driver without
//! a commit thread runs each job at once (see [`run_commit`]).
//!
//! The invariant this module keeps: **durable before published**. A delta,
//! and the `Processed` confirmation of the intents behind it, is queued only
//! after the driver reported its commit job durable ([`TickCore::commit_done`]).
//! A failed commit keeps its changes (the frames' changes gathered since
//! merge over them, the last change of an object winning), tells every
//! session the world is read-only (`Status`), and is retried with a backoff
//! of 250 ms doubling to 5 s; past the retry budget
//! [`TickCore::after_frame`] returns the reason the server cannot go on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bevy_ecs::world::World;
#[cfg(doc)]
use hoard_engine::store::run_commit;
use hoard_engine::store::{CommitError, CommitReceipt, StoreReply};
use hoard_engine::{ChangeSet, Publisher, Seq, ShardId, ZoneId};

use super::hub::{Hub, HubRead, SessionId};
use crate::intents::{ConnectedPlayers, IncomingIntents, IntentId, IntentOutcomes, ReceivedIntent};
use crate::messages::{Audience, OutgoingMessage, OutgoingMessages};
use crate::wire::{
    ErrorCode, GameMessage, IntentRejected, MAX_TRANSIENT_BYTES, Message, Processed, Status, Transient, TransientPatch,
};

/// The first wait after a failed commit, in seconds; it doubles per failure.
const FIRST_BACKOFF_SECS: f64 = 0.25;
/// The longest wait between commit attempts, in seconds.
const MAX_BACKOFF_SECS: f64 = 5.0;
/// Intents waiting for a durable commit, at most; past it an intent is
/// rejected with `Unavailable` (drivers already refuse intents while the
/// store fails, so this bounds only what arrived in between).
pub const MAX_UNCONFIRMED_INTENTS: usize = 65_536;
/// Game messages waiting for their frames' commits, at most; past it a
/// frame's further messages are dropped with an error.
pub const MAX_UNSENT_MESSAGES: usize = 65_536;

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
        /// Whether its deltas go with signed heads (the answer had them).
        proofs: bool,
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
        /// Its token, when the token binds the player's intent key (a relay
        /// opens the player's own session upstream with it); the game's
        /// tick ignores it.
        bound_token: Option<String>,
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
        /// The player's signature over it, passed on by a relay's sessions
        /// (empty where the session checked it, or it is unsigned).
        signature: Vec<u8>,
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

/// A group of frames' changes for the driver to make durable: run
/// [`run_commit`] on `changes` and `recover_first` and report the result to
/// [`TickCore::commit_done`] with this `id`.
#[derive(Debug, Clone)]
pub struct CommitJob {
    /// Names the job in [`TickCore::commit_done`].
    pub id: u64,
    /// Every change of the frames in the group, the last change of an
    /// object winning.
    pub changes: Arc<ChangeSet>,
    /// The previous attempt failed: bring the store back first.
    pub recover_first: bool,
}

/// The job the driver is running, and what waits for it.
struct InFlight {
    id: u64,
    changes: Arc<ChangeSet>,
    /// Intents of the group's frames, confirmed once it is durable.
    intents: Vec<(SessionId, u32)>,
    /// The game's messages of those frames, sent after its deltas.
    messages: Vec<(Vec<SessionId>, Message)>,
    recover_first: bool,
    /// Whether the driver has taken it ([`TickCore::poll_commit`]).
    handed_out: bool,
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

/// A zone's transient state as last sent to every session in it.
struct SentTransient {
    payload: Vec<u8>,
    /// When, on the driver's clock.
    at: f64,
    /// Sends since the last whole one.
    patches: u32,
}

/// The tick core: sessions, subscriptions and pending changes of one world.
pub struct TickCore {
    retry_for_secs: f64,
    hub: Hub,
    /// Registered sessions (those messages may go to), and their perspective
    /// once joined.
    sessions: BTreeMap<SessionId, Option<String>>,
    /// Each zone's latest transient state (what a session that subscribes
    /// is sent first).
    last_transient: HashMap<ZoneId, Vec<u8>>,
    /// Each zone's transient state as last sent to its sessions (the base
    /// of the next patch, and what a session that subscribes is sent).
    sent_transient: HashMap<ZoneId, SentTransient>,
    /// The shortest time between two transient sends of one zone, seconds.
    transient_interval: f64,
    /// Intents given to the game whose frame is not yet in a commit job.
    unconfirmed: Vec<(SessionId, u32)>,
    /// Intents the game deferred and has not completed or refused yet.
    deferred: std::collections::BTreeSet<IntentId>,
    /// The game's messages of frames not yet in a commit job, each with its
    /// recipients (resolved when it was written).
    unsent: Vec<(Vec<SessionId>, Message)>,
    /// Every change not yet in a commit job.
    pending: ChangeSet,
    /// The commit job the driver runs or is to take, if any (at most one).
    in_flight: Option<InFlight>,
    next_job: u64,
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
    /// A core that gives up after commits have failed for `retry_for_secs`.
    pub fn new(retry_for_secs: f64) -> TickCore {
        TickCore {
            retry_for_secs,
            hub: Hub::new(),
            sessions: BTreeMap::new(),
            last_transient: HashMap::new(),
            sent_transient: HashMap::new(),
            transient_interval: 0.0,
            unconfirmed: Vec::new(),
            deferred: std::collections::BTreeSet::new(),
            unsent: Vec::new(),
            pending: ChangeSet::new(),
            in_flight: None,
            next_job: 1,
            failing: None,
            out: VecDeque::new(),
            counters: TickCounters::default(),
        }
    }

    /// Hands on the origin's signed heads ([`crate::proof::ProofSource`])
    /// to sessions that ask for proofs.
    pub fn with_proofs(mut self, proofs: std::sync::Arc<dyn crate::proof::ProofSource>) -> TickCore {
        self.hub = std::mem::take(&mut self.hub).with_proofs(proofs);
        self
    }

    /// Sends each zone's transient state at most once per `secs` (0: every
    /// frame it changes). A zone's state goes to every session in it
    /// whenever it changes (as a patch of the previous one where that is
    /// smaller), so its cost grows with the square of the zone's sessions;
    /// a cap bounds that per second. The latest state always goes out once
    /// the interval has passed, and a session that subscribes gets, at
    /// once, the state the zone's sessions were last sent.
    pub fn with_transient_interval(mut self, secs: f64) -> TickCore {
        self.transient_interval = secs.max(0.0);
        self
    }

    /// Adds the resources the core fills to `world`: call once, before the
    /// first frame.
    pub fn prepare(&self, world: &mut World) {
        world.init_resource::<IncomingIntents>();
        world.init_resource::<IntentOutcomes>();
        world.init_resource::<OutgoingMessages>();
        world.init_resource::<ConnectedPlayers>();
    }

    /// Takes the game's messages of this frame ([`OutgoingMessages`]):
    /// each is checked, its recipients resolved now, and it waits for the
    /// frame's changes to be durable. Past [`MAX_UNSENT_MESSAGES`] waiting,
    /// the frame's further messages are dropped with an error (a game that
    /// writes without bound).
    fn take_messages(&mut self, world: &mut World) {
        let Some(mut outgoing) = world.get_resource_mut::<OutgoingMessages>() else {
            return;
        };
        let written = std::mem::take(&mut outgoing.0);
        for OutgoingMessage { to, kind, payload } in written {
            if payload.len() > crate::wire::MAX_GAME_MESSAGE_BYTES || kind.len() > crate::wire::MAX_GAME_MESSAGE_KIND {
                tracing::error!(%kind, bytes = payload.len(), "a game message over the limits; not sent");
                continue;
            }
            let waiting = self.unsent.len() + self.in_flight.as_ref().map_or(0, |f| f.messages.len());
            if waiting >= MAX_UNSENT_MESSAGES {
                tracing::error!(%kind, waiting, "too many game messages waiting for their frames' commits; dropped");
                continue;
            }
            let (recipients, zone) = match &to {
                Audience::Player(player) => (
                    self.sessions
                        .iter()
                        .filter(|(_, p)| p.as_deref() == Some(player.as_str()))
                        .map(|(id, _)| *id)
                        .collect(),
                    None,
                ),
                Audience::Zone(zone) => (self.hub.sessions_in(zone), Some(zone.clone())),
                _ => (
                    self.sessions
                        .iter()
                        .filter(|(_, p)| p.is_some())
                        .map(|(id, _)| *id)
                        .collect(),
                    None,
                ),
            };
            if recipients.is_empty() {
                continue;
            }
            self.unsent
                .push((recipients, Message::GameMessage(GameMessage { kind, zone, payload })));
        }
    }

    /// Sends game messages whose frames are durable.
    fn send_messages(&mut self, messages: Vec<(Vec<SessionId>, Message)>) {
        for (to, message) in messages {
            self.send_all(&to, message);
        }
    }

    /// Whether the store takes commits now (false while commits fail: the
    /// driver refuses intents with `Unavailable` meanwhile).
    pub fn writable(&self) -> bool {
        self.failing.is_none()
    }

    /// Intents waiting for their frame's commit.
    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed.len() + self.deferred.len() + self.in_flight.as_ref().map_or(0, |f| f.intents.len())
    }

    /// Carries out what the game did with intents this frame (see
    /// [`IntentOutcomes`]): a refused one is answered `IntentRejected` and
    /// not confirmed; a deferred one waits, unconfirmed, until the game
    /// completes it (then it joins this frame's) or refuses it.
    fn settle_intents(&mut self, world: &mut World) {
        let Some(mut outcomes) = world.get_resource_mut::<IntentOutcomes>() else {
            return;
        };
        let (refused, deferred, completed) = outcomes.take();
        for id in deferred {
            if let Some(at) = self.unconfirmed.iter().position(|u| *u == (id.session, id.seq)) {
                self.unconfirmed.remove(at);
                self.deferred.insert(id);
            }
        }
        for id in completed {
            if self.deferred.remove(&id) {
                self.unconfirmed.push((id.session, id.seq));
            }
        }
        for (id, code, message) in refused {
            let waiting = match self.unconfirmed.iter().position(|u| *u == (id.session, id.seq)) {
                Some(at) => {
                    self.unconfirmed.remove(at);
                    true
                }
                None => self.deferred.remove(&id),
            };
            if waiting {
                let rejected = IntentRejected {
                    seq: id.seq,
                    code,
                    message,
                };
                self.send(id.session, Message::IntentRejected(rejected));
            } else {
                tracing::debug!(?id, "a refusal of an intent already answered; ignored");
            }
        }
    }

    /// Object changes not yet durable (in the job in flight or waiting for
    /// the next one).
    pub fn pending(&self) -> usize {
        self.pending.len() + self.in_flight.as_ref().map_or(0, |f| f.changes.len())
    }

    /// Whether a commit job is with the driver.
    pub fn commit_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The commit job to run now, if one is due: the driver runs it (on
    /// another thread, or inline) and reports with [`TickCore::commit_done`].
    pub fn poll_commit(&mut self) -> Option<CommitJob> {
        let flight = self.in_flight.as_mut().filter(|f| !f.handed_out)?;
        flight.handed_out = true;
        Some(CommitJob {
            id: flight.id,
            changes: flight.changes.clone(),
            recover_first: flight.recover_first,
        })
    }

    /// The next store read the subscriptions need: the driver performs it
    /// (see [`StoreRead::run`](hoard_engine::store::StoreRead::run)) and
    /// hands the reply to [`TickCore::read_done`]. Drivers drain this after
    /// every input, commit result and frame.
    pub fn poll_read(&mut self) -> Option<HubRead> {
        self.hub.poll_read()
    }

    /// The reply to the read named `ticket`: the catch-up deltas it makes
    /// are queued for their sessions.
    pub fn read_done(&mut self, ticket: u64, reply: StoreReply) {
        for fanout in self.hub.read_done(ticket, reply) {
            self.send_fanout(fanout);
        }
    }

    fn send_fanout(&mut self, fanout: super::hub::Fanout) {
        if let Some((proof, to)) = fanout.proof {
            self.send_all(&to, Message::HeadProof(proof));
        }
        self.send_all(&fanout.to, Message::Delta(fanout.delta));
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
            TickInput::Subscribe {
                id,
                zone,
                shards,
                proofs,
            } => {
                if !self.sessions.contains_key(&id) {
                    return;
                }
                // Catch-ups, if it fell behind, come from the reads this asks for.
                self.hub.subscribe(id, &zone, &shards, proofs);
                // What the zone's other sessions hold, so that the next
                // patch applies here too; the latest follows with the
                // zone's next send.
                let payload = match self.sent_transient.get(&zone) {
                    Some(sent) => Some(sent.payload.clone()),
                    None => self.last_transient.get(&zone).cloned(),
                };
                if let Some(payload) = payload {
                    self.send(id, Message::Transient(Transient { zone, payload }));
                }
            }
            TickInput::Unsubscribe { id, zone } => self.hub.unsubscribe(id, &zone),
            TickInput::Joined { id, perspective, .. } => {
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
                self.deferred.retain(|d| d.session != id);
                if let Some(f) = &mut self.in_flight {
                    f.intents.retain(|(s, _)| *s != id);
                }
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
            TickInput::Intent { id, seq, intent, .. } => {
                if !self.sessions.contains_key(&id) {
                    return;
                }
                // While commits fail the world is read-only: an action that
                // reached the core before the driver knew is refused here.
                let refusal = if !self.writable() {
                    Some("the server cannot save the world right now; actions are paused")
                } else if self.unconfirmed() >= MAX_UNCONFIRMED_INTENTS {
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
                let mut intent = intent;
                intent.id = IntentId { session: id, seq };
                world.resource_mut::<IncomingIntents>().0.push(intent);
                self.unconfirmed.push((id, seq));
            }
        }
    }

    /// After the game's systems ran at `now` (seconds on the driver's
    /// clock; `clock`, the same moment as the driver's `Instant`, bounds the
    /// time spent diffing transient states): intents cleared, each zone's transient state sent where it
    /// changed, the frame's changes gathered and, unless a commit is in
    /// flight, made into the next commit job ([`TickCore::poll_commit`]);
    /// they are published once it is durable. An error is a failure the
    /// server cannot recover from (its store stayed broken for the retry
    /// budget): the driver stops.
    pub fn after_frame(
        &mut self,
        now: f64,
        clock: std::time::Instant,
        world: &mut World,
        publisher: &mut Publisher,
        transients: Vec<(ZoneId, Vec<u8>)>,
    ) -> Result<(), String> {
        world.resource_mut::<IncomingIntents>().0.clear();
        self.settle_intents(world);
        self.take_messages(world);
        for (zone, payload) in transients {
            if payload.len() > MAX_TRANSIENT_BYTES {
                tracing::warn!(%zone, bytes = payload.len(), "transient state over the limit; not sent");
                continue;
            }
            self.last_transient.insert(zone, payload);
        }
        self.send_transients(now, clock);
        let gathered = publisher.gather(world);
        self.commit_frame(now, gathered.changes)
    }

    /// Sends each zone's latest transient state to its sessions where it
    /// differs from what they were last sent and the zone's interval has
    /// passed (a state held back goes out at a later frame).
    fn send_transients(&mut self, now: f64, clock: std::time::Instant) {
        let due: Vec<ZoneId> = self
            .last_transient
            .iter()
            .filter(|(zone, latest)| match self.sent_transient.get(*zone) {
                None => true,
                Some(sent) => sent.payload != **latest && now - sent.at >= self.transient_interval,
            })
            .map(|(zone, _)| zone.clone())
            .collect();
        for zone in due {
            let Some(payload) = self.last_transient.get(&zone).cloned() else {
                continue;
            };
            // A patch of what every session in the zone was last sent,
            // unless it is not worth it or a whole one is due.
            let patch = self
                .sent_transient
                .get(&zone)
                .filter(|sent| sent.patches + 1 < crate::transient::WHOLE_EVERY)
                .and_then(|sent| {
                    let ops = crate::transient::diff(&sent.payload, &payload, clock + crate::transient::DIFF_DEADLINE)?;
                    Some((
                        crate::transient::base_tag(&sent.payload).to_vec(),
                        ops,
                        sent.patches + 1,
                    ))
                });
            let (message, patches) = match patch {
                Some((base, ops, patches)) => (
                    Message::TransientPatch(TransientPatch {
                        zone: zone.clone(),
                        base,
                        ops,
                    }),
                    patches,
                ),
                None => (
                    Message::Transient(Transient {
                        zone: zone.clone(),
                        payload: payload.clone(),
                    }),
                    0,
                ),
            };
            self.send_all(&self.hub.sessions_in(&zone), message);
            self.sent_transient.insert(
                zone,
                SentTransient {
                    payload,
                    at: now,
                    patches,
                },
            );
        }
    }

    /// The commit step of a frame whose changes were gathered elsewhere:
    /// `changes` join what is pending, and a commit job is made of it
    /// unless one is in flight ([`TickCore::after_frame`] calls this after
    /// its gather).
    pub fn commit_frame(&mut self, now: f64, changes: ChangeSet) -> Result<(), String> {
        self.pending.extend(changes);
        self.counters.ticks += 1;
        self.start_commit(now)
    }

    /// A clean stop: everything not yet durable, with the job in flight if
    /// the driver could not wait for it, for one last commit by the driver
    /// (`None` when nothing is pending). Nothing of it is published.
    pub fn finish(&mut self) -> Option<ChangeSet> {
        if let Some(flight) = self.in_flight.take() {
            self.merge_back(flight);
        }
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    /// Puts a job that did not commit back under what was gathered since:
    /// the newer changes win, and its intents wait again, first.
    fn merge_back(&mut self, flight: InFlight) {
        let mut changes = Arc::try_unwrap(flight.changes).unwrap_or_else(|shared| (*shared).clone());
        changes.extend(std::mem::take(&mut self.pending));
        self.pending = changes;
        let mut intents = flight.intents;
        intents.append(&mut self.unconfirmed);
        self.unconfirmed = intents;
        let mut messages = flight.messages;
        messages.append(&mut self.unsent);
        self.unsent = messages;
    }

    /// Tells each session which of these intents are processed and durable.
    fn confirm(&mut self, intents: Vec<(SessionId, u32)>) {
        let mut by_session: BTreeMap<SessionId, Vec<u32>> = BTreeMap::new();
        for (id, seq) in intents {
            by_session.entry(id).or_default().push(seq);
        }
        for (id, seqs) in by_session {
            self.send(id, Message::Processed(Processed { seqs }));
        }
    }

    /// Makes a commit job of everything pending, unless one is in flight
    /// or a failed commit's backoff has not run out.
    fn start_commit(&mut self, now: f64) -> Result<(), String> {
        if self.in_flight.is_some() {
            return Ok(());
        }
        if self.pending.is_empty() {
            // Nothing to make durable and nothing before it in flight: these
            // frames' intents are done.
            let intents = std::mem::take(&mut self.unconfirmed);
            self.confirm(intents);
            let messages = std::mem::take(&mut self.unsent);
            self.send_messages(messages);
            return Ok(());
        }
        if let Some(f) = &self.failing {
            if now < f.retry_at {
                return Ok(());
            }
            if now - f.since > self.retry_for_secs {
                return Err(format!(
                    "the world store has failed for {:.0} s ({}); {} changed objects were never confirmed saved \
                     (a failed write or fsync may have left them on disk or not; no player was told they were)",
                    now - f.since,
                    f.error,
                    self.pending.len()
                ));
            }
        }
        let id = self.next_job;
        self.next_job += 1;
        self.in_flight = Some(InFlight {
            id,
            changes: Arc::new(std::mem::take(&mut self.pending)),
            intents: std::mem::take(&mut self.unconfirmed),
            messages: std::mem::take(&mut self.unsent),
            recover_first: self.failing.is_some(),
            handed_out: false,
        });
        Ok(())
    }

    /// The driver ran commit job `id` at `now`: on success its changes are
    /// published and its intents confirmed, and the frames gathered since
    /// become the next job; on failure they are kept, actions pause, and
    /// the commit is retried after a backoff. An error is a failure the
    /// server cannot recover from: the driver stops.
    pub fn commit_done(&mut self, now: f64, id: u64, result: Result<CommitReceipt, CommitError>) -> Result<(), String> {
        let Some(flight) = self.in_flight.take_if(|f| f.id == id) else {
            tracing::warn!(job = id, "a commit result for no job in flight; ignored");
            return Ok(());
        };
        match result {
            // Durable before published: no client may hold state a crash could take back.
            Ok(receipt) => {
                self.counters.committed_objects += flight.changes.len() as u64;
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
                for fanout in self.hub.publish(&flight.changes, &receipt) {
                    self.send_fanout(fanout);
                }
                // After the deltas, on the same stream: a client that sees
                // `Processed` has seen what its intents changed.
                self.confirm(flight.intents);
                self.send_messages(flight.messages);
                self.start_commit(now)
            }
            Err(CommitError::Fenced { lease, owner }) => {
                // Another server has taken the zone over: nothing of this
                // server's may land in it any more, and retrying cannot
                // help. Fail-stop: nothing of the refused group was durable
                // or published, its intents were never confirmed, and the
                // new owner serves the zone from the store.
                Err(format!(
                    "this server ({owner}) no longer holds the lease on {lease}: another server has taken it over"
                ))
            }
            Err(CommitError::UnknownShard(shard)) => {
                // A game bug (an object placed in a shard no zone has): the
                // rest of the group must not suffer for it. Those objects'
                // changes are dropped everywhere, so one moved there stays
                // where the store has it, exactly once; the rest is
                // committed again at once.
                self.merge_back(flight);
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
                self.start_commit(now)
            }
            Err(e) => {
                self.merge_back(flight);
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

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_engine::PublishRegistry;

    fn zone() -> ZoneId {
        ZoneId::new("meadow").expect("zone")
    }

    /// A core of a world with one zone of one shard, sending its
    /// transient state at most once per `interval` seconds, with its world
    /// and publisher.
    fn core_with_zone(interval: f64) -> (TickCore, World, Publisher) {
        let core = TickCore::new(60.0).with_transient_interval(interval);
        let mut world = World::new();
        core.prepare(&mut world);
        (core, world, Publisher::new(PublishRegistry::builder().build()))
    }

    /// Registers session `id` and subscribes it to the zone.
    fn subscribe(core: &mut TickCore, id: SessionId) {
        let mut world = World::new();
        core.prepare(&mut world);
        core.handle(&mut world, TickInput::Register { id });
        core.handle(
            &mut world,
            TickInput::Subscribe {
                id,
                zone: zone(),
                shards: vec![(ShardId(0), Seq::ZERO)],
                proofs: false,
            },
        );
    }

    /// The transient payloads each session was sent, in order, patches
    /// applied as a client applies them (to what that session last got).
    fn transients(core: &mut TickCore) -> Vec<(SessionId, Vec<u8>)> {
        let mut held = HashMap::new();
        transients_held(core, &mut held)
            .into_iter()
            .map(|(to, p, _)| (to, p))
            .collect()
    }

    /// [`transients`] with each session's held payload kept in `held`, and
    /// whether each came whole.
    fn transients_held(core: &mut TickCore, held: &mut HashMap<SessionId, Vec<u8>>) -> Vec<(SessionId, Vec<u8>, bool)> {
        let mut out = Vec::new();
        while let Some(TickOutput { to, message }) = core.poll_output() {
            let (payload, whole) = match &*message {
                Message::Transient(t) => (t.payload.clone(), true),
                Message::TransientPatch(p) => {
                    let base = held.get(&to).expect("a patch only follows a whole state");
                    assert_eq!(
                        p.base,
                        crate::transient::base_tag(base).to_vec(),
                        "the patch names its base"
                    );
                    (crate::transient::apply(base, &p.ops).expect("applies"), false)
                }
                _ => continue,
            };
            held.insert(to, payload.clone());
            out.push((to, payload, whole));
        }
        out
    }

    #[test]
    fn a_zones_transient_state_goes_out_at_most_once_an_interval_and_the_latest_always_does() {
        let (mut core, mut world, mut publisher) = core_with_zone(0.5);
        let mut frame = |core: &mut TickCore, now: f64, payload: &[u8]| {
            core.after_frame(
                now,
                std::time::Instant::now(),
                &mut world,
                &mut publisher,
                vec![(zone(), payload.to_vec())],
            )
            .expect("frame");
            transients(core)
        };
        let join = |core: &mut TickCore, id: SessionId| {
            subscribe(core, id);
            transients(core)
        };
        assert!(join(&mut core, 1).is_empty(), "no state yet");
        assert_eq!(frame(&mut core, 0.0, b"a"), vec![(1, b"a".to_vec())]);
        // Changes within the interval are held back...
        assert!(frame(&mut core, 0.1, b"b").is_empty());
        assert!(frame(&mut core, 0.2, b"c").is_empty());
        // ...and a session that subscribes meanwhile gets, at once, what the
        // zone's other sessions hold (the base of the next patch).
        assert_eq!(join(&mut core, 2), vec![(2, b"a".to_vec())]);
        // Once the interval has passed, the latest goes to the zone's sessions
        // (even if no frame changed it since).
        assert_eq!(
            frame(&mut core, 0.6, b"c"),
            vec![(1, b"c".to_vec()), (2, b"c".to_vec())]
        );
        // An unchanged state is not sent again.
        assert!(frame(&mut core, 1.2, b"c").is_empty());
        assert_eq!(
            frame(&mut core, 1.3, b"d").len(),
            2,
            "the interval since the last send has passed"
        );
    }

    #[test]
    fn a_changed_state_goes_as_a_patch_of_the_last_sent_and_whole_every_so_often() {
        let (mut core, mut world, mut publisher) = core_with_zone(0.0);
        let mut held = HashMap::new();
        // A long state of which one byte changes each frame.
        let state = |n: u32| -> Vec<u8> {
            let mut s: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
            s[(n as usize * 37) % 2000] = 0xff;
            s
        };
        let mut frame = |core: &mut TickCore, n: u32, held: &mut HashMap<SessionId, Vec<u8>>| {
            core.after_frame(
                f64::from(n),
                std::time::Instant::now(),
                &mut world,
                &mut publisher,
                vec![(zone(), state(n))],
            )
            .expect("frame");
            transients_held(core, held)
        };
        let join = |core: &mut TickCore, id: SessionId, held: &mut HashMap<SessionId, Vec<u8>>| {
            subscribe(core, id);
            transients_held(core, held)
        };
        join(&mut core, 1, &mut held);
        assert_eq!(frame(&mut core, 0, &mut held), vec![(1, state(0), true)]);
        assert_eq!(frame(&mut core, 1, &mut held), vec![(1, state(1), false)], "a patch");
        // A session joining between sends gets the last sent whole; the next
        // patch applies for both.
        assert_eq!(join(&mut core, 2, &mut held), vec![(2, state(1), true)]);
        assert_eq!(
            frame(&mut core, 2, &mut held),
            vec![(1, state(2), false), (2, state(2), false)]
        );
        let mut kinds = Vec::new();
        for n in 3..3 + crate::transient::WHOLE_EVERY {
            let sent = frame(&mut core, n, &mut held);
            assert!(sent.iter().all(|(_, payload, _)| *payload == state(n)));
            kinds.push(sent[0].2);
        }
        assert_eq!(
            kinds.iter().filter(|whole| **whole).count(),
            1,
            "one send in {} is whole",
            crate::transient::WHOLE_EVERY
        );
    }
}
