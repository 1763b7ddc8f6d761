//! The client plugin over a transport of the test's own (no sockets, no
//! runtime): the test plays the server, message by message. The plugin's
//! systems drive the session over the scripted wire — `Hello` at connect,
//! the zone's `EnterZone` right behind it, before `Welcome`, the answer applied, written
//! to the cache and turned into entities, a game message into a Bevy
//! message, an intent out, the connection's end into `Disconnected` —
//! nothing in the plugin is tied to QUIC.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard_bevy::transport::{Arrival, Inbound, SessionSettings, Wire, WireConnecting, WireTransport};
use hoard_bevy::{Hoard, HoardAppExt, HoardClientPlugin, HoardConnection, HoardEvent, Replicated, ZoneRequest};
use hoard_engine::shard::{CachedObject, recompute_digest};
use hoard_engine::state::StateBuilder;
use hoard_engine::{Epoch, ObjectId, Seq, ServerIdentity, ShardId, ZoneId};
use hoard_proto::client::{ClientError, ClientEvent};
use hoard_proto::wire::{
    AnswerBegin, AnswerEnd, GameMessage, Hello, Message, PROTOCOL_VERSION, Snapshot, Welcome, WireObject,
};

use super::server_plugin::{AddStones, Crate};

/// The server's side of the scripted connection.
#[derive(Default)]
struct Server {
    hello: Option<Hello>,
    /// What the client sent, in order.
    sent: Vec<Message>,
    /// What the test has the wire deliver next.
    deliver: VecDeque<Arrival>,
    closed: Option<(u32, String)>,
}

struct ScriptedTransport(Arc<Mutex<Server>>);

struct ScriptedConnecting {
    server: Arc<Mutex<Server>>,
    /// Frames until the connection is open.
    frames: u32,
}

struct ScriptedWire(Arc<Mutex<Server>>);

const IDENTITY: ServerIdentity = ServerIdentity([1; 32]);

impl WireTransport for ScriptedTransport {
    fn connect(&self, hello: Hello) -> Box<dyn WireConnecting> {
        self.0.lock().expect("server").hello = Some(hello);
        Box::new(ScriptedConnecting {
            server: self.0.clone(),
            frames: 2,
        })
    }
}

impl WireConnecting for ScriptedConnecting {
    fn poll(&mut self) -> Option<Result<Box<dyn Wire>, ClientError>> {
        if self.frames > 0 {
            self.frames -= 1;
            return None;
        }
        Some(Ok(Box::new(ScriptedWire(self.server.clone()))))
    }
}

