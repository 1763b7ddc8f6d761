//! What only the PostgreSQL store has: a database shared by several
//! processes (reopening, concurrent writers, versioned migrations) and zone
//! and player leases whose fencing tokens every commit checks.

use std::sync::Arc;
use std::time::Duration;

use hoard_engine::store::{
    CommitError, LeaseError, LeaseHolder, LeaseKey, OpenError, PgOptions, PgStore, ShardScope, ShardSpec, WorldStore,
    verify,
};
use hoard_engine::{ChangeSet, ObjectId, Seq, ShardId, ZoneId};

use super::support::{pg_store, state_n};

fn zone(name: &str) -> ZoneId {
    ZoneId::new(name).expect("valid zone")
}

fn holder(owner: &str, ttl: Duration) -> LeaseHolder {
    LeaseHolder {
        owner: owner.into(),
        address: format!("127.0.0.1:{}", 4000 + owner.len()),
        ttl,
    }
}

#[test]
fn a_reopened_store_keeps_everything() {
    let (schema, store) = pg_store();
    store
        .create_zone(&zone("meadow"), &[ShardSpec::shared(ShardId(2))])
        .expect("zone");
    let mut tick = ChangeSet::new();
    tick.upsert(ShardId(2), ObjectId(5), state_n(5));
    tick.upsert(ShardId(2), ObjectId(u64::MAX), state_n(6));
    tick.upsert(ShardId(2), ObjectId(1 << 63), state_n(7));
    store.commit(&tick).expect("commit");
    let head = store.shard_head(ShardId(2)).expect("head");
    drop(store);
    let store = PgStore::open(&schema.options()).expect("reopen");
    assert_eq!(store.shard_head(ShardId(2)).expect("head"), head);
    let ids: Vec<ObjectId> = store
        .snapshot(ShardId(2))
        .expect("snapshot")
        .objects
        .iter()
        .map(|o| o.id)
        .collect();
    // Ids at and above 2^63 sort after the small ones, as u64s do.
    assert_eq!(ids, vec![ObjectId(5), ObjectId(1 << 63), ObjectId(u64::MAX)]);
    assert!(verify(&store).expect("verify").is_empty());
}

#[test]
fn a_database_migrated_by_a_newer_hoard_is_refused_by_name() {
    let (schema, store) = pg_store();
    drop(store);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&super::support::pg_url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "INSERT INTO {}.hoard_migrations (version, name) VALUES (999, 'from the future')",
                schema.name
            ))
            .await
            .expect("insert");
    });
    match PgStore::open(&schema.options()) {
        Err(OpenError::NewerSchema { found: 999, .. }) => {}
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

/// The store's sessions carry the connection string's `application_name`
/// (an operator tells servers apart in `pg_stat_activity` by it), or
/// "hoard".
#[test]
fn the_store_names_its_sessions_as_the_connection_string_says() {
    let schema = super::support::PgSchema::new();
    let name = format!("named_{}", schema.name);
    let url = super::support::pg_url();
    let joiner = if url.contains('?') { '&' } else { '?' };
    let options = PgOptions::new(format!("{url}{joiner}application_name={name}")).with_schema(schema.name.clone());
    let store = PgStore::open(&options).expect("open");
    store
        .create_zone(&zone("meadow"), &[ShardSpec::shared(ShardId(1))])
        .expect("a session in use");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let sessions: i64 = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await
            .expect("pg_stat_activity")
            .get(0)
    });
    assert!(sessions >= 1, "the store's sessions are named {name}");
    drop(store);
}

#[test]
fn an_unreachable_database_fails_to_open_with_a_clear_error_not_a_hang() {
    // Port 9 (discard) on loopback: nothing listens there.
    let mut options = hoard_engine::store::PgOptions::new("postgres://postgres@127.0.0.1:9/postgres");
    options.op_timeout = Duration::from_secs(5);
    let err = PgStore::open(&options).expect_err("nothing listens");
    let text = err.to_string();
    assert!(text.contains("postgres://postgres@127.0.0.1:9/postgres"), "{text}");
}

