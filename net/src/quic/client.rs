//! The QUIC client: connects (pinning the server identity), says hello, and
//! carries out proto's
//! [`ClientSession`](hoard_proto::sync::session::ClientSession) — the bytes
//! of its messages, its timers, its cache writes (journals, whole copies,
//! audits) and its entries' waiters — handing verified zones and live deltas
//! to the game as [`ClientUpdate`]s ([`HoardClient::take_updates`]); turning
//! them into entities is the client plugin's job (`hoard-bevy`'s
//! `Materialiser`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoard_client::SessionSettings;
use hoard_client::host::{ClientHost, Inbound, Locked, Outcome, Writes};
use hoard_engine::lock::lock;
use hoard_engine::{ObjectId, PublishRegistry, ServerIdentity, ShardId, ZoneId};
use hoard_world_cache::{CachedObject, CachedShard, WorldCache};
pub use quinn::Endpoint;
use quinn::{Connection, SendStream};
use serde::Serialize;
use tokio::sync::{Mutex as AsyncMutex, oneshot};

use super::stream::{FrameReader, write_message};
use hoard_proto::sync::client::EntryStats;
use hoard_proto::wire::{Intent, MAX_CONTROL_FRAME, Message};
use hoard_trust::tls::{KnownServers, SERVER_NAME};

pub(crate) mod inbound;

/// How to reach a server.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The server's address.
    pub server: SocketAddr,
    /// The cache root (also holds `known_servers`).
    pub cache_dir: PathBuf,
    /// The perspective's token.
    pub token: String,
    /// The service.
    pub service: String,
    /// A fingerprint to require; otherwise `known_servers` (trust on first use).
    pub pin: Option<ServerIdentity>,
    /// The world this server serves, when it is a relay of it: the cache is
    /// keyed by the world (so it stays valid through any relay and at the
    /// origin), and every shard is checked against the world's signed
    /// heads. `None`: the server is the world's own.
    pub world: Option<ServerIdentity>,
    /// Ask for signed heads and check them even from the world's own server
    /// (a relay's upstream does, to hand them on).
    pub proofs: bool,
    /// A QUIC endpoint (one UDP socket and its driver) to connect from,
    /// shared with other connections; `None`: the connection gets an
    /// endpoint of its own. A process holding many connections at once (a
    /// load tester's bots) saves a socket, a driver task and a wake-up per
    /// received datagram for each. Its owner waits for it to go idle.
    pub endpoint: Option<Endpoint>,
    /// Where the cache's files live, if not on disk under `cache_dir`
    /// (`cache_dir` still holds the cache's lock and `known_servers`): a
    /// process holding many clients whose caches need not outlive it (a
    /// load tester's bots) keeps them in memory
    /// ([`hoard_world_cache::MemStorage`]).
    pub cache_files: Option<CacheFiles>,
    /// Ask the server to compress zone answers and deltas (`Packed`, zstd):
    /// a cold entry of the reference zone is about 0.6 of its bytes, for a
    /// few milliseconds of CPU a megabyte on each side. On by default.
    pub compression: bool,
    /// The player's intent key, when the token binds it (a world token's
    /// `key` claim): the client then signs every intent with it, under the
    /// nonce the server gives the session, so no relay between can alter,
    /// drop, reorder or replay one unnoticed.
    pub player_key: Option<hoard_proto::intent_sig::PlayerKey>,
    /// Ask for the world's signed token keys in `Welcome` (a relay does,
    /// to check its players' world tokens): see
    /// [`HoardClient::token_keys`].
    pub token_keys: bool,
}

/// A cache's file storage, for [`ClientOptions::cache_files`].
#[derive(Clone)]
pub struct CacheFiles(pub Arc<dyn hoard_world_cache::Storage>);

impl std::fmt::Debug for CacheFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheFiles(..)")
    }
}

impl ClientOptions {
    /// Options for the world's own server at `server`, service `world`,
    /// trusting it on first use, with the cache at `cache_dir`.
    pub fn new(server: SocketAddr, cache_dir: PathBuf, token: String) -> ClientOptions {
        ClientOptions {
            server,
            cache_dir,
            token,
            service: "world".into(),
            pin: None,
            world: None,
            proofs: false,
            endpoint: None,
            cache_files: None,
            compression: true,
            player_key: None,
            token_keys: false,
        }
    }

    /// Pins the server's identity (its fingerprint, or the world's): the
    /// client refuses any other. Without it the first identity seen is
    /// trusted and remembered (`known_servers` in the cache directory).
    ///
    /// ```
    /// # use hoard_net::quic::client::ClientOptions;
    /// # let identity = hoard_engine::ServerIdentity([7; 32]);
    /// let options = ClientOptions::new("127.0.0.1:7000".parse().unwrap(), "cache".into(), "token".into())
    ///     .with_pin(identity)
    ///     .with_service("arena");
    /// assert_eq!((options.pin, options.service.as_str()), (Some(identity), "arena"));
    /// ```
    #[must_use]
    pub fn with_pin(mut self, identity: ServerIdentity) -> ClientOptions {
        self.pin = Some(identity);
        self
    }

    /// Names the service (world) to join on the server (default `world`).
    #[must_use]
    pub fn with_service(mut self, service: impl Into<String>) -> ClientOptions {
        self.service = service.into();
        self
    }

    /// Who the client is and where it caches, apart from how it reaches
    /// the server: what any driver of the session needs.
    pub fn settings(&self) -> SessionSettings {
        SessionSettings {
            cache_dir: self.cache_dir.clone(),
            cache_files: self.cache_files.as_ref().map(|CacheFiles(files)| files.clone()),
            token: self.token.clone(),
            service: self.service.clone(),
            world: self.world,
            proofs: self.proofs,
            compression: self.compression,
            player_key: self.player_key.clone(),
            token_keys: self.token_keys,
        }
    }
}

/// Longest a zone entry may take before [`HoardClient::enter_zone`] gives up
/// (a 100,000-object cold entry takes a few seconds on a slow link); the
/// sync's own timer ([`hoard_proto::sync::client::ENTRY_TIMEOUT_SECS`]).
pub const ENTRY_TIMEOUT: Duration = Duration::from_secs(hoard_proto::sync::client::ENTRY_TIMEOUT_SECS as u64);

