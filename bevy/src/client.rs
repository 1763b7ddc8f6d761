//! [`HoardClientPlugin`]: joins a world from a Bevy App. The plugin
//! connects on its own runtime; the game enters, prefetches and leaves zones
//! by writing [`ZoneRequest`] messages, sends intents through the [`Hoard`]
//! resource, and reads what happened as [`HoardEvent`] messages. Published
//! objects appear as entities with their components (and
//! [`Replicated`](crate::Replicated)) before the
//! `ZoneReady` event of their zone is seen, and are despawned on leave.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard_engine::{PublishRegistry, ZoneId};
use hoard_net::quic::client::{ClientError, ClientEvent, ClientOptions, HoardClient, PendingEntry};
use hoard_proto::sync::client::EntryProgress;
use std::future::Future;

use serde::Serialize;

/// Where hoard's client systems run: in `PreUpdate`, so the game's `Update`
/// sees this frame's objects and events.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct HoardClientSet;

/// What the game asks of the world's zones.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZoneRequest {
    /// Enter a zone: one round trip, verified, cached; `ZoneReady` follows.
    Enter(ZoneId),
    /// Bring a zone up to date in the background, so entering it later
    /// costs nothing.
    Prefetch(ZoneId),
    /// Leave a zone: its entities are despawned; `ZoneLeft` follows.
    Leave(ZoneId),
}

/// What happened, as a Bevy message: a zone ready or left, an intent
/// processed or rejected, the server's status, a failure.
#[derive(Message, Debug, Clone)]
#[non_exhaustive]
pub enum HoardEvent {
    /// The connection is up.
    Connected {
        /// The authenticated perspective.
        perspective: String,
        /// The zones it may enter.
        zones: Vec<ZoneId>,
    },
    /// The connection could not be made, or a request failed.
    Failed(ClientError),
    /// Something the client reported (zone ready or left, intents processed
    /// or rejected, server status, disconnection).
    Client(ClientEvent),
    /// How far an entry in flight has come: written in a frame where it
    /// moved, until the zone's `ZoneReady` (or a failure).
    EntryProgress {
        /// The zone being entered.
        zone: ZoneId,
        /// Shards verified, shards in the zone, bytes received.
        progress: EntryProgress,
    },
}

/// Intents queued for sending, at most; more is an error to the caller.
pub const INTENT_QUEUE: usize = 256;

/// The connection, once made: send intents with [`Hoard::send_intent`].
#[derive(Resource, Clone)]
pub struct Hoard {
    client: Arc<HoardClient>,
    runtime: Arc<tokio::runtime::Runtime>,
    failures: Arc<Mutex<Vec<ClientError>>>,
    intents: tokio::sync::mpsc::Sender<(u32, String, Vec<u8>)>,
    /// Zones whose entry is in flight (their progress is reported).
    entering: Arc<Mutex<BTreeSet<ZoneId>>>,
}

impl Hoard {
    /// The network client (for what the plugin does not wrap).
    pub fn client(&self) -> &HoardClient {
        &self.client
    }

    /// Queues an intent, sent in order without blocking the frame; its
    /// answer arrives as `IntentsProcessed` or `IntentRejected` (in
    /// [`HoardEvent::Client`]) naming the returned seq.
    pub fn send_intent<T: Serialize>(&self, kind: &str, intent: &T) -> Result<u32, ClientError> {
        let payload = rmp_serde::to_vec(intent).map_err(|e| ClientError::Lost(e.to_string()))?;
        let seq = self.client.next_intent_seq();
        self.intents
            .try_send((seq, kind.to_owned(), payload))
            .map_err(|_| ClientError::Lost(format!("more than {INTENT_QUEUE} intents waiting to be sent")))?;
        Ok(seq)
    }

