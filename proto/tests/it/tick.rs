//! The server's tick core in the simulated pair, over the real redb store on
//! a simulated disk: durable before published.
//!
//! A frame whose commit fails publishes nothing (no delta, no `Processed`)
//! and tells the client the world is read-only; once the disk works again
//! the kept changes are committed and only then go out. And whatever point a
//! power cut strikes at, the store that comes back holds everything the
//! client was sent: no client ever sees state a crash takes back. With
//! pipelined commits the world ticks on while a commit job runs, the frames
//! of that time go as one group, and nothing of a job is published before
//! the driver reports it durable.

use std::path::Path;
use std::sync::Arc;

use bevy_ecs::prelude::*;
use hoard_engine::store::sim_disk::{Keep, SimDisk};
use hoard_engine::store::{CommitError, StoreFault, WorldStore};
use hoard_engine::{ObjectId, PublishRegistry, Published, RedbStore, ShardId};
use hoard_proto::intents::ReceivedIntent;
use hoard_proto::sync::tick::TickInput;
use serde::{Deserialize, Serialize};

use super::pair::{Pair, SESSION, Seen};

#[derive(Component, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Stone(u32);

const STONES: u64 = 8;

fn open(disk: &SimDisk) -> Arc<RedbStore> {
    Arc::new(RedbStore::open_with_backend(Path::new("sim://world.redb"), disk.factory()).expect("store"))
}

/// A pair over a redb store on `disk` whose world holds `STONES` published
/// stones over two shards, committed, with the client in the zone.
fn pair_on(disk: &SimDisk, seed: u64) -> Pair {
    let registry = PublishRegistry::builder().publish::<Stone>("stone", 1).build();
    let mut pair = Pair::with_store(open(disk), registry, "meadow", 2, seed);
    for i in 0..STONES {
        pair.world
            .spawn((Published::new(ObjectId(i), ShardId(i % 2)), Stone(0)));
    }
    pair.frame().expect("first frame");
    pair.enter("meadow", true);
    pair.run();
    pair.assert_in_sync("meadow");
    pair.seen.clear();
    pair
}

/// Changes every stone's count, as a game system would.
fn play(pair: &mut Pair, n: u32) {
    let mut stones = pair.world.query::<&mut Stone>();
    for mut s in stones.iter_mut(&mut pair.world) {
        s.0 = s.0.wrapping_add(n);
    }
}

/// An intent from the pair's client, given to the core as the session's
/// driver would.
fn intent(pair: &mut Pair, seq: u32) {
    let intent = ReceivedIntent {
        id: Default::default(),
        perspective: "ann".into(),
        kind: "poke".into(),
        payload: Vec::new(),
    };
    pair.tick.handle(
        &mut pair.world,
        TickInput::Intent {
            id: SESSION,
            seq,
            intent,
            signature: Vec::new(),
        },
    );
}

fn deltas(seen: &[Seen]) -> usize {
    seen.iter().filter(|s| matches!(s, Seen::Delta(..))).count()
}

#[test]
fn a_frame_whose_commit_fails_publishes_nothing_until_a_commit_returns() {
    let disk = SimDisk::new();
    let mut pair = pair_on(&disk, 1);

    // The disk fails every fsync: the frame's commit fails.
    disk.fail_sync_after(0, true);
    intent(&mut pair, 7);
    play(&mut pair, 1);
    pair.frame().expect("a failed commit is retried, not fatal");
    pair.run();
    assert_eq!(pair.seen, vec![Seen::Writable(false)], "nothing but the pause went out");
    assert!(!pair.tick.writable());
    assert_eq!(pair.tick.pending(), STONES as usize, "the frame's changes are kept");

    // Later frames while it still fails: their changes merge, nothing goes out.
    pair.net.now += 0.3;
    play(&mut pair, 1);
    pair.frame().expect("still retrying");
    pair.run();
    assert_eq!(deltas(&pair.seen), 0, "no delta before a commit returned");
    assert!(!pair.seen.iter().any(|s| matches!(s, Seen::Processed(_))));
    // An action that reaches the core while the world is read-only is
    // refused, not kept or dropped.
    intent(&mut pair, 8);
    pair.run();
    assert_eq!(pair.seen.last(), Some(&Seen::Rejected(8)));

    // The disk heals: the next attempt (after the backoff) commits both
    // frames as one, then publishes, then confirms the intent.
    disk.clear_faults();
    pair.net.now += 1.0;
    pair.frame().expect("commits");
    pair.run();
    assert!(pair.tick.writable());
    assert_eq!(pair.tick.pending(), 0);
    let tail = &pair.seen[2..];
    assert_eq!(tail.first(), Some(&Seen::Writable(true)), "{tail:?}");
    assert_eq!(deltas(tail), 2, "one delta per shard: {tail:?}");
    assert_eq!(
        tail.last(),
        Some(&Seen::Processed(vec![7])),
        "confirmed after its deltas: {tail:?}"
    );
    pair.assert_in_sync("meadow");
    let mut stones = pair.world.query::<&Stone>();
    assert!(stones.iter(&pair.world).all(|s| s.0 == 2));
}

