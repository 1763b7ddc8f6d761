//! [`HoardClientPlugin`]: joins a world from a Bevy App. The plugin
//! connects through its transport (QUIC by default, see
//! [`transport`](crate::transport)); the game enters, prefetches and leaves zones
//! by writing [`ZoneRequest`] messages, sends intents through the [`Hoard`]
//! resource, and reads what happened as [`HoardEvent`] messages. Published
//! objects appear as entities with their components (and
//! [`Replicated`](crate::Replicated)) before the
//! `ZoneReady` event of their zone is seen, and are despawned on leave.

use std::collections::BTreeMap;
use std::sync::Arc;

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard_engine::{PublishRegistry, ShardId, ZoneId};
use hoard_net::quic::client::{ClientError, ClientEvent, ClientOptions, HoardClient};
use hoard_proto::sync::client::EntryProgress;

use serde::Serialize;

pub use crate::transport::INTENT_QUEUE;
use crate::transport::{ClientLink, ClientTransport, Connecting, QuicLink, QuicTransport};

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

/// The connection, once made: send intents with [`Hoard::send`].
#[derive(Resource, Clone)]
pub struct Hoard {
    link: Arc<dyn ClientLink>,
}

impl Hoard {
    /// The connection, as the plugin's transport made it.
    pub fn link(&self) -> &dyn ClientLink {
        &*self.link
    }

    /// The QUIC client, when the plugin connects over QUIC (its default
    /// transport), for what the plugin does not wrap.
    pub fn client(&self) -> Option<&HoardClient> {
        self.link.as_any().downcast_ref::<QuicLink>().map(QuicLink::client)
    }

    /// The player the server knows this client as.
    pub fn perspective(&self) -> &str {
        self.link.perspective()
    }

    /// Queues an intent, sent in order without blocking the frame; its
    /// answer arrives as `IntentsProcessed` or `IntentRejected` (in
    /// [`HoardEvent::Client`]) naming the returned seq. At most
    /// [`INTENT_QUEUE`] wait to be sent; more is an error.
    pub fn send_intent<T: Serialize>(&self, kind: &str, intent: &T) -> Result<u32, ClientError> {
        let payload = rmp_serde::to_vec(intent).map_err(|e| ClientError::Lost(e.to_string()))?;
        self.link.send_intent(kind, payload)
    }

    /// Queues an intent of a type registered in the client's registry
    /// (`PublishRegistry::builder().intent::<I>(name, version)`), under its
    /// registered name: no name repeated at the call site. Answered as
    /// [`Hoard::send_intent`]'s are.
    pub fn send<I: Serialize + 'static>(&self, intent: &I) -> Result<u32, ClientError> {
        let Some(kind) = self.link.registry().intent_name::<I>().map(str::to_owned) else {
            return Err(ClientError::Lost(format!(
                "intent type {} is not in the client's registry: register it with .intent::<I>(name, version)",
                std::any::type_name::<I>()
            )));
        };
        self.send_intent(&kind, intent)
    }

    /// The latest transient state of an entered zone (game data the server
    /// never stores, such as who stands where).
    pub fn transient(&self, zone: &ZoneId) -> Option<Vec<u8>> {
        self.link.transient(zone)
    }

    /// The shards of `zone` held live (empty for a zone not entered).
    pub fn zone_shards(&self, zone: &ZoneId) -> Vec<ShardId> {
        self.link.zone_shards(zone)
    }

    /// Closes the connection and waits (at most half a second) until the
    /// server has been told, so its session ends at once rather than after
    /// its idle timeout. Call it from outside an async runtime (a game's
    /// main thread) before dropping the App, as a client moving to another
    /// server does.
    pub fn close(&self) {
        self.link.close();
    }
}

/// The connection being made.
#[derive(Resource)]
struct Joining(Box<dyn Connecting>);

/// Joins a world: `app.add_plugins(HoardClientPlugin::new(options))` on an
/// App that registered the game's components ([`HoardAppExt`](crate::HoardAppExt)).
pub struct HoardClientPlugin {
    transport: Arc<dyn ClientTransport>,
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
        HoardClientPlugin::with_transport(QuicTransport::new(options))
    }

    /// A client of what the App registered, connecting through `transport`
    /// instead of hoard-net's QUIC client (see [`transport`](crate::transport)).
    pub fn with_transport(transport: impl ClientTransport) -> HoardClientPlugin {
        HoardClientPlugin {
            transport: Arc::new(transport),
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
        let connecting = self.transport.connect(registry, self.entering.clone());
        app.add_message::<ZoneRequest>()
            .add_message::<HoardEvent>()
            .insert_resource(Joining(connecting))
            .insert_resource(HoardConnection::Connecting)
            .configure_sets(PreUpdate, HoardClientSet)
            .add_systems(PreUpdate, (connect, requests, apply).chain().in_set(HoardClientSet));
        for add in adders.iter().chain(&self.adders) {
            add(app);
        }
    }
}

fn connect(world: &mut World) {
    let Some(mut connecting) = world.get_resource_mut::<Joining>() else {
        return;
    };
    let Some(result) = connecting.0.poll() else {
        return;
    };
    world.remove_resource::<Joining>();
    match result {
        Ok(link) => {
            tracing::info!(perspective = link.perspective(), "connected");
            world.insert_resource(HoardConnection::Connected {
                perspective: link.perspective().to_owned(),
            });
            let event = HoardEvent::Connected {
                perspective: link.perspective().to_owned(),
                zones: link.zones().to_vec(),
            };
            world.insert_resource(Hoard { link });
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
            hoard.link.request(request);
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
    let arrived = hoard.link.take();
    let mut moved = Vec::new();
    {
        let mut reported = world.get_resource_or_insert_with(ReportedProgress::default);
        reported
            .0
            .retain(|zone, _| arrived.progress.iter().any(|(z, _)| z == zone));
        for (zone, progress) in arrived.progress {
            if reported.0.get(&zone) != Some(&progress) {
                reported.0.insert(zone.clone(), progress);
                moved.push(HoardEvent::EntryProgress { zone, progress });
            }
        }
    }
    for event in moved {
        world.write_message(event);
    }
    let events = crate::materialise::apply_updates(hoard.link.registry(), arrived.updates, world);
    for e in arrived.failures {
        world.write_message(HoardEvent::Failed(e));
    }
    for event in events {
        if let ClientEvent::Disconnected { reason } = &event {
            world.insert_resource(HoardConnection::Failed { reason: reason.clone() });
        }
        world.write_message(HoardEvent::Client(event));
    }
}