    /// Queues an intent of a type registered in the client's registry
    /// (`PublishRegistry::builder().intent::<I>(name, version)`), under its
    /// registered name: no name repeated at the call site. Answered as
    /// [`Hoard::send_intent`]'s are.
    pub fn send<I: Serialize + 'static>(&self, intent: &I) -> Result<u32, ClientError> {
        let Some(kind) = self.client.registry().intent_name::<I>().map(str::to_owned) else {
            return Err(ClientError::Lost(format!(
                "intent type {} is not in the client's registry: register it with .intent::<I>(name, version)",
                std::any::type_name::<I>()
            )));
        };
        self.send_intent(&kind, intent)
    }

    /// Closes the connection and waits (at most half a second) until the
    /// server has been told, so its session ends at once rather than after
    /// its idle timeout. Call it from outside an async runtime (a game's
    /// main thread) before dropping the App, as a client moving to another
    /// server does.
    pub fn close(&self) {
        self.runtime
            .block_on(self.client.close_and_wait(std::time::Duration::from_millis(500)));
    }

    /// The zones whose entry is in flight.
    pub fn entering(&self) -> Vec<ZoneId> {
        self.entering
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn spawn_request(&self, request: ZoneRequest) {
        let client = self.client.clone();
        let failures = self.failures.clone();
        let entering = self.entering.clone();
        if let (ZoneRequest::Enter(zone), Ok(mut e)) = (&request, entering.lock()) {
            e.insert(zone.clone());
        }
        self.runtime.spawn(async move {
            let result = match &request {
                ZoneRequest::Enter(zone) => {
                    let result = client.enter_zone(zone).await.map(|_| ());
                    if let Ok(mut e) = entering.lock() {
                        e.remove(zone);
                    }
                    result
                }
                ZoneRequest::Prefetch(zone) => client.prefetch(zone).await,
                ZoneRequest::Leave(zone) => client.leave_zone(zone).await,
            };
            if let Err(e) = result {
                tracing::warn!(?request, error = %e, "zone request failed");
                if let Ok(mut f) = failures.lock() {
                    f.push(e);
                }
            }
        });
    }
}

/// A connection made, with the entry started as part of it.
type Connected = Result<(HoardClient, Option<(ZoneId, PendingEntry)>), ClientError>;

/// The connection being made.
#[derive(Resource)]
struct Connecting {
    runtime: Arc<tokio::runtime::Runtime>,
    task: Option<tokio::task::JoinHandle<Connected>>,
}

/// Joins a world: `app.add_plugins(HoardClientPlugin::new(options))` on an
/// App that registered the game's components ([`HoardAppExt`](crate::HoardAppExt)).
pub struct HoardClientPlugin {
    options: ClientOptions,
    /// `None`: the App's registration.
    registry: Option<PublishRegistry>,
    entering: Option<ZoneId>,
    adders: Vec<MessageAdder>,
}

type MessageAdder = Arc<dyn Fn(&mut App) + Send + Sync>;

/// Where the client's connection stands: a resource present from the moment
/// the plugin is added (unlike [`Hoard`], which exists once connected), so a
/// game's systems can show "connecting…" or why it failed.
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HoardConnection {
    /// Connecting (and, if asked, entering the first zone).
    Connecting,
    /// Connected and signed in as `perspective`.
    Connected {
        /// The player the server knows this client as.
        perspective: String,
    },
    /// The connection could not be made, or ended; `reason` says why.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A message of the game's server to this player, as a Bevy message: read
/// it with `MessageReader<FromServer<M>>` in `Update`. Register its type
/// with [`HoardClientPlugin::server_message`] under the name the server
/// sends it by.
#[derive(Message, Debug, Clone)]
pub struct FromServer<M: Send + Sync + 'static> {
    /// The zone it was sent to, if the server sent it to a zone's players.
    pub zone: Option<ZoneId>,
    /// The message.
    pub message: M,
}

/// Installs the reading of the server's messages sent under `name` as
/// `FromServer<M>`.
pub(crate) fn message_installer<M: serde::de::DeserializeOwned + Send + Sync + 'static>(name: &str) -> MessageAdder {
    let name = name.to_owned();
    Arc::new(move |app: &mut App| {
        let name = name.clone();
        app.add_message::<FromServer<M>>().add_systems(
            PreUpdate,
            (move |mut events: MessageReader<HoardEvent>, mut out: MessageWriter<FromServer<M>>| {
                for event in events.read() {
                    let HoardEvent::Client(ClientEvent::GameMessage { kind, zone, payload }) = event else {
                        continue;
                    };
                    if *kind != name {
                        continue;
                    }
                    match rmp_serde::from_slice::<M>(payload) {
                        Ok(message) => {
                            out.write(FromServer {
                                zone: zone.clone(),
                                message,
                            });
                        }
                        Err(e) => {
                            tracing::warn!(%kind, error = %e, "a server message that does not decode; dropped")
                        }
                    }
                }
            })
            .after(HoardClientSet),
        );
    })
}

