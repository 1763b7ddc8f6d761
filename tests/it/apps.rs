//! A tiny game (crates of stones) as a server App, and client Apps for it,
//! stepped together until a condition holds or a deadline passes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Crate {
    pub(crate) stones: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct AddStones {
    pub(crate) object: u64,
    pub(crate) stones: u32,
}

/// What the server and the client Apps both register, as the crate docs
/// show; [`registry`] is the same registry built by hand.
pub(crate) fn shared(app: &mut App) {
    app.publish::<Crate>("crate", 1)
        .add_intent::<AddStones>("add_stones", 1)
        .add_server_message::<Notice>("notice");
}

pub(crate) fn registry() -> PublishRegistry {
    PublishRegistry::builder()
        .publish::<Crate>("crate", 1)
        .intent::<AddStones>("add_stones", 1)
        .build()
}

/// A new world: the meadow's four shards and 40 empty crates (run only on
/// an empty store, as the crate docs show).
fn seed(world: &mut World, store: &dyn WorldStore) -> Result<(), String> {
    if !store.zones().map_err(|e| e.to_string())?.contains(&meadow()) {
        let shards: Vec<ShardSpec> = (0..4).map(|s| ShardSpec::shared(ShardId(s))).collect();
        store.create_zone(&meadow(), &shards).map_err(|e| e.to_string())?;
    }
    for i in 0..40u64 {
        world.spawn((Published::new(ObjectId(i), ShardId(i % 4)), Crate { stones: 0 }));
    }
    Ok(())
}

/// The most stones a crate takes at once: more is refused with the game's
/// own code and reason.
pub(crate) const TOO_MANY: u16 = 1001;

/// Additions of exactly 13 stones wait a frame (the game defers them, then
/// applies and completes them).
#[derive(Resource, Default)]
struct Later(Vec<(IntentId, AddStones)>);

/// A message of the game to its players.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Notice {
    pub(crate) text: String,
}

fn add_stones(
    mut intents: MessageReader<FromClient<AddStones>>,
    mut outcomes: ResMut<IntentOutcomes>,
    mut later: ResMut<Later>,
    mut notices: MessageWriter<ToClients<Notice>>,
    mut crates: Query<(&Published, &mut Crate)>,
) {
    // Those deferred last frame first: applied now, then completed.
    for (id, intent) in std::mem::take(&mut later.0) {
        for (p, mut c) in &mut crates {
            if p.object.0 == intent.object {
                c.stones += intent.stones;
            }
        }
        outcomes.complete(id);
    }
    for FromClient {
        intent,
        id,
        perspective,
    } in intents.read()
    {
        if intent.stones > 100 {
            outcomes.refuse(
                *id,
                TOO_MANY,
                format!("a crate takes 100 stones at most, not {}", intent.stones),
            );
            continue;
        }
        if intent.stones == 13 {
            outcomes.defer(*id);
            later.0.push((*id, intent.clone()));
            continue;
        }
        for (p, mut c) in &mut crates {
            if p.object.0 == intent.object {
                c.stones += intent.stones;
            }
        }
        // Everyone in the meadow hears of it; the sender is thanked.
        notices.write(ToClients {
            to: Audience::Zone(meadow()),
            message: Notice {
                text: format!("{} stones went into crate {}", intent.stones, intent.object),
            },
        });
        notices.write(ToClients {
            to: Audience::Player(perspective.clone()),
            message: Notice {
                text: "thank you".into(),
            },
        });
    }
}

/// The server App over a store in `data` (zone `meadow`, four shards),
/// written as the crate docs show: a seed for a new world, the stored world
/// loaded on every later start.
pub(crate) fn server(data: &Path) -> App {
    server_with(data, |_| {})
}

/// [`server`], its options changed by `configure` first.
pub(crate) fn server_with(data: &Path, configure: impl FnOnce(&mut ServerOptions)) -> App {
    let store = Arc::new(RedbStore::open_dir(data).expect("store"));
    let mut options = ServerOptions::new("127.0.0.1:0".parse().expect("addr"), data.to_owned());
    configure(&mut options);
    let mut app = App::new();
    app.add_plugins(shared)
        .add_hoard_server(HoardServerPlugin::new(options, store).seed(seed))
        .expect("the server starts")
        .init_resource::<Later>()
        .add_systems(Update, add_stones);
    app.update();
    app
}

