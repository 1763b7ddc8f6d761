//! Behaviour of the `WorldStore` operations, run against every store — the
//! memory store, redb and PostgreSQL — so they cannot drift apart.

use chrono::{Duration, Utc};
use hoard_engine::store::{
    ChangesSince, CommitError, ReadError, ShardScope, ShardSpec, Tombstone, WorldStore, WriteError, verify,
};
use hoard_engine::{ChangeSet, Digest, MemoryStore, ObjectId, Seq, ShardId, ZoneId};

use super::support::{pg_store, state_n, temp_store};

fn zone(name: &str) -> ZoneId {
    ZoneId::new(name).expect("valid zone")
}

fn with_each(test: impl Fn(&dyn WorldStore)) {
    test(&MemoryStore::new());
    let (_dir, redb) = temp_store();
    test(&redb);
    let (_schema, pg) = pg_store();
    test(&pg);
}

fn setup(store: &dyn WorldStore) {
    store
        .create_zone(
            &zone("meadow"),
            &[ShardSpec::shared(ShardId(1)), ShardSpec::shared(ShardId(2))],
        )
        .expect("create meadow");
    store
        .create_zone(
            &zone("homes"),
            &[ShardSpec {
                id: ShardId(3),
                scope: ShardScope::Perspective("ann".into()),
            }],
        )
        .expect("create homes");
}

#[test]
fn zones_and_shards_are_stored_with_fresh_epochs() {
    with_each(|store| {
        setup(store);
        assert_eq!(store.zones().expect("zones"), vec![zone("homes"), zone("meadow")]);
        assert_eq!(
            store.zone_shards(&zone("meadow")).expect("shards"),
            vec![ShardId(1), ShardId(2)]
        );
        let h1 = store.shard_head(ShardId(1)).expect("head");
        let h2 = store.shard_head(ShardId(2)).expect("head");
        assert_ne!(h1.epoch, h2.epoch);
        assert_eq!((h1.seq, h1.digest, h1.horizon), (Seq::ZERO, Digest::EMPTY, Seq::ZERO));
        assert_eq!(
            store.shard_head(ShardId(3)).expect("head").scope,
            ShardScope::Perspective("ann".into())
        );
        assert!(matches!(
            store.create_zone(&zone("other"), &[ShardSpec::shared(ShardId(2))]),
            Err(WriteError::ShardExists { shard: ShardId(2), .. })
        ));
        assert!(matches!(
            store.zone_shards(&zone("nowhere")),
            Err(ReadError::UnknownZone(_))
        ));
        assert!(matches!(
            store.shard_head(ShardId(99)),
            Err(ReadError::UnknownShard(ShardId(99)))
        ));
    });
}

#[test]
fn a_zones_shards_for_a_perspective_are_the_shared_ones_and_its_own() {
    with_each(|store| {
        setup(store);
        // Players' inventories join the zone one by one, beside a shared shard.
        for (i, player) in ["bob", "ann", "cy", "ann2", ""].iter().enumerate() {
            let spec = ShardSpec {
                id: ShardId(100 + i as u64),
                scope: ShardScope::Perspective((*player).into()),
            };
            store.create_zone(&zone("homes"), &[spec]).expect("one more shard");
        }
        store
            .create_zone(&zone("homes"), &[ShardSpec::shared(ShardId(50))])
            .expect("a shared shard");
        let for_ann = store.zone_shards_for(&zone("homes"), "ann").expect("ann's");
        assert_eq!(for_ann, vec![ShardId(3), ShardId(50), ShardId(101)]);
        let for_cy = store.zone_shards_for(&zone("homes"), "cy").expect("cy's");
        assert_eq!(for_cy, vec![ShardId(50), ShardId(102)]);
        // The empty perspective sees its own shard, never a shared one twice.
        let for_nobody = store.zone_shards_for(&zone("homes"), "").expect("the empty name's");
        assert_eq!(for_nobody, vec![ShardId(50), ShardId(104)]);
        assert_eq!(
            store.zone_shards(&zone("homes")).expect("all").len(),
            7,
            "every shard of the zone, in id order"
        );
        assert!(store.zone_shards(&zone("homes")).expect("all").is_sorted());
        assert!(matches!(
            store.zone_shards_for(&zone("nowhere"), "ann"),
            Err(ReadError::UnknownZone(_))
        ));
    });
}

