//! [`HoardServerPlugin`]: serves the App's published entities. The App runs
//! its own schedules; hoard's systems run in [`HoardServerSet`]s around the
//! game's: in `PreUpdate`, what connections sent (intents as
//! [`FromClient`] messages, joins and leaves in [`ConnectedPlayers`]); in
//! `PostUpdate`, after the game's systems, the frame's changes are gathered,
//! committed durably, and only then published. The networking runs on the
//! plugin's own tokio runtime; the game needs no async code.

use std::sync::{Arc, Mutex};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard_engine::store::WorldStore;
use hoard_engine::{PublishRegistry, Publisher, ZoneId};
use hoard_net::quic::server::{
    GameRules, JoinHook, LeaveHook, ServerHandle, ServerOptions, TransientHook, WorldLink, start_linked,
};
use hoard_proto::intents::IntentRegistry;
use hoard_proto::sync::server::{AccessPolicy, OpenWorld};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use hoard_proto::intents::{ConnectedPlayers, FIRST_GAME_CODE, IncomingIntents, IntentId, IntentOutcomes};
pub use hoard_proto::messages::{Audience, OutgoingMessages};

/// Blocking threads of the server's runtime, at most: zone answers read the
/// store on them. Beyond it, reads queue (one per connection at most, each
/// connection awaiting its own) instead of each starting a thread, with
/// its stack and its allocator's cache: at 1,000 players, ~100 threads
/// served no faster than a few.
const BLOCKING_THREADS: usize = 16;

/// Where hoard's server systems run, relative to the game's.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HoardServerSet {
    /// `PreUpdate`: what connections sent reaches the world (intents,
    /// joins, leaves). Game systems reading [`FromClient`] run after it.
    Receive,
    /// `PostUpdate`: the frame's changes gathered, committed durably, then
    /// published; nothing reaches a client before its commit.
    Publish,
}

/// An intent a player sent, as a Bevy message: `perspective` is who sent it
/// (authenticated), `intent` what they asked. Read it with
/// `MessageReader<FromClient<T>>` in `Update`.
#[derive(Message, Debug, Clone)]
pub struct FromClient<T: Send + Sync + 'static> {
    /// The authenticated sender.
    pub perspective: String,
    /// The intent.
    pub intent: T,
    /// Which intent this is: refuse it with the game's own reason, or defer
    /// it, through [`IntentOutcomes`] (`ResMut<IntentOutcomes>`). An intent
    /// neither refused nor deferred in the frame it arrives is taken as
    /// applied, and its player gets `Processed` once the frame is durable.
    pub id: IntentId,
}

/// A message of the game to its players, as a Bevy message: write it with
/// `MessageWriter<ToClients<M>>` in a game system. Register its type with
/// [`HoardServerPlugin::server_message`]. It reaches the clients right
/// after the deltas of the frame that wrote it, once they are durable; it is
/// not stored.
#[derive(Message, Debug, Clone)]
pub struct ToClients<M: Send + Sync + 'static> {
    /// Who gets it.
    pub to: Audience,
    /// The message.
    pub message: M,
}

/// The zones' transient state for this frame (game data never stored: who
/// stands where). Game systems put each zone's encoding here; hoard sends a
/// zone's state to the sessions in it when it differs from the last sent,
/// and to each session entering it. A zone left out is unchanged.
#[derive(Resource, Default, Debug)]
pub struct ZoneTransients(pub Vec<(ZoneId, Vec<u8>)>);

/// The running server: its address, identity, token issuer and counters.
#[derive(Resource)]
pub struct HoardServer {
    /// The server's handle.
    pub handle: ServerHandle,
    runtime: tokio::runtime::Runtime,
}

impl HoardServer {
    /// Runs `f` on the server's runtime (for async calls on the handle).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// The server's runtime (to spawn a signal handler, say).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// Why the server failed, if it did (its store stayed broken); the
    /// plugin has then written `AppExit` with code 1.
    pub fn failure(&self) -> Option<String> {
        self.runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::ZERO, self.handle.failed())
                .await
                .ok()
        })
    }
}

