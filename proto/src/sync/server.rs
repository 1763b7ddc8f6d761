//! The server side of a connection as a sans-IO state machine: hello and
//! auth, zone entry answered shard by shard, repairs, subscriptions and
//! intents. Messages and the current time go in through
//! [`ServerSession::handle`]; what to send and do comes out of
//! [`ServerSession::poll_output`]. No sockets, clocks, threads or store
//! inside: a store read leaves as [`Output::Read`] and its reply comes back
//! through [`ServerSession::read_done`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use hoard_engine::store::{ReadError, StoreRead, StoreReply};
use hoard_engine::{RegistryHash, Seq, ServerIdentity, ShardId, ZoneId};

use super::answer::{AnswerPlan, Held};
use crate::auth::TokenAuthority;
use crate::intent_sig::IntentChecker;
use crate::intents::IntentRegistry;
use crate::proof::ProofSource;
use crate::wire::{
    EnterZone, ErrorCode, ErrorMsg, IntentNonce, IntentRejected, MAX_INTENT_BYTES, MAX_REPAIR_OBJECTS,
    MAX_SHARDS_PER_ENTRY, Message, PROTOCOL_VERSION, Repair, ShardHave, Welcome, ZoneDenied, ZoneElsewhere,
};

/// Messages a session holds while a store read is out (a driver that
/// performs each read before handing over the next message never fills
/// it; one that does not is bounded here).
const MAX_BACKLOG: usize = 64;

/// Which zones a perspective may enter.
pub trait AccessPolicy: Send + Sync {
    /// Whether `perspective` may read `zone`.
    fn may_enter(&self, perspective: &str, zone: &ZoneId) -> bool;
}

/// Every perspective may enter every zone (perspective-scoped shards are
/// still only shown to their owner).
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenWorld;

impl AccessPolicy for OpenWorld {
    fn may_enter(&self, _: &str, _: &ZoneId) -> bool {
        true
    }
}

/// Where a zone is served, for a world whose zones are spread over several
/// servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZoneLocation {
    /// By this server.
    Here,
    /// By the server at this address (`host:port`): the client is sent there.
    Elsewhere(String),
    /// By no server right now (its owner died and no other has taken it
    /// over yet): the entry is refused as unavailable, to be retried.
    Nowhere,
}

/// Which server serves each zone.
pub trait ZoneDirectory: Send + Sync + std::fmt::Debug {
    /// Where `zone` is served.
    fn locate(&self, zone: &ZoneId) -> ZoneLocation;
}

/// A world on one server: every zone is here.
#[derive(Debug, Default, Clone, Copy)]
pub struct OneServer;

impl ZoneDirectory for OneServer {
    fn locate(&self, _: &ZoneId) -> ZoneLocation {
        ZoneLocation::Here
    }
}

/// The live session of each perspective, kept by the driver from its
/// sessions' [`Output::SignedIn`] and [`Output::SignedOut`]: a newer
/// session of the same perspective takes over, and the older one is closed.
/// Bounded by the sessions signed in.
#[derive(Debug, Default)]
pub struct LiveSessions(HashMap<String, u64>);

impl LiveSessions {
    /// `session` signed in as `perspective`; returns the session it takes
    /// over from, which the driver closes.
    pub fn sign_in(&mut self, perspective: &str, session: u64) -> Option<u64> {
        let previous = self.0.insert(perspective.to_owned(), session).filter(|s| *s != session);
        if previous.is_some() {
            // The same player signing in again (a restarted client, or a
            // stolen token): the newest connection wins, the old one is told why.
            tracing::info!(%perspective, "signed in again; closing the previous connection");
        }
        previous
    }

    /// `session` no longer acts as `perspective`: freed, unless a newer
    /// session has taken it over.
    pub fn sign_out(&mut self, perspective: &str, session: u64) {
        if self.0.get(perspective) == Some(&session) {
            self.0.remove(perspective);
        }
    }

    /// The live session of `perspective`.
    pub fn session(&self, perspective: &str) -> Option<u64> {
        self.0.get(perspective).copied()
    }
}

/// What every session of a server shares.
pub struct SessionConfig {
    /// The server identity sent in `Welcome`.
    pub server: ServerIdentity,
    /// The service served.
    pub service: String,
    /// The component registry clients must match.
    pub registry: RegistryHash,
    /// Checks tokens.
    pub auth: TokenAuthority,
    /// Decides zone access.
    pub access: Arc<dyn AccessPolicy>,
    /// Which server serves each zone.
    pub directory: Arc<dyn ZoneDirectory>,
    /// Ticks per second.
    pub tick_hz: u32,
    /// Control messages allowed per second (sustained), per connection.
    pub messages_per_sec: f64,
    /// Intents allowed per second (sustained), per connection.
    pub intents_per_sec: f64,
    /// The world's public key (SubjectPublicKeyInfo DER), sent in `Welcome`.
    pub world_key: Vec<u8>,
    /// Signed heads for entries that ask for them (`EnterZone.proofs`).
    pub proofs: Option<Arc<dyn ProofSource>>,
    /// Every answer and delta carries signed heads, asked for or not (a
    /// relay: its clients cannot trust it without them).
    pub always_prove: bool,
    /// The world's token keys signed by the world's key, sent in `Welcome`
    /// to a client that asks (`Hello.token_keys`: a relay).
    pub token_keys: Option<crate::wire::SignedTokenKeys>,
    /// Whether sessions check their players' signed intents themselves (an
    /// origin) or pass them on with their signatures (a relay, which sends
    /// its upstream session's nonce down instead of its own).
    pub checks_intents: bool,
    /// The intents the game takes (a name and a payload that decodes);
    /// others are rejected. A relay's sessions pass every intent on
    /// ([`IntentRegistry::any`], the default).
    pub intents: IntentRegistry,
    /// The key each session's intent nonce is derived under (BLAKE3 keyed,
    /// of the session id): drawn at random for each server start (hoard-net
    /// does), so no two sessions of any run share a nonce.
    pub intent_nonce_key: [u8; 32],
}