pub use hoard_client::host::{CACHE_BUDGET_BYTES, CACHE_MAX_AGE};

/// What a `hoard://` URL names ([`HoardClient::resolve`]).
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

pub use hoard_proto::client::{ClientError, ClientEvent, ClientUpdate};

type Pending = ClientUpdate;

/// What the QUIC driver keeps under the connection's one lock, beside the
/// sans-IO session ([`ClientHost::lock`], quinn's pattern). Held only for
/// short, non-blocking steps: never across an await, a cache write or a
/// send.
#[derive(Default)]
struct Driver {
    /// Callers waiting for each zone entry in flight (a second `enter_zone`
    /// of a zone joins the first instead of replacing it).
    waiting: HashMap<ZoneId, Vec<EntryWaiter>>,
    /// While a 0-RTT handshake is under way: what was sent as early data,
    /// to send again if the server refuses it (bounded: a client sends only
    /// `EnterZone` before its handshake completes).
    early_log: Option<Vec<Message>>,
}

/// What a connection's tasks share: its host (the session and the
/// [`Driver`] state under one lock), the game-facing queue under its own
/// (the game takes it every frame and must never wait behind the network),
/// and the control stream's writer.
struct Inner {
    /// The nonce the server gave for signing intents, once it came.
    intent_nonce: tokio::sync::watch::Sender<Option<[u8; 16]>>,
    /// The session, the cache and this driver's own state.
    host: ClientHost<Driver>,
    pending: Mutex<Vec<Pending>>,
    /// Signalled whenever something is pending for [`HoardClient::take_updates`].
    changed: tokio::sync::Notify,
    /// Signalled when an entry starts, so the timer task re-reads the sync's
    /// next timeout.
    timer: tokio::sync::Notify,
    /// The control stream, shared with the background readers (they send repairs).
    control: AsyncMutex<SendStream>,
}

/// A connected client.
pub struct HoardClient {
    conn: Connection,
    inner: Arc<Inner>,
    registry: PublishRegistry,
    identity: ServerIdentity,
    perspective: String,
    zones: Vec<ZoneId>,
    /// The seq of the last intent given out (the first is 1).
    next_intent: std::sync::atomic::AtomicU32,
    /// How intents are signed (hoard-client's rule).
    signing: hoard_client::IntentSigning,
    /// The world's signed token keys, if `Welcome` brought them.
    token_keys: Option<hoard_proto::wire::SignedTokenKeys>,
    early_data: Option<bool>,
    /// The world's identity (the cache namespace) and key, from `Welcome`.
    world: ServerIdentity,
    world_key: Vec<u8>,
    endpoint: Endpoint,
    /// Whether `endpoint` is this client's alone (it then waits for it to
    /// go idle on closing).
    own_endpoint: bool,
}

pub(crate) fn connect_err(addr: SocketAddr, e: impl std::fmt::Display) -> ClientError {
    ClientError::Connect {
        addr,
        detail: e.to_string(),
    }
}

/// How long a signed intent waits for its session's nonce (hoard-client's rule).
pub use hoard_client::intents::NONCE_WAIT;

/// How long a client that failed to read or write waits for the
/// connection's close, to learn the server's reason.
const CLOSE_REASON_WAIT: Duration = Duration::from_secs(2);

/// The server's reason for closing `conn`, if it closed it with one (a
/// refused token, a newer session of the same player, a slow consumer):
/// waits up to [`CLOSE_REASON_WAIT`] for the close to arrive. A write that
/// failed because the server had refused `Hello` and stopped reading says
/// only "stream write failed"; the close carries the refusal.
async fn server_close_reason(conn: &Connection) -> Option<ClientError> {
    let closed = match conn.close_reason() {
        Some(closed) => closed,
        None => tokio::time::timeout(CLOSE_REASON_WAIT, conn.closed()).await.ok()?,
    };
    refusal_of(&closed)
}

/// The server's refusal in a connection's close, if the server closed it
/// with a code and reason.
pub(crate) fn refusal_of(closed: &quinn::ConnectionError) -> Option<ClientError> {
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => Some(ClientError::Refused {
            code: c.error_code.into_inner().try_into().unwrap_or(u16::MAX),
            message: String::from_utf8_lossy(&c.reason).into_owned(),
        }),
        _ => None,
    }
}

/// Ends the session of a connection that has closed: with the server's
/// reason when it closed it (a newer session of the player, a slow
/// consumer, a failing server), else as lost with `lost`.
fn fail_closed(inner: &Arc<Inner>, conn: &Connection, lost: &str) {
    match conn.close_reason().as_ref().and_then(refusal_of) {
        Some(error) => fail_with(inner, &error.to_string(), error),
        None => fail_all(inner, lost),
    }
}

/// Why signing in failed after `failure` (a write or read of the control
/// stream): the server's `Error` frame on `recv` if it sent one, else its
/// close reason, else `failure` itself.
async fn refusal_or(recv: Option<quinn::RecvStream>, conn: &Connection, failure: ClientError) -> ClientError {
    if let Some(recv) = recv {
        let mut control = FrameReader::new(recv, MAX_CONTROL_FRAME);
        if let Ok(Ok(Some((Message::Error(e), _)))) = tokio::time::timeout(CLOSE_REASON_WAIT, control.next()).await {
            return ClientError::Refused {
                code: e.code,
                message: e.message,
            };
        }
    }
    server_close_reason(conn).await.unwrap_or(failure)
}

/// A client endpoint (a UDP socket on an ephemeral port of every local
/// address of `server`'s family) from which to reach `server`: what each
/// connection opens for itself, or one to share between many through
/// [`ClientOptions::endpoint`]. Needs a running tokio runtime.
pub fn client_endpoint(server: SocketAddr) -> std::io::Result<Endpoint> {
    let bind = if server.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let socket = super::socket::bind(bind)?;
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
}

/// A zone entry started by [`HoardClient::connect_and_enter`].
#[derive(Debug)]
pub struct PendingEntry(oneshot::Receiver<Result<EntryStats, ClientError>>);

