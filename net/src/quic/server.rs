//! The QUIC server: accepts connections, runs a [`ServerSession`] per
//! connection, and ticks the game's world on its own thread — run the
//! schedule, gather, commit durably, and only then publish the deltas.
//!
//! Bad days, and what the server does (docs/ARCHITECTURE.md keeps the table):
//! a commit that fails keeps its changes (merged with later ticks' changes,
//! the last change of each object winning), stops accepting intents, tells
//! every client, reopens the store and retries with backoff, and resumes
//! once a commit succeeds; if the store stays broken for
//! [`ServerOptions::store_retry_for`], or a game system panics, the server
//! closes every connection and reports the failure through
//! [`ServerHandle::failed`], so the binary exits non-zero. Every connection
//! has a budget: a deadline for its handshake and `Hello`, a bound on answers
//! in flight (it is not read from while they are outstanding), a deadline on
//! each answer write, and a per-address connection limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use bevy_ecs::schedule::Schedule;
use bevy_ecs::world::World;
use hoard_engine::store::WorldStore;
use hoard_engine::{Publisher, RegistryHash, ServerIdentity, ZoneId};
use quinn::{Connection, Endpoint};
use tokio::sync::{Semaphore, mpsc, watch};

use super::committer::Committer;
use super::slots::{AnswerSlots, FairPool, LIGHT_ANSWER_BYTES, Slot};
use super::stream::{FrameReader, StreamError, write_message};
use crate::log_limit::LogLimit;
use crate::metrics::{KindLabel, MetricsExporter, ServerMetrics, ZoneLabel};
use crate::tls::{ServerKeys, TlsError};
use hoard_proto::auth::TokenAuthority;
use hoard_proto::intents::{IntentRegistry, ReceivedIntent};
use hoard_proto::sync::answer::{AnswerKind, AnswerPlan};
use hoard_proto::sync::hub::SessionId;
use hoard_proto::sync::server::{LiveSessions, Output, ServerSession, SessionConfig};
use hoard_proto::sync::tick::{TickCore, TickInput, TickOutput};
use hoard_proto::wire::{ErrorCode, IntentRejected, MAX_CONTROL_FRAME, Message, PART_BYTES, object_bytes, split};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory: certificate, key, token secret (the store is opened by the caller).
    pub data_dir: PathBuf,
    /// The service name.
    pub service: String,
    /// World ticks per second.
    pub tick_hz: u32,
    /// Accept `dev:<name>` tokens (local development only; logged loudly).
    pub dev_mode: bool,
    /// Most simultaneous connections; more are refused.
    pub max_connections: usize,
    /// Live deltas queued per connection before it counts as a slow consumer
    /// and is disconnected.
    pub delta_queue: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Time a connection has to finish its handshake and send `Hello`.
    pub hello_timeout: Duration,
    /// Zone answers (and repairs) one connection may have in flight; while
    /// they are, its control stream is not read, so its memory stays bounded.
    pub answers_in_flight: usize,
    /// Zone answers in flight over all connections, in each of two pools:
    /// every request's first part (a repair, or the first 64 KiB of an
    /// entry's answer: a warm entry's whole answer, usually) goes under a
    /// light slot, an answer going on past it under a bulk slot, so small
    /// answers never wait behind large ones.
    pub answers_in_flight_total: usize,
    /// Of each pool, the slots one IP address may hold at once: while fewer
    /// than `answers_in_flight_total / answers_in_flight_per_ip` addresses
    /// fill their share, no address waits for another's answers (a few
    /// clients that request zones and stop reading cannot stall every
    /// player's entry).
    pub answers_in_flight_per_ip: usize,
    /// Longest wait for a client to take one frame of an answer (or for an
    /// answer slot) before it counts as a slow consumer and is disconnected.
    pub answer_stall: Duration,
    /// How long commits may keep failing (the store reopened and retried
    /// meanwhile) before the server gives up and reports a failure.
    pub store_retry_for: Duration,
    /// Where to serve Prometheus metrics over HTTP (`None`: not served; the
    /// metrics are still kept, see [`ServerHandle::metrics`]).
    pub metrics: Option<SocketAddr>,
    /// Most sends per second of one zone's transient state (0: every frame
    /// it changes). Every session in a zone gets the whole state each time,
    /// so the cost grows with the square of the zone's players; the cap
    /// bounds it. The latest state still always goes out.
    pub transient_hz: u32,
    /// Which server serves each zone, for a world spread over several
    /// servers (a client entering a zone served elsewhere is sent there).
    /// Default: every zone is served here.
    pub directory: Arc<dyn hoard_proto::sync::server::ZoneDirectory>,
    /// The address players reach the world at (`host:port`), which names it
    /// in `hoard://` URLs (a load error's, say). Default: the listen address.
    pub advertise: Option<String>,
}

impl ServerOptions {
    /// Defaults: 20 Hz, 1,000 connections (32 per address), 256 queued
    /// deltas, `Hello` within 5 s, 2 answers in flight per connection (128
    /// light and 128 bulk in all, 16 of each per address), 15 s for a client
    /// to take an answer frame, 60 s of store retries, no dev mode.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerOptions {
        ServerOptions {
            listen,
            data_dir,
            service: "world".into(),
            tick_hz: 20,
            dev_mode: false,
            max_connections: 1000,
            delta_queue: 256,
            max_connections_per_ip: 32,
            hello_timeout: Duration::from_secs(5),
            answers_in_flight: 2,
            answers_in_flight_total: 128,
            answers_in_flight_per_ip: 16,
            answer_stall: Duration::from_secs(15),
            store_retry_for: Duration::from_secs(60),
            metrics: None,
            transient_hz: 10,
            directory: Arc::new(hoard_proto::sync::server::OneServer),
            advertise: None,
        }
    }

    /// The `hoard://` URL of the world served, as players reach it:
    /// [`ServerOptions::advertise`] if set (and `host:port`), else `bound`,
    /// the address the server is bound to.
    pub fn world_url(&self, bound: SocketAddr) -> hoard_engine::HoardUrl {
        let advertised = self
            .advertise
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(host, port)| Some((host.trim_matches(['[', ']']).to_owned(), port.parse::<u16>().ok()?)));
        let (host, port) = advertised.unwrap_or_else(|| (bound.ip().to_string(), bound.port()));
        hoard_engine::HoardUrl::service(host, port.max(1), self.service.clone())
    }
}

