//! A relay: a node that follows a world's zones upstream as a client (the
//! origin, or another relay) and serves them downstream with the same
//! protocol and the same one-round-trip entry, so one origin feeds many
//! players through relays near them.
//!
//! The relay keeps its own world cache on disk (its upstream client's) and
//! serves from a [`RelayStore`](hoard_proto::relay::RelayStore) in memory;
//! every shard it serves goes with the origin's signed head, which it
//! cannot forge, and it speaks for the
//! origin's world identity (the cache namespace), so a client's cache is
//! valid through any relay and at the origin. Each change comes from
//! upstream once and goes to each subscriber ([`RelayCore`]). If the
//! upstream goes away the relay keeps serving what it has, tells its
//! clients it may be stale, reconnects with backoff and catches every zone
//! up in one warm entry each. Perspective-scoped shards (inventories) are
//! never relayed: the relay's own perspective sees none. A player whose
//! world token binds their key acts through any relay: the relay checks the
//! token with the world's signed token keys (no secret), opens the
//! player's own session at the origin with it, and passes their signed
//! intents up, which it can neither forge nor alter, reorder or replay
//! unnoticed. Other intents are refused with a reason, unless the relay is
//! trusted to carry them ([`RelayOptions::carry_actions`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;

use hoard_engine::store::Locked;
use hoard_engine::{PublishRegistry, ServerIdentity, ZoneId};
pub use hoard_proto::relay::RelayWorld;
use hoard_proto::relay::{RelayCore, Upstream};
use hoard_proto::sync::hub::HubRead;
use hoard_proto::sync::tick::{TickInput, TickOutput};

use super::client::{ClientError, ClientOptions, ClientUpdate, HoardClient};
use super::server::{GameRules, ServerError, ServerHandle, ServerOptions, WebTransportOptions, bind};
use hoard_server::{Command, Outbox};

/// How to run a relay.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// Where downstream clients connect.
    pub listen: SocketAddr,
    /// The relay's own directory: its TLS key (its transport identity), its
    /// token secret for downstream tokens, and its cache of the world.
    pub data_dir: PathBuf,
    /// The upstream: the world's server, or another relay.
    pub upstream: SocketAddr,
    /// The upstream's transport identity to require (otherwise trusted on
    /// first use).
    pub upstream_pin: Option<ServerIdentity>,
    /// The world, when the upstream is itself a relay of it.
    pub world: Option<ServerIdentity>,
    /// The relay's token upstream (its perspective there).
    pub token: String,
    /// The service.
    pub service: String,
    /// The zones to follow; empty: every zone the upstream offers.
    pub zones: Vec<ZoneId>,
    /// Accept `dev:` tokens downstream.
    pub dev_mode: bool,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Most simultaneous client connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Carry the actions of players whose tokens bind no key (a *trusted*
    /// relay, the previous protocol version's way): each gets a session of
    /// their own at the origin under a MAC token this relay issues — so its
    /// data directory must hold the world's token secret (`token.secret`),
    /// which lets it act as any player. Signed actions (world tokens
    /// binding the player's key) are carried whether or not this is on.
    pub carry_actions: bool,
    /// A WebTransport endpoint for browsers beside the raw QUIC one (see
    /// [`WebTransportOptions`]). A browser through a relay names the world
    /// (`world` in `@hoard/web`'s `connect`) and checks every signed head,
    /// as a native client does. Default: none.
    pub web_transport: Option<WebTransportOptions>,
}

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The upstream could not be reached or refused the relay.
    #[error("upstream {upstream}: {source}")]
    Upstream {
        /// The upstream's address.
        upstream: SocketAddr,
        /// Why.
        source: ClientError,
    },
    /// The upstream sent something a relay cannot serve.
    #[error("upstream {upstream}: {detail}")]
    Unusable {
        /// The upstream's address.
        upstream: SocketAddr,
        /// What is wrong.
        detail: String,
    },
    /// The downstream server could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Counters of a running relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Changes received from upstream and published downstream.
    pub changes: AtomicU64,
    /// Times the upstream was lost.
    pub upstream_lost: AtomicU64,
    /// Times every zone was caught up after the upstream came back.
    pub resyncs: AtomicU64,
    /// Whether the upstream is connected now.
    pub connected: AtomicBool,
}