impl PendingEntry {
    /// Waits until the zone is verified and written (or the entry failed).
    pub async fn wait(self) -> Result<EntryStats, ClientError> {
        self.0
            .await
            .map_err(|_| ClientError::Lost("the connection closed during zone entry".into()))?
    }
}

/// Registers a caller waiting for the entry of `zone`; also says whether an
/// entry of it was already in flight (the caller then joins it).
fn wait_for_entry(
    inner: &Inner,
    zone: &ZoneId,
) -> Result<(oneshot::Receiver<Result<EntryStats, ClientError>>, bool), ClientError> {
    let (tx, rx) = oneshot::channel();
    let mut state = inner.state();
    let waiters = state.driver.waiting.entry(zone.clone()).or_default();
    waiters.push(tx);
    Ok((rx, waiters.len() > 1))
}

/// A connection whose `Hello` is sent: after its handshake, or — a
/// resumed session — as 0-RTT data with the handshake still under way.
struct Opened {
    conn: Connection,
    endpoint: Endpoint,
    own_endpoint: bool,
    cache: WorldCache,
    identity: ServerIdentity,
    send: SendStream,
    recv: quinn::RecvStream,
    /// Resolves when the handshake of a 0-RTT connection completes: `true`
    /// if the server took the early data, `false` if it must be sent again.
    early: Option<quinn::ZeroRttAccepted>,
    /// Once settled: whether early data was sent and taken (`None`: a full
    /// handshake).
    early_data: Option<bool>,
    hello: Message,
}

impl Opened {
    /// Opens the cache, connects (pinning the server identity), opens the
    /// control stream and writes `Hello`.
    async fn open(options: &ClientOptions, registry: &PublishRegistry) -> Result<Opened, ClientError> {
        let addr = options.server;
        // Another process may be finishing with this cache (a previous run
        // exiting): wait briefly, then fall back to read-only and say so.
        // Opening may wait for the lock and fsyncs a new folder: off the
        // async workers.
        let cache_dir = options.cache_dir.clone();
        let files = options.cache_files.as_ref().map(|CacheFiles(files)| files.clone());
        let cache = tokio::task::spawn_blocking(move || hoard_client::open_cache(&cache_dir, files))
            .await
            .map_err(|e| ClientError::Cache(e.to_string()))??;
        let Dialed {
            conn,
            endpoint,
            own_endpoint,
            identity,
            early,
        } = Dialed::dial(options).await?;
        let hello = Message::Hello(options.settings().hello(registry.hash()));
        let (send, recv, early, early_data) = say_hello(&conn, addr, identity, early, &hello).await?;
        Ok(Opened {
            conn,
            endpoint,
            own_endpoint,
            cache,
            identity,
            send,
            recv,
            early,
            early_data,
            hello,
        })
    }
}

/// A QUIC connection to the server, its identity checked (pinned, or
/// trusted on first use and remembered); with a session ticket from an
/// earlier connection in this process it is 0-RTT, its handshake still
/// under way.
pub(crate) struct Dialed {
    pub(crate) conn: Connection,
    pub(crate) endpoint: Endpoint,
    pub(crate) own_endpoint: bool,
    pub(crate) identity: ServerIdentity,
    /// Resolves when a 0-RTT connection's handshake completes: whether the
    /// server took the early data.
    pub(crate) early: Option<quinn::ZeroRttAccepted>,
}

impl Dialed {
    /// Connects to `options.server`, pinning its identity.
    pub(crate) async fn dial(options: &ClientOptions) -> Result<Dialed, ClientError> {
        let addr = options.server;
        let known = KnownServers::new(options.cache_dir.join("known_servers"));
        let pin = options.pin.or_else(|| known.get(&addr.to_string()));
        // A server already met in this process is connected to with the same
        // configuration as before, so its session resumes: `Hello` (and
        // `EnterZone`) then go as 0-RTT data.
        let addr_name = addr.to_string();
        let known_path = Some(known.path().to_owned());
        let tls = match pin {
            Some(identity) => super::resume::resumable_client_config(&addr_name, identity, known_path.clone()),
            None => super::resume::new_client_config(&addr_name, None, known_path.clone()),
        }
        .map_err(|e| connect_err(addr, e))?;
        let quic =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls.crypto.clone()).map_err(|e| connect_err(addr, e))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(super::transport::client()));
        config.token_store(tls.tokens.clone());
        let (endpoint, own_endpoint) = match &options.endpoint {
            Some(shared) => (shared.clone(), false),
            None => (client_endpoint(addr).map_err(|e| connect_err(addr, e))?, true),
        };
        let connecting = endpoint
            .connect_with(config, addr, SERVER_NAME)
            .map_err(|e| connect_err(addr, e))?;
        let (conn, early) = match connecting.into_0rtt() {
            Ok((conn, accepted)) => (conn, Some(accepted)),
            Err(connecting) => (connecting.await.map_err(|e| connect_err(addr, e))?, None),
        };
        // A completed handshake names the certificate the verifier checked
        // (or, resumed, the one the session began with); a 0-RTT connection
        // can only be the pinned identity's, whose configuration holds its
        // tickets — checked again once its handshake completes.
        let identity = match (early.is_some(), pin) {
            (true, Some(pinned)) => pinned,
            (true, None) => return Err(connect_err(addr, "0-RTT without a pinned identity")),
            (false, _) => super::resume::peer_identity(&conn)
                .ok_or_else(|| connect_err(addr, "the server presented no certificate"))?,
        };
        if pin.is_none() {
            tracing::info!(%addr, %identity, "trusting a new server on first use");
            let _ = known.remember(&addr_name, identity);
            // The tickets this connection receives serve the next one.
            super::resume::keep_client_config(&addr_name, identity, known_path, tls);
        }
        Ok(Dialed {
            conn,
            endpoint,
            own_endpoint,
            identity,
            early,
        })
    }
}
/// Says `hello` on a new control stream of a dialed connection: as 0-RTT
/// data when the connection is early; if its handshake already ended with
/// the early data refused (a quick server that lost the ticket), again over
/// the completed connection. Returns the stream, the handshake still under
/// way if it is, and whether early data was taken when that is known.
pub(crate) async fn say_hello(
    conn: &Connection,
    addr: SocketAddr,
    identity: ServerIdentity,
    early: Option<quinn::ZeroRttAccepted>,
    hello: &Message,
) -> Result<
    (
        SendStream,
        quinn::RecvStream,
        Option<quinn::ZeroRttAccepted>,
        Option<bool>,
    ),
    ClientError,