/// The game the server runs: its world, its schedule and the publisher
/// gathering the world's changes.
pub struct Game {
    /// The ECS world.
    pub world: World,
    /// The game's systems, run once per tick.
    pub schedule: Schedule,
    /// Gathers each tick's changes.
    pub publisher: Publisher,
    /// The intents the game accepts.
    pub intents: IntentRegistry,
    /// Which zones each perspective may enter.
    pub access: Arc<dyn hoard_proto::sync::server::AccessPolicy>,
    /// Called once per connection when its perspective is authenticated,
    /// before any zone request of it is answered (the demo creates the
    /// player's inventory shard here). An error refuses the session with
    /// `Unavailable` and the reason, rather than letting the player act in a
    /// world not ready for them.
    pub on_join: Option<JoinHook>,
    /// Called once per connection whose join hook ran, when it has ended
    /// (on the connection's task, off the world thread; the world sees the
    /// player leave through `ConnectedPlayers` as ever).
    pub on_leave: Option<LeaveHook>,
    /// Called once per tick after the schedule: each zone's transient state
    /// (never stored — who stands where), encoded by the game. A zone's state
    /// goes to the sessions in that zone when it differs from the last sent,
    /// and to each session entering the zone; a zone left out is unchanged.
    pub transient: Option<TransientHook>,
}

/// See [`Game::on_join`].
pub type JoinHook = Arc<dyn Fn(&str, &dyn WorldStore) -> Result<(), String> + Send + Sync>;

/// See [`Game::on_leave`].
pub type LeaveHook = Arc<dyn Fn(&str) + Send + Sync>;

/// See [`Game::transient`].
pub type TransientHook = Arc<dyn Fn(&mut World) -> Vec<(ZoneId, Vec<u8>)> + Send + Sync>;

