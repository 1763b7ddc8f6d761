//! [`HoardClientPlugin`]: joins a world from a Bevy App. The plugin
//! connects through its transport (QUIC by default, see
//! [`transport`](crate::transport)) and drives the session from its systems
//! ([`driver`](crate::driver)); the game enters, prefetches and leaves zones
//! by writing [`ZoneRequest`] messages, sends intents through the [`Hoard`]
//! resource, and reads what happened as [`HoardEvent`] messages. Published
//! objects appear as entities with their components (and
//! [`Replicated`](crate::Replicated)) before the
//! `ZoneReady` event of their zone is seen, and are despawned on leave.

use std::sync::Arc;

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard_client::SessionSettings;
use hoard_client::wire::{Wire, WireTransport};
use hoard_engine::{PublishRegistry, ServerIdentity, ShardId, ZoneId};
use hoard_net::quic::client::ClientOptions;
use hoard_net::quic::wire::QuicWireTransport;
use hoard_proto::client::{ClientError, ClientEvent};
use hoard_proto::sync::client::EntryProgress;

use serde::Serialize;

pub use crate::driver::INTENT_QUEUE;
use crate::driver::{Driver, Link};

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
    pub(crate) link: Arc<Link>,
}

impl Hoard {
    /// The transport's connection, for what the plugin does not wrap
    /// (downcast [`Wire::as_any`] to
    /// [`QuicWire`](crate::transport::QuicWire) for QUIC's path statistics).
    pub fn wire(&self) -> &dyn Wire {
        &*self.link.wire
    }

    /// The server's identity, as the transport verified it (pinned, or
    /// trusted on first use).
    pub fn identity(&self) -> ServerIdentity {
        self.link.wire.identity()
    }

    /// The world this client's cache and checks are for: the server's own
    /// identity, or, through a relay, the world the relay carries.
    pub fn world(&self) -> ServerIdentity {
        self.link.world
    }

    /// The player the server knows this client as.
    pub fn perspective(&self) -> &str {
        &self.link.perspective
    }

    /// The zones this player may enter.
    pub fn zones(&self) -> &[ZoneId] {
        &self.link.zones
    }

    /// The registry objects are decoded with.
    pub fn registry(&self) -> &PublishRegistry {
        &self.link.registry
    }

    /// Sends an intent in order without blocking the frame; its answer
    /// arrives as `IntentsProcessed` or `IntentRejected` (in
    /// [`HoardEvent::Client`]) naming the returned seq. With a player key
    /// the intent is signed; until the session's nonce has come, at most
    /// [`INTENT_QUEUE`] wait for it (more is an error).
    pub fn send_intent<T: Serialize>(&self, kind: &str, intent: &T) -> Result<u32, ClientError> {
        let payload = rmp_serde::to_vec(intent).map_err(|e| ClientError::Lost(e.to_string()))?;
        self.link.send_intent(kind, payload)
    }

    /// Sends an intent of a type registered in the client's registry
    /// (`PublishRegistry::builder().intent::<I>(name, version)`), under its
    /// registered name: no name repeated at the call site. Answered as
    /// [`Hoard::send_intent`]'s are.
    pub fn send<I: Serialize + 'static>(&self, intent: &I) -> Result<u32, ClientError> {
        let Some(kind) = self.link.registry.intent_name::<I>().map(str::to_owned) else {
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

    /// Closes the connection and waits briefly until the server has been
    /// told, so its session ends at once rather than after its idle
    /// timeout. Call it from outside an async runtime (a game's main
    /// thread) before dropping the App, as a client moving to another
    /// server does.
    pub fn close(&self) {
        self.link.wire.close(0, "bye");
    }
}

/// Joins a world: `app.add_plugins(HoardClientPlugin::new(options))` on an
/// App that registered the game's components ([`HoardAppExt`](crate::HoardAppExt)).
pub struct HoardClientPlugin {
    transport: Arc<dyn WireTransport>,
    settings: SessionSettings,
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
        HoardClientPlugin::with_transport(options.settings(), QuicWireTransport::new(options.clone()))
    }

    /// A client of what the App registered, signing in and caching as
    /// `settings` say, connecting through `transport` instead of QUIC (see
    /// [`transport`](crate::transport)).
    pub fn with_transport(settings: SessionSettings, transport: impl WireTransport) -> HoardClientPlugin {
        HoardClientPlugin {
            transport: Arc::new(transport),
            settings,
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
    /// handshake and one round trip (`ZoneReady` follows `Connected`). A
    /// `ZoneRequest` written before the connection is up does the same
    /// when the token names its player (world and dev tokens do).
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
        let connecting = self.transport.connect(self.settings.hello(registry.hash()));
        app.add_message::<ZoneRequest>()
            .add_message::<HoardEvent>()
            .insert_resource(HoardConnection::Connecting)
            .configure_sets(PreUpdate, HoardClientSet)
            .add_systems(
                PreUpdate,
                (requests, crate::driver::drive).chain().in_set(HoardClientSet),
            );
        match Driver::start(self.settings.clone(), registry, connecting, self.entering.clone()) {
            Ok(driver) => {
                app.insert_resource(driver);
            }
            Err(e) => {
                tracing::error!(error = %e, "could not start the client");
                app.insert_resource(HoardConnection::Failed { reason: e.to_string() });
                app.world_mut().write_message(HoardEvent::Failed(e));
            }
        }
        for add in adders.iter().chain(&self.adders) {
            add(app);
        }
    }
}

/// Hands the game's zone requests to the driver (those written before the
/// connection is up wait in it).
fn requests(mut requests: MessageReader<ZoneRequest>, driver: Option<ResMut<Driver>>) {
    if let Some(mut driver) = driver {
        for request in requests.read() {
            driver.request(request.clone());
        }
    }
}