#[test]
fn the_store_after_a_power_cut_holds_everything_the_client_was_sent() {
    let mut rng = fastrand::Rng::with_seed(0x71c4);
    let mut rounds_with_deltas = 0;
    for round in 0..24u64 {
        let disk = SimDisk::new();
        let mut pair = pair_on(&disk, round);
        // The power goes at a random operation of one of the next frames.
        disk.power_cut_after(rng.u64(0..40));
        for frame in 0..6u32 {
            intent(&mut pair, frame);
            play(&mut pair, frame + 1);
            pair.net.now += 0.3;
            pair.frame().expect("a failed commit is retried");
            pair.run();
        }
        assert!(disk.power_was_cut(), "round {round}: the cut came within the frames");
        if deltas(&pair.seen) > 0 {
            rounds_with_deltas += 1;
        }
        // What was not fsynced may or may not survive, in any part.
        disk.crash(|_| match rng.u8(0..3) {
            0 => Keep::Drop,
            1 => Keep::Whole,
            _ => Keep::Prefix(rng.usize(0..64)),
        });
        let reopened = open(&disk);
        for shard in [ShardId(0), ShardId(1)] {
            let head = reopened.shard_head(shard).expect("head");
            let sent = pair
                .seen
                .iter()
                .filter_map(|s| match s {
                    Seen::Delta(sh, seq) if *sh == shard => Some(*seq),
                    _ => None,
                })
                .max();
            if let Some(sent) = sent {
                assert!(
                    head.seq >= sent,
                    "round {round}: shard {shard} was sent seq {sent:?}, the store came back at {:?}",
                    head.seq
                );
            }
        }
        // Every object the client holds is in the store that came back,
        // at the version the client holds or a later one.
        for copy in pair.cache.values() {
            let snap = reopened.snapshot(copy.header.key.shard).expect("snapshot");
            for o in &copy.objects {
                let stored = snap.objects.iter().find(|s| s.id == o.id);
                assert!(
                    stored.is_some_and(|s| s.version >= o.version),
                    "round {round}: object {} at {:?} on the client is not in the store",
                    o.id,
                    o.version
                );
            }
        }
    }
    // The cut struck both before any frame was published and after some were.
    assert!(
        (1..24).contains(&rounds_with_deltas),
        "{rounds_with_deltas} of 24 rounds saw deltas"
    );
}

/// The stones' counts as the store has them.
fn stored_counts(pair: &Pair) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for shard in [ShardId(0), ShardId(1)] {
        let snap = pair.store.snapshot(shard).expect("snapshot");
        out.extend(snap.objects.into_iter().map(|o| o.state.as_bytes().to_vec()));
    }
    out
}