impl Game {
    /// A game open to every perspective, accepting `intents`.
    pub fn new(world: World, schedule: Schedule, publisher: Publisher, intents: IntentRegistry) -> Game {
        Game {
            world,
            schedule,
            publisher,
            intents,
            access: Arc::new(hoard_proto::sync::server::OpenWorld),
            on_join: None,
            on_leave: None,
            transient: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Keys could not be loaded or created.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The endpoint could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS configuration was refused by QUIC.
    #[error("quic configuration: {0}")]
    Config(String),
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Live connections.
    pub connections: AtomicUsize,
    /// Connections refused for the connection limit (total or per address).
    pub refused: AtomicU64,
    /// Connections closed for not saying `Hello` in time.
    pub hello_timeouts: AtomicU64,
    /// Commits that failed (each retried).
    pub failed_commits: AtomicU64,
    /// Intents rejected because the store was failing.
    pub unavailable_intents: AtomicU64,
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Connections closed for reading too slowly.
    pub slow_consumers: AtomicU64,
    /// Objects committed.
    pub committed_objects: AtomicU64,
}

/// What a connection tells the world: a session to deliver to (with its
/// delta queue and connection, which only the driver holds), or an input of
/// the tick core.
pub(crate) enum Command {
    Register {
        id: SessionId,
        deltas: mpsc::Sender<Frames>,
        conn: Connection,
    },
    Tick(TickInput),
}

/// A running server. Dropping it does not stop it; call [`ServerHandle::shutdown`].
pub struct ServerHandle {
    /// The bound address.
    pub addr: SocketAddr,
    /// The server identity clients pin.
    pub identity: ServerIdentity,
    /// Counters.
    pub stats: Arc<ServerStats>,
    /// Issues tokens for this server.
    pub auth: TokenAuthority,
    /// The server's Prometheus metrics.
    pub metrics: Arc<ServerMetrics>,
    /// Where they are served, if [`ServerOptions::metrics`] asked for it.
    pub metrics_addr: Option<SocketAddr>,
    _exporter: Option<MetricsExporter>,
    endpoint: Endpoint,
    stop: Arc<AtomicBool>,
    failure: watch::Receiver<Option<String>>,
    world_thread: Option<std::thread::JoinHandle<Game>>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// Waits until the server fails for good — its store stayed broken past
    /// [`ServerOptions::store_retry_for`], or a game system panicked — and
    /// says why. By then every connection is closed; the caller should exit
    /// non-zero so a supervisor restarts it. Never returns for a healthy
    /// server.
    pub async fn failed(&self) -> String {
        let mut failure = self.failure.clone();
        loop {
            if let Some(reason) = failure.borrow_and_update().clone() {
                return reason;
            }
            if failure.changed().await.is_err() {
                // The world thread is gone without a reason: it was stopped.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops accepting, closes connections, stops the world thread, and
    /// returns the game (its world as of the last tick).
    pub async fn shutdown(mut self) -> Option<Game> {
        self.endpoint.close(
            quinn::VarInt::from_u32(ErrorCode::Server as u32),
            b"server shutting down",
        );
        self.stop.store(true, Ordering::SeqCst);
        // A linked server (`start_linked`) has no world thread: its caller
        // stops its world and calls `WorldLink::finish`.
        let game = match self.world_thread.take() {
            Some(thread) => tokio::task::spawn_blocking(move || thread.join().ok())
                .await
                .ok()
                .flatten(),
            None => None,
        };
        // Every connection has been sent its close; waiting for them to
        // drain is only courtesy, bounded: a connection whose round-trip
        // estimate grew while the process was paused (SIGSTOP, a long GC of
        // the host) would otherwise hold the exit for three of its probe
        // timeouts, many seconds.
        if tokio::time::timeout(DRAIN_WAIT, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::debug!(
                waited_ms = DRAIN_WAIT.as_millis() as u64,
                "connections still draining; not waiting for them"
            );
        }
        if let Some(accept) = self.accept_task.take() {
            let _ = tokio::time::timeout(DRAIN_WAIT, accept).await;
        }
        game
    }
}

struct Shared {
    config: Arc<SessionConfig>,
    store: Arc<dyn WorldStore>,
    commands: std_mpsc::Sender<Command>,
    stats: Arc<ServerStats>,
    metrics: Arc<ServerMetrics>,
    intents: IntentRegistry,
    started: Instant,
    delta_queue: usize,
    next_id: AtomicU64,
    /// Live connections by session id, to close one from another's session.
    conns: std::sync::Mutex<HashMap<SessionId, Connection>>,
    /// The live session of each signed-in perspective.
    live: std::sync::Mutex<LiveSessions>,
    on_join: Option<JoinHook>,
    on_leave: Option<LeaveHook>,
    /// Live connections per remote address.
    per_ip: std::sync::Mutex<HashMap<IpAddr, usize>>,
    /// False while commits fail: intents are rejected.
    writable: Arc<AtomicBool>,
    /// Answer slots over all connections, shared fairly by address.
    slots: AnswerSlots,
    options: ServerOptions,
}

/// A connection's place in the per-address count, given back on drop.
struct IpSlot<'a> {
    shared: &'a Shared,
    ip: IpAddr,
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut per_ip) = self.shared.per_ip.lock()
            && let Some(n) = per_ip.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Shared {
    fn take_ip_slot(&self, ip: IpAddr) -> Option<IpSlot<'_>> {
        let mut per_ip = self.per_ip.lock().ok()?;
        let n = per_ip.entry(ip).or_default();
        if *n >= self.options.max_connections_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot { shared: self, ip })
    }
}

/// What a server needs of the game besides its world: the registry clients
/// must match, the intents it accepts, who may enter what, and the join hook.
#[derive(Clone)]
pub struct GameRules {
    /// The registry hash clients must present in `Hello`.
    pub registry: RegistryHash,
    /// The intents the game accepts.
    pub intents: IntentRegistry,
    /// Which zones each perspective may enter.
    pub access: Arc<dyn hoard_proto::sync::server::AccessPolicy>,
    /// See [`Game::on_join`].
    pub on_join: Option<JoinHook>,
    /// See [`Game::on_leave`].
    pub on_leave: Option<LeaveHook>,
}

impl GameRules {
    /// The rules of `game`.
    pub fn of(game: &Game) -> GameRules {
        GameRules {
            registry: game.publisher.registry().hash(),
            intents: game.intents.clone(),
            access: game.access.clone(),
            on_join: game.on_join.clone(),
            on_leave: game.on_leave.clone(),
        }
    }
}

/// Starts the server: binds, prints nothing (the caller announces), spawns
/// the accept loop on the current tokio runtime and the world on a thread.
pub async fn start(
    options: ServerOptions,
    store: Arc<dyn WorldStore>,
    game: Game,
) -> Result<ServerHandle, ServerError> {
    let rules = GameRules::of(&game);
    // The world as loaded or spawned is durable before anyone may see it
    // (gathered and committed off the async workers).
    let initial_store = store.clone();
    let game = tokio::task::spawn_blocking(move || {
        let mut game = game;
        let initial = game.publisher.gather(&mut game.world);
        if !initial.changes.is_empty() {
            initial_store
                .commit(&initial.changes)
                .map_err(|e| ServerError::Config(format!("committing the initial world: {e}")))?;
        }
        Ok::<_, ServerError>(game)
    })
    .await
    .map_err(|e| ServerError::Config(format!("committing the initial world: {e}")))??;
    let (mut handle, link) = start_linked(options.clone(), store, rules).await?;
    let world = WorldThread {
        link,
        stop: handle.stop.clone(),
        tick: Duration::from_secs_f64(1.0 / f64::from(options.tick_hz.max(1))),
    };
    let thread = std::thread::Builder::new()
        .name("hoard-world".into())
        .spawn(move || world.run(game))
        .map_err(|source| ServerError::Bind {
            addr: handle.addr,
            source,
        })?;
    handle.world_thread = Some(thread);
    Ok(handle)
}

/// Starts the server for a world that runs elsewhere (a `bevy_app` App):
/// binds and accepts as [`start`] does, and returns the [`WorldLink`] the
/// caller drives around each frame of its world. Nothing of the world is
/// published before the caller's first [`WorldLink::after_frame`] commits it.
pub async fn start_linked(
    options: ServerOptions,
    store: Arc<dyn WorldStore>,
    rules: GameRules,
) -> Result<(ServerHandle, WorldLink), ServerError> {
    let mut proofs = None;
    let bound = bind(options.clone(), store.clone(), rules, |keys, config| {
        // Every head this server publishes can be signed with the world's
        // key, for relays (and their clients) that ask.
        let signer = crate::heads::KeySigner::new(&keys.key).map_err(ServerError::Config)?;
        let source: Arc<dyn hoard_proto::proof::ProofSource> = Arc::new(hoard_proto::proof::OriginProofs::new(
            keys.identity,
            &config.service,
            Arc::new(signer),
        ));
        config.world_key = keys.world_key().map_err(ServerError::Config)?;
        config.proofs = Some(source.clone());
        proofs = Some(source);
        Ok(())
    })
    .await?;
    let metered: Arc<dyn WorldStore> = Arc::new(crate::metrics::MeteredStore::new(store, bound.metrics.clone()));
    let committer = Committer::start(metered.clone()).map_err(|source| ServerError::Bind {
        addr: options.listen,
        source,
    })?;
    let mut core = TickCore::new(metered, options.store_retry_for.as_secs_f64()).with_transient_interval(match options
        .transient_hz
    {
        0 => 0.0,
        hz => 1.0 / f64::from(hz),
    });
    if let Some(proofs) = proofs {
        core = core.with_proofs(proofs);
    }
    let link = WorldLink {
        core,
        committer,
        fatal: None,
        commands: bound.commands,
        stats: bound.handle.stats.clone(),
        metrics: bound.metrics,
        frame_started: None,
        subscribers: HashMap::new(),
        writable: bound.writable,
        failure: bound.failure,
        endpoint: bound.endpoint,
        conns: Outbox::default(),
        started: Instant::now(),
    };
    Ok((bound.handle, link))
}

/// A bound server endpoint and what its driver (a world's link, or a
/// relay's) receives from the connections.
pub(crate) struct Bound {
    pub(crate) handle: ServerHandle,
    pub(crate) commands: std_mpsc::Receiver<Command>,
    pub(crate) metrics: Arc<ServerMetrics>,
    pub(crate) writable: Arc<AtomicBool>,
    pub(crate) failure: watch::Sender<Option<String>>,
    pub(crate) endpoint: Endpoint,
}

/// Loads (or makes) the keys in the data directory, binds, and accepts
/// connections whose sessions answer from `store`; `configure` adjusts the
/// sessions' configuration with the keys at hand (what they sign with, or
/// which world a relay speaks for).
pub(crate) async fn bind(
    options: ServerOptions,
    store: Arc<dyn WorldStore>,
    rules: GameRules,
    configure: impl FnOnce(&ServerKeys, &mut SessionConfig) -> Result<(), ServerError>,
) -> Result<Bound, ServerError> {
    // Key files are read, or generated and fsynced, off the async workers.
    let data_dir = options.data_dir.clone();
    let keys = tokio::task::spawn_blocking(move || ServerKeys::load_or_create(&data_dir))
        .await
        .map_err(|e| ServerError::Config(format!("loading keys: {e}")))??;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(keys.rustls_config()?)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(super::transport::server()));
    // Stateless resets with a key derived from the world's secret: a server
    // restarted after a crash answers packets of its predecessor's
    // connections with a reset their peers accept, so clients and relays
    // learn at once that the server they knew is gone, instead of after the
    // idle timeout.
    // (The connection ids' hash key too: quinn drops, without a reset,
    // packets whose ids this endpoint's generator did not make.)
    let bind_err = |source| ServerError::Bind {
        addr: options.listen,
        source,
    };
    let socket = super::socket::bind(options.listen).map_err(bind_err)?;
    // Keyed by the world's secret and this server's address: its successor
    // on the address resets its connections; another server of the world
    // (another address) shares none of its keys.
    let mut material = keys.token_secret.to_vec();
    material.extend_from_slice(socket.local_addr().map_err(bind_err)?.to_string().as_bytes());
    let reset_key = blake3::derive_key("hoard stateless reset v1", &material);
    let mut endpoint_config =
        quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_key)));
    let cid_key = u64::from_le_bytes(
        blake3::derive_key("hoard connection id v1", &material)[..8]
            .try_into()
            .unwrap_or_default(),
    );
    endpoint_config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let runtime = quinn::default_runtime().ok_or_else(|| bind_err(std::io::Error::other("no async runtime")))?;
    let endpoint = Endpoint::new(endpoint_config, Some(config), socket, runtime).map_err(bind_err)?;
    let addr = endpoint.local_addr().map_err(|source| ServerError::Bind {
        addr: options.listen,
        source,
    })?;
    let auth = TokenAuthority::new(keys.token_secret).with_dev_mode(options.dev_mode);
    let mut session_config = SessionConfig::new(keys.identity, &options.service, rules.registry, auth.clone());
    session_config.tick_hz = options.tick_hz;
    session_config.access = rules.access.clone();
    session_config.directory = options.directory.clone();
    configure(&keys, &mut session_config)?;
    let stats = Arc::new(ServerStats::default());
    let metrics = Arc::new(ServerMetrics::new(Some(options.data_dir.clone())));
    let exporter = match options.metrics {
        Some(addr) => {
            Some(MetricsExporter::start(addr, metrics.clone()).map_err(|source| ServerError::Bind { addr, source })?)
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writable = Arc::new(AtomicBool::new(true));
    let (failure_tx, failure) = watch::channel(None);
    let (commands, command_rx) = std_mpsc::channel();
    let shared = Arc::new(Shared {
        config: Arc::new(session_config),
        store,
        commands,
        stats: stats.clone(),
        metrics: metrics.clone(),
        intents: rules.intents.clone(),
        started: Instant::now(),
        delta_queue: options.delta_queue,
        next_id: AtomicU64::new(1),
        conns: std::sync::Mutex::new(HashMap::new()),
        live: std::sync::Mutex::new(LiveSessions::default()),
        on_join: rules.on_join.clone(),
        on_leave: rules.on_leave.clone(),
        per_ip: std::sync::Mutex::new(HashMap::new()),
        writable: writable.clone(),
        slots: AnswerSlots::new(options.answers_in_flight_total, options.answers_in_flight_per_ip),
        options: options.clone(),
    });
    let accept = endpoint.clone();
    let max = options.max_connections;
    let accept_task = tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            if shared.stats.connections.load(Ordering::SeqCst) >= max {
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                shared.metrics.disconnect("refused");
                static FULL: LogLimit = LogLimit::new();
                if let Some(left_out) = FULL.allow() {
                    tracing::warn!(peer = %incoming.remote_address(), max, left_out, "connection limit reached; refusing");
                }
                incoming.refuse();
                continue;
            }
            shared.stats.connections.fetch_add(1, Ordering::SeqCst);
            shared.metrics.connected.inc();
            let shared = shared.clone();
            tokio::spawn(async move {
                let peer = incoming.remote_address();
                match shared.take_ip_slot(peer.ip()) {
                    Some(_slot) => {
                        if let Err(e) = serve(incoming, &shared).await {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                    }
                    None => {
                        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                        shared.metrics.disconnect("refused");
                        static PER_IP: LogLimit = LogLimit::new();
                        if let Some(left_out) = PER_IP.allow() {
                            tracing::warn!(%peer, left_out, "too many connections from this address; refusing");
                        }
                        incoming.refuse();
                    }
                }
                shared.stats.connections.fetch_sub(1, Ordering::SeqCst);
                shared.metrics.connected.dec();
            });
        }
    });
    tracing::info!(%addr, identity = %keys.identity, "hoard server listening");
    let handle = ServerHandle {
        addr,
        identity: keys.identity,
        stats,
        auth,
        metrics: metrics.clone(),
        metrics_addr: exporter.as_ref().map(MetricsExporter::addr),
        _exporter: exporter,
        endpoint: endpoint.clone(),
        stop,
        failure,
        world_thread: None,
        accept_task: Some(accept_task),
    };
    Ok(Bound {
        handle,
        commands: command_rx,
        metrics,
        writable,
        failure: failure_tx,
        endpoint,
    })
}

