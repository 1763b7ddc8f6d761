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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use hoard_engine::ServerIdentity;
use hoard_engine::lock::lock;
use hoard_engine::store::WorldStore;
use hoard_metrics::{KindLabel, MetricsExporter, ServerMetrics};
use hoard_proto::auth::TokenAuthority;
use hoard_proto::intents::ReceivedIntent;
use hoard_proto::sync::answer::{AnswerKind, AnswerPlan, AnswerStep, Subscriptions};
use hoard_proto::sync::hub::SessionId;
use hoard_proto::sync::server::{LiveSessions, Output, ServerSession, SessionConfig};
use hoard_proto::sync::tick::{TickCore, TickInput};
use hoard_proto::wire::{ErrorCode, MAX_CONTROL_FRAME, Message, PART_BYTES, object_bytes, split};
use hoard_server::committer::Committer;
use hoard_server::log_limit::LogLimit;
use hoard_server::{Command, Frames, WorldLinkParts, WorldThread};
pub use hoard_server::{Game, GameRules, JoinHook, LeaveHook, ServerStats, TransientHook, WorldLink};
use hoard_trust::tls::{ServerKeys, TlsError};
use quinn::Endpoint;
use tokio::sync::{Semaphore, mpsc, watch};

use super::link::Link;
use super::slots::{AnswerSlots, FairPool, LIGHT_ANSWER_BYTES, Slot};
use super::stream::{FrameReader, StreamError, packed, write_message};

mod answer;
mod control;
mod options;
mod web;

use answer::*;
use control::*;
pub use options::*;
pub use web::{DEV_CERT_ROTATE, DEV_CERT_VALIDITY, WEB_PATH, WebCertificate, WebEndpoint, WebTransportOptions};

/// How long a stopping server waits for its closed connections to drain.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

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
    /// The WebTransport endpoint browsers connect to, if
    /// [`ServerOptions::web_transport`] asked for one.
    pub web: Option<WebEndpoint>,
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
        self.endpoint
            .close(close_code(ErrorCode::Server), b"server shutting down");
        if let Some(web) = &self.web {
            web.close(ErrorCode::Server, b"server shutting down");
        }
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
        let idle = async {
            self.endpoint.wait_idle().await;
            if let Some(web) = &self.web {
                web.endpoint().wait_idle().await;
            }
        };
        if tokio::time::timeout(DRAIN_WAIT, idle).await.is_err() {
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
    started: Instant,
    delta_queue: usize,
    next_id: AtomicU64,
    /// Live connections by session id, to close one from another's session.
    conns: std::sync::Mutex<HashMap<SessionId, Link>>,
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
        let signer = Arc::new(hoard_trust::heads::KeySigner::new(&keys.key).map_err(ServerError::Config)?);
        // Relays ask for the world's token keys, signed, to check world
        // tokens without holding a secret.
        config.token_keys = Some(
            hoard_trust::token_keys::sign_token_keys(&keys.identity, &keys.token_keys.accepted, &*signer)
                .map_err(ServerError::Config)?,
        );
        let source: Arc<dyn hoard_proto::proof::ProofSource> = Arc::new(hoard_proto::proof::OriginProofs::new(
            keys.identity,
            &config.service,
            signer,
        ));
        config.world_key = keys.world_key().map_err(ServerError::Config)?;
        config.proofs = Some(source.clone());
        proofs = Some(source);
        Ok(())
    })
    .await?;
    let metered: Arc<dyn WorldStore> = Arc::new(hoard_metrics::MeteredStore::new(store, bound.metrics.clone()));
    let committer = Committer::start(metered.clone()).map_err(|source| ServerError::Bind {
        addr: options.listen,
        source,
    })?;
    let mut core =
        TickCore::new(options.store_retry_for.as_secs_f64()).with_transient_interval(match options.transient_hz {
            0 => 0.0,
            hz => 1.0 / f64::from(hz),
        });
    if let Some(proofs) = proofs {
        core = core.with_proofs(proofs);
    }
    let endpoints = bound.endpoints;
    let link = WorldLink::new(WorldLinkParts {
        core,
        store: metered,
        committer,
        commands: bound.commands,
        stats: bound.handle.stats.clone(),
        metrics: bound.metrics,
        writable: bound.writable,
        failure: bound.failure,
        close_all: Box::new(move |code, reason| {
            for endpoint in &endpoints {
                endpoint.close(close_code(code), reason);
            }
        }),
    });
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
    /// The raw QUIC endpoint and the WebTransport one, if any.
    pub(crate) endpoints: Vec<Endpoint>,
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
    config.transport_config(Arc::new(super::transport::server_with(
        options.mtu_discovery,
        options.ack_delay,
    )));
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
    let auth = keys.authority().with_dev_mode(options.dev_mode);
    let mut session_config = SessionConfig::new(keys.identity, &options.service, rules.registry, auth);
    session_config.tick_hz = options.tick_hz;
    session_config.access = rules.access.clone();
    session_config.directory = options.directory.clone();
    session_config.intents = rules.intents.clone();
    getrandom::fill(&mut session_config.intent_nonce_key).map_err(|e| ServerError::Config(e.to_string()))?;
    configure(&keys, &mut session_config)?;
    let auth = session_config.auth.clone();
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
    let web = match &options.web_transport {
        Some(web) => Some(web::bind_web(web, &shared)?),
        None => None,
    };
    let accept_task = tokio::spawn(accept_loop(endpoint.clone(), shared, Flavor::Quic));
    tracing::info!(%addr, identity = %keys.identity, "hoard server listening");
    let endpoints = std::iter::once(endpoint.clone())
        .chain(web.as_ref().map(|w| w.endpoint().clone()))
        .collect();
    let handle = ServerHandle {
        addr,
        identity: keys.identity,
        stats,
        auth,
        metrics: metrics.clone(),
        metrics_addr: exporter.as_ref().map(MetricsExporter::addr),
        web,
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
        endpoints,
    })
}

/// A QUIC application close code for hoard's `code` (a whole endpoint's
/// close; one connection's goes through [`Link::close`]).
pub(super) fn close_code(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code as u32)
}

/// Which protocol an endpoint's connections speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// hoard over raw QUIC.
    Quic,
    /// hoard over WebTransport sessions (HTTP/3).
    Web,
}

/// Accepts an endpoint's connections, within the server's connection limits
/// (in all and per address; both endpoints count against the same ones),
/// each served on a task of its own.
async fn accept_loop(endpoint: Endpoint, shared: Arc<Shared>, flavor: Flavor) {
    let max = shared.options.max_connections;
    while let Some(incoming) = endpoint.accept().await {
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
                    let served = match flavor {
                        Flavor::Quic => serve(incoming, &shared).await,
                        Flavor::Web => serve_web(incoming, &shared).await,
                    };
                    if let Err(e) = served {
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
}