impl HoardClientPlugin {
    /// A client of what the App registered
    /// ([`HoardAppExt`](crate::HoardAppExt): `app.publish::<C>(..)`,
    /// `app.add_intent::<I>(..)`, `app.add_server_message::<M>(..)`),
    /// connecting with `options`. Register before adding the plugin.
    pub fn new(options: ClientOptions) -> HoardClientPlugin {
        HoardClientPlugin {
            options,
            registry: None,
            entering: None,
            adders: Vec::new(),
        }
    }

    /// A client of `registry`'s components and intents, built by hand
    /// (`PublishRegistry::builder()`) instead of on the App.
    pub fn with_registry(options: ClientOptions, registry: PublishRegistry) -> HoardClientPlugin {
        HoardClientPlugin {
            registry: Some(registry),
            ..HoardClientPlugin::new(options)
        }
    }

    /// Receives the server's messages of type `M` sent under `name`, as
    /// [`FromServer<M>`] Bevy messages. A message that does not decode as
    /// `M` is logged and dropped.
    #[must_use]
    pub fn server_message<M: serde::de::DeserializeOwned + Send + Sync + 'static>(mut self, name: &str) -> Self {
        self.adders.push(message_installer::<M>(name));
        self
    }

    /// Enters `zone` as part of connecting: its `EnterZone` goes right
    /// behind `Hello`, so a returning player's zone is ready after the
    /// handshake and one round trip (`ZoneReady` follows `Connected`).
    #[must_use]
    pub fn entering(mut self, zone: ZoneId) -> HoardClientPlugin {
        self.entering = Some(zone);
        self
    }
}

impl Plugin for HoardClientPlugin {
    fn build(&self, app: &mut App) {
        let runtime = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("hoard-client")
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("hoard: cannot start the client's runtime: {e}")),
        );
        let mut adders = Vec::new();
        let registered = app.world_mut().get_resource_mut::<crate::app::HoardRegistration>();
        let registry = match (registered, self.registry.clone()) {
            (Some(mut registration), given) => {
                adders = registration.client_installers();
                match (registration.has_registry(), given) {
                    (true, Some(_)) => panic!(
                        "hoard: the App registers components or intents and the client plugin was given a \
                         registry too: use one (HoardClientPlugin::new with app.publish, or with_registry)"
                    ),
                    (true, None) => registration.registry(),
                    (false, Some(given)) => given,
                    (false, None) => registration.registry(),
                }
            }
            (None, Some(given)) => given,
            (None, None) => panic!(
                "hoard: the client has nothing to replicate: register components on the App \
                 (app.publish::<C>(name, version)) before adding HoardClientPlugin, or use \
                 HoardClientPlugin::with_registry"
            ),
        };
        let options = self.options.clone();
        let task = match self.entering.clone() {
            None => runtime.spawn(async move { HoardClient::connect(options, registry).await.map(|c| (c, None)) }),
            Some(zone) => runtime.spawn(async move {
                HoardClient::connect_and_enter(options, registry, &zone)
                    .await
                    .map(|(client, entry)| (client, Some((zone, entry))))
            }),
        };
        app.add_message::<ZoneRequest>()
            .add_message::<HoardEvent>()
            .insert_resource(Connecting {
                runtime,
                task: Some(task),
            })
            .insert_resource(HoardConnection::Connecting)
            .configure_sets(PreUpdate, HoardClientSet)
            .add_systems(PreUpdate, (connect, requests, apply).chain().in_set(HoardClientSet));
        for add in adders.iter().chain(&self.adders) {
            add(app);
        }
    }
}