/// A running relay.
pub struct RelayHandle {
    /// The downstream server (its address, its transport identity).
    pub server: ServerHandle,
    /// The world relayed.
    pub world: ServerIdentity,
    /// Counters.
    pub stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// The downstream address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Stops the relay: closes its clients and its upstream.
    pub async fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.server.shutdown().await;
    }
}

/// How long the relay waits between upstream reconnection attempts, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one attempt to reach the upstream again may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the relay's loop looks at its clients' commands.
const POLL: Duration = Duration::from_millis(5);

fn client_options(options: &RelayOptions) -> ClientOptions {
    let mut upstream = ClientOptions::new(options.upstream, options.data_dir.join("cache"), options.token.clone())
        .with_service(options.service.clone());
    upstream.pin = options.upstream_pin;
    upstream.world = options.world;
    upstream.proofs = true;
    // The world's token keys, to check its players' world tokens.
    upstream.token_keys = true;
    upstream
}

/// Connects upstream and enters every zone to follow, installing each in
/// `store`; returns the client and the changes for current subscribers.
async fn follow(
    options: &RelayOptions,
    registry: &PublishRegistry,
    store: &Locked<RelayWorld>,
) -> Result<(HoardClient, Vec<hoard_proto::wire::Delta>), RelayError> {
    let upstream = options.upstream;
    let client = HoardClient::connect(client_options(options), registry.clone())
        .await
        .map_err(|source| RelayError::Upstream { upstream, source })?;
    let zones = if options.zones.is_empty() {
        client.zones().to_vec()
    } else {
        options.zones.clone()
    };
    let mut deltas = Vec::new();
    for zone in &zones {
        client
            .enter_zone(zone)
            .await
            .map_err(|source| RelayError::Upstream { upstream, source })?;
    }
    for update in client.take_updates() {
        match update {
            ClientUpdate::ZoneLoaded { zone, shards, proofs } => {
                let installed = store.write().install_loaded(&zone, &shards, &proofs);
                deltas.extend(installed.map_err(|id| RelayError::Unusable {
                    upstream,
                    detail: format!("shard {id} of zone {zone} came without a signed head"),
                })?);
            }
            ClientUpdate::Objects { .. } => {
                // Already in the zone's copy, which the entry handed over
                // whole after it (live changes wait for the entry).
            }
            _ => {}
        }
    }
    tracing::info!(%upstream, zones = zones.len(), world = %client.world(), "relay following its upstream");
    Ok((client, deltas))
}

/// Starts a relay: follows its zones upstream (failing if the upstream
/// cannot be reached now), then serves them.
pub async fn start_relay(options: RelayOptions, registry: PublishRegistry) -> Result<RelayHandle, RelayError> {
    start(options, registry, None, |store| {
        let served: Arc<dyn hoard_engine::store::WorldStore> = store.clone();
        let proofs: Arc<dyn hoard_proto::proof::ProofSource> = store;
        (served, proofs)
    })
    .await
}

/// Starts a relay that lies to its clients in the way `tamper` says, to
/// test that they find out (hoard's own tests; see [`tamper`]).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub async fn start_tampering_relay(
    options: RelayOptions,
    registry: PublishRegistry,
    tamper: tamper::Tamper,
) -> Result<RelayHandle, RelayError> {
    start(options, registry, None, |store| {
        let lying = Arc::new(tamper::TamperingStore::new(store, tamper));
        let served: Arc<dyn hoard_engine::store::WorldStore> = lying.clone();
        let proofs: Arc<dyn hoard_proto::proof::ProofSource> = lying;
        (served, proofs)
    })
    .await
}

type Served = (
    Arc<dyn hoard_engine::store::WorldStore>,
    Arc<dyn hoard_proto::proof::ProofSource>,
);

/// Starts a relay that tampers with its players' signed intents on their
/// way to the origin, to test that the origin catches it (hoard's own
/// tests; see [`tamper::IntentTamper`]).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub async fn start_intent_tampering_relay(
    options: RelayOptions,
    registry: PublishRegistry,
    tamper: tamper::IntentTamper,
) -> Result<RelayHandle, RelayError> {
    start(options, registry, Some(tamper), |store| {
        let served: Arc<dyn hoard_engine::store::WorldStore> = store.clone();
        let proofs: Arc<dyn hoard_proto::proof::ProofSource> = store;
        (served, proofs)
    })
    .await
}

