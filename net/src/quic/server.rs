//! The QUIC server: accepts connections, runs a [`ServerSession`] per
//! connection, and ticks the game's world on its own thread — run the
//! schedule, gather, commit durably, and only then publish the deltas.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use bevy_ecs::schedule::Schedule;
use bevy_ecs::world::World;
use hoard_engine::store::WorldStore;
use hoard_engine::{Publisher, Seq, ServerIdentity, ShardId, ZoneId};
use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;

use super::intents::{ConnectedPlayers, IncomingIntents, IntentRegistry, ReceivedIntent};
use super::stream::{FrameReader, StreamError, write_message};
use crate::auth::TokenAuthority;
use crate::sync::hub::{Hub, SessionId};
use crate::sync::server::{Output, ServerSession, SessionConfig};
use crate::tls::{ServerKeys, TlsError};
use crate::wire::{ErrorCode, IntentRejected, MAX_CONTROL_FRAME, MAX_TRANSIENT_BYTES, Message, Transient};

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
}

impl ServerOptions {
    /// Defaults: 20 Hz, 1,000 connections, 256 queued deltas, no dev mode.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerOptions {
        ServerOptions {
            listen,
            data_dir,
            service: "world".into(),
            tick_hz: 20,
            dev_mode: false,
            max_connections: 1000,
            delta_queue: 256,
        }
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
    pub access: Arc<dyn crate::sync::server::AccessPolicy>,
    /// Called once per connection when its perspective is authenticated,
    /// before any zone request of it is answered (the demo creates the
    /// player's inventory shard here).
    pub on_join: Option<JoinHook>,
    /// Called once per tick after the schedule: each zone's transient state
    /// (never stored — who stands where), encoded by the game. A zone's state
    /// goes to the sessions in that zone when it differs from the last sent,
    /// and to each session entering the zone; a zone left out is unchanged.
    pub transient: Option<TransientHook>,
}

/// See [`Game::on_join`].
pub type JoinHook = Arc<dyn Fn(&str, &dyn WorldStore) + Send + Sync>;

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
            access: Arc::new(crate::sync::server::OpenWorld),
            on_join: None,
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
    /// Connections refused for the connection limit.
    pub refused: AtomicU64,
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Connections closed for reading too slowly.
    pub slow_consumers: AtomicU64,
    /// Objects committed.
    pub committed_objects: AtomicU64,
}

enum Command {
    Register {
        id: SessionId,
        deltas: mpsc::Sender<Message>,
        conn: Connection,
    },
    Subscribe {
        id: SessionId,
        zone: ZoneId,
        shards: Vec<(ShardId, Seq)>,
    },
    Unsubscribe {
        id: SessionId,
        zone: ZoneId,
    },
    Joined {
        id: SessionId,
        perspective: String,
    },
    Remove {
        id: SessionId,
    },
    Intent(ReceivedIntent),
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
    endpoint: Endpoint,
    stop: Arc<AtomicBool>,
    world_thread: Option<std::thread::JoinHandle<Game>>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// Stops accepting, closes connections, stops the world thread, and
    /// returns the game (its world as of the last tick).
    pub async fn shutdown(mut self) -> Option<Game> {
        self.endpoint.close(
            quinn::VarInt::from_u32(ErrorCode::Server as u32),
            b"server shutting down",
        );
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.world_thread.take()?;
        let game = tokio::task::spawn_blocking(move || thread.join().ok())
            .await
            .ok()
            .flatten();
        self.endpoint.wait_idle().await;
        if let Some(accept) = self.accept_task.take() {
            let _ = accept.await;
        }
        game
    }
}

struct Shared {
    config: Arc<SessionConfig>,
    store: Arc<dyn WorldStore>,
    commands: std_mpsc::Sender<Command>,
    stats: Arc<ServerStats>,
    intents: IntentRegistry,
    started: Instant,
    delta_queue: usize,
    next_id: AtomicU64,
    /// Live connections by session id, to close one from another's session.
    conns: std::sync::Mutex<HashMap<SessionId, Connection>>,
    on_join: Option<JoinHook>,
}

