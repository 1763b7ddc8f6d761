//! The client plugin over a transport of the test's own (no sockets, no
//! runtime): the plugin connects through it, hands it the game's zone
//! requests and intents, and turns what it delivers into entities and Bevy
//! messages — nothing in the plugin is tied to QUIC.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard_bevy::transport::{Arrived, ClientLink, ClientTransport, Connecting};
use hoard_bevy::{Hoard, HoardAppExt, HoardClientPlugin, HoardConnection, HoardEvent, Replicated, ZoneRequest};
use hoard_engine::shard::{CachedObject, CachedShard, ShardHeader, ShardKey, recompute_digest};
use hoard_engine::state::StateBuilder;
use hoard_engine::{Epoch, ObjectId, PublishRegistry, Seq, ServerIdentity, ShardId, ZoneId};
use hoard_proto::client::{ClientError, ClientEvent, ClientUpdate};
use hoard_proto::sync::client::{EntryProgress, EntryStats};

use super::server_plugin::{AddStones, Crate, registry};

/// What the game did through the link, and what the test has it deliver.
#[derive(Default)]
struct Script {
    requests: Vec<ZoneRequest>,
    intents: Vec<(u32, String)>,
    deliveries: VecDeque<Arrived>,
}

struct ScriptedTransport(Arc<Mutex<Script>>);

struct ScriptedConnecting {
    script: Arc<Mutex<Script>>,
    registry: PublishRegistry,
    /// Frames until the connection is made.
    frames: u32,
}

struct ScriptedLink {
    script: Arc<Mutex<Script>>,
    registry: PublishRegistry,
    zones: Vec<ZoneId>,
}

impl ClientTransport for ScriptedTransport {
    fn connect(&self, registry: PublishRegistry, entering: Option<ZoneId>) -> Box<dyn Connecting> {
        assert_eq!(entering, None);
        Box::new(ScriptedConnecting {
            script: self.0.clone(),
            registry,
            frames: 2,
        })
    }
}

impl Connecting for ScriptedConnecting {
    fn poll(&mut self) -> Option<Result<Arc<dyn ClientLink>, ClientError>> {
        if self.frames > 0 {
            self.frames -= 1;
            return None;
        }
        Some(Ok(Arc::new(ScriptedLink {
            script: self.script.clone(),
            registry: self.registry.clone(),
            zones: vec![meadow()],
        })))
    }
}