#[test]
fn concurrent_writers_to_one_shard_lose_no_commit() {
    let (schema, store) = pg_store();
    store
        .create_zone(
            &zone("meadow"),
            &[ShardSpec::shared(ShardId(1)), ShardSpec::shared(ShardId(2))],
        )
        .expect("zone");
    let stores: Vec<Arc<PgStore>> = (0..3)
        .map(|_| Arc::new(PgStore::open(&schema.options()).expect("open")))
        .collect();
    const PER_WRITER: u64 = 40;
    let threads: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(w, store)| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let mut tick = ChangeSet::new();
                    // Every writer touches both shards, in both orders.
                    let id = (w as u64) * 1000 + i;
                    tick.upsert(ShardId(1 + (i % 2)), ObjectId(id), state_n(id));
                    tick.upsert(ShardId(2 - (i % 2)), ObjectId(id + 500), state_n(id));
                    tick.upsert(ShardId(1), ObjectId(999_999), state_n(id));
                    store.commit(&tick).expect("commit");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let total = 3 * PER_WRITER;
    assert_eq!(store.shard_head(ShardId(1)).expect("head").seq, Seq(total));
    assert_eq!(store.shard_head(ShardId(2)).expect("head").seq, Seq(total));
    let objects =
        store.snapshot(ShardId(1)).expect("s1").objects.len() + store.snapshot(ShardId(2)).expect("s2").objects.len();
    assert_eq!(objects as u64, 2 * total + 1);
    assert!(verify(&store).expect("verify").is_empty());
}

#[test]
fn a_commit_larger_than_one_statement_is_still_atomic_and_whole() {
    let (_schema, store) = pg_store();
    store
        .create_zone(&zone("big"), &[ShardSpec::shared(ShardId(1))])
        .expect("zone");
    let mut tick = ChangeSet::new();
    for id in 0..10_000u64 {
        tick.upsert(ShardId(1), ObjectId(id), state_n(id));
    }
    let receipt = store.commit(&tick).expect("commit");
    assert_eq!(receipt.heads[0].digest.count(), 10_000);
    assert_eq!(store.manifest(ShardId(1)).expect("manifest").1.len(), 10_000);
    assert!(verify(&store).expect("verify").is_empty());
}

