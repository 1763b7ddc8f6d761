//! The QUIC client: connects (pinning the server identity, resuming a TLS
//! session for 0-RTT where it can), says hello, reads `Welcome`, and then
//! only moves bytes for hoard-client's async driver
//! ([`hoard_client::tasks`]): the driver's messages onto the control
//! stream ([`QuicLink`]), the server's streams' whole messages into the
//! driver (`inbound`). What the game calls — entering zones, intents,
//! [`AsyncClient::take_updates`] — is the driver's, reached through
//! [`HoardClient`]; turning updates into entities is the client plugin's
//! job (`hoard-bevy`'s `Materialiser`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hoard_client::SessionSettings;
use hoard_client::host::Inbound;
use hoard_client::tasks::{AsyncClient, ControlLink, SessionTasks};
use hoard_engine::{PublishRegistry, ServerIdentity, ZoneId};
use hoard_world_cache::WorldCache;
use quinn::{Connection, SendStream};
pub use quinn::{ConnectionStats, Endpoint};
use tokio::sync::Mutex as AsyncMutex;

use super::stream::{FrameReader, write_message};
use hoard_proto::sync::client::EntryStats;
use hoard_proto::wire::{MAX_CONTROL_FRAME, Message, Welcome};
use hoard_trust::tls::{KnownServers, SERVER_NAME};

pub(crate) mod inbound;

/// How to reach a server, and who the client is there.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The server's address.
    pub server: SocketAddr,
    /// A fingerprint to require; otherwise `known_servers` in the cache
    /// folder (trust on first use).
    pub pin: Option<ServerIdentity>,
    /// A QUIC endpoint (one UDP socket and its driver) to connect from,
    /// shared with other connections; `None`: the connection gets an
    /// endpoint of its own. A process holding many connections at once (a
    /// load tester's bots) saves a socket, a driver task and a wake-up per
    /// received datagram for each. Its owner waits for it to go idle.
    pub endpoint: Option<Endpoint>,
    /// Who the client is and where it caches, whatever the transport: the
    /// token, service, cache folder, world, proofs, compression, player
    /// key. Its fields are the options' too (`options.token`, through
    /// `Deref`).
    pub session: SessionSettings,
}

impl std::ops::Deref for ClientOptions {
    type Target = SessionSettings;

    fn deref(&self) -> &SessionSettings {
        &self.session
    }
}

impl std::ops::DerefMut for ClientOptions {
    fn deref_mut(&mut self) -> &mut SessionSettings {
        &mut self.session
    }
}

