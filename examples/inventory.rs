//! Inventories: each player has a shard only they can see, created when
//! they first sign in; picking an item up moves it from the meadow's shard
//! into the player's inventory in one atomic commit, so it exists exactly
//! once, and the other player sees it leave the ground but never sees the
//! inventory. The game answers its players: the whole meadow is told who
//! picked what up (a server message), and a player who asks for an item no
//! longer on the ground is refused with the game's own reason. Run:
//! `cargo run --example inventory`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Component, Serialize, Deserialize, Clone, Debug)]
struct Item {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct PickUp {
    item: u64,
}

/// What the game tells the meadow's players.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct News {
    text: String,
}

const GROUND: ShardId = ShardId(0);

/// The game's own refusal code (games use 1000 and up).
const NOT_ON_THE_GROUND: u16 = 1000;

/// What the server and the clients both register.
fn shared(app: &mut App) {
    app.publish::<Item>("item", 1)
        .add_intent::<PickUp>("pick_up", 1)
        .add_server_message::<News>("news");
}

/// A player's inventory shard: derived from their name, in the meadow.
fn inventory_of(player: &str) -> ShardId {
    ShardId(1_000 + player.bytes().map(u64::from).sum::<u64>())
}

/// A new world: the meadow's ground, an axe and a rope on it. Runs only on
/// an empty store.
fn drop_items(world: &mut World, store: &dyn WorldStore) -> Result<(), String> {
    let meadow = ZoneId::new("meadow").map_err(|e| e.to_string())?;
    if !store.zones().map_err(|e| e.to_string())?.contains(&meadow) {
        store
            .create_zone(&meadow, &[ShardSpec::shared(GROUND)])
            .map_err(|e| e.to_string())?;
    }
    // The axe has a hand-picked id (a static world file's); the rope gets
    // one from the store's allocator.
    world.spawn((Published::new(ObjectId(1), GROUND), Item { name: "axe".into() }));
    world.spawn((NewObject::in_shard(GROUND), Item { name: "rope".into() }));
    Ok(())
}

/// The rule: a player picks an item up from the ground into their
/// inventory, and the meadow hears of it; an item not on the ground is
/// refused, saying why.
fn pick_up(
    mut intents: MessageReader<FromClient<PickUp>>,
    mut items: Query<(&mut Published, &Item)>,
    mut outcomes: ResMut<IntentOutcomes>,
    mut news: MessageWriter<ToClients<News>>,
) {
    for FromClient {
        perspective,
        intent,
        id,
    } in intents.read()
    {
        let found = items.iter_mut().find(|(p, _)| p.object.0 == intent.item);
        match found {
            Some((mut published, item)) if published.shard == GROUND => {
                published.shard = inventory_of(perspective); // one commit: gone here, there once
                let text = format!("{perspective} picked up the {}", item.name);
                news.write(ToClients {
                    to: Audience::Zone(ZoneId::new("meadow").expect("a zone name")),
                    message: News { text },
                });
            }
            _ => outcomes.refuse(
                *id,
                NOT_ON_THE_GROUND,
                format!("item {} is not on the ground", intent.item),
            ),
        }
    }
}

/// What a client heard: the meadow's news and its refusals.
#[derive(Resource, Default)]
struct Heard {
    news: Vec<String>,
    refusals: Vec<(u16, String)>,
}

fn listen(mut news: MessageReader<FromServer<News>>, mut events: MessageReader<HoardEvent>, mut heard: ResMut<Heard>) {
    heard.news.extend(news.read().map(|n| n.message.text.clone()));
    for event in events.read() {
        if let HoardEvent::Client(ClientEvent::IntentRejected { code, message, .. }) = event {
            heard.refusals.push((*code, message.clone()));
        }
    }
}

fn client(server: &App, dir: &std::path::Path, player: &str) -> Result<App, Box<dyn std::error::Error>> {
    let handle = &server.world().resource::<HoardServer>().handle;
    let options = ClientOptions::new(
        handle.addr,
        dir.join(player),
        handle.auth.issue(player, chrono::Utc::now().timestamp() + 60)?,
    )
    .with_pin(handle.identity);
    let mut app = App::new();
    app.add_plugins((shared, HoardClientPlugin::new(options)))
        .init_resource::<Heard>()
        .add_systems(Update, listen);
    app.world_mut()
        .write_message(ZoneRequest::Enter(ZoneId::new("meadow")?));
    Ok(app)
}