> {
    match (open_control(conn, hello).await, early) {
        (Ok((send, recv)), early) => {
            if early.is_some() {
                tracing::debug!(%addr, "hello sent as 0-RTT data");
            }
            Ok((send, recv, early, None))
        }
        (Err(e), None) => Err(connect_err(addr, e)),
        (Err(e), Some(accepted)) => {
            tracing::debug!(%addr, error = %e, "0-RTT refused before hello went out");
            let taken = accepted.await;
            check_resumed_identity(conn, addr, identity)?;
            let (send, recv) = open_control(conn, hello).await.map_err(|e| connect_err(addr, e))?;
            Ok((send, recv, None, Some(taken)))
        }
    }
}

/// Opens the control stream and writes `hello` on it.
async fn open_control(conn: &Connection, hello: &Message) -> Result<(SendStream, quinn::RecvStream), String> {
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write_message(&mut send, hello).await.map_err(|e| e.to_string())?;
    Ok((send, recv))
}

impl Opened {
    /// Waits for a 0-RTT connection's handshake; if the server refused the
    /// early data, sends `Hello` again on a new control stream.
    async fn settle(mut self, addr: SocketAddr) -> Result<Opened, ClientError> {
        let Some(accepted) = self.early.take() else {
            return Ok(self);
        };
        let taken = accepted.await;
        check_resumed_identity(&self.conn, addr, self.identity)?;
        self.early_data = Some(taken);
        if !taken {
            tracing::info!(%addr, "the server refused the 0-RTT data; saying hello again");
            let (mut send, recv) = self.conn.open_bi().await.map_err(|e| connect_err(addr, e))?;
            write_message(&mut send, &self.hello)
                .await
                .map_err(|e| connect_err(addr, e))?;
            (self.send, self.recv) = (send, recv);
        }
        Ok(self)
    }
}

/// A resumed session's server must still be the pinned identity (its
/// tickets are kept under it; checked again once the handshake is done).
pub(crate) fn check_resumed_identity(
    conn: &Connection,
    addr: SocketAddr,
    identity: ServerIdentity,
) -> Result<(), ClientError> {
    match super::resume::peer_identity(conn) {
        Some(seen) if seen == identity => Ok(()),
        Some(seen) => Err(connect_err(
            addr,
            format!("the server is {seen}, not the pinned {identity}"),
        )),
        None => Err(connect_err(addr, "the server presented no certificate")),
    }
}

/// Ends a pipelined connection's 0-RTT phase once its handshake completes:
/// if the server refused the early data, a new control stream carries
/// `Hello` and everything sent early again (the old stream is gone with the
/// early data). Returns the control stream to read `Welcome` from.
async fn finish_early(
    inner: &Inner,
    conn: &Connection,
    addr: SocketAddr,
    accepted: quinn::ZeroRttAccepted,
    identity: ServerIdentity,
    hello: &Message,
    recv: quinn::RecvStream,
) -> Result<(quinn::RecvStream, bool), ClientError> {
    let taken = accepted.await;
    check_resumed_identity(conn, addr, identity)?;
    // Under the control stream's lock, so nothing is sent between taking
    // the log and replacing the stream.
    let mut control = inner.control.lock().await;
    let sent_early = inner.state().driver.early_log.take().unwrap_or_default();
    if taken {
        return Ok((recv, true));
    }
    let (send, recv) = send_again(conn, addr, hello, &sent_early).await?;
    *control = send;
    Ok((recv, false))
}

/// After the server refused a connection's early data: a new control
/// stream carrying `hello` and everything sent early again (the old stream
/// is gone with the early data).
pub(crate) async fn send_again(
    conn: &Connection,
    addr: SocketAddr,
    hello: &Message,
    sent_early: &[Message],
) -> Result<(SendStream, quinn::RecvStream), ClientError> {
    tracing::info!(%addr, messages = sent_early.len() + 1, "the server refused the 0-RTT data; sending it again");
    let (mut send, recv) = conn.open_bi().await.map_err(|e| connect_err(addr, e))?;
    for m in std::iter::once(hello).chain(sent_early) {
        write_message(&mut send, m).await.map_err(|e| connect_err(addr, e))?;
    }
    Ok((send, recv))
}

/// Reads the server's answer to `Hello`: `Welcome`, or why it refused.
async fn read_welcome(
    control: &mut FrameReader,
    conn: &Connection,
    addr: SocketAddr,
) -> Result<hoard_proto::wire::Welcome, ClientError> {
    match control.next().await {
        Ok(Some((Message::Welcome(w), _))) => Ok(w),
        Ok(Some((Message::Error(e), _))) => Err(ClientError::Refused {
            code: e.code,
            message: e.message,
        }),
        // The server may have closed with a reason right after its error
        // frame (which a close can overtake).
        Ok(_) => Err(server_close_reason(conn)
            .await
            .unwrap_or_else(|| connect_err(addr, "the server closed the control stream"))),
        Err(e) => Err(server_close_reason(conn).await.unwrap_or_else(|| connect_err(addr, e))),
    }
}

impl Inner {
    /// The shared state of a client about to talk as `perspective`.
    fn new(
        cache: WorldCache,
        send: SendStream,
        identity: ServerIdentity,
        options: &ClientOptions,
        registry: &PublishRegistry,
        perspective: &str,
        early: bool,
    ) -> Arc<Inner> {
        let config = options.settings().host_config(identity, perspective, registry.hash());
        let driver = Driver {
            waiting: HashMap::new(),
            early_log: early.then(Vec::new),
        };
        Arc::new(Inner {
            intent_nonce: tokio::sync::watch::Sender::new(None),
            host: ClientHost::new(cache, config, driver),
            pending: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
            timer: tokio::sync::Notify::new(),
            control: AsyncMutex::new(send),
        })
    }

