//! The commit pipeline end to end on loopback: the server's world keeps
//! ticking while a commit runs on the commit thread, and nothing of that
//! commit — no delta, no `IntentsProcessed` — reaches a client before the
//! store returned it durable. The store here blocks every commit until the
//! test opens its gate.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bevy_ecs::prelude::*;
use hoard_engine::store::{CommitError, CommitReceipt, ShardSpec, StoreLayer, WorldStore};
use hoard_engine::{ChangeSet, RedbStore, ShardId, ZoneId};
use hoard_net::quic::client::{ClientEvent, HoardClient};

use super::e2e::{AddStones, add_stones, in_meadow, options, registry};
use super::store_failure::{server, stones_of, until};

#[derive(Default)]
struct Gate {
    closed: bool,
    /// The next commit panics inside the store.
    panic: bool,
    /// Commits that reached the store.
    entered: u64,
    /// Commits the store returned.
    returned: u64,
}

/// A redb store whose commits wait at a gate the test opens and closes.
struct GatedStore {
    inner: RedbStore,
    gate: Mutex<Gate>,
    changed: Condvar,
}

impl GatedStore {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_closed(&self, closed: bool) {
        self.gate().closed = closed;
        self.changed.notify_all();
    }

    /// Blocks until `entered` commits have reached the store (10 s at most).
    fn wait_entered(&self, entered: u64) {
        let gate = self.gate();
        let (gate, timeout) = self
            .changed
            .wait_timeout_while(gate, Duration::from_secs(10), |g| g.entered < entered)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(
            !timeout.timed_out(),
            "commit {entered} reached the store ({} did)",
            gate.entered
        );
    }

    fn gated<T>(&self, commit: impl FnOnce() -> T) -> T {
        {
            let mut gate = self.gate();
            gate.entered += 1;
            self.changed.notify_all();
            if gate.panic {
                drop(gate);
                panic!("the store's commit panicked (on purpose)");
            }
            let _open = self
                .changed
                .wait_while(gate, |g| g.closed)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let result = commit();
        self.gate().returned += 1;
        self.changed.notify_all();
        result
    }
}

impl StoreLayer for GatedStore {
    fn inner(&self) -> &dyn WorldStore {
        &self.inner
    }
    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        self.gated(|| self.inner.commit(changes))
    }
    fn commit_with_schema(
        &self,
        changes: &ChangeSet,
        schema: &BTreeMap<String, u32>,
    ) -> Result<CommitReceipt, CommitError> {
        self.gated(|| self.inner.commit_with_schema(changes, schema))
    }
}

fn processed(events: &[ClientEvent], seq: u32) -> Option<usize> {
    events
        .iter()
        .position(|e| matches!(e, ClientEvent::IntentsProcessed { seqs } if seqs.contains(&seq)))
}

/// A store at `data` with the two-shard zone `meadow`, behind an open gate.
fn gated_store(data: &std::path::Path) -> Arc<GatedStore> {
    let inner = RedbStore::open_dir(data).expect("store");
    let specs: Vec<_> = (0..2).map(|s| ShardSpec::shared(ShardId(s))).collect();
    inner
        .create_zone(&ZoneId::new("meadow").expect("zone"), &specs)
        .expect("zone");
    Arc::new(GatedStore {
        inner,
        gate: Mutex::new(Gate::default()),
        changed: Condvar::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_panics_on_the_commit_thread_stops_the_server_with_the_reason() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let store = gated_store(data.path());
    let mut schedule = Schedule::default();
    schedule.add_systems(add_stones);
    let server = server(data.path(), store.clone(), Duration::from_secs(60), schedule).await;
    let client = HoardClient::connect(options(&server, cache.path(), "ann"), registry())
        .await
        .expect("connect");
    store.gate().panic = true;
    let seq = client
        .send_intent("add_stones", &AddStones { object: 3, stones: 5 })
        .await
        .expect("send");
    let reason = tokio::time::timeout(Duration::from_secs(15), server.failed())
        .await
        .expect("the server stops");
    assert!(reason.contains("commit thread stopped"), "{reason}");
    let (entered, returned) = {
        let gate = store.gate();
        (gate.entered, gate.returned)
    };
    assert_eq!(returned, entered - 1, "the panicked commit never returned");
    let mut world = bevy_ecs::world::World::new();
    let events = hoard_bevy::materialise::update(&client, &mut world);
    assert_eq!(processed(&events, seq), None, "nothing of it was confirmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_world_ticks_while_a_commit_runs_and_nothing_of_it_is_published_before_it_returns() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let store = gated_store(data.path());
    let mut schedule = Schedule::default();
    schedule.add_systems(add_stones);
    let server = server(data.path(), store.clone(), Duration::from_secs(60), schedule).await;
    let client = in_meadow(&server, cache.path(), "ann").await;
    let mut world = World::new();
    let mut events = Vec::new();
    until(&client, &mut world, &mut events, |w, _| stones_of(w, 3) == Some(0)).await;
    let entered_before = store.gate().entered;

    // The gate closes: the next commit blocks inside the store.
    store.set_closed(true);
    let first = client
        .send_intent("add_stones", &AddStones { object: 3, stones: 5 })
        .await
        .expect("send");
    let waiting = store.clone();
    tokio::task::spawn_blocking(move || waiting.wait_entered(entered_before + 1))
        .await
        .expect("waited");

    // The world goes on ticking meanwhile (the old tick thread would have
    // stood still in the commit), and takes a second action.
    let ticks = server.stats.ticks.load(std::sync::atomic::Ordering::SeqCst);
    let second = client
        .send_intent("add_stones", &AddStones { object: 4, stones: 1 })
        .await
        .expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.stats.ticks.load(std::sync::atomic::Ordering::SeqCst) < ticks + 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the world did not tick while a commit was blocked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    events.extend(hoard_bevy::materialise::update(&client, &mut world));
    assert_eq!(stones_of(&mut world, 3), Some(0), "no delta before the commit returned");
    assert_eq!(
        processed(&events, first),
        None,
        "no confirmation before the commit returned"
    );
    assert_eq!(
        store.gate().returned,
        entered_before,
        "the blocked commit has not returned"
    );
    assert_eq!(
        store.gate().entered,
        entered_before + 1,
        "one commit in flight at a time"
    );

    // The gate opens: the first commit returns, is published and confirmed,
    // and the frames gathered meanwhile follow as the next group.
    store.set_closed(false);
    until(&client, &mut world, &mut events, |w, ev| {
        stones_of(w, 3) == Some(5) && stones_of(w, 4) == Some(1) && processed(ev, second).is_some()
    })
    .await;
    let first_at = processed(&events, first).expect("the first action confirmed");
    let second_at = processed(&events, second).expect("the second action confirmed");
    assert!(first_at <= second_at, "confirmed in order: {events:?}");
    let (entered, returned) = {
        let gate = store.gate();
        (gate.entered, gate.returned)
    };
    assert_eq!(
        entered,
        entered_before + 2,
        "every frame of the blocked time went into one group"
    );
    assert_eq!(returned, entered);
    drop(client);
    server.shutdown().await;
}