#[cfg(not(feature = "testing"))]
type IntentTamper = std::convert::Infallible;
#[cfg(feature = "testing")]
type IntentTamper = tamper::IntentTamper;

async fn start(
    options: RelayOptions,
    registry: PublishRegistry,
    intent_tamper: Option<IntentTamper>,
    serve: impl FnOnce(Arc<Locked<RelayWorld>>) -> Served,
) -> Result<RelayHandle, RelayError> {
    let store = Arc::new(Locked::new(RelayWorld::default()));
    let (client, _) = follow(&options, &registry, &store).await?;
    let world = client.world();
    let world_key = client.world_key().to_vec();
    let mut server_options = ServerOptions::new(options.listen, options.data_dir.clone());
    server_options.service = options.service.clone();
    server_options.dev_mode = options.dev_mode;
    server_options.max_connections = options.max_connections;
    server_options.max_connections_per_ip = options.max_connections_per_ip;
    server_options.web_transport = options.web_transport.clone();
    let rules = GameRules {
        registry: registry.hash(),
        intents: hoard_proto::intents::IntentRegistry::any(),
        access: Arc::new(hoard_proto::sync::server::OpenWorld),
        on_join: None,
        on_leave: None,
    };
    // The world's token keys, signed by the world: players' world tokens
    // are checked with them (this relay holds no world secret).
    let signed_keys = client.token_keys().cloned();
    let token_keys = match &signed_keys {
        Some(signed) => {
            let verifier =
                hoard_trust::heads::KeyVerifier::new(world, &world_key).map_err(|detail| RelayError::Unusable {
                    upstream: options.upstream,
                    detail,
                })?;
            let keys = hoard_trust::token_keys::verify_token_keys(&world, signed, &verifier).map_err(|detail| {
                RelayError::Unusable {
                    upstream: options.upstream,
                    detail,
                }
            })?;
            Some(keys)
        }
        None => {
            tracing::warn!("the upstream sent no token keys: world tokens are refused here");
            None
        }
    };
    let (served, proofs) = serve(store.clone());
    let dev_mode = options.dev_mode;
    let bound = bind(server_options.clone(), served, rules, |keys, config| {
        config.server = world;
        config.world_key = world_key;
        config.proofs = Some(proofs);
        config.always_prove = true;
        config.token_keys = signed_keys;
        // Signed intents go up with their signatures, checked at the origin.
        config.checks_intents = false;
        // The relay's own token secret (its own MAC tokens) and the world's
        // token keys; it mints no world tokens.
        let mut auth = hoard_proto::auth::TokenAuthority::new(keys.token_secret).with_dev_mode(dev_mode);
        if let Some(token_keys) = token_keys {
            auth = auth.with_world_tokens(token_keys);
        }
        config.auth = auth;
        Ok(())
    })
    .await?;
    let stats = Arc::new(RelayStats::default());
    stats.connected.store(true, Ordering::SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let actions = Some(actions::Actions::new(
        client_options(&options),
        registry.clone(),
        bound.handle.auth.clone(),
        options.carry_actions,
        intent_tamper,
    ));
    let link = RelayLink {
        core: RelayCore::new(store.clone()),
        store,
        commands: bound.commands,
        conns: Outbox::default(),
        metrics: bound.metrics.clone(),
        stats: stats.clone(),
        actions,
    };
    let task = tokio::spawn(run(link, client, options, registry, stop.clone()));
    tracing::info!(addr = %bound.handle.addr, %world, "relay serving");
    Ok(RelayHandle {
        server: bound.handle,
        world,
        stats,
        stop,
        task,
    })
}

/// The relay's side of its connections.
struct RelayLink {
    core: RelayCore,
    store: Arc<Locked<RelayWorld>>,
    commands: std_mpsc::Receiver<Command>,
    conns: Outbox,
    metrics: Arc<hoard_metrics::ServerMetrics>,
    stats: Arc<RelayStats>,
    /// Players' actions carried upstream.
    actions: Option<actions::Actions>,
}

impl RelayLink {
    /// Takes in what the connections did.
    fn commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            let input = self.conns.take(cmd);
            let input = match &mut self.actions {
                Some(actions) => match actions.take(input) {
                    Some(input) => input,
                    None => continue,
                },
                None => input,
            };
            self.core.handle(input);
        }
        if let Some(actions) = &mut self.actions {
            while let Some((to, message)) = actions.answer() {
                self.core.send_to(to, message);
            }
        }
        self.deliver();
    }

    /// Queues the core's messages; a client that reads too slowly is
    /// disconnected.
    fn deliver(&mut self) {
        while let Some(HubRead { ticket, read }) = self.core.poll_read() {
            let reply = read.run(&*self.store);
            self.core.read_done(ticket, reply);
        }
        while let Some(TickOutput { to, message }) = self.core.poll_output() {
            if !self.conns.queue(to, message, &self.metrics, None) {
                self.core.handle(TickInput::Remove { id: to });
            }
        }
        self.conns.flush();
    }

    /// Takes in what came from upstream; returns why the upstream ended,
    /// if it did.
    fn upstream(&mut self, client: &HoardClient) -> Option<String> {
        let mut ended = None;
        for update in client.take_updates() {
            // The store's lock is released before passing on: the core's
            // proofs read the store.
            let taken = self.store.write().take_upstream(update);
            match &taken {
                Upstream::Changed(_) => {
                    self.stats.changes.fetch_add(1, Ordering::Relaxed);
                }
                Upstream::Unsigned { zone, shard } => {
                    tracing::warn!(%zone, %shard, "a shard came without a signed head; not served");
                }
                Upstream::Ended(reason) => ended = Some(reason.clone()),
                _ => {}
            }
            self.core.pass_on(taken);
        }
        self.deliver();
        ended
    }
}