impl Wire for ScriptedWire {
    fn identity(&self) -> ServerIdentity {
        IDENTITY
    }
    fn send(&self, messages: Vec<Message>) -> Result<(), ClientError> {
        self.0.lock().expect("server").sent.extend(messages);
        Ok(())
    }
    fn receive(&self, into: &mut Vec<Arrival>, max: usize) {
        let mut server = self.0.lock().expect("server");
        let n = server.deliver.len().min(max);
        into.extend(server.deliver.drain(..n));
    }
    fn close(&self, code: u32, reason: &str) {
        self.0.lock().expect("server").closed = Some((code, reason.to_owned()));
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn meadow() -> ZoneId {
    ZoneId::new("meadow").expect("zone")
}

fn message(msg: Message, request: Option<u32>) -> Arrival {
    Arrival::Message(Inbound { msg, len: 64, request })
}

/// The crates of a shard, as the server sends them.
fn crates(stones: &[u32]) -> Vec<CachedObject> {
    stones
        .iter()
        .enumerate()
        .map(|(i, s)| CachedObject {
            id: ObjectId(i as u64 + 1),
            version: Seq(1),
            state: StateBuilder::new()
                .component("crate", rmp_serde::to_vec(&Crate { stones: *s }).expect("encode"))
                .finish(),
        })
        .collect()
}

/// Ann, a dev token, caching in `dir`.
fn settings(dir: &std::path::Path, compression: bool) -> SessionSettings {
    let mut settings = SessionSettings::new(dir.to_owned(), "dev:ann".into());
    settings.compression = compression;
    settings
}

#[derive(Resource, Default)]
struct Events(Vec<HoardEvent>);

/// A client App publishing crates over the scripted connection to
/// `server`, recording its events.
fn scripted_app(settings: SessionSettings, server: &Arc<Mutex<Server>>) -> App {
    let mut app = App::new();
    app.init_resource::<Events>()
        .publish::<Crate>("crate", 1)
        .add_plugins(HoardClientPlugin::with_transport(
            settings,
            ScriptedTransport(server.clone()),
        ))
        .add_systems(Update, record);
    app
}

fn record(mut events: MessageReader<HoardEvent>, mut seen: ResMut<Events>) {
    seen.0.extend(events.read().cloned());
}

/// Runs frames until `done` holds (the plugin's worker thread reads and
/// writes the cache between them); fails after 20 s.
fn update_until(app: &mut App, what: &str, done: impl Fn(&mut App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(app) {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        app.update();
        std::thread::yield_now();
    }
}

#[test]
fn the_client_plugin_drives_the_session_over_any_transport() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(Mutex::new(Server::default()));
    let settings = settings(dir.path(), false);
    let mut app = App::new();
    app.init_resource::<Events>()
        .publish::<Crate>("crate", 1)
        .add_intent::<AddStones>("add_stones", 1)
        .add_plugins(
            HoardClientPlugin::with_transport(settings, ScriptedTransport(server.clone()))
                .server_message::<String>("note"),
        )
        .add_systems(Update, record);
    let hello = server
        .lock()
        .expect("server")
        .hello
        .clone()
        .expect("hello said at connect");
    assert_eq!((hello.token.as_str(), hello.service.as_str()), ("dev:ann", "world"));
    assert_eq!(hello.codecs, Vec::<u8>::new(), "compression off");

    // The zone request written while connecting goes out right behind
    // `Hello`, before `Welcome` (the token names the player).
    app.world_mut().write_message(ZoneRequest::Enter(meadow()));
    app.update();
    assert_eq!(*app.world().resource::<HoardConnection>(), HoardConnection::Connecting);
    let enter_of = |server: &Server| {
        server.sent.iter().find_map(|m| match m {
            Message::EnterZone(e) => Some(e.clone()),
            _ => None,
        })
    };
    update_until(&mut app, "EnterZone", |_| {
        enter_of(&server.lock().expect("server")).is_some()
    });
    assert!(
        app.world().get_resource::<Hoard>().is_none(),
        "EnterZone went out before Welcome came"
    );
    let enter = enter_of(&server.lock().expect("server")).expect("sent");
    assert_eq!((enter.zone.clone(), enter.subscribe), (meadow(), true));
    server.lock().expect("server").deliver.push_back(message(
        Message::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            server: IDENTITY.0,
            perspective: "ann".into(),
            zones: vec![meadow()],
            tick_hz: 10,
            world_key: Vec::new(),
            token_keys: None,
        }),
        None,
    ));
    update_until(&mut app, "Welcome", |app| app.world().get_resource::<Hoard>().is_some());
    assert!(
        matches!(app.world().resource::<HoardConnection>(), HoardConnection::Connected { perspective } if perspective == "ann")
    );
    assert_eq!(app.world().resource::<Hoard>().identity(), IDENTITY);
    assert!(
        enter.have.is_empty() && enter.held.is_empty(),
        "a cold cache names no copies"
    );