impl SessionConfig {
    /// A configuration with default limits.
    pub fn new(server: ServerIdentity, service: &str, registry: RegistryHash, auth: TokenAuthority) -> SessionConfig {
        SessionConfig {
            server,
            service: service.to_owned(),
            registry,
            auth,
            access: Arc::new(OpenWorld),
            directory: Arc::new(OneServer),
            tick_hz: 20,
            messages_per_sec: 50.0,
            intents_per_sec: 30.0,
            world_key: Vec::new(),
            proofs: None,
            always_prove: false,
            token_keys: None,
            checks_intents: true,
            intents: IntentRegistry::any(),
            intent_nonce_key: [0; 32],
        }
    }
}

/// What the driver must do for the session.
#[derive(Debug)]
// Deliberately exhaustive: a driver must handle every effect, and a new
// one must fail its build rather than be ignored.
pub enum Output {
    /// Send on the control stream.
    Control(Message),
    /// Perform this store read (see [`StoreRead::run`]) and hand its reply
    /// to [`ServerSession::read_done`]. Messages handed over meanwhile wait
    /// for it, in order.
    Read(StoreRead),
    /// Open an answer stream and send the plan's messages on it, in order,
    /// building each as its turn comes; once done, start the live deltas
    /// the connection's [`Subscriptions`](crate::sync::answer::Subscriptions)
    /// say (the zone still wanted by this answer).
    Answer {
        /// The answer, built as it is sent.
        plan: AnswerPlan,
    },
    /// Stop live deltas of a zone (and tell the connection's
    /// [`Subscriptions`](crate::sync::answer::Subscriptions) it was left).
    Unsubscribe {
        /// The zone.
        zone: ZoneId,
    },
    /// A game intent for the game's systems: within the session's limits,
    /// its check passed, one the game takes, the world writable.
    Intent {
        /// The sender.
        perspective: String,
        /// The registered intent name.
        kind: String,
        /// Its MessagePack payload.
        payload: Vec<u8>,
        /// The client's seq for it.
        seq: u32,
        /// The player's signature, passed on (a relay's sessions, which do
        /// not check intents themselves); empty where checked or unsigned.
        signature: Vec<u8>,
    },
    /// The session is signed in as `perspective` (its handshake complete):
    /// the driver records it in its [`LiveSessions`], and closes the
    /// session it takes over from, if any (the same player signing in
    /// again: the newest connection wins).
    SignedIn {
        /// Who.
        perspective: String,
    },
    /// Prepare the game for `perspective` (the driver's join hook: an
    /// inventory created, say, which may touch the store) and report how
    /// it went with [`ServerSession::prepared`]. Comes once, right after
    /// `Hello` is accepted, before the session's other outputs.
    Prepare {
        /// Who.
        perspective: String,
    },
    /// The player is connected, for the game: prepared, and the
    /// connection's handshake complete (a replayed early `Hello` never
    /// gets here). Comes once, before any of the session's intents.
    Joined {
        /// Who.
        perspective: String,
        /// The token, when it binds the player's key (a relay opens the
        /// player's session upstream with it).
        bound_token: Option<String>,
    },
    /// The session no longer acts as `perspective` (it failed or its
    /// connection closed): the driver takes it out of its [`LiveSessions`].
    SignedOut {
        /// Who.
        perspective: String,
    },
    /// Close the connection with this code and reason (after sending `Error`).
    Close {
        /// Why.
        code: ErrorCode,
        /// A sentence.
        reason: String,
    },
}