/// Waits (up to `timeout`) until every change of `app`'s frames so far is
/// durable and published. Commits run on their own thread while the App
/// keeps running frames, so a change is durable some time after the frame
/// that made it; call this where a test or a scripted shutdown needs that
/// point. Fails if the time runs out or the store is failing.
pub fn flush(app: &mut App, timeout: std::time::Duration) -> Result<(), String> {
    let world = app.world_mut();
    world.resource_scope(|world, core: Mut<ServerCore>| lock(&core.link).flush(world, timeout))
}

/// Idles until `deadline` between two frames of `app`, publishing each
/// commit as soon as it is durable (a frame loop that would sleep calls
/// this instead, so clients get deltas without waiting for the next
/// frame). An error is a failure the server cannot recover from: the
/// server has then closed every connection.
pub fn idle_until(app: &mut App, deadline: std::time::Instant) -> Result<(), String> {
    let world = app.world_mut();
    world.resource_scope(|world, core: Mut<ServerCore>| {
        let mut link = lock(&core.link);
        let result = link.wait_for_commits(world, deadline);
        if let Err(reason) = &result {
            link.fail(reason.clone());
        }
        result
    })
}

/// The App runner a server App gets from [`HoardServerPlugin`]: runs a
/// frame every `1 / tick_hz` s, and between frames publishes each commit as
/// soon as it is durable ([`idle_until`]); when the App exits (a game
/// system writes `AppExit`), or the server fails, stops it cleanly
/// ([`shutdown`]: what is pending is committed) and returns. So a server
/// game ends its `main` with `app.run()`.
pub fn runner(tick_hz: u32) -> impl FnOnce(App) -> AppExit + 'static {
    move |mut app: App| {
        if app.plugins_state() != bevy_app::PluginsState::Cleaned {
            while app.plugins_state() == bevy_app::PluginsState::Adding {
                std::thread::yield_now();
            }
            app.finish();
            app.cleanup();
        }
        let tick = std::time::Duration::from_secs_f64(1.0 / f64::from(tick_hz.max(1)));
        let mut next = std::time::Instant::now();
        loop {
            app.update();
            if let Some(exit) = app.should_exit() {
                if let Some(reason) = app.world().get_resource::<HoardServer>().and_then(HoardServer::failure) {
                    tracing::error!(%reason, "the server failed");
                }
                shutdown(&mut app);
                return exit;
            }
            next += tick;
            let now = std::time::Instant::now();
            if next > now {
                if let Err(reason) = idle_until(&mut app, next) {
                    tracing::error!(%reason, "the server stops");
                    shutdown(&mut app);
                    return AppExit::error();
                }
            } else {
                next = now;
            }
        }
    }
}

/// Stops the server of `app` cleanly: what is pending is committed, every
/// connection is closed, and the endpoint is drained.
pub fn shutdown(app: &mut App) {
    if let Some(core) = app.world_mut().remove_resource::<ServerCore>() {
        lock(&core.link).finish(app.world_mut());
    }
    if let Some(server) = app.world_mut().remove_resource::<HoardServer>() {
        let HoardServer { handle, runtime } = server;
        runtime.block_on(handle.shutdown());
    }
}

/// Shards that come into or leave this server's care while it runs, for a
/// world spread over several servers: a player's inventory is loaded from
/// the store when the player arrives and forgotten (despawned without
/// publishing a removal: the store keeps it) when they go to another
/// server. Requests are carried out at the start of the next frame
/// (`PreUpdate`, in [`HoardServerSet::Receive`]), forgets before loads (a
/// loaded shard replaces any copy of it the world holds); a load the store
/// fails is tried again the frame after.
#[derive(Resource, Default, Debug)]
pub struct ShardCare {
    /// Shards to load, each with its zone.
    pub load: Vec<(ZoneId, hoard_engine::ShardId)>,
    /// Shards to forget.
    pub forget: Vec<hoard_engine::ShardId>,
}