    /// The connection's state, locked (see [`Driver`]).
    fn state(&self) -> std::sync::MutexGuard<'_, Locked<Driver>> {
        self.host.lock()
    }

    /// Checks `Welcome` names the world this client keys its cache by, and,
    /// when shards are checked against signed heads, takes the world's key
    /// from it.
    fn accept_welcome(&self, welcome: &hoard_proto::wire::Welcome, addr: SocketAddr) -> Result<(), ClientError> {
        self.host
            .accept_welcome(welcome, |world, key| {
                hoard_trust::heads::KeyVerifier::new(world, key)
                    .map(|k| Box::new(k) as Box<dyn hoard_proto::proof::HeadVerifier>)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| connect_err(addr, e))
    }
}

impl HoardClient {
    /// Connects, pins the server identity, and completes the handshake
    /// (`Hello` → `Welcome`).
    pub async fn connect(options: ClientOptions, registry: PublishRegistry) -> Result<HoardClient, ClientError> {
        let opened = Opened::open(&options, &registry).await?.settle(options.server).await?;
        let addr = options.server;
        let mut control = FrameReader::new(opened.recv, MAX_CONTROL_FRAME);
        let welcome = read_welcome(&mut control, &opened.conn, addr).await?;
        let inner = Inner::new(
            opened.cache,
            opened.send,
            opened.identity,
            &options,
            &registry,
            &welcome.perspective,
            false,
        );
        inner.accept_welcome(&welcome, addr)?;
        Ok(HoardClient::start(
            inner,
            opened.conn,
            (opened.endpoint, opened.own_endpoint),
            control,
            registry,
            (opened.identity, opened.early_data),
            (welcome, &options),
        ))
    }

    /// Connects and enters `zone` in the same round trip: `EnterZone` goes
    /// right behind `Hello`, without waiting for `Welcome`, so a returning
    /// player's zone costs the QUIC handshake plus one round trip — or one
    /// round trip in all when this process connected to the server before
    /// (its TLS session resumes and both go as 0-RTT data; see
    /// [`HoardClient::early_data`]). Intents can only be sent once this
    /// returns, after the handshake. The
    /// perspective the cached heads are read under is the one the token
    /// names (its player); the server confirms it in `Welcome`. A token
    /// that names no player (an unknown form) is connected and entered in
    /// two steps instead. Returns once `Welcome` is read, with the entry in
    /// flight: [`PendingEntry::wait`] returns once the zone is verified and
    /// written, as [`HoardClient::enter_zone`] does.
    pub async fn connect_and_enter(
        options: ClientOptions,
        registry: PublishRegistry,
        zone: &ZoneId,
    ) -> Result<(HoardClient, PendingEntry), ClientError> {
        let Some(guess) = hoard_proto::auth::named_player(&options.token) else {
            let client = HoardClient::connect(options, registry).await?;
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(client.enter_zone(zone).await);
            return Ok((client, PendingEntry(rx)));
        };
        let opened = Opened::open(&options, &registry).await?;
        let addr = options.server;
        let early = opened.early.is_some();
        let inner = Inner::new(
            opened.cache,
            opened.send,
            opened.identity,
            &options,
            &registry,
            &guess,
            early,
        );
        inner.state().session.show(zone);
        let (rx, _) = wait_for_entry(&inner, zone)?;
        // `EnterZone` is written now, behind `Hello`; the cached copies load
        // while both are in flight. A server that refused `Hello` stops
        // reading, so this write can fail first: the refusal is the reason.
        if let Err(failure) = start_entry(&inner, zone, true).await {
            return Err(refusal_or(Some(opened.recv), &opened.conn, failure).await);
        }
        // No intent is sent before the handshake completes: the client is
        // handed out only after this.
        let (recv, early_data) = match opened.early {
            Some(accepted) => {
                let (recv, taken) = match finish_early(
                    &inner,
                    &opened.conn,
                    addr,
                    accepted,
                    opened.identity,
                    &opened.hello,
                    opened.recv,
                )
                .await
                {
                    Ok(finished) => finished,
                    Err(failure) => return Err(refusal_or(None, &opened.conn, failure).await),
                };
                (recv, Some(taken))
            }
            None => (opened.recv, opened.early_data),
        };
        let mut control = FrameReader::new(recv, MAX_CONTROL_FRAME);
        let welcome = read_welcome(&mut control, &opened.conn, addr).await?;
        inner.accept_welcome(&welcome, addr)?;
        if welcome.perspective != guess {
            // Cannot happen with the server's token forms; never act on heads
            // read under another perspective.
            return Err(ClientError::Lost(format!(
                "the token names {guess} but the server says {}",
                welcome.perspective
            )));
        }
        let client = HoardClient::start(
            inner,
            opened.conn,
            (opened.endpoint, opened.own_endpoint),
            control,
            registry,
            (opened.identity, early_data),
            (welcome, &options),
        );
        Ok((client, PendingEntry(rx)))
    }

