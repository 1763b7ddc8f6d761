//! A world outlives its code: the meadow's signs were written by version 1
//! of the game (`text`); version 2 renames the field to `words` and adds
//! `lit`. On start the stored signs are migrated once, in one transaction
//! with the new schema record, and a client sees them at version 2.
//! Run: `cargo run --example migration`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard::engine::registry::decode_old;
use hoard::engine::schema::prepare;
use hoard::prelude::*;
use serde::{Deserialize, Serialize};

/// How version 1 of the game stored a sign.
#[derive(Component, Serialize, Deserialize)]
struct SignV1 {
    text: String,
}

/// Version 2: `text` is now `words`, and signs can be lit.
#[derive(Component, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Sign {
    words: String,
    lit: bool,
}

fn registry_v2() -> PublishRegistry {
    PublishRegistry::builder()
        .publish::<Sign>("sign", 2)
        .migrate::<Sign>(1, |bytes| {
            let old: SignV1 = decode_old(bytes)?;
            Ok(Sign {
                words: old.text,
                lit: false,
            })
        })
        .build()
}

/// What version 1 of the game left on disk.
fn world_written_by_v1(store: &RedbStore) -> Result<(), Box<dyn std::error::Error>> {
    let v1 = PublishRegistry::builder().publish::<SignV1>("sign", 1).build();
    store.create_zone(&ZoneId::new("meadow")?, &[ShardSpec::shared(ShardId(0))])?;
    prepare(store, &v1)?;
    let mut world = World::new();
    let mut publisher = Publisher::new(v1);
    for (id, text) in [(1, "welcome"), (2, "to the meadow")] {
        world.spawn((Published::new(ObjectId(id), ShardId(0)), SignV1 { text: text.into() }));
    }
    store.commit(&publisher.gather(&mut world).changes)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hoard-migration-{}", std::process::id()));
    let store = RedbStore::open_dir(&dir.join("server"))?;
    world_written_by_v1(&store)?;

    // Version 2 starts: migrate, then load and serve.
    let report = prepare(&store, &registry_v2())?;
    println!("migrated on start: {:?}", report.migrated);
    let store = Arc::new(store);
    let mut server = App::new();
    let mut publisher = Publisher::new(registry_v2());
    load_world(
        &*store,
        &mut publisher,
        server.world_mut(),
        &HoardUrl::service("localhost", 1, "world"),
    )?;
    let options = ServerOptions::new("127.0.0.1:0".parse()?, dir.join("server"));
    server.add_plugins(HoardServerPlugin::with_registry(options, store, registry_v2()).with_publisher(publisher));
    server.update();
    let handle = &server.world().resource::<HoardServer>().handle;
    let options = ClientOptions::new(
        handle.addr,
        dir.join("cache"),
        handle.auth.issue("ann", chrono::Utc::now().timestamp() + 60)?,
    )
    .with_pin(handle.identity);
    let mut client = App::new();
    client.add_plugins(HoardClientPlugin::with_registry(options, registry_v2()));
    client
        .world_mut()
        .write_message(ZoneRequest::Enter(ZoneId::new("meadow")?));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the signs did not arrive in time");
        server.update();
        client.update();
        let world = client.world_mut();
        let mut signs: Vec<Sign> = world.query::<&Sign>().iter(world).cloned().collect();
        if signs.len() == 2 {
            signs.sort_by(|a, b| b.words.cmp(&a.words));
            println!("the client sees {signs:?}");
            assert_eq!(
                signs[0],
                Sign {
                    words: "welcome".into(),
                    lit: false
                }
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(5)); // a frame's pace
    }
    drop((client, server));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