async fn run(
    mut link: RelayLink,
    client: HoardClient,
    options: RelayOptions,
    registry: PublishRegistry,
    stop: Arc<AtomicBool>,
) {
    let mut client = Some(client);
    let mut backoff = Duration::from_millis(200);
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) {
        match &client {
            Some(c) => {
                tokio::select! {
                    _ = c.changed() => {}
                    _ = ticker.tick() => {}
                }
                if let Some(reason) = link.upstream(c) {
                    tracing::warn!(upstream = %options.upstream, %reason, "relay lost its upstream; serving what it has");
                    link.stats.upstream_lost.fetch_add(1, Ordering::Relaxed);
                    link.stats.connected.store(false, Ordering::SeqCst);
                    link.core.upstream_lost(&reason);
                    // Closed before the next connection opens the cache.
                    if let Some(old) = client.take() {
                        old.close_and_wait(Duration::from_secs(1)).await;
                    }
                }
            }
            None => {
                // Keep serving while reconnecting; the entries catch each
                // zone up in one warm round trip.
                let store = link.store.clone();
                // Bounded: an attempt made while the upstream was down may
                // otherwise wait out QUIC's growing retransmission timers
                // long after the upstream is back.
                let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, follow(&options, &registry, &store));
                tokio::pin!(attempt);
                let retry_at = tokio::time::Instant::now() + backoff;
                let mut result = None;
                while result.is_none() && !stop.load(Ordering::SeqCst) {
                    tokio::select! {
                        r = &mut attempt => result = Some(r),
                        _ = ticker.tick() => link.commands(),
                    }
                }
                match result {
                    Some(Ok(Ok((c, deltas)))) => {
                        link.core.publish(deltas);
                        link.core.upstream_back();
                        link.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                        link.stats.connected.store(true, Ordering::SeqCst);
                        tracing::info!(upstream = %options.upstream, "relay caught up with its upstream");
                        backoff = Duration::from_millis(200);
                        client = Some(c);
                    }
                    Some(failed) => {
                        match failed {
                            Ok(Err(e)) => tracing::debug!(error = %e, "upstream still unreachable"),
                            _ => tracing::debug!("upstream did not answer in time"),
                        }
                        while tokio::time::Instant::now() < retry_at && !stop.load(Ordering::SeqCst) {
                            ticker.tick().await;
                            link.commands();
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    None => {}
                }
            }
        }
        link.commands();
    }
    if let Some(c) = client {
        c.close_and_wait(Duration::from_secs(2)).await;
    }
}

#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod tamper;

mod actions;