    /// Connects and enters `zone` through the first of `routes` that is
    /// reachable and faithful to the world: relays near the player first,
    /// say, then the world's own server. A route that cannot be reached,
    /// drops the connection or is caught serving something the world did
    /// not sign ([`ClientError::Forged`]) is left for the next; a zone
    /// refused or served elsewhere ends the search. Returns the client, the
    /// entry's cost and which route it took; with no route left, the last
    /// route's error.
    pub async fn connect_and_enter_any(
        routes: &[ClientOptions],
        registry: PublishRegistry,
        zone: &ZoneId,
    ) -> Result<(HoardClient, EntryStats, usize), ClientError> {
        let mut last = ClientError::Lost("no route to the world was given".into());
        for (i, route) in routes.iter().enumerate() {
            let attempt = async {
                let (client, pending) = HoardClient::connect_and_enter(route.clone(), registry.clone(), zone).await?;
                match pending.wait().await {
                    Ok(stats) => Ok((client, stats)),
                    Err(e) => {
                        client.close_and_wait(Duration::from_secs(1)).await;
                        Err(e)
                    }
                }
            };
            match attempt.await {
                Ok((client, stats)) => return Ok((client, stats, i)),
                Err(e @ (ClientError::ZoneDenied { .. } | ClientError::ZoneElsewhere { .. })) => return Err(e),
                Err(e) => {
                    tracing::warn!(route = %route.server, error = %e, "route to the world failed; trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Starts the background tasks of a client whose `Welcome` was read.
    fn start(
        inner: Arc<Inner>,
        conn: Connection,
        (endpoint, own_endpoint): (Endpoint, bool),
        control: FrameReader,
        registry: PublishRegistry,
        (identity, early_data): (ServerIdentity, Option<bool>),
        (welcome, options): (hoard_proto::wire::Welcome, &ClientOptions),
    ) -> HoardClient {
        let signing = hoard_client::IntentSigning::new(
            &options.settings(),
            ServerIdentity(welcome.server),
            &welcome.perspective,
        );
        let client = HoardClient {
            conn: conn.clone(),
            inner: inner.clone(),
            registry,
            identity,
            perspective: welcome.perspective,
            zones: welcome.zones,
            next_intent: std::sync::atomic::AtomicU32::new(0),
            signing,
            token_keys: welcome.token_keys,
            early_data,
            world: ServerIdentity(welcome.server),
            world_key: welcome.world_key,
            endpoint,
            own_endpoint,
        };
        tokio::spawn(read_control(control, conn.clone(), inner.clone()));
        tokio::spawn(drive_timeouts(conn.clone(), inner.clone()));
        // Keep the cache bounded: trim it once per session, off the runtime.
        let trim = inner.clone();
        tokio::task::spawn_blocking(move || trim.host.trim());
        tokio::spawn(inbound::accept_streams(conn, inner));
        client
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

    /// The server identity (pinned).
    pub fn identity(&self) -> ServerIdentity {
        self.identity
    }

    /// Whether this connection resumed an earlier one's TLS session and sent
    /// its first messages as 0-RTT data: `None` for a full handshake (the
    /// first connection to a server in this process), `Some(true)` if the
    /// server took the early data (a returning player's zone in one round
    /// trip), `Some(false)` if it refused it and they were sent again.
    pub fn early_data(&self) -> Option<bool> {
        self.early_data
    }

    /// The perspective the server authenticated.
    pub fn perspective(&self) -> &str {
        &self.perspective
    }

    /// The connection's path as QUIC sees it: round trip, congestion
    /// window, packets and bytes lost, MTU and its probes.
    pub fn path_stats(&self) -> quinn::PathStats {
        self.conn.stats().path
    }

    /// The zones this perspective may enter.
    pub fn zones(&self) -> &[ZoneId] {
        &self.zones
    }

    /// How far the entry of `zone` in flight has come (for a progress
    /// display while [`HoardClient::enter_zone`] runs); `None` when none is.
    pub fn entry_progress(&self, zone: &ZoneId) -> Option<hoard_proto::sync::client::EntryProgress> {
        self.inner.state().session.sync().entry_progress(zone)
    }

    /// The latest transient state of `zone` (game data the server never
    /// stores, such as who stands where), as the game encoded it; `None`
    /// before any arrived, or after the zone was left.
    pub fn transient(&self, zone: &ZoneId) -> Option<Vec<u8>> {
        self.inner.state().session.transient(zone).map(<[u8]>::to_vec)
    }

    /// The shards of `zone` this client holds live (after its entry or
    /// prefetch): what the zone holds, for finding its objects by
    /// `Replicated::shard` (hoard-bevy). Empty for a zone not entered.
    pub fn zone_shards(&self, zone: &ZoneId) -> Vec<ShardId> {
        self.inner
            .state()
            .session
            .sync()
            .live_shards(zone)
            .map(|shards| shards.iter().map(|s| s.header.key.shard).collect())
            .unwrap_or_default()
    }

    /// The cache this client writes.
    pub fn cache(&self) -> &WorldCache {
        self.inner.host.cache()
    }

    async fn start_entry(&self, zone: &ZoneId, subscribe: bool) -> Result<(), ClientError> {
        start_entry(&self.inner, zone, subscribe).await
    }

    /// Enters a zone: brings its shards up to date in one round trip (plus
    /// one per repaired shard), subscribes to live deltas, and returns once
    /// the zone is verified and written; its objects come with the next
    /// [`HoardClient::take_updates`]. A prefetched zone is entered at once.
    pub async fn enter_zone(&self, zone: &ZoneId) -> Result<EntryStats, ClientError> {
        if let Some((stats, updates)) = self.inner.host.show(zone) {
            for update in updates {
                push(&self.inner, update);
            }
            return Ok(stats);
        }
        self.entry(zone).await
    }

    /// Starts (or joins) the entry of `zone`, live deltas following, and
    /// waits for it.
    async fn entry(&self, zone: &ZoneId) -> Result<EntryStats, ClientError> {
        let (rx, in_flight) = wait_for_entry(&self.inner, zone)?;
        if !in_flight && let Err(e) = self.start_entry(zone, true).await {
            finish_waiters(&self.inner, zone, Err(e.clone()));
            return Err(e);
        }
        // The sync's timer (driven by `drive_timeouts`) fails the entry
        // after ENTRY_TIMEOUT, so this wait ends.
        rx.await
            .map_err(|_| ClientError::Lost("the connection closed during zone entry".into()))?
    }

    /// What a `hoard://` URL names, as the world has it now: from the live
    /// copy when this client follows the URL's zone (no network), otherwise
    /// after one round trip that brings the zone's shards up to date (and
    /// keeps following them, as [`HoardClient::prefetch`] does). The URL's
    /// host names where the world is found; it is resolved against the
    /// world this client is connected to (directly or through relays), whose
    /// service it must name.
    pub async fn resolve(&self, url: &hoard_engine::HoardUrl) -> Result<Resolved, ClientError> {
        let service = self.inner.state().session.sync().config().service.clone();
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
        let live = |client: &HoardClient| client.inner.state().session.sync().live_shards(zone);
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
        let service = self.inner.state().session.sync().config().service.clone();
        hoard_engine::HoardUrl::service(host, port, service).object(zone.clone(), shard, object)
    }

    /// Prefetches a zone in the background: its shards are brought up to
    /// date, cached and kept current, so a later [`HoardClient::enter_zone`]
    /// costs nothing on the network.
    pub async fn prefetch(&self, zone: &ZoneId) -> Result<(), ClientError> {
        self.start_entry(zone, true).await
    }

    /// Leaves a zone: no more deltas; its entities are despawned at the next update.
    pub async fn leave_zone(&self, zone: &ZoneId) -> Result<(), ClientError> {
        // The copies to keep and the leave itself under one lock: no delta
        // is applied after the copies are taken, so the whole copies written
        // below are the zone's last state (a delta applied in between would
        // be journaled onto a copy that the whole write then replaces by
        // an older one, and the journal would no longer apply).
        let (shards, messages) = self.inner.host.leave(zone);
        // Fold each journaled shard on exit: write the current copy whole,
        // off the async workers and outside the sync lock. A shard with no
        // journal is already on disk as it stands (its file was written
        // when it was fetched, or loaded from it): no write, no fsync.
        let writer = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // The leave's steps first (the game's `ZoneLeft`, and anything
            // queued before it).
            process_effects(&writer);
            writer.host.fold(&shards);
        })
        .await
        .map_err(|e| ClientError::Lost(e.to_string()))?;
        self.send_all(messages).await
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
    /// them later, in order, with [`HoardClient::send_encoded_intent`]).
    pub fn next_intent_seq(&self) -> u32 {
        self.next_intent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Sends an intent already encoded (MessagePack) under a seq from
    /// [`HoardClient::next_intent_seq`].
    ///
    /// With a [`ClientOptions::player_key`] the intent is signed; the first
    /// waits (at most [`NONCE_WAIT`]) for the session's nonce, and intents
    /// must then be sent in seq order, each once (the server ends a session
    /// whose intents skip, repeat or go back).
    pub async fn send_encoded_intent(&self, seq: u32, kind: &str, payload: Vec<u8>) -> Result<(), ClientError> {
        let nonce = if self.signing.signs()? {
            self.intent_nonce().await?
        } else {
            [0; 16]
        };
        self.send_all(vec![self.signing.intent(&nonce, seq, kind, payload)])
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
        self.send_all(vec![Message::Intent(Intent {
            seq,
            kind: kind.to_owned(),
            payload,
            signature,
        })])
        .await
    }

    /// The nonce this session's intents are signed under, waiting for it
    /// (at most [`NONCE_WAIT`]) if it has not come yet.
    pub async fn intent_nonce(&self) -> Result<[u8; 16], ClientError> {
        let mut rx = self.inner.intent_nonce.subscribe();
        match tokio::time::timeout(NONCE_WAIT, rx.wait_for(Option::is_some)).await {
            Ok(Ok(nonce)) => Ok(nonce.unwrap_or_default()),
            _ => Err(hoard_client::intents::nonce_missing()),
        }
    }

    /// The world's token keys, signed by the world's key, if `Welcome`
    /// brought them ([`ClientOptions::token_keys`]); check them with
    /// [`hoard_trust::token_keys::verify_token_keys`].
    pub fn token_keys(&self) -> Option<&hoard_proto::wire::SignedTokenKeys> {
        self.token_keys.as_ref()
    }

    async fn send_all(&self, messages: Vec<Message>) -> Result<(), ClientError> {
        send_all(&self.inner, messages).await
    }

    async fn flush(&self) -> Result<(), ClientError> {
        flush(&self.inner).await
    }

    /// Sends anything the sync produced in the background (repairs).
    pub async fn pump(&self) -> Result<(), ClientError> {
        self.flush().await
    }

    /// Waits until something is pending for [`HoardClient::take_updates`].
    pub async fn changed(&self) {
        let ready = !lock(&self.inner.pending).is_empty();
        if !ready {
            self.inner.changed.notified().await;
        }
    }

    /// Takes what arrived since the last call, in order (see
    /// [`ClientUpdate`]); updates of zones that were only prefetched, or
    /// were left meanwhile, are left out.
    pub fn take_updates(&self) -> Vec<ClientUpdate> {
        let pending = std::mem::take(&mut *lock(&self.inner.pending));
        let state = self.inner.state();
        pending.into_iter().filter(|p| state.session.for_game(p)).collect()
    }

    /// The component registry this client decodes objects with.
    pub fn registry(&self) -> &PublishRegistry {
        &self.registry
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"bye");
    }

    /// Closes the connection and waits, at most `within`, until the server
    /// has been told: a client about to drop its runtime (and with it the
    /// endpoint that would send the close) calls this, so the server ends
    /// the session at once instead of after its idle timeout. A shared
    /// endpoint ([`ClientOptions::endpoint`]) outlives the client and sends
    /// the close itself: its owner waits for it.
    pub async fn close_and_wait(&self, within: Duration) {
        self.close();
        if self.own_endpoint {
            let _ = tokio::time::timeout(within, self.endpoint.wait_idle()).await;
        }
    }
}

impl std::fmt::Debug for HoardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoardClient")
            .field("server", &self.conn.remote_address())
            .field("identity", &self.identity)
            .field("perspective", &self.perspective)
            .finish_non_exhaustive()
    }
}

impl Drop for HoardClient {
    /// Dropping a client closes its connection; its background tasks then
    /// end and release the cache (and its lock).
    fn drop(&mut self) {
        self.close();
    }
}

/// Starts an entry (or prefetch) of `zone`: reads the cached heads, sends
/// `EnterZone`, then loads and checks the cached copies while it is in flight.
async fn start_entry(inner: &Arc<Inner>, zone: &ZoneId, subscribe: bool) -> Result<(), ClientError> {
    // Small files are read whole with their heads, for the load below.
    let reader = inner.clone();
    let read = zone.clone();
    let cached = blocking(move || reader.host.read_cached(&read)).await?;
    let (request, messages) = inner.host.begin_entry(zone, &cached, subscribe);
    inner.timer.notify_one();
    send_all(inner, messages).await?;
    // Load the full copies while the request is in flight. Each file's
    // checksums are checked as it is read; its digest, which its writer
    // checked before writing, is audited once the zone is ready (below),
    // off the path to the player's world.
    let loader = inner.clone();
    let copies = blocking(move || loader.host.load_copies(cached)).await?;
    // The game may prepare the copies while the answer is on its way; a
    // current copy becomes the live one as it is (the same `Arc`).
    inner.host.provide_copies(request, zone, copies)?;
    // Effects write cache files: off the async workers.
    let effects = inner.clone();
    blocking(move || process_effects(&effects)).await?;
    flush(inner).await
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ClientError::Lost(e.to_string()))
}

/// Audits the copies an entry took on trust ([`ClientHost::audit`]), on a
/// blocking thread once the zone is ready, and sends the repairs of any
/// that fail.
async fn audit_copies(inner: Arc<Inner>, zone: ZoneId, copies: Vec<Arc<CachedShard>>) {
    let auditor = inner.clone();
    let repairs = tokio::task::spawn_blocking(move || auditor.host.audit(&zone, &copies))
        .await
        .unwrap_or_default();
    if repairs && let Err(e) = flush(&inner).await {
        tracing::debug!(error = %e, "could not send the audit's repairs");
    }
}

async fn send_all(inner: &Inner, messages: Vec<Message>) -> Result<(), ClientError> {
    let mut control = inner.control.lock().await;
    // While a 0-RTT handshake is under way, what goes out is also kept, to
    // send again should the server refuse the early data.
    let early = inner
        .state()
        .driver
        .early_log
        .as_mut()
        .map(|l| l.extend(messages.iter().cloned()))
        .is_some();
    for m in messages {
        if let Err(e) = write_message(&mut control, &m).await {
            if early {
                tracing::debug!(error = %e, "early data refused; it is sent again after the handshake");
                break;
            }
            return Err(ClientError::Lost(e.to_string()));
        }
    }
    Ok(())
}

/// Sends whatever the sync has queued (repairs, leaves).
async fn flush(inner: &Inner) -> Result<(), ClientError> {
    let messages = inner.host.transmit();
    if messages.is_empty() {
        return Ok(());
    }
    send_all(inner, messages).await
}

fn push(inner: &Inner, p: Pending) {
    if let Pending::Event(ClientEvent::IntentNonce { nonce }) = &p {
        inner.intent_nonce.send_replace(Some(*nonce));
    }
    lock(&inner.pending).push(p);
    inner.changed.notify_one();
}

/// Carries out the sync's steps with every shard written before this
/// returns: cache writes here, what the game and waiters are told handed
/// to [`tell`].
fn process_effects(inner: &Arc<Inner>) {
    let deferred = inner.host.carry_out(Writes::Now, &mut |outcome| tell(inner, outcome));
    debug_assert!(deferred.is_empty());
}

/// Tells the game, the entry's waiters or the auditor what a step says.
fn tell(inner: &Arc<Inner>, outcome: Outcome) {
    match outcome {
        Outcome::Update(update) => push(inner, update),
        Outcome::Audit { zone, copies } => match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(audit_copies(inner.clone(), zone, copies))),
            Err(e) => tracing::warn!(%zone, error = %e, "no runtime to audit the cached copies on"),
        },
        Outcome::EntryFinished { zone, result } => finish_waiters(inner, &zone, result),
        Outcome::FailAll(error) => {
            let waiting = std::mem::take(&mut inner.state().driver.waiting);
            for tx in waiting.into_values().flatten() {
                let _ = tx.send(Err(error.clone()));
            }
        }
    }
}

