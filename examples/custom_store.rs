//! A store of your own behind the `WorldStore` trait: here an audit layer
//! (a `StoreLayer`: it overrides `commit`, everything else goes to the
//! store it wraps) over the embedded redb store that counts what it commits and fails the
//! server's commits on demand, the way a replicated or remote store would
//! report an outage. The server pauses actions while it fails, keeps the
//! change, and saves it once the store works again.
//! Run: `cargo run --example custom_store`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard::engine::Seq;
use hoard::engine::store::*;
use hoard::prelude::*;
use serde::{Deserialize, Serialize};

/// Counts committed objects; refuses commits while `down`.
struct AuditedStore {
    inner: RedbStore,
    committed: AtomicU64,
    down: AtomicBool,
}

// Everything but `commit` goes straight to redb.
impl StoreLayer for AuditedStore {
    fn inner(&self) -> &dyn WorldStore {
        &self.inner
    }
    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreFault::Corrupt("the audit log is unreachable".into()).into());
        }
        let receipt = self.inner.commit(changes)?;
        self.committed.fetch_add(changes.len() as u64, Ordering::SeqCst);
        Ok(receipt)
    }
}

#[derive(Component, Serialize, Deserialize, Clone, Debug)]
struct Counter(u32);

fn registry() -> PublishRegistry {
    PublishRegistry::builder().publish::<Counter>("counter", 1).build()
}

fn count_up(mut counters: Query<&mut Counter>, mut frames: Local<u32>) {
    *frames += 1;
    if *frames == 30 {
        for mut c in &mut counters {
            c.0 += 1; // one change, made while the store is down
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hoard-custom-store-{}", std::process::id()));
    let inner = RedbStore::open_dir(&dir)?;
    inner.create_zone(&ZoneId::new("hall")?, &[ShardSpec::shared(ShardId(0))])?;
    let store = Arc::new(AuditedStore {
        inner,
        committed: AtomicU64::new(0),
        down: AtomicBool::new(false),
    });
    let mut options = ServerOptions::new("127.0.0.1:0".parse()?, dir.clone());
    options.store_retry_for = Duration::from_secs(60);
    let mut server = App::new();
    server
        .add_plugins(HoardServerPlugin::with_registry(options, store.clone(), registry()))
        .add_systems(Startup, |mut commands: Commands| {
            commands.spawn((Published::new(ObjectId(1), ShardId(0)), Counter(0)));
        })
        .add_systems(Update, count_up);
    server.update();
    // Commits run on their own thread while frames go on; wait for this one.
    hoard::bevy::server::flush(&mut server, Duration::from_secs(10))?;
    println!(
        "committed after the first frame: {}",
        store.committed.load(Ordering::SeqCst)
    );
    store.down.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    for frame in 0.. {
        assert!(Instant::now() < deadline, "the change was not saved in time");
        server.update();
        if frame == 60 {
            println!("the store is back");
            store.down.store(false, Ordering::SeqCst);
        }
        if store.committed.load(Ordering::SeqCst) == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5)); // a frame's pace
    }
    let snap = WorldStore::snapshot(&*store, ShardId(0))?;
    assert_eq!(
        snap.head.seq,
        Seq(2),
        "the change made during the outage was kept and saved"
    );
    println!("the change made while the store was down was kept, and saved once it returned");
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