impl ClientOptions {
    /// Options for the world's own server at `server`, service `world`,
    /// trusting it on first use, with the cache at `cache_dir`
    /// ([`SessionSettings::new`]'s defaults).
    pub fn new(server: SocketAddr, cache_dir: PathBuf, token: String) -> ClientOptions {
        ClientOptions {
            server,
            pin: None,
            endpoint: None,
            session: SessionSettings::new(cache_dir, token),
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
        self.session.clone()
    }
}

pub use hoard_client::host::{CACHE_BUDGET_BYTES, CACHE_MAX_AGE};
pub use hoard_client::tasks::{ENTRY_TIMEOUT, PendingEntry, Resolved};
pub use hoard_proto::client::{ClientError, ClientEvent, ClientUpdate};

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

/// A connection whose `Hello` is sent: after its handshake, or — a
/// resumed session — as 0-RTT data with the handshake still under way.
struct Opened {
    /// The connection (its `early`: the handshake of a 0-RTT connection,
    /// still under way).
    dialed: Dialed,
    cache: WorldCache,
    /// The control stream's writing side.
    link: QuicLink,
    recv: quinn::RecvStream,
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
        let files = options.cache_files.clone();
        let cache = tokio::task::spawn_blocking(move || hoard_client::open_cache(&cache_dir, files))
            .await
            .map_err(|e| ClientError::Cache(e.to_string()))??;
        let mut dialed = Dialed::dial(options).await?;
        let hello = Message::Hello(options.settings().hello(registry.hash()));
        let (send, recv, early, early_data) =
            say_hello(&dialed.conn, addr, dialed.identity, dialed.early.take(), &hello).await?;
        dialed.early = early;
        let link = QuicLink::new(dialed.conn.clone(), send, dialed.early.is_some());
        Ok(Opened {
            dialed,
            cache,
            link,
            recv,
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

/// Settles a connection's 0-RTT phase, if it had one, once its handshake
/// completes ([`finish_early`]): returns the control stream to read
/// `Welcome` from, and whether early data was taken.
async fn settle(
    link: &QuicLink,
    dialed: &mut Dialed,
    addr: SocketAddr,
    hello: &Message,
    recv: quinn::RecvStream,
    early_data: Option<bool>,
) -> Result<(quinn::RecvStream, Option<bool>), ClientError> {
    match dialed.early.take() {
        Some(accepted) => finish_early(link, addr, accepted, dialed.identity, hello, recv)
            .await
            .map(|(recv, taken)| (recv, Some(taken))),
        None => Ok((recv, early_data)),
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

/// Reads the server's answer to `Hello`: `Welcome`, or why it refused;
/// closes the connection if none comes within `within`.
async fn read_welcome(
    control: &mut FrameReader,
    conn: &Connection,
    addr: SocketAddr,
    within: Duration,
) -> Result<hoard_proto::wire::Welcome, ClientError> {
    let Ok(answer) = tokio::time::timeout(within, control.next()).await else {
        conn.close(quinn::VarInt::from_u32(0), b"no answer to Hello");
        return Err(connect_err(
            addr,
            format!("the server did not answer Hello within {within:?}"),
        ));
    };
    match answer {
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

/// The control stream's writing side, with what went out as early data.
struct ControlSend {
    stream: SendStream,
    /// While a 0-RTT handshake is under way: what was sent as early data,
    /// to send again if the server refuses it (bounded: a client sends only
    /// `EnterZone` before its handshake completes).
    early_log: Option<Vec<Message>>,
}

/// A QUIC connection as the async driver's [`ControlLink`]: writes its
/// messages on the control stream (kept, while a 0-RTT handshake is under
/// way, to send again should the server refuse the early data).
pub struct QuicLink {
    conn: Connection,
    control: AsyncMutex<ControlSend>,
}

impl QuicLink {
    pub(crate) fn new(conn: Connection, stream: SendStream, early: bool) -> QuicLink {
        QuicLink {
            conn,
            control: AsyncMutex::new(ControlSend {
                stream,
                early_log: early.then(Vec::new),
            }),
        }
    }

    /// The QUIC connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl ControlLink for QuicLink {
    async fn send(&self, messages: Vec<Message>) -> Result<(), ClientError> {
        let mut control = self.control.lock().await;
        let control = &mut *control;
        let early = control
            .early_log
            .as_mut()
            .map(|log| log.extend(messages.iter().cloned()))
            .is_some();
        for m in messages {
            if let Err(e) = write_message(&mut control.stream, &m).await {
                if early {
                    tracing::debug!(error = %e, "early data refused; it is sent again after the handshake");
                    break;
                }
                return Err(ClientError::Lost(e.to_string()));
            }
        }
        Ok(())
    }

    fn refusal(&self) -> Option<ClientError> {
        self.conn.close_reason().as_ref().and_then(refusal_of)
    }

    fn close(&self, code: u32, reason: &str) {
        self.conn.close(quinn::VarInt::from_u32(code), reason.as_bytes());
    }

    async fn closed(&self) {
        self.conn.closed().await;
    }
}

/// Ends a pipelined connection's 0-RTT phase once its handshake completes:
/// if the server refused the early data, a new control stream carries
/// `Hello` and everything sent early again (the old stream is gone with the
/// early data). Returns the control stream to read `Welcome` from.
pub(crate) async fn finish_early(
    link: &QuicLink,
    addr: SocketAddr,
    accepted: quinn::ZeroRttAccepted,
    identity: ServerIdentity,
    hello: &Message,
    recv: quinn::RecvStream,
) -> Result<(quinn::RecvStream, bool), ClientError> {
    let taken = accepted.await;
    check_resumed_identity(&link.conn, addr, identity)?;
    // Under the control stream's lock, so nothing is sent between taking
    // the log and replacing the stream.
    let mut control = link.control.lock().await;
    let sent_early = control.early_log.take().unwrap_or_default();
    if taken {
        return Ok((recv, true));
    }
    if !lost_with_early_data(&mut control.stream) {
        tracing::debug!(%addr, "the handshake ended before the control stream opened: nothing went early");
        return Ok((recv, false));
    }
    let (send, recv) = send_again(&link.conn, addr, hello, &sent_early).await?;
    control.stream = send;
    Ok((recv, false))
}

/// Whether what was written on `send` went with early data the server
/// refused. A stream opened while the connection was early did (its writes
/// now fail at once); one opened after a quick handshake had already
/// completed — the refusal known before the stream was — is a stream like
/// any other, and what it carries reached the server: sending it again on
/// a new stream (and dropping this one, which finishes it) would end the
/// session.
fn lost_with_early_data(send: &mut SendStream) -> bool {
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut probe = std::pin::pin!(send.write(&[]));
    matches!(
        probe.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Err(quinn::WriteError::ZeroRttRejected))
    )
}

/// The session's shared state for a client about to talk as `perspective`.
fn session_tasks(
    dialed: &Dialed,
    cache: WorldCache,
    link: QuicLink,
    options: &ClientOptions,
    registry: &PublishRegistry,
    perspective: &str,
) -> Arc<SessionTasks<QuicLink>> {
    let config = options
        .settings()
        .host_config(dialed.identity, perspective, registry.hash());
    SessionTasks::new(cache, config, link)
}

/// Checks `Welcome` names the world the cache is keyed by and, when shards
/// are checked against signed heads, takes the world's key from it.
fn accept_welcome(tasks: &SessionTasks<QuicLink>, welcome: &Welcome, addr: SocketAddr) -> Result<(), ClientError> {
    tasks
        .accept_welcome(welcome, |world, key| {
            hoard_trust::heads::KeyVerifier::new(world, key)
                .map(|k| Box::new(k) as Box<dyn hoard_proto::proof::HeadVerifier>)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| connect_err(addr, e))
}

/// A connected client: hoard-client's [`AsyncClient`] (entering zones,
/// intents, updates — reached through `Deref`) over a QUIC connection.
pub struct HoardClient {
    client: AsyncClient<QuicLink>,
    identity: ServerIdentity,
    early_data: Option<bool>,
    endpoint: Endpoint,
    /// Whether `endpoint` is this client's alone (it then waits for it to
    /// go idle on closing).
    own_endpoint: bool,
}

impl std::ops::Deref for HoardClient {
    type Target = AsyncClient<QuicLink>;

    fn deref(&self) -> &AsyncClient<QuicLink> {
        &self.client
    }
}

impl HoardClient {
    /// Connects, pins the server identity, and completes the handshake
    /// (`Hello` → `Welcome`).
    pub async fn connect(options: ClientOptions, registry: PublishRegistry) -> Result<HoardClient, ClientError> {
        let addr = options.server;
        let mut opened = Opened::open(&options, &registry).await?;
        let (recv, early_data) = settle(
            &opened.link,
            &mut opened.dialed,
            addr,
            &opened.hello,
            opened.recv,
            opened.early_data,
        )
        .await?;
        let mut control = FrameReader::new(recv, MAX_CONTROL_FRAME);
        let welcome = read_welcome(&mut control, &opened.dialed.conn, addr, options.welcome_timeout).await?;
        let tasks = session_tasks(
            &opened.dialed,
            opened.cache,
            opened.link,
            &options,
            &registry,
            &welcome.perspective,
        );
        accept_welcome(&tasks, &welcome, addr)?;
        Ok(HoardClient::start(
            tasks,
            opened.dialed,
            early_data,
            control,
            registry,
            welcome,
            &options,
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
    /// written, as [`AsyncClient::enter_zone`] does.
    pub async fn connect_and_enter(
        options: ClientOptions,
        registry: PublishRegistry,
        zone: &ZoneId,
    ) -> Result<(HoardClient, PendingEntry), ClientError> {
        let Some(guess) = hoard_proto::auth::named_player(&options.token) else {
            let client = HoardClient::connect(options, registry).await?;
            let entered = client.enter_zone(zone).await;
            return Ok((client, PendingEntry::ended(entered)));
        };
        let addr = options.server;
        let opened = Opened::open(&options, &registry).await?;
        let (mut dialed, recv, hello) = (opened.dialed, opened.recv, opened.hello);
        let tasks = session_tasks(&dialed, opened.cache, opened.link, &options, &registry, &guess);
        tasks.show(zone);
        let (pending, _) = tasks.wait_for_entry(zone);
        // `EnterZone` is written now, behind `Hello`; the cached copies load
        // while both are in flight. A server that refused `Hello` stops
        // reading, so this write can fail first: the refusal is the reason.
        if let Err(failure) = tasks.start_entry(zone, true).await {
            return Err(refusal_or(Some(recv), &dialed.conn, failure).await);
        }
        // No intent is sent before the handshake completes: the client is
        // handed out only after this.
        let (recv, early_data) = match settle(tasks.link(), &mut dialed, addr, &hello, recv, opened.early_data).await {
            Ok(settled) => settled,
            Err(failure) => return Err(refusal_or(None, &dialed.conn, failure).await),
        };
        let mut control = FrameReader::new(recv, MAX_CONTROL_FRAME);
        let welcome = read_welcome(&mut control, &dialed.conn, addr, options.welcome_timeout).await?;
        accept_welcome(&tasks, &welcome, addr)?;
        if welcome.perspective != guess {
            // Cannot happen with the server's token forms; never act on heads
            // read under another perspective.
            return Err(ClientError::Lost(format!(
                "the token names {guess} but the server says {}",
                welcome.perspective
            )));
        }
        let client = HoardClient::start(tasks, dialed, early_data, control, registry, welcome, &options);
        Ok((client, pending))
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

    /// Starts the driver and the readers of a client whose `Welcome` was read.
    fn start(
        tasks: Arc<SessionTasks<QuicLink>>,
        dialed: Dialed,
        early_data: Option<bool>,
        control: FrameReader,
        registry: PublishRegistry,
        welcome: Welcome,
        options: &ClientOptions,
    ) -> HoardClient {
        let conn = dialed.conn;
        let client = AsyncClient::start(tasks.clone(), welcome, &options.settings(), registry);
        tokio::spawn(read_control(control, conn.clone(), tasks.clone()));
        tokio::spawn(inbound::accept_streams(conn, tasks));
        HoardClient {
            client,
            identity: dialed.identity,
            early_data,
            endpoint: dialed.endpoint,
            own_endpoint: dialed.own_endpoint,
        }
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

    /// The connection's path as QUIC sees it: round trip, congestion
    /// window, packets and bytes lost, MTU and its probes.
    pub fn path_stats(&self) -> quinn::PathStats {
        self.link().connection().stats().path
    }

    /// What the connection has carried so far, as QUIC counts it: UDP
    /// datagrams and bytes each way, and the frames in them (ACKs, stream
    /// data, pings).
    pub fn connection_stats(&self) -> ConnectionStats {
        self.link().connection().stats()
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
            .field("server", &self.link().connection().remote_address())
            .field("identity", &self.identity)
            .field("perspective", &self.perspective())
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

/// Reads the control stream into the driver until it ends; then the
/// session ends, with the server's reason if it closed the connection.
async fn read_control(mut control: FrameReader, conn: Connection, tasks: Arc<SessionTasks<QuicLink>>) {
    while let Ok(Some((msg, len))) = control.next().await {
        let inbound = Inbound {
            msg,
            len,
            request: None,
        };
        if !tasks.control(inbound).await {
            break;
        }
    }
    // Wait briefly for the server's close: its reason (a newer session of
    // this player, a slow consumer, a failing server) is the session's end,
    // not the stream's.
    let _ = server_close_reason(&conn).await;
    tasks.ended("control stream closed");
}