/// The link and the publisher, used only by hoard's exclusive systems.
#[derive(Resource)]
struct ServerCore {
    link: Mutex<WorldLink>,
    publisher: Mutex<Publisher>,
    transient: TransientHook,
    store: Arc<dyn WorldStore>,
    /// Names the world in load errors.
    world_url: hoard_engine::HoardUrl,
    /// Object ids reserved from the store and not given out yet.
    ids: Mutex<std::ops::Range<u64>>,
}

/// Object ids reserved from the store at a time, for objects spawned
/// without one ([`hoard_engine::NewObject`]): one store write per this many.
const ID_BLOCK: u64 = 1024;

use crate::app::Installer as IntentAdder;

/// A check, at start, that an intent the plugin accepts by name is in the
/// registry under that name (when the registry lists intents).
#[derive(Clone)]
struct IntentCheck {
    name: String,
    type_name: &'static str,
    registered: fn(&PublishRegistry) -> Option<String>,
}

/// Installs the reading of intents of type `T` sent under `name`: each
/// frame, what arrived becomes `FromClient<T>` messages.
pub(crate) fn intent_installer<T: DeserializeOwned + Serialize + Send + Sync + 'static>(name: &str) -> IntentAdder {
    let name = name.to_owned();
    Arc::new(move |app: &mut App| {
        let name = name.clone();
        app.add_message::<FromClient<T>>().add_systems(
            PreUpdate,
            (move |intents: Res<IncomingIntents>, mut out: MessageWriter<FromClient<T>>| {
                for (id, perspective, intent) in intents.read_with_ids::<T>(&name) {
                    out.write(FromClient {
                        perspective,
                        intent,
                        id,
                    });
                }
            })
            .after(HoardServerSet::Receive),
        );
    })
}

/// Installs the sending of `ToClients<M>` messages under `name`.
pub(crate) fn message_installer<M: Serialize + Send + Sync + 'static>(name: &str) -> IntentAdder {
    let name = name.to_owned();
    Arc::new(move |app: &mut App| {
        let name = name.clone();
        app.add_message::<ToClients<M>>().add_systems(
            PostUpdate,
            (move |mut written: MessageReader<ToClients<M>>, mut out: ResMut<OutgoingMessages>| {
                for ToClients { to, message } in written.read() {
                    if let Err(e) = out.send(to.clone(), &name, message) {
                        tracing::error!(error = %e, "a game message not sent");
                    }
                }
            })
            .before(HoardServerSet::Publish),
        );
    })
}

/// Serves the App's world: `app.add_hoard_server(HoardServerPlugin::new(options,
/// store))?` on an App that registered the game's components and intents
/// ([`HoardAppExt`](crate::HoardAppExt)).
///
/// The stored world is the truth: building the plugin loads every stored
/// object into the App (unless the game loaded them itself and gave its
/// publisher, [`HoardServerPlugin::with_publisher`]), before any game
/// system runs. A new world is made by the [`HoardServerPlugin::seed`]
/// hook, which runs only on a store that holds no world yet; a game system
/// that spawns an object whose id is already published is refused (logged
/// as an error naming the id; the stored object is kept). The plugin sets
/// the App's runner ([`runner`]): `app.run()` serves at the tick rate until
/// a system writes `AppExit`, and returns once what is pending is durable.
///
/// Building the plugin migrates stored objects to the registry's schema
/// versions (`hoard_engine::schema::prepare`) and binds the server; it
/// panics with the reason if either fails (a server that cannot read its
/// world or listen must not run) — [`HoardServerPlugin::start`] does the
/// same and returns the error instead, for a binary that reports it and
/// exits. If the store stays
/// broken past [`ServerOptions::store_retry_for`], the plugin closes every
/// connection and writes [`AppExit`] with code 1; a panicking game system
/// ends the App as any Bevy panic does.
pub struct HoardServerPlugin {
    publisher: Mutex<Option<Publisher>>,
    options: ServerOptions,
    store: Arc<dyn WorldStore>,
    /// `None` until the App's registration is taken (see
    /// [`HoardServerPlugin::new`]).
    registry: Option<PublishRegistry>,
    intents: IntentRegistry,
    intent_checks: Vec<IntentCheck>,
    adders: Vec<IntentAdder>,
    access: Arc<dyn AccessPolicy>,
    on_join: Option<JoinHook>,
    on_leave: Option<LeaveHook>,
    seed: Option<SeedHook>,
}