/// Starts the server: binds, prints nothing (the caller announces), spawns
/// the accept loop on the current tokio runtime and the world on a thread.
pub async fn start(
    options: ServerOptions,
    store: Arc<dyn WorldStore>,
    game: Game,
) -> Result<ServerHandle, ServerError> {
    let keys = ServerKeys::load_or_create(&options.data_dir)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(keys.rustls_config()?)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(super::transport::server()));
    let endpoint = Endpoint::server(config, options.listen).map_err(|source| ServerError::Bind {
        addr: options.listen,
        source,
    })?;
    let addr = endpoint.local_addr().map_err(|source| ServerError::Bind {
        addr: options.listen,
        source,
    })?;
    let auth = TokenAuthority::new(keys.token_secret).with_dev_mode(options.dev_mode);
    let mut session_config = SessionConfig::new(
        keys.identity,
        &options.service,
        game.publisher.registry().hash(),
        auth.clone(),
    );
    session_config.tick_hz = options.tick_hz;
    session_config.access = game.access.clone();
    // The world as loaded or spawned is durable before anyone may see it.
    let mut game = game;
    let initial = game.publisher.gather(&mut game.world);
    if !initial.changes.is_empty() {
        store
            .commit(&initial.changes)
            .map_err(|e| ServerError::Config(format!("committing the initial world: {e}")))?;
    }
    let stats = Arc::new(ServerStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (commands, command_rx) = std_mpsc::channel();
    let shared = Arc::new(Shared {
        config: Arc::new(session_config),
        store: store.clone(),
        commands,
        stats: stats.clone(),
        intents: game.intents.clone(),
        started: Instant::now(),
        delta_queue: options.delta_queue,
        next_id: AtomicU64::new(1),
        conns: std::sync::Mutex::new(HashMap::new()),
        on_join: game.on_join.clone(),
    });
    let world_thread = {
        let (stop, stats, store) = (stop.clone(), stats.clone(), store.clone());
        let tick = Duration::from_secs_f64(1.0 / f64::from(options.tick_hz.max(1)));
        std::thread::Builder::new()
            .name("hoard-world".into())
            .spawn(move || world_loop(game, store, command_rx, stop, stats, tick))
            .map_err(|source| ServerError::Bind { addr, source })?
    };
    let accept = endpoint.clone();
    let max = options.max_connections;
    let accept_task = tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            if shared.stats.connections.load(Ordering::SeqCst) >= max {
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                incoming.refuse();
                continue;
            }
            shared.stats.connections.fetch_add(1, Ordering::SeqCst);
            let shared = shared.clone();
            tokio::spawn(async move {
                let peer = incoming.remote_address();
                if let Err(e) = serve(incoming, &shared).await {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                shared.stats.connections.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    tracing::info!(%addr, identity = %keys.identity, "hoard server listening");
    Ok(ServerHandle {
        addr,
        identity: keys.identity,
        stats,
        auth,
        endpoint,
        stop,
        world_thread: Some(world_thread),
        accept_task: Some(accept_task),
    })
}

fn close_code(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code as u32)
}

async fn serve(
    incoming: quinn::Incoming,
    shared: &Arc<Shared>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let conn = incoming.accept()?.await?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (mut send, recv) = conn.accept_bi().await?;
    let mut reader = FrameReader::new(recv, MAX_CONTROL_FRAME);
    let mut session = ServerSession::new(shared.config.clone(), id);
    if let Ok(mut conns) = shared.conns.lock() {
        conns.insert(id, conn.clone());
    }
    let (delta_tx, mut delta_rx) = mpsc::channel::<Message>(shared.delta_queue);
    let _ = shared.commands.send(Command::Register {
        id,
        deltas: delta_tx,
        conn: conn.clone(),
    });
    // Live deltas (and transient states) on their own stream, opened on first use.
    let delta_conn = conn.clone();
    tokio::spawn(async move {
        let mut stream = None;
        while let Some(message) = delta_rx.recv().await {
            if stream.is_none() {
                match delta_conn.open_uni().await {
                    Ok(s) => stream = Some(s),
                    Err(_) => return,
                }
            }
            if let Some(s) = stream.as_mut()
                && write_message(s, &message).await.is_err()
            {
                return;
            }
        }
    });
    let result = control_loop(&conn, &mut send, &mut reader, &mut session, shared, id).await;
    session.closed();
    if let Ok(mut conns) = shared.conns.lock() {
        conns.remove(&id);
    }
    let _ = shared.commands.send(Command::Remove { id });
    result
}

async fn control_loop(
    conn: &Connection,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    session: &mut ServerSession,
    shared: &Arc<Shared>,
    id: SessionId,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    loop {
        let next = reader.next().await;
        let msg = match next {
            Ok(Some((msg, _))) => msg,
            Ok(None) => return Ok(()),
            Err(StreamError::Read(e)) => return Err(e.into()),
            Err(e) => {
                session.fail(ErrorCode::Protocol, e.to_string());
                Message::Error(crate::wire::ErrorMsg {
                    code: 0,
                    message: String::new(),
                })
            }
        };
        if !matches!(msg, Message::Error(_)) {
            let now = shared.started.elapsed().as_secs_f64();
            let unix = chrono::Utc::now().timestamp();
            let store = shared.store.clone();
            // Answers read the store synchronously; keep the runtime's other
            // connections moving meanwhile.
            let joined = session.perspective().is_some();
            tokio::task::block_in_place(|| {
                session.handle(now, unix, msg, &*store);
                if !joined && let Some(perspective) = session.perspective() {
                    if let Some(hook) = shared.on_join.as_ref() {
                        hook(perspective, &*store);
                    }
                    let perspective = perspective.to_owned();
                    let _ = shared.commands.send(Command::Joined { id, perspective });
                }
            });
        }
        while let Some(out) = session.poll_output() {
            match out {
                Output::Control(m) => {
                    write_message(send, &m).await?;
                }
                Output::Answer { messages, .. } => {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let Ok(mut stream) = conn.open_uni().await else {
                            return;
                        };
                        for m in &messages {
                            if write_message(&mut stream, m).await.is_err() {
                                return;
                            }
                        }
                        let _ = stream.finish();
                    });
                }
                Output::Subscribe { zone, shards } => {
                    let _ = shared.commands.send(Command::Subscribe { id, zone, shards });
                }
                Output::Unsubscribe { zone } => {
                    let _ = shared.commands.send(Command::Unsubscribe { id, zone });
                }
                Output::Intent {
                    perspective,
                    kind,
                    payload,
                    seq,
                } => {
                    if shared.intents.accepts(&kind, &payload) {
                        let _ = shared.commands.send(Command::Intent(ReceivedIntent {
                            perspective,
                            kind,
                            payload,
                        }));
                    } else {
                        let rejected = Message::IntentRejected(IntentRejected {
                            seq,
                            code: ErrorCode::Protocol as u16,
                            message: format!("unknown intent {kind:?} or payload that does not decode"),
                        });
                        write_message(send, &rejected).await?;
                    }
                }
                Output::Kick { session } => {
                    if let Some(old) = shared.conns.lock().ok().and_then(|c| c.get(&session).cloned()) {
                        old.close(
                            close_code(ErrorCode::TokenInUse),
                            b"signed in again from another connection",
                        );
                    }
                }
                Output::Close { code, reason } => {
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

struct Conn {
    deltas: mpsc::Sender<Message>,
    conn: Connection,
}

fn world_loop(
    mut game: Game,
    store: Arc<dyn WorldStore>,
    commands: std_mpsc::Receiver<Command>,
    stop: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    tick: Duration,
) -> Game {
    let mut hub = Hub::new();
    let mut conns: HashMap<SessionId, Conn> = HashMap::new();
    game.world.init_resource::<IncomingIntents>();
    game.world.init_resource::<ConnectedPlayers>();
    let mut perspectives: HashMap<SessionId, String> = HashMap::new();
    let mut next = Instant::now();
    let mut last_transient: HashMap<ZoneId, Vec<u8>> = HashMap::new();
    let deliver =
        |conns: &mut HashMap<SessionId, Conn>, hub: &mut Hub, id: SessionId, message: Message, stats: &ServerStats| {
            let Some(c) = conns.get(&id) else { return };
            if c.deltas.try_send(message).is_err() {
                tracing::warn!(
                    session = id,
                    "client does not read its deltas fast enough; disconnecting"
                );
                stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                c.conn
                    .close(close_code(ErrorCode::SlowConsumer), b"slow consumer: deltas not read");
                conns.remove(&id);
                hub.remove(id);
            }
        };
    while !stop.load(Ordering::SeqCst) {
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                Command::Register { id, deltas, conn } => {
                    conns.insert(id, Conn { deltas, conn });
                }
                Command::Subscribe { id, zone, shards } => {
                    for delta in hub.subscribe(id, &zone, &shards, &*store) {
                        deliver(&mut conns, &mut hub, id, Message::Delta(delta), &stats);
                    }
                    if let Some(payload) = last_transient.get(&zone) {
                        let message = Message::Transient(Transient {
                            zone: zone.clone(),
                            payload: payload.clone(),
                        });
                        deliver(&mut conns, &mut hub, id, message, &stats);
                    }
                }
                Command::Unsubscribe { id, zone } => hub.unsubscribe(id, &zone),
                Command::Joined { id, perspective } => {
                    *game
                        .world
                        .resource_mut::<ConnectedPlayers>()
                        .0
                        .entry(perspective.clone())
                        .or_default() += 1;
                    perspectives.insert(id, perspective);
                }
                Command::Remove { id } => {
                    hub.remove(id);
                    conns.remove(&id);
                    if let Some(perspective) = perspectives.remove(&id) {
                        let mut connected = game.world.resource_mut::<ConnectedPlayers>();
                        if let Some(n) = connected.0.get_mut(&perspective) {
                            *n -= 1;
                            if *n == 0 {
                                connected.0.remove(&perspective);
                            }
                        }
                    }
                }
                Command::Intent(intent) => game.world.resource_mut::<IncomingIntents>().0.push(intent),
            }
        }
        game.schedule.run(&mut game.world);
        game.world.resource_mut::<IncomingIntents>().0.clear();
        if let Some(hook) = &game.transient {
            for (zone, payload) in hook(&mut game.world) {
                if payload.len() > MAX_TRANSIENT_BYTES {
                    tracing::warn!(%zone, bytes = payload.len(), "transient state over the limit; not sent");
                    continue;
                }
                if last_transient.get(&zone) == Some(&payload) {
                    continue;
                }
                for id in hub.sessions_in(&zone) {
                    let message = Message::Transient(Transient {
                        zone: zone.clone(),
                        payload: payload.clone(),
                    });
                    deliver(&mut conns, &mut hub, id, message, &stats);
                }
                last_transient.insert(zone, payload);
            }
        }
        let gathered = game.publisher.gather(&mut game.world);
        if !gathered.changes.is_empty() {
            // Durable before published: no client may hold state a crash could take back.
            match store.commit(&gathered.changes) {
                Ok(receipt) => {
                    stats
                        .committed_objects
                        .fetch_add(gathered.changes.len() as u64, Ordering::Relaxed);
                    for (id, delta) in hub.publish(&gathered.changes, &receipt, &*store) {
                        deliver(&mut conns, &mut hub, id, Message::Delta(delta), &stats);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "commit failed; the tick's changes are not published")
                }
            }
        }
        stats.ticks.fetch_add(1, Ordering::Relaxed);
        next += tick;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    for c in conns.values() {
        c.conn.close(close_code(ErrorCode::Server), b"server shutting down");
    }
    game
}