/// A token bucket: `rate` per second, bursts up to `burst`.
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    burst: f64,
    level: f64,
    at: f64,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            burst: rate * 2.0,
            level: rate * 2.0,
            at: 0.0,
        }
    }

    fn take(&mut self, now: f64) -> bool {
        self.level = (self.level + (now - self.at).max(0.0) * self.rate).min(self.burst);
        self.at = now;
        if self.level >= 1.0 {
            self.level -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A session's intent nonce: the first 16 bytes of BLAKE3 keyed with the
/// server's nonce key, of the session id (u64 LE).
fn intent_nonce(key: &[u8; 32], session: u64) -> [u8; 16] {
    let hash = blake3::keyed_hash(key, &session.to_le_bytes());
    let mut nonce = [0; 16];
    nonce.copy_from_slice(&hash.as_bytes()[..16]);
    nonce
}

/// What a session waits for a store read to go on with.
enum Pending {
    /// The zones, for `Welcome`.
    Welcome,
    /// The readable shards of the zone entered.
    Enter(EnterZone),
    /// The readable shards of the zone of a repair.
    Repair(Repair),
}

/// Where the session is in showing its player to the game.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Join {
    /// No `Hello` accepted yet.
    Waiting,
    /// [`Output::Prepare`] is out.
    Preparing,
    /// Prepared; announced once the handshake completes.
    Prepared,
    /// [`Output::Joined`] is out.
    Announced,
}

enum State {
    AwaitHello,
    Ready { perspective: String },
    Closed,
}

/// One connection's server-side session.
pub struct ServerSession {
    id: u64,
    config: Arc<SessionConfig>,
    state: State,
    out: VecDeque<Output>,
    messages: Bucket,
    intents: Bucket,
    subscribed: BTreeSet<ZoneId>,
    /// Zones entered with signed heads: their repairs get them too.
    proven: BTreeSet<ZoneId>,
    /// The connection's TLS handshake is not complete: what arrives may be
    /// 0-RTT early data, which anyone who saw it can replay (see
    /// [`ServerSession::early`]).
    early: bool,
    /// `Hello` came in early data: the perspective takes over from its live
    /// session only once the handshake completes.
    takeover_pending: bool,
    /// The store read out, and what its reply is for.
    pending: Option<Pending>,
    /// Messages that came while a read was out, with their times.
    backlog: VecDeque<(f64, i64, Message)>,
    /// The codec this session's answers and deltas may be packed in: the
    /// first of the client's `Hello.codecs` this build writes.
    codec: Option<u8>,
    /// Whether `Hello` asked for the world's token keys.
    wants_token_keys: bool,
    /// The check of the player's signed intents (the token binds a key, and
    /// this server checks intents).
    intent_check: Option<IntentChecker>,
    /// The token, when it binds the player's key (a relay opens the player's
    /// session upstream with it).
    bound_token: Option<String>,
    /// Whether the world can save what intents do now (its store is
    /// writable); the driver says ([`ServerSession::set_writable`]).
    writable: bool,
    /// Where the player's join is.
    join: Join,
}

impl ServerSession {
    /// A session, with an id unique on this server, waiting for `Hello`.
    pub fn new(config: Arc<SessionConfig>, id: u64) -> ServerSession {
        let messages = Bucket::new(config.messages_per_sec);
        let intents = Bucket::new(config.intents_per_sec);
        ServerSession {
            id,
            config,
            state: State::AwaitHello,
            out: VecDeque::new(),
            messages,
            intents,
            subscribed: BTreeSet::new(),
            proven: BTreeSet::new(),
            early: false,
            takeover_pending: false,
            pending: None,
            backlog: VecDeque::new(),
            codec: None,
            wants_token_keys: false,
            intent_check: None,
            bound_token: None,
            writable: true,
            join: Join::Waiting,
        }
    }

    /// The session's token if it binds the player's intent key (a relay
    /// opens the player's own session upstream with it).
    pub fn bound_token(&self) -> Option<&str> {
        self.bound_token.as_deref()
    }

    /// A session on a connection whose TLS handshake is not complete yet,
    /// so what it reads may be 0-RTT early data, which an attacker who
    /// captured it can replay (though never decrypt the answers to). Until
    /// [`ServerSession::handshake_complete`]: `Hello` is checked and
    /// answered and zones may be entered (pure reads), but the perspective
    /// does not take over from its live session — a replayed `Hello` cannot
    /// sign the real player out — and an intent is a protocol error (a
    /// driver holds intents until the handshake completes, and a client
    /// never sends one earlier).
    pub fn early(config: Arc<SessionConfig>, id: u64) -> ServerSession {
        let mut session = ServerSession::new(config, id);
        session.early = true;
        session
    }

    /// The connection's handshake completed: the session is no longer
    /// early, and a perspective that said `Hello` in early data now takes
    /// over from its live session (which is told to close).
    pub fn handshake_complete(&mut self) {
        if !self.early {
            return;
        }
        self.early = false;
        if std::mem::take(&mut self.takeover_pending)
            && let State::Ready { perspective } = &self.state
        {
            let perspective = perspective.clone();
            self.take_over(&perspective);
        }
        self.announce();
    }

    /// How the driver's preparation for the player ([`Output::Prepare`])
    /// went: prepared, the player is announced ([`Output::Joined`]) once the
    /// handshake is complete; not, the session is refused with the reason.
    pub fn prepared(&mut self, result: Result<(), String>) {
        if self.is_closed() || self.join != Join::Preparing {
            return;
        }
        match result {
            Ok(()) => {
                self.join = Join::Prepared;
                self.announce();
            }
            Err(reason) => {
                tracing::error!(perspective = self.perspective().unwrap_or("-"), %reason, "session not prepared; refusing it");
                self.fail(
                    ErrorCode::Unavailable,
                    format!("the server could not prepare your session: {reason}"),
                );
            }
        }
    }

    /// Shows the player to the game, once prepared and not early.
    fn announce(&mut self) {
        if self.join != Join::Prepared || self.early {
            return;
        }
        if let State::Ready { perspective } = &self.state {
            self.join = Join::Announced;
            self.out.push_back(Output::Joined {
                perspective: perspective.clone(),
                bound_token: self.bound_token.clone(),
            });
        }
    }

    /// The id the driver gave the session.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the session still waits for its connection's handshake.
    pub fn is_early(&self) -> bool {
        self.early
    }

    /// Makes this session the live one of `perspective` (the driver's
    /// [`LiveSessions`] closes the previous one).
    fn take_over(&mut self, perspective: &str) {
        self.out.push_back(Output::SignedIn {
            perspective: perspective.to_owned(),
        });
    }

    /// The authenticated perspective, once the handshake is done.
    pub fn perspective(&self) -> Option<&str> {
        match &self.state {
            State::Ready { perspective } => Some(perspective),
            _ => None,
        }
    }

    /// Whether the world can save what intents do now: while it cannot (its
    /// store is failing) intents are rejected as unavailable, each with
    /// the reason, rather than taken and lost.
    pub fn set_writable(&mut self, writable: bool) {
        self.writable = writable;
    }

    /// The codec to pack this session's answer and delta frames in
    /// ([`crate::wire::Packer`]), once `Hello` named one this build
    /// writes; `None`: send every frame as it is.
    pub fn codec(&self) -> Option<u8> {
        self.codec
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Fails the session: an `Error` to the client, then close.
    pub fn fail(&mut self, code: ErrorCode, reason: impl Into<String>) {
        if self.is_closed() {
            return;
        }
        let reason = reason.into();
        tracing::info!(perspective = self.perspective().unwrap_or("-"), ?code, %reason, "closing session");
        self.out.push_back(Output::Control(Message::Error(ErrorMsg {
            code: code as u16,
            message: reason.clone(),
        })));
        self.out.push_back(Output::Close { code, reason });
        self.release();
        self.state = State::Closed;
    }

    fn release(&mut self) {
        if let State::Ready { perspective } = &self.state
            && !self.early
        {
            self.out.push_back(Output::SignedOut {
                perspective: perspective.clone(),
            });
        }
    }

    /// Ends the session (the connection closed): frees its perspective
    /// (drain [`ServerSession::poll_output`] once more for its
    /// [`Output::SignedOut`]).
    pub fn closed(&mut self) {
        self.release();
        self.state = State::Closed;
    }

    /// Handles one message from the client at `now` (seconds on any monotonic
    /// clock) and `unix_now` (for token expiry). While a store read is out
    /// the message waits for its reply.
    pub fn handle(&mut self, now: f64, unix_now: i64, msg: Message) {
        if self.is_closed() {
            return;
        }
        if self.pending.is_some() {
            if self.backlog.len() >= MAX_BACKLOG {
                return self.fail(
                    ErrorCode::Limit,
                    format!("over {MAX_BACKLOG} messages while the server reads its store"),
                );
            }
            self.backlog.push_back((now, unix_now, msg));
            return;
        }
        self.process(now, unix_now, msg);
    }

    /// Whether a store read is out (an [`Output::Read`] not yet answered).
    pub fn is_reading(&self) -> bool {
        self.pending.is_some()
    }

    /// The reply to the session's [`Output::Read`]; then the messages that
    /// waited for it are handled, until one reads the store again.
    pub fn read_done(&mut self, reply: StoreReply) {
        if self.is_closed() {
            return;
        }
        let Some(pending) = self.pending.take() else {
            return self.fail(ErrorCode::Server, "a store reply came for no read");
        };
        match pending {
            Pending::Welcome => self.welcome(reply.into_zones()),
            Pending::Enter(enter) => match readable(&enter.zone, reply.into_shards()) {
                Ok(shards) => self.answer_entry(enter, shards),
                Err((code, message)) => self.deny(enter.request, enter.zone, code, message),
            },
            Pending::Repair(repair) => match readable(&repair.zone, reply.into_shards()) {
                Ok(shards) => self.answer_repair(repair, &shards),
                Err((code, message)) => self.deny(repair.request, repair.zone, code, message),
            },
        }
        while self.pending.is_none() && !self.is_closed() {
            let Some((now, unix_now, msg)) = self.backlog.pop_front() else {
                break;
            };
            self.process(now, unix_now, msg);
        }
    }

    fn read(&mut self, read: StoreRead, pending: Pending) {
        self.pending = Some(pending);
        self.out.push_back(Output::Read(read));
    }

    fn process(&mut self, now: f64, unix_now: i64, msg: Message) {
        if !self.messages.take(now) {
            return self.fail(ErrorCode::RateLimited, "too many messages; slow down");
        }
        match (&self.state, msg) {
            (State::AwaitHello, Message::Hello(hello)) => self.hello(unix_now, hello),
            (State::AwaitHello, other) => self.fail(
                ErrorCode::Protocol,
                format!("expected hello, got message type 0x{:02x}", other.kind()),
            ),
            (State::Ready { .. }, Message::EnterZone(enter)) => self.enter(enter),
            (State::Ready { .. }, Message::LeaveZone(leave)) => {
                if self.subscribed.remove(&leave.zone) {
                    self.out.push_back(Output::Unsubscribe { zone: leave.zone });
                }
            }
            (State::Ready { .. }, Message::Repair(repair)) => self.repair(repair),
            (State::Ready { .. }, Message::Intent(_)) if self.early => self.fail(
                ErrorCode::Protocol,
                "an intent before the handshake completed (early data may be replayed)",
            ),
            (State::Ready { perspective }, Message::Intent(intent)) => {
                let perspective = perspective.clone();
                if let Some(check) = &mut self.intent_check
                    && let Err(e) = check.check(intent.seq, &intent.kind, &intent.payload, &intent.signature)
                {
                    tracing::warn!(%perspective, error = %e, "a signed intent failed its check; ending the session");
                    return self.fail(ErrorCode::BadIntent, e.to_string());
                }
                let signature = if self.config.checks_intents {
                    Vec::new()
                } else {
                    intent.signature
                };
                let rejection = if intent.payload.len() > MAX_INTENT_BYTES {
                    Some((
                        ErrorCode::Limit,
                        format!("intent of {} bytes is over {MAX_INTENT_BYTES}", intent.payload.len()),
                    ))
                } else if !self.intents.take(now) {
                    Some((ErrorCode::RateLimited, "too many intents; slow down".to_owned()))
                } else if !self.writable {
                    Some((
                        ErrorCode::Unavailable,
                        "the server cannot save the world right now; your action was not applied".to_owned(),
                    ))
                } else if !self.config.intents.accepts(&intent.kind, &intent.payload) {
                    Some((
                        ErrorCode::Protocol,
                        format!("unknown intent {:?} or payload that does not decode", intent.kind),
                    ))
                } else {
                    None
                };
                match rejection {
                    Some((code, message)) => {
                        self.out
                            .push_back(Output::Control(Message::IntentRejected(IntentRejected {
                                seq: intent.seq,
                                code: code as u16,
                                message,
                            })))
                    }
                    None => self.out.push_back(Output::Intent {
                        perspective,
                        kind: intent.kind,
                        payload: intent.payload,
                        seq: intent.seq,
                        signature,
                    }),
                }
            }
            (State::Ready { .. }, other) => self.fail(
                ErrorCode::Protocol,
                format!(
                    "message type 0x{:02x} is not one a client sends after hello",
                    other.kind()
                ),
            ),
            (State::Closed, _) => {}
        }
    }

    fn hello(&mut self, unix_now: i64, hello: crate::wire::Hello) {
        if hello.protocol != PROTOCOL_VERSION {
            return self.fail(
                ErrorCode::Version,
                format!(
                    "client speaks protocol {}, this server {PROTOCOL_VERSION}; update the client",
                    hello.protocol
                ),
            );
        }
        if hello.registry != self.config.registry.0 {
            return self.fail(
                ErrorCode::Registry,
                format!(
                    "the client's component registry {} differs from the server's {}; update the client",
                    hoard_engine::RegistryHash(hello.registry),
                    self.config.registry
                ),
            );
        }
        if hello.service != self.config.service {
            return self.fail(
                ErrorCode::UnknownService,
                format!("no service {:?} here", hello.service),
            );
        }
        let verified = match self.config.auth.check(&hello.token, unix_now) {
            Ok(v) => v,
            Err(e) => {
                return match e.expired_at() {
                    Some(expiry) => self.fail(ErrorCode::Expired, format!("token expired at {expiry}; get a new one")),
                    None => self.fail(ErrorCode::BadToken, e.to_string()),
                };
            }
        };
        let perspective = verified.player;
        if let Some(key) = verified.player_key {
            self.bound_token = Some(hello.token.clone());
            if self.config.checks_intents {
                let nonce = intent_nonce(&self.config.intent_nonce_key, self.id);
                self.intent_check = Some(IntentChecker::new(self.config.server, &perspective, key, nonce));
            }
        }
        self.wants_token_keys = hello.token_keys;
        if self.early {
            self.takeover_pending = true;
        } else {
            self.take_over(&perspective);
        }
        self.codec = crate::wire::Packer::choose(&hello.codecs);
        // Signed in from here (a failed read signs out again); prepared
        // by the driver first, welcomed once the zones are read.
        self.out.push_back(Output::Prepare {
            perspective: perspective.clone(),
        });
        self.join = Join::Preparing;
        self.state = State::Ready { perspective };
        self.read(StoreRead::Zones, Pending::Welcome);
    }

    fn welcome(&mut self, zones: Result<Vec<hoard_engine::ZoneId>, ReadError>) {
        let perspective = self.perspective().unwrap_or_default().to_owned();
        let zones = match zones {
            Ok(z) => z
                .into_iter()
                .filter(|z| self.config.access.may_enter(&perspective, z))
                .collect(),
            Err(e) => return self.fail(ErrorCode::Server, format!("store unavailable: {e}")),
        };
        tracing::info!(%perspective, "session ready");
        self.out.push_back(Output::Control(Message::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            server: self.config.server.0,
            perspective: perspective.clone(),
            zones,
            tick_hz: self.config.tick_hz,
            world_key: self.config.world_key.clone(),
            token_keys: if self.wants_token_keys {
                self.config.token_keys.clone()
            } else {
                None
            },
        })));
        if let Some(check) = &self.intent_check {
            self.out.push_back(Output::Control(Message::IntentNonce(IntentNonce {
                nonce: *check.nonce(),
            })));
        }
    }

    fn deny(&mut self, request: u32, zone: ZoneId, code: ErrorCode, message: String) {
        self.out.push_back(Output::Control(Message::ZoneDenied(ZoneDenied {
            request,
            zone,
            code: code as u16,
            message,
        })));
    }

    /// Asks for the shards of `zone` this session may read, for `pending`
    /// (denied at once when the perspective may not enter the zone).
    fn read_shards(&mut self, request: u32, zone: &ZoneId, pending: Pending) {
        let perspective = self.perspective().unwrap_or_default().to_owned();
        if !self.config.access.may_enter(&perspective, zone) {
            let message = format!("{perspective} may not enter zone {zone}");
            return self.deny(request, zone.clone(), ErrorCode::Forbidden, message);
        }
        // The stores' scope index: a zone of many players' private shards
        // costs this perspective its own, not a look at everyone's.
        let read = StoreRead::ZoneShardsFor {
            zone: zone.clone(),
            perspective,
        };
        self.read(read, pending);
    }

    fn enter(&mut self, enter: EnterZone) {
        let named = enter.have.len() + enter.held.len();
        let span = tracing::debug_span!("zone_entry", zone = %enter.zone, shards = named);
        let _guard = span.enter();
        if named > MAX_SHARDS_PER_ENTRY {
            return self.fail(
                ErrorCode::Limit,
                format!("enter zone names {named} shards, the limit is {MAX_SHARDS_PER_ENTRY}"),
            );
        }
        let perspective = self.perspective().unwrap_or_default().to_owned();
        if self.config.access.may_enter(&perspective, &enter.zone) {
            match self.config.directory.locate(&enter.zone) {
                ZoneLocation::Here => {}
                ZoneLocation::Elsewhere(address) => {
                    tracing::debug!(zone = %enter.zone, %address, "zone served elsewhere");
                    self.out
                        .push_back(Output::Control(Message::ZoneElsewhere(ZoneElsewhere {
                            request: enter.request,
                            zone: enter.zone,
                            address,
                        })));
                    return;
                }
                ZoneLocation::Nowhere => {
                    let message = format!("no server serves zone {} right now; try again shortly", enter.zone);
                    return self.deny(enter.request, enter.zone, ErrorCode::Unavailable, message);
                }
            }
        }
        let (request, zone) = (enter.request, enter.zone.clone());
        self.read_shards(request, &zone, Pending::Enter(enter));
    }

    fn answer_entry(&mut self, enter: EnterZone, shards: Vec<ShardId>) {
        // Copies of shards the client may not read, or that are not in the
        // zone, are ignored: nothing about them is revealed. Each shard's
        // answer is built as it is sent (see `AnswerPlan`).
        let have: BTreeMap<ShardId, ShardHave> = enter.have.into_iter().map(|h| (h.shard, h)).collect();
        let held: BTreeMap<ShardId, Seq> = enter.held.into_iter().collect();
        let held_order: Vec<ShardId> = held.keys().copied().collect();
        let plan: Vec<(ShardId, Held)> = shards
            .into_iter()
            .map(|shard| {
                let held = match (have.get(&shard), held.get(&shard)) {
                    (Some(h), _) => Held::Head(h.clone()),
                    (None, Some(hwm)) => Held::Hwm(*hwm),
                    (None, None) => Held::Nothing,
                };
                (shard, held)
            })
            .collect();
        let proofs = match (enter.proofs || self.config.always_prove, &self.config.proofs) {
            (false, _) => None,
            (true, Some(proofs)) => Some(proofs.clone()),
            (true, None) => {
                let message = "this server does not sign shard heads".to_owned();
                return self.deny(enter.request, enter.zone, ErrorCode::Unavailable, message);
            }
        };
        if enter.subscribe {
            self.subscribed.insert(enter.zone.clone());
        }
        let mut answer = AnswerPlan::entry(enter.request, enter.zone, plan, enter.subscribe).held_in_order(held_order);
        if let Some(proofs) = proofs {
            self.proven.insert(answer.zone().clone());
            answer = answer.with_proofs(proofs);
        }
        self.out.push_back(Output::Answer { plan: answer });
    }

    fn repair(&mut self, repair: Repair) {
        if repair.have.len() > MAX_REPAIR_OBJECTS {
            return self.fail(
                ErrorCode::Limit,
                format!(
                    "repair lists {} objects, the limit is {MAX_REPAIR_OBJECTS}",
                    repair.have.len()
                ),
            );
        }
        let (request, zone) = (repair.request, repair.zone.clone());
        self.read_shards(request, &zone, Pending::Repair(repair));
    }

    fn answer_repair(&mut self, repair: Repair, shards: &[ShardId]) {
        if !shards.contains(&repair.shard) {
            return self.deny(
                repair.request,
                repair.zone,
                ErrorCode::Forbidden,
                format!("shard {} is not readable here", repair.shard),
            );
        }
        let proven = self.config.always_prove || self.proven.contains(&repair.zone);
        let mut plan = AnswerPlan::repair(repair.request, repair.zone, repair.shard, repair.hwm, repair.have);
        match (proven, &self.config.proofs) {
            (true, Some(proofs)) => plan = plan.with_proofs(proofs.clone()),
            _ => tracing::info!(shard = %repair.shard, "repairing a client's shard"),
        }
        self.out.push_back(Output::Answer { plan });
    }
}