#[test]
fn commits_assign_seqs_per_shard_and_track_digests() {
    with_each(|store| {
        setup(store);
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(1), ObjectId(10), state_n(1));
        tick.upsert(ShardId(1), ObjectId(11), state_n(2));
        tick.upsert(ShardId(2), ObjectId(20), state_n(3));
        let receipt = store.commit(&tick).expect("commit");
        assert_eq!(receipt.heads.len(), 2);
        assert!(receipt.heads.iter().all(|h| h.seq == Seq(1)));

        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(1), ObjectId(10), state_n(4));
        store.commit(&tick).expect("commit");
        let head = store.shard_head(ShardId(1)).expect("head");
        assert_eq!(head.seq, Seq(2));
        assert_eq!(head.digest.count(), 2);
        assert_eq!(
            store.shard_head(ShardId(2)).expect("head").seq,
            Seq(1),
            "untouched shard keeps its seq"
        );

        let (_, manifest) = store.manifest(ShardId(1)).expect("manifest");
        assert_eq!(manifest, vec![(ObjectId(10), Seq(2)), (ObjectId(11), Seq(1))]);
        let mut expected = Digest::EMPTY;
        expected.add(ObjectId(10), Seq(2), &state_n(4).hash());
        expected.add(ObjectId(11), Seq(1), &state_n(2).hash());
        assert_eq!(head.digest, expected);
        assert!(verify(store).expect("verify").is_empty());
    });
}

#[test]
fn changes_since_returns_upserts_and_tombstones_after_a_seq() {
    with_each(|store| {
        setup(store);
        for n in 1..=5u64 {
            let mut tick = ChangeSet::new();
            tick.upsert(ShardId(1), ObjectId(n), state_n(n));
            store.commit(&tick).expect("commit");
        }
        let mut tick = ChangeSet::new();
        tick.remove(ShardId(1), ObjectId(2));
        tick.upsert(ShardId(1), ObjectId(5), state_n(50));
        store.commit(&tick).expect("commit");

        let ChangesSince::Changes {
            head,
            upserts,
            tombstones,
        } = store.changes_since(ShardId(1), Seq(3)).expect("changes")
        else {
            panic!("expected changes");
        };
        assert_eq!(head.seq, Seq(6));
        let ids: Vec<_> = upserts.iter().map(|o| (o.id, o.version)).collect();
        assert_eq!(ids, vec![(ObjectId(4), Seq(4)), (ObjectId(5), Seq(6))]);
        assert_eq!(
            tombstones,
            vec![Tombstone {
                id: ObjectId(2),
                seq: Seq(6)
            }]
        );

        let ChangesSince::Changes {
            upserts, tombstones, ..
        } = store.changes_since(ShardId(1), Seq(6)).expect("changes")
        else {
            panic!("expected changes");
        };
        assert!(upserts.is_empty() && tombstones.is_empty(), "up to date");
        assert!(matches!(
            store.changes_since(ShardId(1), Seq(7)),
            Err(ReadError::FutureSeq {
                asked: Seq(7),
                head: Seq(6),
                ..
            })
        ));
    });
}

#[test]
fn a_returning_object_clears_its_tombstone() {
    with_each(|store| {
        setup(store);
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(1), ObjectId(1), state_n(1));
        store.commit(&tick).expect("commit");
        let mut tick = ChangeSet::new();
        tick.remove(ShardId(1), ObjectId(1));
        store.commit(&tick).expect("commit");
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(1), ObjectId(1), state_n(2));
        store.commit(&tick).expect("commit");
        let ChangesSince::Changes {
            upserts, tombstones, ..
        } = store.changes_since(ShardId(1), Seq::ZERO).expect("changes")
        else {
            panic!("expected changes");
        };
        assert_eq!(upserts.len(), 1);
        assert!(tombstones.is_empty());
    });
}

#[test]
fn a_move_between_shards_is_one_atomic_commit() {
    with_each(|store| {
        setup(store);
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(1), ObjectId(7), state_n(1));
        store.commit(&tick).expect("commit");
        let mut tick = ChangeSet::new();
        tick.remove(ShardId(1), ObjectId(7));
        tick.upsert(ShardId(3), ObjectId(7), state_n(1));
        store.commit(&tick).expect("commit");
        assert!(store.snapshot(ShardId(1)).expect("snapshot").objects.is_empty());
        assert_eq!(store.snapshot(ShardId(3)).expect("snapshot").objects[0].id, ObjectId(7));
    });
}

#[test]
fn a_commit_naming_an_unknown_shard_applies_nothing() {
    with_each(|store| {
        setup(store);
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(1), ObjectId(1), state_n(1));
        tick.upsert(ShardId(404), ObjectId(2), state_n(2));
        assert!(matches!(
            store.commit(&tick),
            Err(CommitError::UnknownShard(ShardId(404)))
        ));
        let head = store.shard_head(ShardId(1)).expect("head");
        assert_eq!((head.seq, head.digest.count()), (Seq::ZERO, 0));
    });
}

