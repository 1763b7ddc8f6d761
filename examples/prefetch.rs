//! Crossing into a neighbouring zone without a stall: the client enters the
//! meadow, prefetches the forest next to it while the player walks, and the
//! entry into the forest is then served from memory — no round trip, no
//! bytes. Run: `cargo run --example prefetch`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Component, Serialize, Deserialize, Clone, Debug)]
struct Tree {
    height: u8,
}

fn registry() -> PublishRegistry {
    PublishRegistry::builder().publish::<Tree>("tree", 1).build()
}

/// A new world: the meadow (shard 0) with ten trees, the forest (shard 1)
/// with a hundred. Runs only on an empty store.
fn plant(world: &mut World, store: &dyn WorldStore) -> Result<(), String> {
    let zones = store.zones().map_err(|e| e.to_string())?;
    for (zone, shard) in [("meadow", 0), ("forest", 1)] {
        let zone = ZoneId::new(zone).map_err(|e| e.to_string())?;
        if !zones.contains(&zone) {
            store
                .create_zone(&zone, &[ShardSpec::shared(ShardId(shard))])
                .map_err(|e| e.to_string())?;
        }
    }
    for id in 0..110u64 {
        let shard = if id < 10 { ShardId(0) } else { ShardId(1) };
        world.spawn((Published::new(ObjectId(id), shard), Tree { height: (id % 7) as u8 }));
    }
    Ok(())
}

/// The last ZoneReady per zone: its stats.
#[derive(Resource, Default)]
struct Entries(Vec<(ZoneId, EntryStats)>);

fn record(mut events: MessageReader<HoardEvent>, mut entries: ResMut<Entries>) {
    for event in events.read() {
        if let HoardEvent::Client(ClientEvent::ZoneReady { zone, stats }) = event {
            entries.0.push((zone.clone(), stats.clone()));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hoard-prefetch-{}", std::process::id()));
    let store = Arc::new(RedbStore::open_dir(&dir.join("server"))?);
    let (meadow, forest) = (ZoneId::new("meadow")?, ZoneId::new("forest")?);
    let mut server = App::new();
    let options = ServerOptions::new("127.0.0.1:0".parse()?, dir.join("server"));
    server.add_plugins(
        HoardServerPlugin::with_registry(options, store, registry())
            .seed(plant)
            .start()?,
    );
    server.update();
    let handle = &server.world().resource::<HoardServer>().handle;
    let options = ClientOptions::new(
        handle.addr,
        dir.join("cache"),
        handle.auth.issue("ann", chrono::Utc::now().timestamp() + 60)?,
    )
    .with_pin(handle.identity);
    let mut client = App::new();
    client
        .add_plugins(HoardClientPlugin::with_registry(options, registry()))
        .init_resource::<Entries>()
        .add_systems(Update, record);
    // Enter the meadow and, as the player nears its edge, prefetch the forest.
    client.world_mut().write_message(ZoneRequest::Enter(meadow.clone()));
    client.world_mut().write_message(ZoneRequest::Prefetch(forest.clone()));

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut crossed = false;
    loop {
        assert!(Instant::now() < deadline, "the crossing did not complete in time");
        server.update();
        client.update();
        let forest_ready: Vec<EntryStats> = client
            .world()
            .resource::<Entries>()
            .0
            .iter()
            .filter(|(z, _)| *z == forest)
            .map(|(_, s)| s.clone())
            .collect();
        if !crossed && forest_ready.len() == 1 {
            println!(
                "forest prefetched in the background: {} bytes",
                forest_ready[0].bytes_rx
            );
            // The player walks over the edge.
            client.world_mut().write_message(ZoneRequest::Enter(forest.clone()));
            crossed = true;
        }
        if let Some(stats) = forest_ready.get(1) {
            let trees = client.world_mut().query::<&Tree>().iter(client.world()).count();
            println!(
                "crossed into the forest: {} objects, {} bytes received; {trees} trees in view",
                stats.objects, stats.bytes_rx
            );
            assert_eq!(stats.objects, 100);
            assert_eq!(stats.bytes_rx, 0, "the prefetched zone costs nothing to enter");
            assert_eq!(trees, 110, "meadow and forest are both in the world");
            break;
        }
        std::thread::sleep(Duration::from_millis(5)); // a frame's pace
    }
    drop(client);
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