async fn read_control(mut control: FrameReader, conn: Connection, inner: Arc<Inner>) {
    while let Ok(Some((msg, len))) = control.next().await {
        let failed = inner
            .host
            .handle(vec![Inbound {
                msg,
                len,
                request: None,
            }])
            .is_err();
        process_effects(&inner);
        if failed || flush(&inner).await.is_err() {
            break;
        }
    }
    // The server's reason when it closed the connection (a newer session
    // of this player, a slow consumer, a failing server), not the stream's.
    match server_close_reason(&conn).await {
        Some(error @ ClientError::Refused { .. }) => fail_with(&inner, &error.to_string(), error),
        _ => fail_all(&inner, "control stream closed"),
    }
}

/// Runs the sync's timers: sleeps until its next timeout (or a new entry),
/// then lets it abandon what waited too long. Ends with the connection.
async fn drive_timeouts(conn: Connection, inner: Arc<Inner>) {
    loop {
        let next = inner.host.next_timeout();
        let wake = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = conn.closed() => return,
            _ = inner.timer.notified() => continue,
            _ = wake => {}
        }
        inner.host.handle_timeout();
        let effects = inner.clone();
        let _ = tokio::task::spawn_blocking(move || process_effects(&effects)).await;
        // An abandoned entry leaves its zone.
        if flush(&inner).await.is_err() {
            return;
        }
    }
}