/// The shards a `ZoneShardsFor` read found, or why the zone is denied.
fn readable(zone: &ZoneId, shards: Result<Vec<ShardId>, ReadError>) -> Result<Vec<ShardId>, (ErrorCode, String)> {
    shards.map_err(|e| match e {
        ReadError::UnknownZone(_) => (ErrorCode::UnknownZone, format!("no zone {zone}")),
        other => (ErrorCode::Server, other.to_string()),
    })
}

impl Drop for ServerSession {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenAuthority;
    use crate::wire::{Hello, Intent};
    use hoard_engine::MemoryStore;

    /// A server's session configuration taking dev tokens.
    fn dev_config() -> SessionConfig {
        let auth = TokenAuthority::new([9; 32]).with_dev_mode(true);
        SessionConfig::new(ServerIdentity([1; 32]), "world", RegistryHash([2; 32]), auth)
    }

    fn hello() -> Message {
        Message::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            registry: [2; 32],
            service: "world".into(),
            token: "dev:ann".into(),
            codecs: vec![crate::wire::CODEC_ZSTD],
            token_keys: false,
        })
    }

    fn intent() -> Message {
        Message::Intent(Intent {
            seq: 1,
            kind: "act".into(),
            payload: vec![0xc0],
            signature: Vec::new(),
        })
    }

    /// The session's outputs, its store reads performed against `store`.
    fn outputs(session: &mut ServerSession, store: &MemoryStore) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(output) = session.poll_output() {
            match output {
                Output::Read(read) => session.read_done(read.run(store)),
                // Joins are `the_game_sees_a_player_once_prepared_and_past_the_handshake`'s.
                Output::Prepare { .. } => session.prepared(Ok(())),
                Output::Joined { .. } => {}
                other => out.push(other),
            }
        }
        out
    }

    /// The driver's part of a join: each output's name, the store read
    /// performed and the preparation answered with `prepared`.
    fn join_outputs(session: &mut ServerSession, store: &MemoryStore, prepared: &Result<(), String>) -> Vec<String> {
        let mut names = Vec::new();
        while let Some(output) = session.poll_output() {
            names.push(match output {
                Output::Read(read) => {
                    session.read_done(read.run(store));
                    "read".to_owned()
                }
                Output::Prepare { perspective } => {
                    session.prepared(prepared.clone());
                    format!("prepare {perspective}")
                }
                Output::Joined { perspective, .. } => format!("joined {perspective}"),
                Output::Control(m) => format!("control {:#04x}", m.kind()),
                Output::Intent { seq, .. } => format!("intent {seq}"),
                Output::SignedIn { .. } => "signed in".to_owned(),
                Output::SignedOut { .. } => "signed out".to_owned(),
                Output::Close { code, .. } => format!("close {}", code as u16),
                other => format!("{other:?}"),
            });
        }
        names
    }

    /// The game is shown a player once the driver prepared them and the
    /// handshake is complete, and before any of their intents: a replayed
    /// early `Hello` never shows, and a player the driver could not prepare
    /// is refused with the reason.
    #[test]
    fn the_game_sees_a_player_once_prepared_and_past_the_handshake() {
        let config = Arc::new(dev_config());
        let store = MemoryStore::new();
        let welcome = "control 0x81"; // Welcome's type code

        let mut at_once = ServerSession::new(config.clone(), 1);
        at_once.handle(0.0, 0, hello());
        let out = join_outputs(&mut at_once, &store, &Ok(()));
        assert_eq!(out, ["signed in", "prepare ann", "read", "joined ann", welcome]);

        let mut early = ServerSession::early(config.clone(), 2);
        early.handle(0.0, 0, hello());
        let out = join_outputs(&mut early, &store, &Ok(()));
        assert_eq!(out, ["prepare ann", "read", welcome], "not shown while early");
        early.handshake_complete();
        early.handle(1.0, 0, intent());
        let out = join_outputs(&mut early, &store, &Ok(()));
        assert_eq!(out, ["signed in", "joined ann", "intent 1"]);

        let mut refused = ServerSession::new(config, 3);
        refused.handle(0.0, 0, hello());
        let out = join_outputs(&mut refused, &store, &Err("no inventory".into()));
        assert!(
            out.contains(&format!("close {}", ErrorCode::Unavailable as u16)),
            "{out:?}"
        );
        assert!(!out.iter().any(|o| o.starts_with("joined")), "{out:?}");
    }

    /// Runs a driver's part for `session`'s outputs: sign-ins and sign-outs
    /// go to `live` (returning the sessions a sign-in closes), the rest back.
    fn drive(live: &mut LiveSessions, session: &mut ServerSession, store: &MemoryStore) -> (Vec<Output>, Vec<u64>) {
        let (mut rest, mut closed) = (Vec::new(), Vec::new());
        for output in outputs(session, store) {
            match output {
                Output::SignedIn { perspective } => closed.extend(live.sign_in(&perspective, session.id())),
                Output::SignedOut { perspective } => live.sign_out(&perspective, session.id()),
                other => rest.push(other),
            }
        }
        (rest, closed)
    }

    /// The session decides which intents the game gets: one the game does
    /// not take (an unknown name, a payload that does not decode) is
    /// rejected as a protocol error, and while the world cannot save, every
    /// intent is rejected as unavailable — each with its seq and a reason,
    /// none handed to the game and lost.
    #[test]
    fn intents_the_game_does_not_take_or_cannot_save_are_rejected_with_a_reason() {
        let mut config = dev_config();
        config.intents = IntentRegistry::new().intent::<u8>("act");
        let store = MemoryStore::new();
        let mut session = ServerSession::new(Arc::new(config), 1);
        session.handle(0.0, 0, hello());
        outputs(&mut session, &store);
        let rejection = |out: &[Output]| match out {
            [Output::Control(Message::IntentRejected(r))] => (r.seq, r.code),
            other => panic!("expected a rejection, got {other:?}"),
        };
        let sent = |seq, kind: &str, payload: Vec<u8>| {
            Message::Intent(Intent {
                seq,
                kind: kind.into(),
                payload,
                signature: Vec::new(),
            })
        };
        session.handle(1.0, 0, sent(1, "act", vec![7]));
        assert!(matches!(
            outputs(&mut session, &store)[..],
            [Output::Intent { seq: 1, .. }]
        ));
        session.handle(1.0, 0, sent(2, "fly", vec![7]));
        assert_eq!(
            rejection(&outputs(&mut session, &store)),
            (2, ErrorCode::Protocol as u16)
        );
        session.handle(1.0, 0, sent(3, "act", vec![0xc1]));
        assert_eq!(
            rejection(&outputs(&mut session, &store)),
            (3, ErrorCode::Protocol as u16)
        );
        session.set_writable(false);
        session.handle(1.0, 0, sent(4, "act", vec![7]));
        assert_eq!(
            rejection(&outputs(&mut session, &store)),
            (4, ErrorCode::Unavailable as u16)
        );
        session.set_writable(true);
        session.handle(1.0, 0, sent(5, "act", vec![7]));
        assert!(matches!(
            outputs(&mut session, &store)[..],
            [Output::Intent { seq: 5, .. }]
        ));
    }

    /// A session opened by early data answers `Hello` but takes the
    /// perspective over from its live session only once the handshake
    /// completes (a replay never completes it), and refuses an intent
    /// until then; a session that never completes leaves the live one be.
    #[test]
    fn an_early_session_takes_over_only_when_its_handshake_completes() {
        let config = Arc::new(dev_config());
        let store = MemoryStore::new();
        let mut sessions = LiveSessions::default();
        let mut live = ServerSession::new(config.clone(), 1);
        live.handle(0.0, 0, hello());
        let (out, closed) = drive(&mut sessions, &mut live, &store);
        assert!(matches!(out[..], [Output::Control(Message::Welcome(_))]));
        assert!(closed.is_empty());
        assert_eq!(sessions.session("ann"), Some(1));

        // A replayed early Hello: welcomed, no takeover; it dies unfinished.
        let mut replayed = ServerSession::early(config.clone(), 2);
        replayed.handle(0.0, 0, hello());
        let (out, closed) = drive(&mut sessions, &mut replayed, &store);
        assert!(matches!(out[..], [Output::Control(Message::Welcome(_))]));
        assert!(closed.is_empty());
        replayed.closed();
        drive(&mut sessions, &mut replayed, &store);
        assert_eq!(sessions.session("ann"), Some(1));

        // A real returning client: no takeover until its handshake
        // completes, no intent before it.
        let mut returning = ServerSession::early(config.clone(), 3);
        returning.handle(0.0, 0, hello());
        let (out, closed) = drive(&mut sessions, &mut returning, &store);
        assert!(matches!(out[..], [Output::Control(Message::Welcome(_))]));
        assert!(closed.is_empty());
        returning.handshake_complete();
        assert!(!returning.is_early());
        let (out, closed) = drive(&mut sessions, &mut returning, &store);
        assert!(out.is_empty());
        assert_eq!(closed, vec![1], "the older session is closed");
        assert_eq!(sessions.session("ann"), Some(3));
        returning.handle(1.0, 0, intent());
        assert!(matches!(
            outputs(&mut returning, &store)[..],
            [Output::Intent { seq: 1, .. }]
        ));

        // The older session ending does not free the newer one's place.
        live.closed();
        drive(&mut sessions, &mut live, &store);
        assert_eq!(sessions.session("ann"), Some(3));
        returning.closed();
        drive(&mut sessions, &mut returning, &store);
        assert_eq!(sessions.session("ann"), None);

        let mut early_intent = ServerSession::early(config, 4);
        early_intent.handle(0.0, 0, hello());
        early_intent.handle(0.1, 0, intent());
        let out = outputs(&mut early_intent, &store);
        assert!(
            matches!(out[..], [Output::Control(Message::Welcome(_)), Output::Control(Message::Error(ref e)), Output::Close { .. }] if e.code == ErrorCode::Protocol as u16),
            "{out:?}"
        );
    }
    /// A token binding the player's key: `Welcome` is followed by the
    /// session's `IntentNonce`; the player's signed intents in order become
    /// `Output::Intent`s; one signed under another session's nonce (a replay
    /// from an earlier session) ends the session with `BadIntent`. A relay's
    /// sessions (`checks_intents` off) send no nonce and pass the signature on.
    #[test]
    fn signed_intents_are_checked_against_the_sessions_nonce() {
        use crate::intent_sig::{IntentSigner, PlayerKey};
        use crate::world_token::{TokenKeys, TokenSigningKey};
        let world = ServerIdentity([1; 32]);
        let minter = TokenSigningKey::from_seed([4; 32]);
        let player = PlayerKey::from_seed([5; 32]);
        let auth = TokenAuthority::world_tokens(TokenKeys::new(world, vec![minter.public().clone()]));
        let token = minter.mint(&world, "ann", 2_000, Some(&player.public())).expect("mint");
        let mut config = SessionConfig::new(world, "world", RegistryHash([2; 32]), auth);
        config.intent_nonce_key = [7; 32];
        let config = Arc::new(config);
        let store = MemoryStore::new();
        let outputs = |session: &mut ServerSession, store: &MemoryStore| -> Vec<Output> {
            let all = outputs(session, store);
            all.into_iter()
                .filter(|o| !matches!(o, Output::SignedIn { .. }))
                .collect()
        };
        let signed_hello = || {
            let Message::Hello(mut h) = hello() else { unreachable!() };
            h.token = token.clone();
            Message::Hello(h)
        };
        let nonce_of = |out: &[Output]| match out {
            [
                Output::Control(Message::Welcome(_)),
                Output::Control(Message::IntentNonce(n)),
                ..,
            ] => n.nonce,
            other => panic!("no nonce after Welcome: {other:?}"),
        };
        let mut first = ServerSession::new(config.clone(), 1);
        first.handle(0.0, 0, signed_hello());
        let first_nonce = nonce_of(&outputs(&mut first, &store));
        let mut session = ServerSession::new(config.clone(), 2);
        session.handle(0.0, 0, signed_hello());
        let nonce = nonce_of(&outputs(&mut session, &store));
        assert_ne!(nonce, first_nonce, "each session has its own nonce");
        let signed = |signer: &mut IntentSigner, payload: &[u8]| {
            let (seq, signature) = signer.sign_next("act", payload);
            Message::Intent(Intent {
                seq,
                kind: "act".into(),
                payload: payload.to_vec(),
                signature: signature.to_vec(),
            })
        };
        let mut signer = IntentSigner::new(world, "ann", player.clone(), nonce);
        for (at, payload) in [(1.0, [0xc0]), (1.1, [0xc2])] {
            session.handle(at, 0, signed(&mut signer, &payload));
            assert!(matches!(outputs(&mut session, &store)[..], [Output::Intent { .. }]));
        }
        // The first session's intent 3, replayed into this one.
        let mut old = IntentSigner::new(world, "ann", player.clone(), first_nonce);
        for payload in [[0xc0], [0xc0]] {
            let _ = signed(&mut old, &payload);
        }
        session.handle(1.2, 0, signed(&mut old, &[0xc3]));
        let out = outputs(&mut session, &store);
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Close {
                    code: ErrorCode::BadIntent,
                    ..
                }
            )),
            "{out:?}"
        );

        // A relay's session: no nonce of its own, the signature passed on.
        let mut relay_config = SessionConfig::new(
            world,
            "world",
            RegistryHash([2; 32]),
            TokenAuthority::world_tokens(TokenKeys::new(world, vec![minter.public().clone()])),
        );
        relay_config.checks_intents = false;
        let mut relayed = ServerSession::new(Arc::new(relay_config), 3);
        relayed.handle(0.0, 0, signed_hello());
        let out = outputs(&mut relayed, &store);
        assert!(matches!(out[..], [Output::Control(Message::Welcome(_))]), "{out:?}");
        assert_eq!(relayed.bound_token(), Some(token.as_str()));
        let mut upstream = IntentSigner::new(world, "ann", player, [8; 16]);
        relayed.handle(1.0, 0, signed(&mut upstream, &[0xc0]));
        assert!(matches!(
            &outputs(&mut relayed, &store)[..],
            [Output::Intent { signature, .. }] if signature.len() == 64
        ));
    }
}