impl ClientLink for ScriptedLink {
    fn perspective(&self) -> &str {
        "ann"
    }
    fn zones(&self) -> &[ZoneId] {
        &self.zones
    }
    fn registry(&self) -> &PublishRegistry {
        &self.registry
    }
    fn request(&self, request: ZoneRequest) {
        self.script.lock().expect("script").requests.push(request);
    }
    fn send_intent(&self, kind: &str, _payload: Vec<u8>) -> Result<u32, ClientError> {
        let mut script = self.script.lock().expect("script");
        let seq = script.intents.len() as u32 + 1;
        script.intents.push((seq, kind.to_owned()));
        Ok(seq)
    }
    fn take(&self) -> Arrived {
        self.script
            .lock()
            .expect("script")
            .deliveries
            .pop_front()
            .unwrap_or_default()
    }
    fn transient(&self, _: &ZoneId) -> Option<Vec<u8>> {
        None
    }
    fn zone_shards(&self, _: &ZoneId) -> Vec<ShardId> {
        Vec::new()
    }
    fn close(&self) {}
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn meadow() -> ZoneId {
    ZoneId::new("meadow").expect("zone")
}

fn shard_of_crates(stones: &[u32]) -> CachedShard {
    let objects: Vec<CachedObject> = stones
        .iter()
        .enumerate()
        .map(|(i, s)| CachedObject {
            id: ObjectId(i as u64 + 1),
            version: Seq(1),
            state: StateBuilder::new()
                .component("crate", rmp_serde::to_vec(&Crate { stones: *s }).expect("encode"))
                .finish(),
        })
        .collect();
    let key = ShardKey::new(ServerIdentity([1; 32]), "world", None, meadow(), ShardId(0)).expect("key");
    CachedShard {
        header: ShardHeader {
            key,
            epoch: Epoch(1),
            hwm: Seq(1),
            digest: recompute_digest(&objects),
            registry: registry().hash(),
            snapshot_time: chrono::DateTime::UNIX_EPOCH,
        },
        objects,
    }
}

#[derive(Resource, Default)]
struct Events(Vec<HoardEvent>);

fn record(mut events: MessageReader<HoardEvent>, mut seen: ResMut<Events>) {
    seen.0.extend(events.read().cloned());
}

#[test]
fn the_client_plugin_runs_over_any_transport() {
    let script = Arc::new(Mutex::new(Script::default()));
    let mut app = App::new();
    app.init_resource::<Events>()
        .publish::<Crate>("crate", 1)
        .add_intent::<AddStones>("add_stones", 1)
        .add_plugins(
            HoardClientPlugin::with_transport(ScriptedTransport(script.clone())).server_message::<String>("note"),
        )
        .add_systems(Update, record);
    app.world_mut().write_message(ZoneRequest::Enter(meadow()));
    app.update();
    assert_eq!(*app.world().resource::<HoardConnection>(), HoardConnection::Connecting);
    assert!(app.world().get_resource::<Hoard>().is_none());
    app.update();
    app.update();
    assert!(
        matches!(app.world().resource::<HoardConnection>(), HoardConnection::Connected { perspective } if perspective == "ann")
    );
    assert_eq!(
        script.lock().expect("script").requests,
        vec![ZoneRequest::Enter(meadow())],
        "the request written while connecting was handed over"
    );

    let progress = EntryProgress {
        shards: Some(1),
        shards_done: 0,
        bytes_rx: 100,
    };
    let mut arriving = Arrived::default();
    arriving.progress = vec![(meadow(), progress)];
    let mut ready = Arrived::default();
    ready.updates = vec![
        ClientUpdate::ZoneLoaded {
            zone: meadow(),
            shards: vec![Arc::new(shard_of_crates(&[3, 5]))],
            proofs: Vec::new(),
        },
        ClientUpdate::Event(ClientEvent::ZoneReady {
            zone: meadow(),
            stats: EntryStats::default(),
        }),
        ClientUpdate::Event(ClientEvent::GameMessage {
            kind: "note".into(),
            zone: Some(meadow()),
            payload: rmp_serde::to_vec(&"welcome".to_owned()).expect("encode"),
        }),
    ];
    ready.failures = vec![ClientError::Lost("a prefetch failed".into())];
    script.lock().expect("script").deliveries.extend([arriving, ready]);
    app.update();
    app.update();
    let mut crates: Vec<(u64, u32)> = app
        .world_mut()
        .query::<(&Replicated, &Crate)>()
        .iter(app.world())
        .map(|(r, c)| (r.object.0, c.stones))
        .collect();
    crates.sort();
    assert_eq!(crates, vec![(1, 3), (2, 5)]);
    let events = &app.world().resource::<Events>().0;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, HoardEvent::Connected { zones, .. } if zones == &vec![meadow()]))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, HoardEvent::EntryProgress { progress: p, .. } if p.bytes_rx == 100))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, HoardEvent::Client(ClientEvent::ZoneReady { .. })))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, HoardEvent::Failed(ClientError::Lost(m)) if m == "a prefetch failed"))
    );
    let notes: Vec<String> = app
        .world_mut()
        .resource_mut::<Messages<hoard_bevy::FromServer<String>>>()
        .drain()
        .map(|m| m.message)
        .collect();
    assert_eq!(notes, vec!["welcome".to_owned()]);

    let seq = app
        .world()
        .resource::<Hoard>()
        .send(&AddStones { object: 1, stones: 2 })
        .expect("queued");
    assert_eq!(
        script.lock().expect("script").intents,
        vec![(seq, "add_stones".to_owned())]
    );
    assert!(app.world().resource::<Hoard>().client().is_none(), "not a QUIC link");
}
