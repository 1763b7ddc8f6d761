//! The server's store as the state machines see it: reached only through
//! read effects, so the simulated pair can make it slow (PostgreSQL-like
//! latency, other traffic going on meanwhile) or failing, deterministically.

use hoard_engine::{ChangeSet, ObjectId, ShardId, ZoneId};
use hoard_proto::wire::ErrorCode;

use super::pair::{Pair, Seen};
use super::sync::{fill, state};

/// A cold entry over a store 5 ms away: one read for the zone's shards and
/// one per shard, each after the one before (an answer is built as it is
/// sent), so the entry takes its round trip plus five reads, and arrives
/// whole; live deltas start after one more read per shard.
#[test]
fn a_slow_store_adds_its_reads_to_an_entry_and_nothing_else() {
    let mut pair = Pair::new("meadow", 4, 11);
    fill(&mut pair, 4, 20, 0);
    pair.net.one_way = 0.010;
    pair.store_latency = 0.005;
    let reads = pair.store_reads;
    pair.enter("meadow", true);
    pair.run();
    let stats = &pair.ready.last().expect("zone ready").1;
    assert_eq!((stats.shards, stats.shards_snapshot, stats.round_trips), (4, 4, 1));
    // The zone's shards, then each shard; then, as live deltas start, each
    // shard's head (to catch up what committed meanwhile).
    assert_eq!(pair.store_reads - reads, 1 + 4 + 4);
    assert_eq!(stats.elapsed_ms, 20 + 5 * 5, "a round trip and five reads");
    pair.assert_in_sync("meadow");
}

/// Commits land while a warm entry's answer is still reading the store:
/// a shard read before the commit is caught up when its live deltas
/// start, a shard read after it is answered at the new seq; the client
/// ends in sync with no gap, no duplicate and no repair.
#[test]
fn commits_landing_between_an_answers_reads_are_neither_lost_nor_doubled() {
    let mut pair = Pair::new("meadow", 4, 12);
    fill(&mut pair, 4, 20, 0);
    pair.enter("meadow", false);
    pair.run();
    pair.net.one_way = 0.010;
    pair.store_latency = 0.005;
    let start = pair.net.now;
    pair.enter("meadow", true);
    // The request arrives at +10 ms, the zone's shards are read at +15, shard
    // 0's head at +20, shard 3's at +35: commit between the two.
    pair.run_until(start + 0.022);
    let mut tick = ChangeSet::new();
    tick.upsert(ShardId(0), ObjectId(7), state(70_000));
    tick.upsert(ShardId(3), ObjectId(3007), state(70_003));
    pair.commit(&tick);
    pair.run();
    assert!(pair.failures.is_empty(), "{:?}", pair.failures);
    assert_eq!(pair.closed, None);
    let stats = &pair.ready.last().expect("zone ready").1;
    assert_eq!(stats.shards, 4);
    assert_eq!(stats.shards_fresh, 3, "shards 0 to 2 as they were when read");
    let deltas: Vec<_> = pair
        .seen
        .iter()
        .filter_map(|s| match s {
            Seen::Delta(shard, seq) => Some((*shard, *seq)),
            _ => None,
        })
        .collect();
    let head = pair.store.shard_head(ShardId(0)).expect("head");
    assert_eq!(
        deltas,
        vec![(ShardId(0), head.seq)],
        "shard 0 caught up once; shard 3 in its answer"
    );
    pair.assert_in_sync("meadow");
}

/// A store that cannot be reached: an entry is refused with the server's
/// code (nothing half-entered), and one whose answer is cut off by a failing
/// read ends the connection rather than leave the client a partial zone.
#[test]
fn a_failing_store_refuses_entries_and_never_leaves_a_half_entered_zone() {
    let mut pair = Pair::new("meadow", 4, 13);
    fill(&mut pair, 4, 20, 0);
    let zone = ZoneId::new("meadow").expect("zone");
    pair.store_failing = true;
    pair.enter("meadow", true);
    pair.run();
    assert_eq!(pair.denied, vec![(zone.clone(), ErrorCode::Server as u16)]);
    assert!(pair.ready.is_empty());

    pair.store_failing = false;
    pair.net.one_way = 0.010;
    pair.store_latency = 0.005;
    let start = pair.net.now;
    pair.enter("meadow", true);
    pair.run_until(start + 0.027);
    pair.store_failing = true;
    pair.run();
    let (code, reason) = pair.closed.clone().expect("the connection is ended");
    assert_eq!(code, ErrorCode::Server);
    assert!(reason.contains("simulated outage"), "{reason}");
    assert!(pair.ready.is_empty(), "no zone was entered");
    assert!(pair.client.entry_progress(&zone).is_some_and(|p| p.shards_done < 4));
}