fn close_code(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code as u32)
}

async fn serve(
    incoming: quinn::Incoming,
    shared: &Arc<Shared>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let deadline = tokio::time::Instant::now() + shared.options.hello_timeout;
    let peer = incoming.remote_address();
    let connecting = incoming.accept()?;
    // The connection is used before its handshake completes, so a returning
    // client's 0-RTT `Hello` and `EnterZone` are answered at once (in 0.5-RTT
    // data); until the handshake completes the session is early
    // (`ServerSession::early`: no takeover, no intents), and the handshake
    // must complete by the hello deadline.
    let (conn, handshake) = match connecting.into_0rtt() {
        Ok((conn, accepted)) => (conn, Some(accepted)),
        Err(connecting) => {
            let Ok(conn) = tokio::time::timeout_at(deadline, connecting).await else {
                shared.stats.hello_timeouts.fetch_add(1, Ordering::Relaxed);
                shared.metrics.disconnect("hello_timeout");
                tracing::info!(%peer, "handshake not finished in time; dropped");
                return Ok(());
            };
            (conn?, None)
        }
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let Ok(control) = tokio::time::timeout_at(deadline, conn.accept_bi()).await else {
        shared.stats.hello_timeouts.fetch_add(1, Ordering::Relaxed);
        shared.metrics.disconnect("hello_timeout");
        tracing::info!(%peer, "no control stream in time; closing");
        conn.close(close_code(ErrorCode::Timeout), b"no hello in time");
        return Ok(());
    };
    let (mut send, recv) = control?;
    let mut reader = FrameReader::new(recv, MAX_CONTROL_FRAME);
    let mut session = if handshake.is_some() {
        ServerSession::early(shared.config.clone(), id)
    } else {
        ServerSession::new(shared.config.clone(), id)
    };
    if let Ok(mut conns) = shared.conns.lock() {
        conns.insert(id, conn.clone());
    }
    let (delta_tx, mut delta_rx) = mpsc::channel::<Frames>(shared.delta_queue);
    let _ = shared.commands.send(Command::Register {
        id,
        deltas: delta_tx,
        conn: conn.clone(),
    });
    // Live deltas (and transient states) on their own stream, opened on first use.
    let delta_conn = conn.clone();
    let delta_metrics = shared.metrics.clone();
    tokio::spawn(async move {
        let mut stream = None;
        while let Some(frames) = delta_rx.recv().await {
            if stream.is_none() {
                match delta_conn.open_uni().await {
                    Ok(s) => stream = Some(s),
                    Err(_) => return,
                }
            }
            for frame in frames.iter() {
                let Some(s) = stream.as_mut() else { return };
                if s.write_all(frame).await.is_err() {
                    return;
                }
                delta_metrics.sent("delta", frame.len());
            }
        }
    });
    let link = ControlLink {
        conn: &conn,
        shared,
        id,
        hello_deadline: deadline,
    };
    let result = control_loop(&link, &mut send, &mut reader, &mut session, handshake).await;
    if conn.close_reason().is_none() {
        // The control stream ended or failed: say so, rather than let the
        // connection close without a reason when its last handle goes.
        let reason = match &result {
            Ok(()) => "the control stream ended".to_owned(),
            Err(e) => format!("the control stream failed: {e}"),
        };
        tracing::debug!(%peer, %reason, "closing the connection");
        conn.close(close_code(ErrorCode::Protocol), reason.as_bytes());
    }
    // Ends the server chose (slow consumer, timeout, refusal, replacement)
    // were counted where it chose them; the rest are the client's doing.
    match conn.close_reason() {
        Some(quinn::ConnectionError::LocallyClosed) => {}
        Some(quinn::ConnectionError::ApplicationClosed(_)) | None => shared.metrics.disconnect("closed"),
        Some(_) => shared.metrics.disconnect("lost"),
    }
    session.closed();
    while let Some(output) = session.poll_output() {
        if let Output::SignedOut { perspective } = output {
            lock(&shared.live).sign_out(&perspective, id);
        }
    }
    if let Ok(mut conns) = shared.conns.lock() {
        conns.remove(&id);
    }
    if let (Some(hook), Some(perspective)) = (&shared.on_leave, session.perspective()) {
        let (hook, perspective) = (hook.clone(), perspective.to_owned());
        // The hook may touch the store: off the async workers.
        tokio::task::spawn_blocking(move || hook(&perspective));
    }
    let _ = shared.commands.send(Command::Tick(TickInput::Remove { id }));
    result
}

/// What the control loop of one connection works with.
struct ControlLink<'a> {
    conn: &'a Connection,
    shared: &'a Arc<Shared>,
    id: SessionId,
    /// `Hello` (and the handshake) must have come by then.
    hello_deadline: tokio::time::Instant,
}