    // The answer: one shard of two crates; a game message beside it.
    let objects = crates(&[3, 5]);
    let answer = Message::Snapshot(Snapshot {
        shard: ShardId(0),
        epoch: Epoch(1),
        seq: Seq(4),
        digest: recompute_digest(&objects),
        perspective: None,
        objects: objects
            .iter()
            .map(|o| WireObject {
                id: o.id,
                version: o.version,
                state: o.state.as_bytes().to_vec(),
            })
            .collect(),
    });
    {
        let mut server = server.lock().expect("server");
        let r = Some(enter.request);
        server.deliver.extend([
            message(
                Message::AnswerBegin(AnswerBegin {
                    request: enter.request,
                    zone: meadow(),
                    shards: 1,
                }),
                r,
            ),
            message(answer, r),
            message(Message::AnswerEnd(AnswerEnd { request: enter.request }), r),
            message(
                Message::GameMessage(GameMessage {
                    kind: "note".into(),
                    zone: Some(meadow()),
                    payload: rmp_serde::to_vec(&"welcome".to_owned()).expect("encode"),
                }),
                None,
            ),
        ]);
    }
    let ready = |app: &mut App| {
        app.world()
            .resource::<Events>()
            .0
            .iter()
            .any(|e| matches!(e, HoardEvent::Client(ClientEvent::ZoneReady { zone, .. }) if *zone == meadow()))
    };
    update_until(&mut app, "ZoneReady", ready);
    let mut seen: Vec<(u64, u32)> = app
        .world_mut()
        .query::<(&Replicated, &Crate)>()
        .iter(app.world())
        .map(|(r, c)| (r.object.0, c.stones))
        .collect();
    seen.sort();
    assert_eq!(seen, vec![(1, 3), (2, 5)], "the entities came before their ZoneReady");
    let events = &app.world().resource::<Events>().0;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, HoardEvent::Connected { zones, .. } if zones == &vec![meadow()]))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, HoardEvent::EntryProgress { zone, .. } if *zone == meadow())),
        "the entry's progress was reported while it was in flight"
    );
    assert_eq!(app.world().resource::<Hoard>().zone_shards(&meadow()), vec![ShardId(0)]);
    update_until(&mut app, "the game message", |app| {
        !app.world()
            .resource::<Messages<hoard_bevy::FromServer<String>>>()
            .is_empty()
    });
    let notes: Vec<String> = app
        .world_mut()
        .resource_mut::<Messages<hoard_bevy::FromServer<String>>>()
        .drain()
        .map(|m| m.message)
        .collect();
    assert_eq!(notes, vec!["welcome".to_owned()]);

    // The zone was written to the cache before it was announced: a second
    // reader of the folder finds the shard at the answer's seq.
    let cache = hoard_world_cache::WorldCache::open_with(
        dir.path(),
        hoard_world_cache::LockPolicy::ReadOnlyIfBusy,
        Arc::new(hoard_world_cache::FsStorage),
    )
    .expect("cache");
    let keys = cache.zone_keys(IDENTITY, "world", Some("ann"), &meadow());
    let heads: Vec<_> = cache
        .read_heads(
            &keys,
            hoard_bevy::Hoard::registry(app.world().resource::<Hoard>()).hash(),
        )
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(heads.len(), 1);
    assert_eq!((heads[0].hwm, heads[0].digest), (Seq(4), recompute_digest(&objects)));

    // An intent goes out on the wire, numbered.
    let seq = app
        .world()
        .resource::<Hoard>()
        .send(&AddStones { object: 1, stones: 2 })
        .expect("sent");
    let intents: Vec<(u32, String, usize)> = server
        .lock()
        .expect("server")
        .sent
        .iter()
        .filter_map(|m| match m {
            Message::Intent(i) => Some((i.seq, i.kind.clone(), i.signature.len())),
            _ => None,
        })
        .collect();
    assert_eq!(intents, vec![(seq, "add_stones".to_owned(), 0)]);
    assert_eq!(seq, 1);

    // The connection's end reaches the game as `Disconnected`, with why.
    server
        .lock()
        .expect("server")
        .deliver
        .push_back(Arrival::Ended(ClientError::Lost("the test hung up".into())));
    update_until(
        &mut app,
        "Disconnected",
        |app| matches!(app.world().resource::<HoardConnection>(), HoardConnection::Failed { reason } if reason.contains("the test hung up")),
    );
    assert!(
        app.world()
            .resource::<Events>()
            .0
            .iter()
            .any(|e| matches!(e, HoardEvent::Client(ClientEvent::Disconnected { .. })))
    );
    // A request after the end fails at once, and says why.
    app.world_mut().write_message(ZoneRequest::Enter(meadow()));
    app.update();
    assert!(
        app.world()
            .resource::<Events>()
            .0
            .iter()
            .any(|e| matches!(e, HoardEvent::Failed(ClientError::Lost(m)) if m.contains("the session has ended")))
    );
    assert!(
        app.world()
            .resource::<Hoard>()
            .wire()
            .as_any()
            .downcast_ref::<ScriptedWire>()
            .is_some(),
        "the game reaches its transport's own connection"
    );
}

#[test]
fn a_refused_hello_is_reported_as_the_servers_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(Mutex::new(Server::default()));
    let mut app = scripted_app(settings(dir.path(), true), &server);
    server.lock().expect("server").deliver.push_back(message(
        Message::Error(hoard_proto::wire::ErrorMsg {
            code: 2,
            message: "no such player".into(),
        }),
        None,
    ));
    update_until(&mut app, "the refusal", |app| {
        matches!(
            app.world().resource::<HoardConnection>(),
            HoardConnection::Failed { .. }
        )
    });
    assert!(app.world().resource::<Events>().0.iter().any(
        |e| matches!(e, HoardEvent::Failed(ClientError::Refused { code: 2, message }) if message == "no such player")
    ));
    assert!(app.world().get_resource::<Hoard>().is_none());
}

/// A server that opens the connection but never answers `Hello` ends the
/// session within the settings' `welcome_timeout`, said as a failure, and
/// the connection is closed — the game is not left connecting for ever.
#[test]
fn a_server_that_never_answers_hello_fails_the_connection_in_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(Mutex::new(Server::default()));
    let mut settings = settings(dir.path(), false);
    settings.welcome_timeout = Duration::from_millis(200);
    let mut app = scripted_app(settings, &server);
    app.world_mut().write_message(ZoneRequest::Enter(meadow()));
    update_until(&mut app, "the connection to fail", |app| {
        matches!(
            app.world().resource::<HoardConnection>(),
            HoardConnection::Failed { .. }
        )
    });
    let HoardConnection::Failed { reason } = app.world().resource::<HoardConnection>().clone() else {
        unreachable!()
    };
    assert!(reason.contains("did not answer Hello"), "{reason}");
    assert!(
        app.world()
            .resource::<Events>()
            .0
            .iter()
            .any(|e| matches!(e, HoardEvent::Failed(_))),
        "the game is told"
    );
    assert!(
        server.lock().expect("server").closed.is_some(),
        "the connection is closed"
    );
}