impl HoardServerPlugin {
    /// A server over `store` of what the App registered
    /// ([`HoardAppExt`](crate::HoardAppExt): `app.publish::<C>(..)`,
    /// `app.add_intent::<I>(..)`, `app.add_server_message::<M>(..)`). Add
    /// it with `app.add_hoard_server(plugin)?` (or `app.add_plugins`, which
    /// panics if it cannot start).
    pub fn new(options: ServerOptions, store: Arc<dyn WorldStore>) -> HoardServerPlugin {
        HoardServerPlugin {
            publisher: Mutex::new(None),
            options,
            store,
            registry: None,
            intents: IntentRegistry::new(),
            intent_checks: Vec::new(),
            adders: Vec::new(),
            access: Arc::new(OpenWorld),
            on_join: None,
            on_leave: None,
            seed: None,
        }
    }

    /// Accepts intents of type `T` under `name`; game systems read them as
    /// `MessageReader<FromClient<T>>`. Prefer registering it on the App
    /// (`app.add_intent::<T>(name, version)`), which puts it in the
    /// registry both ends agree on. If the registry lists intents, `T` must
    /// be among them under `name` (start fails otherwise); a registry
    /// without intents accepts it unversioned.
    #[must_use]
    pub fn intent<T: DeserializeOwned + Serialize + Send + Sync + 'static>(mut self, name: &str) -> Self {
        self.intents = self.intents.intent::<T>(name);
        self.intent_checks.push(IntentCheck {
            name: name.to_owned(),
            type_name: std::any::type_name::<T>(),
            registered: |registry| registry.intent_name::<T>().map(str::to_owned),
        });
        self.adders.push(intent_installer::<T>(name));
        self
    }

    /// Publishes with `publisher`, which already knows the App's loaded
    /// objects (from `hoard_engine::load_world`), so they are not published
    /// again. Without it, a new publisher publishes whatever the App holds.
    #[must_use]
    pub fn with_publisher(self, publisher: Publisher) -> Self {
        *lock(&self.publisher) = Some(publisher);
        self
    }

    /// Sends messages of type `M` to players under `name`: game systems
    /// write [`ToClients<M>`]; clients that registered the same name
    /// receive them as `FromServer<M>`.
    #[must_use]
    pub fn server_message<M: Serialize + Send + Sync + 'static>(mut self, name: &str) -> Self {
        self.adders.push(message_installer::<M>(name));
        self
    }

    /// Decides which zones each perspective may enter.
    #[must_use]
    pub fn access(mut self, access: Arc<dyn AccessPolicy>) -> Self {
        self.access = access;
        self
    }

    /// Called when a perspective signs in, before its zone requests are
    /// answered; an error refuses the session.
    #[must_use]
    pub fn on_join(mut self, hook: JoinHook) -> Self {
        self.on_join = Some(hook);
        self
    }

    /// Makes a new world: `hook` runs once, when the store holds no world
    /// yet (it has recorded no schema), before anything is served. It
    /// creates the world's zones in the store (only those missing: a start
    /// that crashed before the seed's commit runs it again) and spawns the
    /// first published objects into the world it is given; they are
    /// committed in one transaction together with the schema record that
    /// marks the world as made. Every later start loads the stored world
    /// instead, so nothing the players changed is overwritten.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use bevy_ecs::prelude::*;
    /// # use hoard_bevy::HoardServerPlugin;
    /// # use hoard_engine::store::ShardSpec;
    /// # use hoard_engine::{ObjectId, Published, ShardId, ZoneId};
    /// # #[derive(Component, serde::Serialize, serde::Deserialize)] struct Lamp { lit: bool }
    /// # fn example(plugin: HoardServerPlugin) -> HoardServerPlugin {
    /// plugin.seed(|world, store| {
    ///     let meadow = ZoneId::new("meadow").map_err(|e| e.to_string())?;
    ///     if !store.zones().map_err(|e| e.to_string())?.contains(&meadow) {
    ///         store.create_zone(&meadow, &[ShardSpec::shared(ShardId(0))]).map_err(|e| e.to_string())?;
    ///     }
    ///     for id in 0..3 {
    ///         world.spawn((Published::new(ObjectId(id), ShardId(0)), Lamp { lit: false }));
    ///     }
    ///     Ok(())
    /// })
    /// # }
    /// ```
    #[must_use]
    pub fn seed(
        mut self,
        hook: impl Fn(&mut World, &dyn WorldStore) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.seed = Some(Arc::new(hook));
        self
    }

    /// Called when a connection whose join hook ran has ended (off the
    /// world's thread).
    #[must_use]
    pub fn on_leave(mut self, hook: LeaveHook) -> Self {
        self.on_leave = Some(hook);
        self
    }
}