impl ControlLink<'_> {
    /// The next control message; before `Hello`, bounded by the hello
    /// deadline (a timeout fails the session). Cancel-safe.
    async fn next_message(
        &self,
        reader: &mut FrameReader,
        session: &mut ServerSession,
    ) -> Result<Option<Message>, Box<dyn std::error::Error + Send + Sync>> {
        let next = if session.perspective().is_none() {
            match tokio::time::timeout_at(self.hello_deadline, reader.next()).await {
                Ok(next) => next,
                Err(_) => {
                    self.shared.stats.hello_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %self.conn.remote_address(), "no hello in time; closing");
                    session.fail(ErrorCode::Timeout, "no hello in time");
                    return Ok(None);
                }
            }
        } else {
            reader.next().await
        };
        match next {
            Ok(Some((msg, _))) => Ok(Some(msg)),
            Ok(None) => Err(StreamEnded.into()),
            Err(StreamError::Read(e)) => Err(e.into()),
            Err(e) => {
                session.fail(ErrorCode::Protocol, e.to_string());
                Ok(None)
            }
        }
    }

    /// Waits (until the hello deadline) for the connection's handshake;
    /// `false` if it failed or did not complete in time, and the session is
    /// then failed. (`accepted` resolves on a server once the handshake
    /// ends either way; its value says whether the client used 0-RTT.)
    async fn complete_handshake(&self, accepted: quinn::ZeroRttAccepted, session: &mut ServerSession) -> bool {
        match tokio::time::timeout_at(self.hello_deadline, accepted).await {
            Ok(_) if self.conn.close_reason().is_none() => {
                session.handshake_complete();
                true
            }
            _ => {
                self.shared.stats.hello_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %self.conn.remote_address(), "handshake not finished in time; closing");
                session.fail(ErrorCode::Timeout, "the handshake did not complete in time");
                false
            }
        }
    }
}

/// What the control loop waits for.
enum ControlEvent {
    /// The connection's handshake ended (completed: `true`).
    Handshake(bool),
    /// A message was read (`None`: the session failed instead).
    Read(Result<Option<Message>, Box<dyn std::error::Error + Send + Sync>>),
}

