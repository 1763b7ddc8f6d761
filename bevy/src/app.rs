//! Registration on the App, as a Bevy game registers everything else:
//! `app.publish::<Lamp>("lamp", 1)`, `app.add_intent::<Light>("light", 1)`,
//! `app.add_server_message::<Notice>("notice")` ([`HoardAppExt`]). A game
//! writes them once, in a function or plugin both its server and its client
//! App add, so the two ends register the same things; hoard's plugins build
//! the registry from them when they are added, and a registration made after
//! that is a programming error caught at once (a panic naming it).
//!
//! What each registration installs differs by side: an intent is read as
//! `FromClient<I>` on a server and sent with `Hoard::send` on a client; a
//! server message is written as `ToClients<M>` on a server and read as
//! `FromServer<M>` on a client. The registration keeps both halves; each
//! plugin installs its own.

use std::sync::Arc;

use bevy_app::App;
use bevy_ecs::component::Mutable;
use bevy_ecs::prelude::*;
use hoard_engine::PublishRegistry;
use hoard_engine::registry::RegistryBuilder;
use hoard_proto::intents::IntentRegistry;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::server::{HoardServerPlugin, StartError};

/// Installs one registration's systems and messages on an App.
pub(crate) type Installer = Arc<dyn Fn(&mut App) + Send + Sync>;

/// Adds one intent type's decoder to a server's intent table.
pub(crate) type IntentTable = Arc<dyn Fn(IntentRegistry) -> IntentRegistry + Send + Sync>;

/// What a game registered on its App (through [`HoardAppExt`]), until a
/// hoard plugin takes it.
#[derive(Resource, Default)]
pub struct HoardRegistration {
    /// The components and intents; `None` until the first registration.
    builder: Option<RegistryBuilder>,
    /// The registry, once a plugin built it: later registrations panic.
    built: Option<PublishRegistry>,
    pub(crate) server: ServerSide,
    client: Vec<Installer>,
}

/// What a server installs for the App's registrations.
#[derive(Default, Clone)]
pub(crate) struct ServerSide {
    pub(crate) intents: Vec<IntentTable>,
    pub(crate) installers: Vec<Installer>,
}

impl HoardRegistration {
    fn open(&mut self, what: &str) -> RegistryBuilder {
        assert!(
            self.built.is_none(),
            "hoard: {what} registered after a hoard plugin was added: register every component, intent and server \
             message before adding HoardServerPlugin or HoardClientPlugin"
        );
        self.builder.take().unwrap_or_default()
    }

    /// Whether components or intents were registered (a registry to
    /// build).
    pub fn has_registry(&self) -> bool {
        self.builder.is_some() || self.built.is_some()
    }

    /// Builds the registry (once; later calls return the same one) and
    /// closes registration.
    pub(crate) fn registry(&mut self) -> PublishRegistry {
        if let Some(built) = &self.built {
            return built.clone();
        }
        let built = self.builder.take().unwrap_or_default().build();
        self.built = Some(built.clone());
        built
    }

    /// What a client installs.
    pub(crate) fn client_installers(&self) -> Vec<Installer> {
        self.client.clone()
    }
}

/// Registration of published components, intents and server messages on a
/// Bevy App, as `bevy_replicon` registers with `app.replicate::<C>()`.
/// Call them on both the server's and the client's App (one shared function
/// or plugin), before adding hoard's plugin:
///
/// ```
/// use bevy_app::App;
/// use bevy_ecs::prelude::*;
/// use hoard_bevy::HoardAppExt;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Component, Serialize, Deserialize)]
/// struct Lamp { lit: bool }
/// #[derive(Serialize, Deserialize)]
/// struct Light { lamp: u64 }
/// #[derive(Serialize, Deserialize)]
/// struct Notice { text: String }
///
/// fn shared(app: &mut App) {
///     app.publish::<Lamp>("lamp", 1)
///         .add_intent::<Light>("light", 1)
///         .add_server_message::<Notice>("notice");
/// }
/// let mut app = App::new();
/// app.add_plugins(shared);
/// ```
pub trait HoardAppExt {
    /// Publishes component `C` under a stable `name` and schema `version`
    /// (see `RegistryBuilder::publish`): its state is stored, cached and
    /// replicated. Bump the version whenever its serialised form changes.
    fn publish<C>(&mut self, name: &str, version: u32) -> &mut Self
    where
        C: Component<Mutability = Mutable> + Serialize + DeserializeOwned;