#[test]
fn a_zone_is_leased_to_one_server_and_a_stale_owner_is_refused_at_commit() {
    let (schema, a) = pg_store();
    a.create_zone(&zone("meadow"), &[ShardSpec::shared(ShardId(1))])
        .expect("zone");
    let b = PgStore::open(&schema.options()).expect("second server");
    let short = Duration::from_millis(300);
    let lease_a = a
        .acquire_zone(&zone("meadow"), &holder("alpha", short))
        .expect("alpha takes it");
    // While alpha's lease runs, beta cannot take the zone, and learns who has it.
    match b.acquire_zone(&zone("meadow"), &holder("beta", short)) {
        Err(LeaseError::Held(lease)) => {
            assert_eq!((lease.owner.as_str(), lease.token), ("alpha", lease_a.token));
            assert_eq!(lease.address, holder("alpha", short).address);
        }
        other => panic!("expected Held, got {other:?}"),
    }
    let mut tick = ChangeSet::new();
    tick.upsert(ShardId(1), ObjectId(1), state_n(1));
    a.commit(&tick).expect("the owner commits");

    // Alpha pauses past its expiry; beta takes the zone over with a higher token.
    let lease_b = loop {
        match b.acquire_zone(&zone("meadow"), &holder("beta", Duration::from_secs(60))) {
            Ok(lease) => break lease,
            Err(LeaseError::Held(lease)) => {
                let wait = (lease.expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
                std::thread::sleep(wait.min(Duration::from_millis(50)).max(Duration::from_millis(5)));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(lease_b.token > lease_a.token);
    // Alpha wakes and commits: refused, and nothing of it lands.
    let mut late = ChangeSet::new();
    late.upsert(ShardId(1), ObjectId(2), state_n(2));
    match a.commit(&late) {
        Err(CommitError::Fenced { lease, owner }) => {
            assert_eq!((lease.as_str(), owner.as_str()), ("zone meadow", "alpha"))
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(b.manifest(ShardId(1)).expect("manifest").1.len(), 1);
    // Alpha's renewal reports the loss.
    assert_eq!(
        a.renew_leases(&holder("alpha", short)).expect("renew"),
        vec![LeaseKey::Zone(zone("meadow"))]
    );
    // Beta commits.
    b.commit(&late).expect("the new owner commits");
    // A store holding leases may not write a zone it does not hold.
    b.create_zone(&zone("forest"), &[ShardSpec::shared(ShardId(2))])
        .expect("zone");
    let mut elsewhere = ChangeSet::new();
    elsewhere.upsert(ShardId(2), ObjectId(3), state_n(3));
    assert!(matches!(b.commit(&elsewhere), Err(CommitError::Fenced { .. })));
    // Released, the zone may be taken at once.
    b.release_zone(&zone("meadow")).expect("release");
    let again = a
        .acquire_zone(&zone("meadow"), &holder("alpha", short))
        .expect("alpha again");
    assert!(again.token > lease_b.token);
    assert_eq!(
        a.zone_lease(&zone("meadow")).expect("lease").map(|l| l.owner),
        Some("alpha".into())
    );
}

#[test]
fn a_players_own_shards_are_written_only_by_the_server_holding_the_player() {
    let (schema, a) = pg_store();
    let spec = ShardSpec {
        id: ShardId(9),
        scope: ShardScope::Perspective("ann".into()),
    };
    a.create_zone(&zone("inventory"), &[spec]).expect("inventory");
    let b = PgStore::open(&schema.options()).expect("second server");
    let ttl = Duration::from_secs(60);
    // Both serve zones, so both check their leases; ann is on alpha.
    a.create_zone(&zone("meadow"), &[ShardSpec::shared(ShardId(1))])
        .expect("zone");
    a.acquire_zone(&zone("meadow"), &holder("alpha", ttl)).expect("meadow");
    a.acquire_player("ann", &holder("alpha", ttl)).expect("alpha hosts ann");
    match b.acquire_player("ann", &holder("beta", ttl)) {
        Err(LeaseError::Held(lease)) => assert_eq!(lease.key, LeaseKey::Player("ann".into())),
        other => panic!("expected Held, got {other:?}"),
    }
    // Picking an item up: the zone's shard and ann's, in one commit.
    let mut pick = ChangeSet::new();
    pick.upsert(ShardId(9), ObjectId(7), state_n(7));
    a.commit(&pick).expect("alpha writes ann's inventory");
    // Ann moves to beta: alpha lets her go, beta takes her.
    a.release_player("ann").expect("release");
    b.acquire_player("ann", &holder("beta", ttl)).expect("beta hosts ann");
    let mut late = ChangeSet::new();
    late.remove(ShardId(9), ObjectId(7));
    match a.commit(&late) {
        Err(CommitError::Fenced { lease, .. }) => assert_eq!(lease, "player ann"),
        other => panic!("expected Fenced, got {other:?}"),
    }
    b.commit(&late).expect("beta writes ann's inventory");
    assert!(b.manifest(ShardId(9)).expect("manifest").1.is_empty());
}

#[test]
fn servers_reserve_disjoint_blocks_of_object_ids() {
    let (schema, a) = pg_store();
    a.create_zone(&zone("far"), &[ShardSpec::shared(ShardId(1))])
        .expect("zone");
    let mut far = ChangeSet::new();
    far.upsert(ShardId(1), ObjectId(499), state_n(1));
    a.commit(&far).expect("an object in a zone this server does not load");
    let b = PgStore::open(&schema.options()).expect("second server");
    let first = a.reserve_object_ids(1000, 10).expect("a");
    assert_eq!(first, 500..1500, "the first block starts past every id in the world");
    let second = b.reserve_object_ids(1000, 10).expect("b");
    assert_eq!(second, 1500..2500);
    let third = a.reserve_object_ids(10, 5000).expect("a again");
    assert_eq!(third, 5000..5010, "never below what the server knows");
}
