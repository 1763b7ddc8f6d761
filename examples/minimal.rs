//! The smallest hoard game: one published component, a server and a client
//! as Bevy Apps in one process on loopback. The client enters the meadow,
//! sees the lamps, lights one with an intent, and sees it lit — saved on the
//! server before it was shown. Run: `cargo run --example minimal`.

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

fn registry() -> PublishRegistry {
    PublishRegistry::builder().publish::<Lamp>("lamp", 1).build()
}

fn spawn_lamps(mut commands: Commands) {
    for id in 0..3 {
        commands.spawn((Published::new(ObjectId(id), ShardId(0)), Lamp { lit: false }));
    }
}

fn light(mut intents: MessageReader<FromClient<Light>>, mut lamps: Query<(&Published, &mut Lamp)>) {
    for FromClient { intent, .. } in intents.read() {
        for (p, mut lamp) in &mut lamps {
            lamp.lit |= p.object.0 == intent.lamp;
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hoard-minimal-{}", std::process::id()));
    let store = Arc::new(RedbStore::open_dir(&dir.join("server"))?);
    if store.zones()?.is_empty() {
        store.create_zone(&ZoneId::new("meadow")?, &[ShardSpec::shared(ShardId(0))])?;
    }
    let mut server = App::new();
    let options = ServerOptions::new("127.0.0.1:0".parse()?, dir.join("server"));
    server
        .add_plugins(HoardServerPlugin::new(options, store, registry()).intent::<Light>("light"))
        .add_systems(Startup, spawn_lamps)
        .add_systems(Update, light);
    server.update();
    let handle = &server.world().resource::<HoardServer>().handle;
    let token = handle.auth.issue("ann", chrono::Utc::now().timestamp() + 60)?;
    let options = ClientOptions {
        server: handle.addr,
        cache_dir: dir.join("cache"),
        token,
        service: "world".into(),
        pin: Some(handle.identity),
        world: None,
        proofs: false,
        endpoint: None,
    };
    let mut client = App::new();
    client.add_plugins(HoardClientPlugin::new(options, registry()));
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
            println!("entered the meadow: {} lamps, none lit", lamps.len());
            world.resource::<Hoard>().send_intent("light", &Light { lamp: 1 })?;
            sent = true;
        }
        if lamps.iter().filter(|l| l.lit).count() == 1 {
            println!("lamp 1 is lit, and saved on the server");
            break;
        }
        std::thread::sleep(Duration::from_millis(5)); // a frame's pace
    }
    drop((client, server));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