    /// Registers how `C`'s stored bytes at schema version `from` become a
    /// `C` (see `RegistryBuilder::migrate`).
    fn migrate<C>(&mut self, from: u32, f: impl Fn(&[u8]) -> Result<C, String> + Send + Sync + 'static) -> &mut Self
    where
        C: Component<Mutability = Mutable> + Serialize + DeserializeOwned;

    /// Registers intent type `I` under `name` and schema `version`, as part
    /// of the registry both ends agree on (an outdated client is told at
    /// `Hello`). A server reads it as `MessageReader<FromClient<I>>`; a
    /// client sends it with `Hoard::send(&intent)`.
    fn add_intent<I>(&mut self, name: &str, version: u32) -> &mut Self
    where
        I: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Registers message type `M` of the server to its players under
    /// `name`: a server writes `ToClients<M>`, a client reads
    /// `FromServer<M>`.
    fn add_server_message<M>(&mut self, name: &str) -> &mut Self
    where
        M: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Starts `plugin` with what this App registered and adds it, or says
    /// why it could not start (see [`HoardServerPlugin::start`]).
    fn add_hoard_server(&mut self, plugin: HoardServerPlugin) -> Result<&mut Self, StartError>;
}

fn registration(app: &mut App) -> Mut<'_, HoardRegistration> {
    app.init_resource::<HoardRegistration>();
    app.world_mut().resource_mut::<HoardRegistration>()
}

impl HoardAppExt for App {
    fn publish<C>(&mut self, name: &str, version: u32) -> &mut Self
    where
        C: Component<Mutability = Mutable> + Serialize + DeserializeOwned,
    {
        let mut reg = registration(self);
        let builder = reg.open("a component").publish::<C>(name, version);
        reg.builder = Some(builder);
        self
    }

    fn migrate<C>(&mut self, from: u32, f: impl Fn(&[u8]) -> Result<C, String> + Send + Sync + 'static) -> &mut Self
    where
        C: Component<Mutability = Mutable> + Serialize + DeserializeOwned,
    {
        let mut reg = registration(self);
        let builder = reg.open("a migration").migrate::<C>(from, f);
        reg.builder = Some(builder);
        self
    }

    fn add_intent<I>(&mut self, name: &str, version: u32) -> &mut Self
    where
        I: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let mut reg = registration(self);
        let builder = reg.open("an intent").intent::<I>(name, version);
        reg.builder = Some(builder);
        let table_name = name.to_owned();
        reg.server
            .intents
            .push(Arc::new(move |table: IntentRegistry| table.intent::<I>(&table_name)));
        reg.server.installers.push(crate::server::intent_installer::<I>(name));
        self
    }

    fn add_server_message<M>(&mut self, name: &str) -> &mut Self
    where
        M: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let mut reg = registration(self);
        assert!(
            reg.built.is_none(),
            "hoard: server message {name:?} registered after a hoard plugin was added: register it before"
        );
        reg.server.installers.push(crate::server::message_installer::<M>(name));
        reg.client.push(crate::client::message_installer::<M>(name));
        self
    }

    fn add_hoard_server(&mut self, plugin: HoardServerPlugin) -> Result<&mut Self, StartError> {
        let started = plugin.with_app_registration(self)?.start()?;
        Ok(self.add_plugins(started))
    }
}

/// hoard's plugins for one side of a game, as a group: the log plugin
/// ([`HoardLogPlugin`](crate::HoardLogPlugin), which a game with its own
/// `tracing` subscriber disables) and the server or client plugin. The
/// server's is started when the group is added, and panics if it cannot
/// start; a binary that reports start errors uses
/// [`HoardAppExt::add_hoard_server`] instead.
///
/// ```no_run
/// # use bevy_app::{App, PluginGroup};
/// # use hoard_bevy::{HoardClientPlugin, HoardLogPlugin, HoardPlugins};
/// # fn example(plugin: HoardClientPlugin) {
/// App::new().add_plugins(HoardPlugins::client(plugin).build().disable::<HoardLogPlugin>());
/// # }
/// ```
pub struct HoardPlugins {
    side: Side,
}

enum Side {
    Server(Box<HoardServerPlugin>),
    Client(Box<crate::HoardClientPlugin>),
}

impl HoardPlugins {
    /// The log plugin and `plugin`, a server.
    pub fn server(plugin: HoardServerPlugin) -> HoardPlugins {
        HoardPlugins {
            side: Side::Server(Box::new(plugin)),
        }
    }

    /// The log plugin and `plugin`, a client.
    pub fn client(plugin: crate::HoardClientPlugin) -> HoardPlugins {
        HoardPlugins {
            side: Side::Client(Box::new(plugin)),
        }
    }
}

impl bevy_app::PluginGroup for HoardPlugins {
    fn build(self) -> bevy_app::PluginGroupBuilder {
        let group = bevy_app::PluginGroupBuilder::start::<HoardPlugins>().add(crate::HoardLogPlugin::default());
        match self.side {
            Side::Server(server) => group.add(*server),
            Side::Client(client) => group.add(*client),
        }
    }
}