fn connect(world: &mut World) {
    let Some(mut connecting) = world.get_resource_mut::<Connecting>() else {
        return;
    };
    if !connecting
        .task
        .as_ref()
        .is_some_and(tokio::task::JoinHandle::is_finished)
    {
        return;
    }
    let runtime = connecting.runtime.clone();
    let Some(task) = connecting.task.take() else { return };
    // The task has finished: this takes its result without waiting.
    let result = futures_now(task).unwrap_or_else(|e| Err(ClientError::Lost(e)));
    match result {
        Ok((client, first_entry)) => {
            tracing::info!(perspective = client.perspective(), "connected");
            world.insert_resource(HoardConnection::Connected {
                perspective: client.perspective().to_owned(),
            });
            let event = HoardEvent::Connected {
                perspective: client.perspective().to_owned(),
                zones: client.zones().to_vec(),
            };
            let client = Arc::new(client);
            let failures = Arc::new(Mutex::new(Vec::new()));
            // One sender task keeps intents in the order they were queued.
            let (intents, mut queue) = tokio::sync::mpsc::channel::<(u32, String, Vec<u8>)>(INTENT_QUEUE);
            let (sender, sender_failures) = (client.clone(), failures.clone());
            runtime.spawn(async move {
                while let Some((seq, kind, payload)) = queue.recv().await {
                    if let Err(e) = sender.send_encoded_intent(seq, &kind, payload).await {
                        if let Ok(mut f) = sender_failures.lock() {
                            f.push(e);
                        }
                        return;
                    }
                }
            });
            let entering = Arc::new(Mutex::new(BTreeSet::new()));
            if let Some((zone, entry)) = first_entry {
                // The entry started with the connection: its progress is
                // reported, and its failure, like any other.
                if let Ok(mut e) = entering.lock() {
                    e.insert(zone.clone());
                }
                let (entering, failures) = (entering.clone(), failures.clone());
                runtime.spawn(async move {
                    let result = entry.wait().await;
                    if let Ok(mut e) = entering.lock() {
                        e.remove(&zone);
                    }
                    if let Err(e) = result {
                        // A redirect to the zone's server is not a failure
                        // (the game follows it): no warning for it.
                        if matches!(e, ClientError::ZoneElsewhere { .. }) {
                            tracing::debug!(%zone, error = %e, "zone entry redirected");
                        } else {
                            tracing::warn!(%zone, error = %e, "zone entry failed");
                        }
                        if let Ok(mut f) = failures.lock() {
                            f.push(e);
                        }
                    }
                });
            }
            world.insert_resource(Hoard {
                client,
                runtime,
                failures,
                intents,
                entering,
            });
            world.write_message(event);
        }
        Err(e) => {
            tracing::error!(error = %e, "could not connect");
            world.insert_resource(HoardConnection::Failed { reason: e.to_string() });
            world.write_message(HoardEvent::Failed(e));
        }
    }
}

/// Zone requests written before the connection was up wait for it.
fn requests(mut requests: MessageReader<ZoneRequest>, hoard: Option<Res<Hoard>>, mut waiting: Local<Vec<ZoneRequest>>) {
    waiting.extend(requests.read().cloned());
    if let Some(hoard) = hoard {
        for request in waiting.drain(..) {
            hoard.spawn_request(request);
        }
    }
}

/// The progress last reported per zone being entered.
#[derive(Resource, Default)]
struct ReportedProgress(BTreeMap<ZoneId, EntryProgress>);

/// Materialises what arrived (entities before their events, through the
/// App's [`Materialiser`](crate::Materialiser)), then writes the events: entry progress that
/// moved, failures, what the client reported.
fn apply(world: &mut World) {
    let Some(hoard) = world.get_resource::<Hoard>().cloned() else {
        return;
    };
    let entering = hoard.entering();
    let mut moved = Vec::new();
    {
        let mut reported = world.get_resource_or_insert_with(ReportedProgress::default);
        reported.0.retain(|zone, _| entering.contains(zone));
        for zone in entering {
            if let Some(progress) = hoard.client.entry_progress(&zone)
                && reported.0.get(&zone) != Some(&progress)
            {
                reported.0.insert(zone.clone(), progress);
                moved.push(HoardEvent::EntryProgress { zone, progress });
            }
        }
    }
    for event in moved {
        world.write_message(event);
    }
    let events = crate::materialise::update(&hoard.client, world);
    let failures = hoard
        .failures
        .lock()
        .map(|mut f| std::mem::take(&mut *f))
        .unwrap_or_default();
    for e in failures {
        world.write_message(HoardEvent::Failed(e));
    }
    for event in events {
        if let ClientEvent::Disconnected { reason } = &event {
            world.insert_resource(HoardConnection::Failed { reason: reason.clone() });
        }
        world.write_message(HoardEvent::Client(event));
    }
}

/// The output of a finished task, without blocking (and so without needing
/// to be outside a runtime, whatever the caller runs on).
fn futures_now<T>(task: tokio::task::JoinHandle<T>) -> Result<T, String> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut task = std::pin::pin!(task);
    match task.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(result) => result.map_err(|e| e.to_string()),
        std::task::Poll::Pending => Err("the connection task had not finished".into()),
    }
}