/// Why [`HoardServerPlugin::start`] could not start the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The server's tokio runtime could not be made.
    #[error("cannot start the server's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The stored objects could not be brought to the registry's schema
    /// versions (a component the registry no longer knows, a failed
    /// migration, a store error).
    #[error("the stored world does not fit the registry: {0}")]
    Schema(#[from] hoard_engine::schema::SchemaError),
    /// The server could not load its keys, bind or configure QUIC.
    #[error(transparent)]
    Server(#[from] hoard_net::quic::server::ServerError),
    /// No registry, two registries, or an intent accepted by a name the
    /// registry does not give it.
    #[error("the server's registry: {0}")]
    Registry(String),
    /// The seed hook of a new world failed, or its objects could not be
    /// published or committed.
    #[error("seeding the new world: {0}")]
    Seed(String),
}

/// Makes a new world (see [`HoardServerPlugin::seed`]): creates its zones in
/// the store and spawns its first published objects into the world given.
pub type SeedHook = Arc<dyn Fn(&mut World, &dyn WorldStore) -> Result<(), String> + Send + Sync>;

/// A server that [`HoardServerPlugin::start`] started: add it to the App
/// with `app.add_plugins(started)`.
pub struct StartedServerPlugin {
    parts: Mutex<Option<Started>>,
    adders: Vec<IntentAdder>,
}

/// What starting a server makes, waiting for the App it joins.
struct Started {
    runtime: tokio::runtime::Runtime,
    handle: ServerHandle,
    link: WorldLink,
    publisher: Publisher,
    /// Whether the plugin loads the stored world into the App (the game
    /// gave no publisher of its own loading).
    load: bool,
    /// Frames a second, for `app.run()`.
    tick_hz: u32,
    store: Arc<dyn WorldStore>,
    world_url: hoard_engine::HoardUrl,
}

impl HoardServerPlugin {
    /// A server over `store` of `registry`'s components and intents, built
    /// by hand (`PublishRegistry::builder()`) instead of on the App. An App
    /// that also registers components or intents is refused at start (two
    /// registries); server messages registered on the App are added.
    pub fn with_registry(
        options: ServerOptions,
        store: Arc<dyn WorldStore>,
        registry: PublishRegistry,
    ) -> HoardServerPlugin {
        let mut plugin = HoardServerPlugin::new(options, store);
        plugin.registry = Some(registry);
        plugin
    }

    /// Takes what `app` registered: its registry (unless one was given),
    /// its intents and its server messages.
    pub(crate) fn with_app_registration(mut self, app: &mut App) -> Result<HoardServerPlugin, StartError> {
        let Some(mut registration) = app.world_mut().get_resource_mut::<crate::app::HoardRegistration>() else {
            return Ok(self);
        };
        if registration.has_registry() {
            if self.registry.is_some() {
                return Err(StartError::Registry(
                    "the App registers components or intents and the plugin was given a registry too: use one \
                     (HoardServerPlugin::new with app.publish, or HoardServerPlugin::with_registry)"
                        .into(),
                ));
            }
            self.registry = Some(registration.registry());
        }
        let side = registration.server.clone();
        for add in side.intents {
            self.intents = add(self.intents);
        }
        let mut adders = side.installers;
        adders.append(&mut self.adders);
        self.adders = adders;
        Ok(self)
    }

    /// The registry, checked against the intents the plugin accepts by
    /// name.
    fn checked_registry(&self) -> Result<PublishRegistry, StartError> {
        let Some(registry) = self.registry.clone() else {
            return Err(StartError::Registry(
                "nothing to serve: register components on the App (app.publish::<C>(name, version)) and add the \
                 plugin with app.add_hoard_server, or give one with HoardServerPlugin::with_registry"
                    .into(),
            ));
        };
        if registry.intents().next().is_some() {
            for check in &self.intent_checks {
                match (check.registered)(&registry) {
                    Some(name) if name == check.name => {}
                    Some(name) => {
                        return Err(StartError::Registry(format!(
                            "intent {} is accepted as {:?} but registered as {name:?}",
                            check.type_name, check.name
                        )));
                    }
                    None => {
                        return Err(StartError::Registry(format!(
                            "intent {} ({:?}) is accepted but not in the registry: register it with \
                             app.add_intent or .intent::<I>(name, version) so clients agree on its version",
                            check.type_name, check.name
                        )));
                    }
                }
            }
        }
        Ok(registry)
    }

    /// Gives the seed's objects spawned without an id
    /// ([`hoard_engine::NewObject`]) ids from the store's allocator, above
    /// every id the seed picked by hand (those are not stored yet).
    fn give_seeded_ids(&self, scratch: &mut World) -> Result<(), StartError> {
        let mut new =
            scratch.query_filtered::<Entity, (With<hoard_engine::NewObject>, Without<hoard_engine::Published>)>();
        let waiting: Vec<Entity> = new.iter(scratch).collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let mut picked = scratch.query::<&hoard_engine::Published>();
        let above = picked.iter(scratch).map(|p| p.object.0 + 1).max().unwrap_or(0);
        let mut ids = self
            .store
            .reserve_object_ids(waiting.len() as u64, above)
            .map_err(|e| StartError::Seed(format!("reserving ids for the new world's objects: {e}")))?;
        for entity in waiting {
            let Some(id) = ids.next() else {
                return Err(StartError::Seed("the store reserved fewer ids than asked".into()));
            };
            let mut object = scratch.entity_mut(entity);
            let Some(new) = object.take::<hoard_engine::NewObject>() else {
                continue;
            };
            object.insert(hoard_engine::Published::new(hoard_engine::ObjectId(id), new.shard));
        }
        Ok(())
    }

    /// Seeds a new world if there is a seed hook and the store has
    /// recorded no schema yet: the hook's objects and the schema record are
    /// one commit, so a crash before it leaves the store new again.
    fn seed_new_world(&self, registry: &PublishRegistry) -> Result<(), StartError> {
        let Some(seed) = &self.seed else {
            return Ok(());
        };
        let stored = self
            .store
            .schema()
            .map_err(|e| StartError::Seed(format!("reading the store's schema: {e}")))?;
        if !stored.is_empty() {
            return Ok(());
        }
        let mut scratch = World::new();
        seed(&mut scratch, &*self.store).map_err(StartError::Seed)?;
        self.give_seeded_ids(&mut scratch)?;
        let mut publisher = Publisher::new(registry.clone());
        let gathered = publisher.gather(&mut scratch);
        if let Some(problem) = gathered.problems.first() {
            return Err(StartError::Seed(format!(
                "{} object(s) could not be published, the first: {problem}",
                gathered.problems.len()
            )));
        }
        let schema: std::collections::BTreeMap<String, u32> =
            registry.components().map(|(n, v)| (n.to_owned(), v)).collect();
        self.store
            .commit_with_schema(&gathered.changes, &schema)
            .map_err(|e| StartError::Seed(format!("committing the new world: {e}")))?;
        tracing::info!(objects = gathered.changes.len(), "seeded a new world");
        Ok(())
    }
}

impl HoardServerPlugin {
    /// Starts the server now — migrates the stored objects to the
    /// registry's schema versions, loads (or makes) the keys in the data
    /// directory and binds — and returns the started server to add to the
    /// App, or why it could not start: a port in use, an address that
    /// cannot be bound, damaged key files, a full disk, a store that does
    /// not fit the registry. A binary reports the error and exits; adding
    /// the plugin itself (`app.add_plugins(plugin)`) panics with the same
    /// reason instead. Call it after every `intent`, `access` and hook:
    /// they are fixed from here on.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use bevy_app::App;
    /// # use hoard_bevy::HoardServerPlugin;
    /// # fn example(options: hoard_net::quic::server::ServerOptions,
    /// #     store: Arc<dyn hoard_engine::store::WorldStore>,
    /// #     registry: hoard_engine::PublishRegistry) -> Result<(), Box<dyn std::error::Error>> {
    /// let started = HoardServerPlugin::with_registry(options, store, registry).start()?;
    /// App::new().add_plugins(started).run();
    /// # Ok(()) }
    /// ```
    pub fn start(self) -> Result<StartedServerPlugin, StartError> {
        let registry = self.checked_registry()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("hoard-server")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let rules = GameRules {
            registry: registry.hash(),
            intents: self.intents.clone(),
            access: self.access.clone(),
            on_join: self.on_join.clone(),
            on_leave: self.on_leave.clone(),
        };
        self.seed_new_world(&registry)?;
        // Stored objects at an older schema are migrated (or the server is
        // refused, naming the component) before anything decodes them.
        hoard_engine::schema::prepare(&*self.store, &registry)?;
        let (handle, link) = runtime.block_on(start_linked(self.options.clone(), self.store.clone(), rules))?;
        let given = lock(&self.publisher).take();
        let load = given.is_none();
        let publisher = given.unwrap_or_else(|| Publisher::new(registry.clone()));
        Ok(StartedServerPlugin {
            parts: Mutex::new(Some(Started {
                world_url: self.options.world_url(handle.addr),
                runtime,
                handle,
                link,
                publisher,
                load,
                tick_hz: self.options.tick_hz,
                store: self.store.clone(),
            })),
            adders: self.adders,
        })
    }
}

impl Plugin for HoardServerPlugin {
    /// Starts the server and adds it; panics with the reason if it cannot
    /// start (use [`HoardServerPlugin::start`] to get the error instead).
    fn build(&self, app: &mut App) {
        let plugin = HoardServerPlugin {
            publisher: Mutex::new(lock(&self.publisher).take()),
            options: self.options.clone(),
            store: self.store.clone(),
            registry: self.registry.clone(),
            intents: self.intents.clone(),
            intent_checks: self.intent_checks.clone(),
            adders: self.adders.clone(),
            access: self.access.clone(),
            on_join: self.on_join.clone(),
            on_leave: self.on_leave.clone(),
            seed: self.seed.clone(),
        };
        match plugin.with_app_registration(app).and_then(HoardServerPlugin::start) {
            Ok(started) => started.build(app),
            Err(e) => panic!("hoard: the server cannot start: {e}"),
        }
    }
}

impl Plugin for StartedServerPlugin {
    fn build(&self, app: &mut App) {
        let Some(started) = lock(&self.parts).take() else {
            // Bevy refuses a plugin added twice (it is unique), so the
            // parts are always here on the one build.
            panic!("hoard: a started server can be added to one App only");
        };
        let Started {
            runtime,
            handle,
            mut link,
            mut publisher,
            load,
            tick_hz,
            store,
            world_url,
        } = started;
        // `app.run()` runs the server at its tick rate (a game that calls
        // `update` itself is unaffected; a runner set later wins).
        app.set_runner(runner(tick_hz));
        // The stored world is the truth: it is in the App before any game
        // system runs, so a game's systems change it rather than write
        // fresh objects over it.
        if load {
            match hoard_engine::load_world(&*store, &mut publisher, app.world_mut(), &world_url) {
                Ok(report) => {
                    for problem in &report.problems {
                        tracing::warn!(%problem, "stored object not loaded");
                    }
                    tracing::info!(objects = report.objects, shards = report.shards, "stored world loaded");
                }
                Err(e) => panic!("hoard: cannot load the stored world: {e}"),
            }
        }
        link.prepare(app.world_mut());
        let transient: TransientHook = Arc::new(|world: &mut World| {
            world
                .get_resource_mut::<ZoneTransients>()
                .map(|mut t| std::mem::take(&mut t.0))
                .unwrap_or_default()
        });
        app.init_resource::<ZoneTransients>()
            .insert_resource(ServerCore {
                link: Mutex::new(link),
                // The App clears change trackers once per frame itself.
                publisher: Mutex::new(publisher.leave_trackers()),
                transient,
                store,
                world_url,
                ids: Mutex::new(0..0),
            })
            .init_resource::<ShardCare>()
            .insert_resource(HoardServer { handle, runtime })
            .configure_sets(PreUpdate, HoardServerSet::Receive)
            .configure_sets(PostUpdate, HoardServerSet::Publish)
            .add_systems(PreUpdate, receive.in_set(HoardServerSet::Receive))
            .add_systems(
                PostUpdate,
                (assign_ids, publish.in_set(HoardServerSet::Publish)).chain(),
            );
        for add in &self.adders {
            add(app);
        }
    }
}

use hoard_engine::lock::lock;

/// Gives each object spawned without an id ([`hoard_engine::NewObject`])
/// the next id reserved from the store, before the frame's changes are
/// gathered. If the store cannot reserve ids now, the objects wait
/// (unpublished, logged) for a later frame: never an id given twice.
fn assign_ids(world: &mut World) {
    let mut new = world.query_filtered::<(Entity, &hoard_engine::NewObject), Without<hoard_engine::Published>>();
    let waiting: Vec<(Entity, hoard_engine::ShardId)> = new.iter(world).map(|(e, n)| (e, n.shard)).collect();
    if waiting.is_empty() {
        return;
    }
    world.resource_scope(|world, core: Mut<ServerCore>| {
        let mut ids = lock(&core.ids);
        for (entity, shard) in waiting {
            if ids.is_empty() {
                match core.store.reserve_object_ids(ID_BLOCK, 0) {
                    Ok(reserved) => *ids = reserved,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reserve object ids; new objects wait for the next frame");
                        return;
                    }
                }
            }
            let Some(id) = ids.next() else { return };
            world
                .entity_mut(entity)
                .remove::<hoard_engine::NewObject>()
                .insert(hoard_engine::Published::new(hoard_engine::ObjectId(id), shard));
        }
    });
}