/// The control stream ended cleanly (the client finished it).
#[derive(Debug, thiserror::Error)]
#[error("the control stream ended")]
struct StreamEnded;

async fn control_loop(
    link: &ControlLink<'_>,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    session: &mut ServerSession,
    mut handshake: Option<quinn::ZeroRttAccepted>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (conn, shared, id) = (link.conn, link.shared, link.id);
    let stall = shared.options.answer_stall;
    let answers = Arc::new(Semaphore::new(shared.options.answers_in_flight.max(1)));
    // The zones this connection wants live deltas of, and the entry (request)
    // whose answer will start them.
    let wanted: Wanted = Arc::new(std::sync::Mutex::new(HashMap::new()));
    // A perspective whose `Hello` was answered, for the game once the
    // handshake is complete.
    let mut pending_join: Option<String> = None;
    loop {
        // The handshake completing is an event of its own (an early
        // session's perspective takes over then); messages are read
        // meanwhile, so early data is answered at once.
        let event = match handshake.as_mut() {
            Some(accepted) => tokio::select! {
                biased;
                // On a server it resolves once the handshake ends, completed
                // or not (its value says whether the client used 0-RTT).
                done = tokio::time::timeout_at(link.hello_deadline, accepted) => {
                    ControlEvent::Handshake(done.is_ok() && conn.close_reason().is_none())
                }
                next = link.next_message(reader, session) => ControlEvent::Read(next),
            },
            None => ControlEvent::Read(link.next_message(reader, session).await),
        };
        let mut msg = match event {
            ControlEvent::Handshake(ok) => {
                handshake = None;
                if ok {
                    session.handshake_complete();
                } else {
                    shared.stats.hello_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %conn.remote_address(), "handshake not finished in time; closing");
                    session.fail(ErrorCode::Timeout, "the handshake did not complete in time");
                }
                None
            }
            ControlEvent::Read(Ok(msg)) => msg,
            ControlEvent::Read(Err(e)) if e.is::<StreamEnded>() => return Ok(()),
            ControlEvent::Read(Err(e)) => return Err(e),
        };
        // An intent is never acted on from early data: it waits for the
        // handshake (a client sends none before, so this is at most the
        // moment between the handshake's end and its event).
        if matches!(msg, Some(Message::Intent(_)))
            && let Some(accepted) = handshake.take()
            && !link.complete_handshake(accepted, session).await
        {
            msg = None;
        }
        // A request that builds an answer first takes an answer slot (this
        // connection's and the server's), so answers being built count
        // towards the bounds too, and a client that does not read its
        // answers is not read from either.
        let mut slot = None;
        let mut entry_kind = None;
        if let Some(msg) = msg {
            // What kind of entry a request is, for the metrics, and when it came.
            entry_kind = match &msg {
                Message::EnterZone(e) if e.have.is_empty() && e.held.is_empty() => Some("cold"),
                Message::EnterZone(_) => Some("warm"),
                Message::Repair(_) => Some("repair"),
                _ => None,
            }
            .map(|kind| (kind, Instant::now()));
            if matches!(msg, Message::EnterZone(_) | Message::Repair(_)) && session.perspective().is_some() {
                // This connection's slot, then a light one of the server's
                // within this address's share (see `slots`).
                let ip = conn.remote_address().ip();
                let taken = tokio::time::timeout(stall, async {
                    let mine = answers.clone().acquire_owned().await.ok()?;
                    let light = shared.slots.light.take(ip).await;
                    Some((mine, light))
                })
                .await;
                let Ok(Some(taken)) = taken else {
                    shared.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    shared.metrics.disconnect("slow_consumer");
                    static UNREAD: LogLimit = LogLimit::new();
                    if let Some(left_out) = UNREAD.allow() {
                        tracing::warn!(peer = %conn.remote_address(), left_out, "client does not read its zone answers; disconnecting");
                    }
                    conn.close(close_code(ErrorCode::SlowConsumer), b"slow consumer: answers not read");
                    return Ok(());
                };
                slot = Some(taken);
            }
            {
                let now = shared.started.elapsed().as_secs_f64();
                let unix = chrono::Utc::now().timestamp();
                let store = shared.store.clone();
                // Answers read the store synchronously; keep the runtime's other
                // connections moving meanwhile.
                let joined = session.perspective().is_some();
                tokio::task::block_in_place(|| {
                    session.handle(now, unix, msg, &*store);
                    if !joined && let Some(perspective) = session.perspective().map(str::to_owned) {
                        let prepared = shared
                            .on_join
                            .as_ref()
                            .map_or(Ok(()), |hook| hook(&perspective, &*store));
                        match prepared {
                            Ok(()) => pending_join = Some(perspective),
                            Err(reason) => {
                                tracing::error!(%perspective, %reason, "session not prepared; refusing it");
                                session.fail(
                                    ErrorCode::Unavailable,
                                    format!("the server could not prepare your session: {reason}"),
                                );
                            }
                        }
                    }
                });
            }
        }
        // The game sees the player connected only once the handshake is
        // complete: a replayed early `Hello` never shows as a player.
        if !session.is_early()
            && let Some(perspective) = pending_join.take()
        {
            let _ = shared
                .commands
                .send(Command::Tick(TickInput::Joined { id, perspective }));
        }
        while let Some(out) = session.poll_output() {
            match out {
                Output::Control(m) => {
                    let bytes = write_message(send, &m).await?;
                    shared.metrics.sent("control", bytes);
                }
                Output::Answer { plan } => {
                    // The slot taken before the request was handled travels
                    // with its answer until the client has taken it.
                    let slot = slot.take();
                    if plan.subscribes() {
                        lock(&wanted).insert(plan.zone().clone(), plan.request());
                    }
                    let sender = AnswerSender {
                        conn: conn.clone(),
                        bulk: shared.slots.bulk.clone(),
                        store: shared.store.clone(),
                        stats: shared.stats.clone(),
                        metrics: shared.metrics.clone(),
                        entry: entry_kind,
                        commands: shared.commands.clone(),
                        wanted: wanted.clone(),
                        stall,
                        id,
                    };
                    tokio::spawn(async move {
                        let (_mine, light) = slot.unzip();
                        sender.send(plan, light).await;
                    });
                }
                Output::Subscribe { zone, shards } => {
                    let _ = shared.commands.send(Command::Tick(TickInput::Subscribe {
                        id,
                        zone,
                        shards,
                        proofs: false,
                    }));
                }
                Output::Unsubscribe { zone } => {
                    // Under the lock an answer task subscribes under: a zone
                    // left while its answer is still being sent stays left.
                    let mut wanted = lock(&wanted);
                    wanted.remove(&zone);
                    let _ = shared.commands.send(Command::Tick(TickInput::Unsubscribe { id, zone }));
                }
                Output::Intent {
                    perspective,
                    kind,
                    payload,
                    seq,
                } => {
                    if !shared.writable.load(Ordering::SeqCst) {
                        shared.stats.unavailable_intents.fetch_add(1, Ordering::Relaxed);
                        shared.metrics.reject("unavailable");
                        let rejected = Message::IntentRejected(IntentRejected {
                            seq,
                            code: ErrorCode::Unavailable as u16,
                            message: "the server cannot save the world right now; your action was not applied".into(),
                        });
                        let bytes = write_message(send, &rejected).await?;
                        shared.metrics.sent("control", bytes);
                    } else if shared.intents.accepts(&kind, &payload) {
                        let _ = shared.commands.send(Command::Tick(TickInput::Intent {
                            id,
                            seq,
                            intent: ReceivedIntent {
                                id: Default::default(),
                                perspective,
                                kind,
                                payload,
                            },
                        }));
                    } else {
                        shared.metrics.reject("unknown");
                        let rejected = Message::IntentRejected(IntentRejected {
                            seq,
                            code: ErrorCode::Protocol as u16,
                            message: format!("unknown intent {kind:?} or payload that does not decode"),
                        });
                        let bytes = write_message(send, &rejected).await?;
                        shared.metrics.sent("control", bytes);
                    }
                }
                Output::SignedIn { perspective } => {
                    let previous = lock(&shared.live).sign_in(&perspective, session.id());
                    if let Some(old) = previous.and_then(|s| lock(&shared.conns).get(&s).cloned()) {
                        shared.metrics.disconnect("replaced");
                        old.close(
                            close_code(ErrorCode::TokenInUse),
                            b"signed in again from another connection",
                        );
                    }
                }
                Output::SignedOut { perspective } => lock(&shared.live).sign_out(&perspective, session.id()),
                Output::Close { code, reason } => {
                    shared.metrics.disconnect(if code == ErrorCode::Timeout {
                        "hello_timeout"
                    } else {
                        "refused"
                    });
                    // Let the Error frame reach the client before closing
                    // (closing discards unsent stream data); bounded wait.
                    let _ = send.finish();
                    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
                    conn.close(close_code(code), reason.as_bytes());
                    return Ok(());
                }
            }
        }
    }
}