/// Where one `enter_zone` caller gets its result.
type EntryWaiter = oneshot::Sender<Result<EntryStats, ClientError>>;

/// Answers everyone waiting for `zone`'s entry.
fn finish_waiters(inner: &Inner, zone: &ZoneId, result: Result<EntryStats, ClientError>) {
    let waiters = inner.state().driver.waiting.remove(zone).unwrap_or_default();
    for tx in waiters {
        let _ = tx.send(result.clone());
    }
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

impl From<hoard_client::ApplyError> for Failure {
    fn from(e: hoard_client::ApplyError) -> Failure {
        match e {
            hoard_client::ApplyError::Forged(why) => Failure::Forged(why),
            hoard_client::ApplyError::Other(why) => Failure::Other(why),
        }
    }
}

fn fail_all(inner: &Arc<Inner>, reason: &str) {
    fail_with(inner, reason, ClientError::Lost(reason.to_owned()));
}

/// Ends the session: the game is told, and every entry waiting gets `error`.
fn fail_with(inner: &Arc<Inner>, reason: &str, error: ClientError) {
    push(
        inner,
        Pending::Event(ClientEvent::Disconnected {
            reason: reason.to_owned(),
        }),
    );
    let waiting = std::mem::take(&mut inner.state().driver.waiting);
    for tx in waiting.into_values().flatten() {
        let _ = tx.send(Err(error.clone()));
    }
}