fn items(app: &mut App) -> Vec<String> {
    let mut v: Vec<String> = app
        .world_mut()
        .query::<&Item>()
        .iter(app.world())
        .map(|i| i.name.clone())
        .collect();
    v.sort();
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hoard-inventory-{}", std::process::id()));
    let store = Arc::new(RedbStore::open_dir(&dir.join("server"))?);
    let options = ServerOptions::new("127.0.0.1:0".parse()?, dir.join("server"));
    let plugin = HoardServerPlugin::new(options, store.clone())
        .seed(drop_items)
        .on_join(Arc::new(|player: &str, store: &dyn WorldStore| {
            let shard = inventory_of(player);
            if store.shard_head(shard).is_ok() {
                return Ok(());
            }
            let spec = ShardSpec {
                id: shard,
                scope: ShardScope::Perspective(player.to_owned()),
            };
            let meadow = ZoneId::new("meadow").map_err(|e| e.to_string())?;
            store.create_zone(&meadow, &[spec]).map_err(|e| e.to_string())
        }));
    let mut server = App::new();
    server
        .add_plugins(shared)
        .add_hoard_server(plugin)?
        .add_systems(Update, pick_up);
    server.update();
    let (mut ann, mut bob) = (client(&server, &dir, "ann")?, client(&server, &dir, "bob")?);

    let deadline = Instant::now() + Duration::from_secs(30);
    let step = |server: &mut App, ann: &mut App, bob: &mut App| {
        assert!(Instant::now() < deadline, "the example did not complete in time");
        server.update();
        ann.update();
        bob.update();
        std::thread::sleep(Duration::from_millis(5)); // a frame's pace
    };
    while items(&mut ann).len() < 2 || items(&mut bob).len() < 2 {
        step(&mut server, &mut ann, &mut bob);
    }
    println!("both see the axe and the rope on the ground");
    ann.world().resource::<Hoard>().send(&PickUp { item: 1 })?;
    // The shard ann sees the axe in.
    let axe_shard = |ann: &mut App| {
        ann.world_mut()
            .query::<(&Replicated, &Item)>()
            .iter(ann.world())
            .find(|(_, i)| i.name == "axe")
            .map(|(r, _)| r.shard)
    };
    // Both of ann's shards change (the ground and her inventory), each by
    // its own delta: wait for both, not only for bob's view.
    while items(&mut bob) != ["rope"] || items(&mut ann).len() != 2 || axe_shard(&mut ann) != Some(inventory_of("ann"))
    {
        step(&mut server, &mut ann, &mut bob);
    }
    // Ann still sees the axe — now in her inventory; Bob sees only the rope.
    assert_eq!(
        axe_shard(&mut ann),
        Some(inventory_of("ann")),
        "the axe is in ann's inventory"
    );
    // In the store, the axe exists exactly once.
    let holders = [GROUND, inventory_of("ann"), inventory_of("bob")]
        .into_iter()
        .filter(|s| {
            store
                .snapshot(*s)
                .is_ok_and(|snap| snap.objects.iter().any(|o| o.id == ObjectId(1)))
        })
        .count();
    assert_eq!(holders, 1, "the axe exists exactly once");
    println!("ann picked the axe up: it is in her inventory, once; bob sees only the rope");
    while bob.world().resource::<Heard>().news.is_empty() {
        step(&mut server, &mut ann, &mut bob);
    }
    println!("bob heard: {}", bob.world().resource::<Heard>().news[0]);

    // Bob asks for the axe too late: the game says why.
    bob.world().resource::<Hoard>().send(&PickUp { item: 1 })?;
    while bob.world().resource::<Heard>().refusals.is_empty() {
        step(&mut server, &mut ann, &mut bob);
    }
    let (code, reason) = bob.world().resource::<Heard>().refusals[0].clone();
    assert_eq!(code, NOT_ON_THE_GROUND);
    println!("bob was refused ({code}): {reason}");
    drop((ann, bob, server));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