/// Answer bytes built per blocking call (at least one shard each).
const ANSWER_BATCH_BYTES: usize = 1024 * 1024;

/// A connection's zones with live deltas wanted, by the entry starting them.
type Wanted = Arc<std::sync::Mutex<HashMap<ZoneId, u32>>>;

use hoard_engine::lock::lock;

/// Sends one answer on its own stream, building each shard's message on a
/// blocking thread only when its turn comes, then starts live deltas.
struct AnswerSender {
    conn: Connection,
    /// The server's bulk slots, for an answer going on past its light part.
    bulk: Arc<FairPool>,
    store: Arc<dyn WorldStore>,
    stats: Arc<ServerStats>,
    metrics: Arc<ServerMetrics>,
    /// The entry's kind for the metrics, and when its request came.
    entry: Option<(&'static str, Instant)>,
    commands: std_mpsc::Sender<Command>,
    wanted: Wanted,
    stall: Duration,
    id: SessionId,
}

impl AnswerSender {
    /// Sends `plan`: its first [`LIGHT_ANSWER_BYTES`] under `light` (the
    /// request's light slot), the rest under a bulk slot of this address's
    /// share, waited for only if the answer goes on past them.
    async fn send(self, mut plan: AnswerPlan, light: Option<Slot>) {
        // The light slot is held until the answer goes on past its light
        // part; then a bulk slot is held instead, to the end.
        let mut light = light;
        let mut bulk: Option<Slot> = None;
        let mut light_part_sent = false;
        let slow = |why: &'static str| {
            self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            self.metrics.disconnect("slow_consumer");
            static STALLED: LogLimit = LogLimit::new();
            if let Some(left_out) = STALLED.allow() {
                tracing::warn!(peer = %self.conn.remote_address(), left_out, "{why}; disconnecting");
            }
            self.conn
                .close(close_code(ErrorCode::SlowConsumer), b"slow consumer: answer not read");
        };
        let Ok(Ok(mut stream)) = tokio::time::timeout(self.stall, self.conn.open_uni()).await else {
            return slow("no stream for a zone answer in time");
        };
        loop {
            // Past its light part, an answer goes on under a bulk slot.
            if light_part_sent && bulk.is_none() && !plan.is_done() {
                let ip = self.conn.remote_address().ip();
                match tokio::time::timeout(self.stall * 2, self.bulk.take(ip)).await {
                    Ok(taken) => bulk = Some(taken),
                    Err(_) => {
                        static BUSY: LogLimit = LogLimit::new();
                        if let Some(left_out) = BUSY.allow() {
                            tracing::warn!(peer = %self.conn.remote_address(), left_out, "no answer slot for this address in time; disconnecting");
                        }
                        self.metrics.disconnect("busy");
                        self.conn.close(
                            close_code(ErrorCode::Unavailable),
                            b"the server is too busy to answer; try again",
                        );
                        return;
                    }
                }
                drop(light.take());
            }
            let budget = if bulk.is_some() {
                ANSWER_BATCH_BYTES
            } else {
                LIGHT_ANSWER_BYTES
            };
            // Build the next messages on a blocking thread: several shards at
            // a time up to a byte budget (a warm entry's answers are tiny),
            // so the answer held in memory stays bounded by the budget plus
            // one shard.
            let store = self.store.clone();
            let built = tokio::task::spawn_blocking(move || {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while bytes < budget {
                    match plan.next_message(&*store) {
                        None => break,
                        Some(Ok(m)) => {
                            bytes += object_bytes(&m).max(64);
                            batch.push(m);
                        }
                        Some(Err(e)) => return (plan, batch, Some(e)),
                    }
                }
                (plan, batch, None)
            })
            .await;
            let Ok((returned, batch, failed)) = built else {
                return; // the runtime is shutting down
            };
            plan = returned;
            light_part_sent = true;
            let done = batch.is_empty() && failed.is_none();
            for message in batch {
                // Shard answers of any allowed size go in frames under the limit.
                for part in split(message, PART_BYTES) {
                    match tokio::time::timeout(self.stall, write_message(&mut stream, &part)).await {
                        Ok(Ok(bytes)) => self.metrics.sent("answer", bytes),
                        Ok(Err(_)) => return, // the connection ended
                        Err(_) => return slow("zone answer not taken in time"),
                    }
                }
            }
            if let Some(e) = failed {
                tracing::error!(zone = %plan.zone(), error = %e, "reading a shard for an answer failed");
                self.conn
                    .close(close_code(ErrorCode::Server), b"the server could not read the zone");
                return;
            }
            if done {
                break;
            }
        }
        let _ = stream.finish();
        if let Some((kind, since)) = self.entry {
            let label = KindLabel { kind };
            self.metrics.entries.get_or_create(&label).inc();
            self.metrics
                .entry_seconds
                .get_or_create(&label)
                .observe(since.elapsed().as_secs_f64());
            for answer in plan.kinds() {
                let kind = match answer {
                    AnswerKind::UpToDate => "up_to_date",
                    AnswerKind::Changes => "changes",
                    AnswerKind::Manifest => "manifest",
                    _ => "snapshot",
                };
                self.metrics.shard_answers.get_or_create(&KindLabel { kind }).inc();
            }
        }
        if let Some((zone, shards)) = plan.subscription() {
            let wanted = lock(&self.wanted);
            if wanted.get(&zone) == Some(&plan.request()) {
                let _ = self.commands.send(Command::Tick(TickInput::Subscribe {
                    id: self.id,
                    zone,
                    shards,
                    proofs: plan.proves(),
                }));
            }
        }
    }
}

