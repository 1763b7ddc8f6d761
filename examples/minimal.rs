//! The smallest hoard game: one published component, a server and a client
//! as Bevy Apps in one process on loopback. The server seeds a new world
//! (three lamps) only when its store is empty, and otherwise loads what it
//! stored; the client enters the meadow, sees the lamps, lights one with an
//! intent, and sees it lit — saved on the server before it was shown.
//!
//! Run: `cargo run --example minimal` (a fresh world in a temporary
//! directory), or `cargo run --example minimal -- DIR` twice: the second
//! run's first line reads `entered the meadow: 3 lamps, 1 lit` — the world
//! it stored, not a fresh one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard::prelude::*;
use serde::{Deserialize, Serialize};

/// A published component: its state is stored, cached and replicated.
#[derive(Component, Serialize, Deserialize, Clone, Debug)]
struct Lamp {
    lit: bool,
}

/// An intent: what a player asks the server to do.
#[derive(Serialize, Deserialize)]
struct Light {
    lamp: u64,
}

/// What both ends register: the published component and the intent.
fn shared(app: &mut App) {
    app.publish::<Lamp>("lamp", 1).add_intent::<Light>("light", 1);
}

/// A new world: the meadow and its three lamps. Runs only when the store
/// holds no world yet; every later start loads the stored lamps instead.
fn seed(world: &mut World, store: &dyn WorldStore) -> Result<(), String> {
    let meadow = ZoneId::new("meadow").map_err(|e| e.to_string())?;
    if !store.zones().map_err(|e| e.to_string())?.contains(&meadow) {
        store
            .create_zone(&meadow, &[ShardSpec::shared(ShardId(0))])
            .map_err(|e| e.to_string())?;
    }
    for id in 0..3 {
        world.spawn((Published::new(ObjectId(id), ShardId(0)), Lamp { lit: false }));
    }
    Ok(())
}

fn light(mut intents: MessageReader<FromClient<Light>>, mut lamps: Query<(&Published, &mut Lamp)>) {
    for FromClient { intent, .. } in intents.read() {
        for (p, mut lamp) in &mut lamps {
            lamp.lit |= p.object.0 == intent.lamp;
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The data directory: the first argument (kept), or a temporary one.
    let given = std::env::args_os().nth(1).map(std::path::PathBuf::from);
    let dir = given
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("hoard-minimal-{}", std::process::id())));
    let store = Arc::new(RedbStore::open_dir(&dir.join("server"))?);
    let mut server = App::new();
    let options = ServerOptions::new("127.0.0.1:0".parse()?, dir.join("server"));
    // hoard's warnings (RUST_LOG=info for more) on stderr.
    let logs = HoardLogPlugin {
        default_filter: "warn".into(),
    };
    server.add_plugins((logs, shared));
    server.add_hoard_server(HoardServerPlugin::new(options, store).seed(seed))?;
    server.add_systems(Update, light);
    server.update();
    let handle = &server.world().resource::<HoardServer>().handle;
    let token = handle.auth.issue("ann", chrono::Utc::now().timestamp() + 60)?;
    let options = ClientOptions::new(handle.addr, dir.join("cache"), token).with_pin(handle.identity);
    let mut client = App::new();
    client.add_plugins((shared, HoardClientPlugin::new(options)));
    let meadow = ZoneRequest::Enter(ZoneId::new("meadow")?);
    client.world_mut().write_message(meadow);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = false;
    loop {
        assert!(Instant::now() < deadline, "the lamp was not lit in time");
        server.update();
        client.update();
        let world = client.world_mut();
        let lamps: Vec<Lamp> = world.query::<&Lamp>().iter(world).cloned().collect();
        if !sent && lamps.len() == 3 {
            let lit = lamps.iter().filter(|l| l.lit).count();
            println!("entered the meadow: {} lamps, {lit} lit", lamps.len());
            world.resource::<Hoard>().send(&Light { lamp: 1 })?;
            sent = true;
        }
        if lamps.iter().filter(|l| l.lit).count() == 1 {
            println!("lamp 1 is lit, and saved on the server");
            break;
        }
        std::thread::sleep(Duration::from_millis(5)); // a frame's pace
    }
    drop((client, server));
    if given.is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