pub(crate) fn meadow() -> ZoneId {
    ZoneId::new("meadow").expect("zone")
}

/// Everything a client App saw.
#[derive(Resource, Default)]
pub(crate) struct Seen {
    pub(crate) events: Vec<HoardEvent>,
    /// The game's notices, each with the zone it was sent to and the
    /// stones of crate 7 in this client's world when it arrived.
    pub(crate) notices: Vec<(Option<ZoneId>, String, Option<u32>)>,
}

fn record(
    mut events: MessageReader<HoardEvent>,
    mut notices: MessageReader<FromServer<Notice>>,
    mut seen: ResMut<Seen>,
    crates: Query<(&Replicated, &Crate)>,
) {
    seen.events.extend(events.read().cloned());
    let seven = crates.iter().find(|(r, _)| r.object.0 == 7).map(|(_, c)| c.stones);
    for FromServer { zone, message } in notices.read() {
        seen.notices.push((zone.clone(), message.text.clone(), seven));
    }
}

/// A client App of `player`, caching in `cache`, entering the meadow.
pub(crate) fn client(server: &App, cache: &Path, player: &str) -> App {
    client_of(server, cache, player, None)
}

/// A client App of `player` whose entry of the meadow is done (the server
/// and the client stepped until it is ready).
pub(crate) fn entered(server: &mut App, cache: &Path, player: &str) -> App {
    entered_with(server, cache, player, None)
}

/// Ann and Bob, caching in `ann_cache` and `bob_cache`, both entered into
/// the meadow (the server and both clients stepped together until each is
/// ready).
pub(crate) fn both_entered(server: &mut App, ann_cache: &Path, bob_cache: &Path) -> (App, App) {
    let mut ann = client(server, ann_cache, "ann");
    let mut bob = client(server, bob_cache, "bob");
    run_until(server, &mut [&mut ann, &mut bob], |w| ready(w).is_some());
    run_until(server, &mut [&mut bob, &mut ann], |w| ready(w).is_some());
    (ann, bob)
}

/// [`entered`], with another registry (another build of the game), or the
/// App's registration ([`shared`]) for `None`.
pub(crate) fn entered_with(server: &mut App, cache: &Path, player: &str, registry: Option<PublishRegistry>) -> App {
    let mut client = client_of(server, cache, player, registry);
    run_until(server, &mut [&mut client], |w| ready(w).is_some());
    client
}

/// The same, with another registry (another build of the game), or the
/// App's registration ([`shared`]) for `None`.
pub(crate) fn client_of(server: &App, cache: &Path, player: &str, registry: Option<PublishRegistry>) -> App {
    let handle = &server.world().resource::<HoardServer>().handle;
    let token = handle
        .auth
        .issue(player, chrono::Utc::now().timestamp() + 600)
        .expect("token");
    let options = ClientOptions::new(handle.addr, cache.to_owned(), token).with_pin(handle.identity);
    let mut app = App::new();
    match registry {
        Some(registry) => {
            app.add_plugins(HoardClientPlugin::with_registry(options, registry).server_message::<Notice>("notice"))
        }
        None => app.add_plugins((shared, HoardClientPlugin::new(options))),
    }
    .init_resource::<Seen>()
    .add_systems(Update, record);
    app.world_mut().write_message(ZoneRequest::Enter(meadow()));
    app
}

/// Steps the server and the clients until `done` holds for the first
/// client's world, or fails after 20 s.
pub(crate) fn run_until(server: &mut App, clients: &mut [&mut App], mut done: impl FnMut(&mut World) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        server.update();
        for c in clients.iter_mut() {
            c.update();
        }
        if done(clients[0].world_mut()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached in time; the first client saw {:#?}",
            clients[0].world().resource::<Seen>().events
        );
        std::thread::sleep(Duration::from_millis(2)); // a frame's pace
    }
}

/// The stats of the client's last `ZoneReady`.
pub(crate) fn ready(world: &World) -> Option<EntryStats> {
    world.resource::<Seen>().events.iter().rev().find_map(|e| match e {
        HoardEvent::Client(ClientEvent::ZoneReady { stats, .. }) => Some(stats.clone()),
        _ => None,
    })
}

pub(crate) fn stones_of(world: &mut World, object: u64) -> Option<u32> {
    world
        .query::<(&Replicated, &Crate)>()
        .iter(world)
        .find(|(r, _)| r.object.0 == object)
        .map(|(_, c)| c.stones)
}