/// A message for the delta stream, encoded: its frames (a delta of any
/// allowed size is split into frames under the limit). One encoding is
/// shared by every session a delta goes to.
type Frames = Arc<Vec<Vec<u8>>>;

fn encode_frames(message: &Message) -> Frames {
    Arc::new(
        split(message.clone(), PART_BYTES)
            .iter()
            .map(Message::to_frame)
            .collect(),
    )
}

pub(crate) struct Conn {
    pub(crate) deltas: mpsc::Sender<Frames>,
    pub(crate) conn: Connection,
}

/// Sessions' delta streams, as a driver (a world's link, a relay's) feeds
/// them: each message encoded once for the sessions it goes to in a row,
/// and a session whose queue is full closed as a slow consumer.
#[derive(Default)]
pub(crate) struct Outbox {
    conns: HashMap<SessionId, Conn>,
    /// The last message encoded: the outputs of one fan-out come in a row.
    encoded: Option<(Arc<Message>, Frames)>,
}

impl Outbox {
    pub(crate) fn register(&mut self, id: SessionId, conn: Conn) {
        self.conns.insert(id, conn);
    }

    pub(crate) fn remove(&mut self, id: SessionId) {
        self.conns.remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Queues `message` for `to`. `false`: `to` reads too slowly and was
    /// closed (and forgotten here); the caller removes its session.
    /// `slow` is counted before the close (whoever sees the connection
    /// closed sees it counted).
    pub(crate) fn queue(
        &mut self,
        to: SessionId,
        message: Arc<Message>,
        metrics: &ServerMetrics,
        slow: Option<&AtomicU64>,
    ) -> bool {
        let Some(c) = self.conns.get(&to) else { return true };
        let frames = match &self.encoded {
            Some((last, frames)) if Arc::ptr_eq(last, &message) => frames.clone(),
            _ => {
                let frames = encode_frames(&message);
                self.encoded = Some((message, frames.clone()));
                frames
            }
        };
        if c.deltas.try_send(frames).is_ok() {
            return true;
        }
        static UNREAD_DELTAS: LogLimit = LogLimit::new();
        if let Some(left_out) = UNREAD_DELTAS.allow() {
            tracing::warn!(
                session = to,
                left_out,
                "client does not read its deltas fast enough; disconnecting"
            );
        }
        metrics.disconnect("slow_consumer");
        if let Some(slow) = slow {
            slow.fetch_add(1, Ordering::Relaxed);
        }
        c.conn
            .close(close_code(ErrorCode::SlowConsumer), b"slow consumer: deltas not read");
        self.conns.remove(&to);
        false
    }

    /// Closes every connection with `reason`.
    pub(crate) fn close_all(&self, reason: &[u8]) {
        for c in self.conns.values() {
            c.conn.close(close_code(ErrorCode::Server), reason);
        }
    }

    /// Forgets the last encoding (a batch of outputs ended).
    pub(crate) fn flush(&mut self) {
        self.encoded = None;
    }
}

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
    core: TickCore,
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
    writable: Arc<AtomicBool>,
    failure: watch::Sender<Option<String>>,
    endpoint: Endpoint,
    conns: Outbox,
    /// The core's clock: seconds since this instant.
    started: Instant,
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
const FINISH_COMMIT_WAIT: Duration = Duration::from_secs(30);

/// How long a stopping server waits for its closed connections to drain.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// What the world thread owns besides the game and its link.
struct WorldThread {
    link: WorldLink,
    stop: Arc<AtomicBool>,
    tick: Duration,
}

impl WorldThread {
    /// Runs the world until stopped. A panic in the game's systems, or a
    /// store that stays broken, ends it with a failure report.
    fn run(mut self, mut game: Game) -> Game {
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
            let input = match cmd {
                Command::Register { id, deltas, conn } => {
                    self.conns.register(id, Conn { deltas, conn });
                    TickInput::Register { id }
                }
                Command::Tick(input) => {
                    if let TickInput::Remove { id } = input {
                        self.conns.remove(id);
                    }
                    input
                }
            };
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
        let mut result = self.core.after_frame(now, world, publisher, transients);
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
        self.endpoint.close(close_code(ErrorCode::Server), b"server failed");
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
        if let Err((objects, error)) = self.core.finish() {
            tracing::error!(%error, objects, "changes not saved at shutdown");
        }
        self.conns.close_all(b"server shutting down");
    }
}