fn receive(world: &mut World) {
    world.resource_scope(|world, core: Mut<ServerCore>| {
        take_care(world, &core);
        lock(&core.link).before_frame(world);
    });
}

/// Carries out the frame's [`ShardCare`] requests.
fn take_care(world: &mut World, core: &ServerCore) {
    let (load, forget) = {
        let Some(mut care) = world.get_resource_mut::<ShardCare>() else {
            return;
        };
        if care.load.is_empty() && care.forget.is_empty() {
            return;
        }
        (std::mem::take(&mut care.load), std::mem::take(&mut care.forget))
    };
    let mut publisher = lock(&core.publisher);
    // A shard loaded again replaces its old copy, never sits beside it.
    for shard in forget.into_iter().chain(load.iter().map(|(_, shard)| *shard)) {
        let gone = publisher.forget_shard(world, shard);
        tracing::debug!(%shard, objects = gone, "shard left this server's care");
    }
    if load.is_empty() {
        return;
    }
    let service = core.world_url.clone();
    match hoard_engine::load_shards(&*core.store, &mut publisher, world, &load, &service) {
        Ok(report) => tracing::debug!(shards = report.shards, objects = report.objects, "shards loaded"),
        Err(e) => {
            tracing::warn!(error = %e, "loading shards failed; retrying next frame");
            world.resource_mut::<ShardCare>().load.extend(load);
        }
    }
}

fn publish(world: &mut World) {
    let result = world.resource_scope(|world, core: Mut<ServerCore>| {
        let transient = core.transient.clone();
        let mut publisher = lock(&core.publisher);
        let mut link = lock(&core.link);
        let result = link.after_frame(world, &mut publisher, Some(&transient));
        if let Err(reason) = &result {
            link.fail(reason.clone());
        }
        result
    });
    if result.is_err() {
        world.write_message(AppExit::from_code(1));
    }
}