#[test]
fn trimming_moves_the_horizon_and_old_cursors_fall_behind_it() {
    with_each(|store| {
        setup(store);
        let mut tick = ChangeSet::new();
        for id in 1..=3 {
            tick.upsert(ShardId(1), ObjectId(id), state_n(id));
        }
        store.commit(&tick).expect("commit");
        for id in 1..=2 {
            let mut tick = ChangeSet::new();
            tick.remove(ShardId(1), ObjectId(id));
            store.commit(&tick).expect("commit");
        }
        // Nothing is older than an hour ago.
        let report = store.trim_tombstones(Utc::now() - Duration::hours(1)).expect("trim");
        assert_eq!(report.removed, 0);
        let report = store.trim_tombstones(Utc::now() + Duration::seconds(1)).expect("trim");
        assert_eq!((report.removed, report.shards), (2, 1));
        let head = store.shard_head(ShardId(1)).expect("head");
        assert_eq!(head.horizon, Seq(3));
        assert!(matches!(
            store.changes_since(ShardId(1), Seq(1)).expect("read"),
            ChangesSince::BehindHorizon { .. }
        ));
        assert!(matches!(
            store.changes_since(ShardId(1), Seq(3)).expect("read"),
            ChangesSince::Changes { .. }
        ));
    });
}

#[test]
fn reset_epoch_changes_only_the_epoch() {
    with_each(|store| {
        setup(store);
        let before = store.shard_head(ShardId(2)).expect("head");
        let epoch = store.reset_epoch(ShardId(2)).expect("reset");
        let after = store.shard_head(ShardId(2)).expect("head");
        assert_ne!(before.epoch, epoch);
        assert_eq!(after.epoch, epoch);
        assert_eq!((after.seq, after.digest), (before.seq, before.digest));
        assert!(matches!(
            store.reset_epoch(ShardId(77)),
            Err(WriteError::UnknownShard(_))
        ));
    });
}

#[test]
fn redb_store_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let head = {
        let store = hoard_engine::RedbStore::open_dir(dir.path()).expect("open");
        setup(&store);
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(2), ObjectId(5), state_n(5));
        store.commit(&tick).expect("commit");
        store.shard_head(ShardId(2)).expect("head")
    };
    let store = hoard_engine::RedbStore::open_dir(dir.path()).expect("reopen");
    assert_eq!(store.shard_head(ShardId(2)).expect("head"), head);
    assert_eq!(
        store.snapshot(ShardId(2)).expect("snapshot").objects[0].state,
        state_n(5)
    );
}

#[test]
fn reserved_object_ids_pass_every_object_and_are_never_given_twice() {
    with_each(|store| {
        setup(store);
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(1), ObjectId(5), state_n(1));
        tick.upsert(ShardId(2), ObjectId(10), state_n(1));
        store.commit(&tick).expect("commit");
        let first = store.reserve_object_ids(100, 0).expect("reserve");
        assert_eq!(first, 11..111, "past every object held");
        let floor = store.reserve_object_ids(10, 500).expect("reserve above a floor");
        assert_eq!(floor, 500..510);
        let low = store.reserve_object_ids(5, 3).expect("a floor below the counter");
        assert_eq!(low, 510..515, "never back below an earlier reservation");
        assert!(
            store.reserve_object_ids(1, u64::MAX - 1).is_err(),
            "ids stay below 2^63"
        );
    });
}

#[test]
fn a_reservation_survives_a_reopen_and_skips_the_ids_of_a_removed_object() {
    let (dir, store) = super::support::temp_store();
    store
        .create_zone(&zone("meadow"), &[ShardSpec::shared(ShardId(1))])
        .expect("zone");
    let mut tick = ChangeSet::new();
    tick.upsert(ShardId(1), ObjectId(40), state_n(1));
    store.commit(&tick).expect("commit");
    let mut removal = ChangeSet::new();
    removal.remove(ShardId(1), ObjectId(40));
    store.commit(&removal).expect("remove");
    let first = store.reserve_object_ids(8, 0).expect("reserve");
    assert_eq!(first, 41..49, "a removed object's id is not given again");
    let path = store.path().to_owned();
    drop(store);
    let reopened = hoard_engine::RedbStore::open(&path).expect("reopen");
    assert_eq!(reopened.reserve_object_ids(8, 0).expect("reserve"), 49..57);
    drop(dir);
}