#[test]
fn a_pipelined_commit_publishes_nothing_until_done_and_the_frames_meanwhile_go_as_one_group() {
    let disk = SimDisk::new();
    let mut pair = pair_on(&disk, 3);

    intent(&mut pair, 1);
    play(&mut pair, 1);
    let first = pair.frame_pipelined().expect("a job for the first frame");
    assert_eq!(first.changes.len(), STONES as usize);
    // The world ticks on while the job runs: two more frames, one with an
    // intent and changes, one with an intent only. No second job yet.
    intent(&mut pair, 2);
    play(&mut pair, 1);
    assert!(pair.frame_pipelined().is_none(), "one job in flight at a time");
    intent(&mut pair, 3);
    assert!(pair.frame_pipelined().is_none());
    assert_eq!(
        pair.tick.pending(),
        2 * STONES as usize,
        "the job's and the next group's"
    );
    pair.run();
    assert!(
        pair.seen.is_empty(),
        "nothing before the job is durable: {:?}",
        pair.seen
    );

    // The commit thread makes the job durable; until the core hears of it,
    // still nothing goes out, though the store already has it.
    let receipt = pair.store.commit(&first.changes);
    assert!(receipt.is_ok());
    pair.run();
    assert!(pair.seen.is_empty(), "not before the driver reports it");
    pair.commit_done(&first, receipt);
    pair.run();
    assert_eq!(deltas(&pair.seen), 2, "one delta per shard: {:?}", pair.seen);
    assert_eq!(pair.seen.last(), Some(&Seen::Processed(vec![1])));

    // The two frames gathered meanwhile are the next job, each stone once.
    let second = pair.tick.poll_commit().expect("the next group starts at once");
    assert_eq!(
        second.changes.len(),
        STONES as usize,
        "frames merged: the last change wins"
    );
    pair.seen.clear();
    let receipt = pair.store.commit(&second.changes);
    pair.commit_done(&second, receipt);
    pair.run();
    assert_eq!(deltas(&pair.seen), 2, "{:?}", pair.seen);
    assert_eq!(pair.seen.last(), Some(&Seen::Processed(vec![2, 3])));
    assert_eq!(pair.tick.pending(), 0);
    assert_eq!(pair.tick.unconfirmed(), 0);
    pair.assert_in_sync("meadow");
    assert!(stored_counts(&pair).iter().all(|c| *c == stored_counts(&pair)[0]));
}

#[test]
fn a_failed_pipelined_commit_keeps_its_changes_under_the_newer_ones_and_retries() {
    let disk = SimDisk::new();
    let mut pair = pair_on(&disk, 4);

    intent(&mut pair, 1);
    play(&mut pair, 1);
    let first = pair.frame_pipelined().expect("a job");
    // A newer frame while the job runs: every stone at 2.
    play(&mut pair, 1);
    assert!(pair.frame_pipelined().is_none());
    let failed = Err(CommitError::Fault(StoreFault::Corrupt("the disk is gone".into())));
    pair.commit_done(&first, failed);
    pair.run();
    assert_eq!(pair.seen, vec![Seen::Writable(false)], "only the pause");
    assert!(!pair.tick.writable());
    assert_eq!(pair.tick.pending(), STONES as usize, "both frames kept, merged");
    assert_eq!(pair.tick.unconfirmed(), 1, "the intent waits again");

    // Before the backoff ran out no job is made; after it, one that asks
    // for the store to be recovered first, holding the newest counts.
    pair.net.now += 0.1;
    assert!(pair.frame_pipelined().is_none(), "the backoff holds");
    pair.net.now += 0.5;
    let retry = pair.frame_pipelined().expect("the retry");
    assert!(retry.recover_first);
    let receipt = pair.store.commit(&retry.changes);
    pair.commit_done(&retry, receipt);
    pair.run();
    assert!(pair.tick.writable());
    assert_eq!(pair.seen[1], Seen::Writable(true));
    assert_eq!(pair.seen.last(), Some(&Seen::Processed(vec![1])));
    pair.assert_in_sync("meadow");
    let mut stones = pair.world.query::<&Stone>();
    assert!(stones.iter(&pair.world).all(|s| s.0 == 2));
    let newest = stored_counts(&pair);
    assert_eq!(newest.len(), STONES as usize);
    assert!(newest.iter().all(|c| *c == newest[0]), "one state for all");
    let (_, older) = first.changes.shards().next().expect("a shard");
    let (_, older) = older.iter().next().expect("an object");
    let hoard_engine::Change::Upsert(older) = older else {
        panic!("the first frame upserted")
    };
    assert_ne!(
        newest[0],
        older.as_bytes(),
        "the newer frame's state won over the failed job's"
    );
}
