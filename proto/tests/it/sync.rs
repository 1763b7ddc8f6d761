//! Sans-IO zone entry and live deltas through the test pair: every answer
//! kind, the repair path, subscriptions without gaps, latency and loss, and
//! random histories against random caches.

use chrono::{Duration, Utc};
use hoard_engine::shard::recompute_digest;
use hoard_engine::shard::{CachedShard, ShardKey};
use hoard_engine::state::StateBuilder;
use hoard_engine::{ChangeSet, ObjectId, ObjectState, ShardId, ZoneId};
use proptest::prelude::*;

use hoard_proto::sync::client::CheckedCopy;

use super::pair::{Pair, SERVER};

pub(crate) fn state(n: u64) -> ObjectState {
    StateBuilder::new().component("n", n.to_le_bytes().to_vec()).finish()
}

/// Commits `objects` objects per shard with values from `salt`.
pub(crate) fn fill(pair: &mut Pair, shards: u64, objects: u64, salt: u64) {
    let mut tick = ChangeSet::new();
    for s in 0..shards {
        for i in 0..objects {
            tick.upsert(ShardId(s), ObjectId(s * 1000 + i), state(i + salt));
        }
    }
    pair.commit(&tick);
}

fn last_stats(pair: &Pair) -> hoard_proto::sync::client::EntryStats {
    pair.ready.last().expect("zone ready").1.clone()
}

#[test]
fn cold_entry_fetches_every_shard_in_one_round_trip() {
    let mut pair = Pair::new("meadow", 4, 1);
    fill(&mut pair, 4, 50, 0);
    pair.net.one_way = 0.025;
    pair.enter("meadow", true);
    pair.run();
    let stats = last_stats(&pair);
    assert_eq!((stats.shards, stats.shards_snapshot, stats.round_trips), (4, 4, 1));
    assert_eq!(stats.objects, 200);
    assert_eq!(stats.elapsed_ms, 50, "one round trip of 2 × 25 ms");
    pair.assert_in_sync("meadow");
    // Progress grew frame by frame: shards verified, bytes received, and the
    // zone's size once the answer said it; none once the zone was ready.
    let seen: Vec<_> = pair.progress.iter().flatten().collect();
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(
        seen.windows(2)
            .all(|w| w[0].shards_done <= w[1].shards_done && w[0].bytes_rx < w[1].bytes_rx)
    );
    assert!(
        seen.iter()
            .all(|p| p.shards.is_none_or(|n| n == 4) && p.shards_done <= 4),
        "{seen:?}"
    );
    assert_eq!(seen.first().map(|p| p.shards_done), Some(0), "{seen:?}");
    assert!(
        seen.last().is_some_and(|p| p.shards == Some(4) && p.shards_done == 4),
        "{seen:?}"
    );
    assert_eq!(pair.progress.last(), Some(&None), "the entry ended");
    assert_eq!(
        pair.client
            .entry_progress(&hoard_engine::ZoneId::new("meadow").expect("zone")),
        None
    );
}

#[test]
fn warm_entry_with_nothing_changed_sends_almost_nothing() {
    let mut pair = Pair::new("meadow", 64, 2);
    fill(&mut pair, 64, 20, 0);
    pair.enter("meadow", false);
    pair.run();
    let (to_server, to_client) = (pair.bytes_to_server, pair.bytes_to_client);
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    assert_eq!((stats.shards_fresh, stats.round_trips), (64, 1));
    let warm = (pair.bytes_to_server - to_server) + (pair.bytes_to_client - to_client);
    assert!(warm <= 8 * 1024, "warm unchanged entry of 64 shards cost {warm} bytes");
    assert_eq!(stats.bytes_rx + stats.bytes_tx, warm);
    pair.assert_in_sync("meadow");
}

#[test]
fn warm_entry_after_changes_gets_only_the_changes() {
    let mut pair = Pair::new("meadow", 4, 3);
    fill(&mut pair, 4, 100, 0);
    pair.enter("meadow", false);
    pair.run();
    let mut tick = ChangeSet::new();
    tick.upsert(ShardId(1), ObjectId(1005), state(777));
    tick.remove(ShardId(2), ObjectId(2007));
    tick.upsert(ShardId(2), ObjectId(2999), state(1));
    pair.commit(&tick);
    let before = pair.bytes_to_client;
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    assert_eq!(
        (stats.shards_fresh, stats.shards_delta, stats.shards_snapshot),
        (2, 2, 0)
    );
    assert!(
        pair.bytes_to_client - before < 600,
        "only three objects' worth: {}",
        pair.bytes_to_client - before
    );
    pair.assert_in_sync("meadow");
}

#[test]
fn a_cache_behind_the_horizon_gets_the_manifest() {
    let mut pair = Pair::new("meadow", 2, 4);
    fill(&mut pair, 2, 30, 0);
    pair.enter("meadow", false);
    pair.run();
    let mut tick = ChangeSet::new();
    tick.remove(ShardId(0), ObjectId(3));
    tick.upsert(ShardId(0), ObjectId(4), state(44));
    pair.commit(&tick);
    pair.store
        .trim_tombstones(Utc::now() + Duration::seconds(1))
        .expect("trim");
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    assert_eq!((stats.shards_fresh, stats.shards_delta, stats.round_trips), (1, 1, 1));
    pair.assert_in_sync("meadow");
}

#[test]
fn another_epoch_is_repaired_and_a_future_hwm_gets_a_snapshot() {
    let mut pair = Pair::new("meadow", 2, 5);
    fill(&mut pair, 2, 10, 0);
    pair.enter("meadow", false);
    pair.run();
    pair.store.reset_epoch(ShardId(0)).expect("reset");
    let key = ShardKey::new(SERVER, "world", None, ZoneId::new("meadow").expect("zone"), ShardId(1)).expect("key");
    pair.cache.get_mut(&key).expect("cached").header.hwm.0 += 10;
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    // A copy names its shard by hwm only: one of another epoch at the same
    // seq is caught by the `Fresh` root and repaired; a hwm the shard never
    // reached gets a snapshot at once.
    assert_eq!(
        (stats.shards_repaired, stats.shards_snapshot, stats.round_trips),
        (1, 1, 2)
    );
    pair.assert_in_sync("meadow");
}

#[test]
fn a_shard_larger_than_one_repair_frame_is_repaired() {
    use hoard_proto::wire::{MAX_CONTROL_FRAME, MAX_REPAIR_OBJECTS};
    let mut pair = Pair::new("meadow", 1, 9);
    let n = MAX_REPAIR_OBJECTS * 2 + 123;
    let mut tick = ChangeSet::new();
    for i in 0..n as u64 {
        // Ids and versions of every width, so entries are not all small.
        tick.upsert(ShardId(0), ObjectId(i * 0x0123_4567_89ab), state(i));
    }
    pair.commit(&tick);
    pair.enter("meadow", false);
    pair.run();
    // Damage the copy past what one Repair can list, and within it.
    let key = ShardKey::new(SERVER, "world", None, ZoneId::new("meadow").expect("zone"), ShardId(0)).expect("key");
    let copy: &mut CachedShard = pair.cache.get_mut(&key).expect("cached");
    copy.objects[n - 7].state = state(987_654);
    copy.objects.remove(MAX_REPAIR_OBJECTS + 5);
    copy.objects[3].state = state(123_456);
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    assert_eq!((stats.shards_repaired, stats.round_trips), (1, 2));
    pair.assert_in_sync("meadow");
    assert!(
        pair.largest_to_server <= MAX_CONTROL_FRAME,
        "the Repair took {} bytes",
        pair.largest_to_server
    );
}

#[test]
fn a_copy_that_lies_about_its_contents_is_repaired_in_one_more_round_trip() {
    let mut pair = Pair::new("meadow", 2, 6);
    fill(&mut pair, 2, 40, 0);
    pair.enter("meadow", false);
    pair.run();
    fill(&mut pair, 1, 5, 100);
    // The client's copy of shard 0 loses an object and changes another, but
    // its header still claims the server's digest: only applying reveals it.
    let key = ShardKey::new(SERVER, "world", None, ZoneId::new("meadow").expect("zone"), ShardId(0)).expect("key");
    let copy: &mut CachedShard = pair.cache.get_mut(&key).expect("cached");
    copy.objects.remove(17);
    copy.objects[3].state = state(123_456);
    pair.net.one_way = 0.01;
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    assert_eq!((stats.shards_repaired, stats.round_trips), (1, 2));
    assert_eq!(stats.elapsed_ms, 40, "two round trips");
    pair.assert_in_sync("meadow");
}

/// A copy taken on trust (as the QUIC client takes a checksummed cache
/// file) whose objects do not give its header's digest enters as fresh; a
/// repair of the live shard — what the client's background audit asks for —
/// then brings it in line in place, in one round trip, without leaving the
/// zone, and live deltas go on after it.
#[test]
fn a_live_shard_taken_on_trust_and_found_wrong_is_repaired_in_place() {
    let mut pair = Pair::new("meadow", 2, 9);
    fill(&mut pair, 2, 40, 0);
    pair.enter("meadow", false);
    pair.run();
    let zone = ZoneId::new("meadow").expect("zone");
    let key = ShardKey::new(SERVER, "world", None, zone.clone(), ShardId(0)).expect("key");
    let copy: &mut CachedShard = pair.cache.get_mut(&key).expect("cached");
    copy.objects.remove(17);
    copy.objects[3].state = state(123_456);
    pair.trust_copies = true;
    pair.enter("meadow", true);
    pair.run();
    let stats = last_stats(&pair);
    assert_eq!((stats.shards_fresh, stats.round_trips), (2, 1), "taken on trust");
    let (to_server, to_client) = (pair.bytes_to_server, pair.bytes_to_client);

    pair.net.one_way = 0.01;
    let started = pair.net.now;
    pair.client.repair_live_shard(&zone, ShardId(0));
    pair.run();
    assert!(pair.failures.is_empty(), "{:?}", pair.failures);
    pair.assert_in_sync("meadow");
    assert!((pair.net.now - started - 0.02).abs() < 1e-9, "one round trip");
    assert!(pair.bytes_to_server > to_server && pair.bytes_to_client > to_client);

    let mut tick = ChangeSet::new();
    tick.upsert(ShardId(0), ObjectId(3), state(7));
    pair.commit(&tick);
    pair.run();
    pair.assert_in_sync("meadow");
    assert_eq!(pair.ready.len(), 2, "the zone was never entered again");
}

#[test]
fn live_deltas_follow_the_answer_without_gap_or_duplicate() {
    let mut pair = Pair::new("meadow", 3, 7);
    fill(&mut pair, 3, 10, 0);
    pair.net.one_way = 0.02;
    pair.enter("meadow", true);
    // Commits land while the request is in flight and after.
    for round in 0..5u64 {
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(round % 3), ObjectId(round), state(round * 31));
        tick.remove(ShardId(1), ObjectId(1000 + round));
        pair.commit(&tick);
        pair.net.now += 0.013;
    }
    pair.run();
    for round in 5..10u64 {
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(round % 3), ObjectId(5000 + round), state(round));
        pair.commit(&tick);
    }
    pair.run();
    assert_eq!(pair.ready.len(), 1);
    pair.assert_in_sync("meadow");
}

#[test]
fn loss_costs_time_never_correctness() {
    let mut pair = Pair::new("meadow", 8, 8);
    fill(&mut pair, 8, 25, 0);
    pair.net.one_way = 0.025;
    pair.net.loss = 0.3;
    pair.enter("meadow", true);
    pair.run();
    for round in 0..20u64 {
        let mut tick = ChangeSet::new();
        tick.upsert(ShardId(round % 8), ObjectId(round % 8 * 1000 + round), state(round));
        pair.commit(&tick);
        pair.net.now += 0.05;
    }
    pair.run();
    assert!(last_stats(&pair).elapsed_ms >= 50);
    pair.assert_in_sync("meadow");
}

#[test]
fn unknown_and_forbidden_zones_are_denied() {
    let mut pair = Pair::new("meadow", 1, 9);
    pair.enter("nowhere", false);
    pair.run();
    assert_eq!(pair.denied.len(), 1);
    assert_eq!(pair.denied[0].1, hoard_proto::wire::ErrorCode::UnknownZone as u16);
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    Drop,
    Stale(u64),
    Lie,
    Epoch,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        Just(Damage::Drop),
        (1u64..5).prop_map(Damage::Stale),
        Just(Damage::Lie),
        Just(Damage::Epoch)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Random server histories and random client caches (stale, partial,
    /// lying, from another epoch) always end with equal digests.
    #[test]
    fn random_histories_and_caches_end_in_sync(
        seed in any::<u64>(),
        history in proptest::collection::vec((0u64..4, 0u64..40, any::<bool>(), any::<u16>()), 1..80),
        damages in proptest::collection::vec(damage(), 4),
        trim in any::<bool>(),
        one_way in 0u64..30,
        loss in 0u32..30,
    ) {
        let mut pair = Pair::new("meadow", 4, seed);
        let split = history.len() / 2;
        let commit = |pair: &mut Pair, ops: &[(u64, u64, bool, u16)]| {
            for chunk in ops.chunks(3) {
                let mut tick = ChangeSet::new();
                for &(shard, id, remove, value) in chunk {
                    if remove {
                        tick.remove(ShardId(shard), ObjectId(id));
                    } else {
                        tick.upsert(ShardId(shard), ObjectId(id), state(u64::from(value)));
                    }
                }
                pair.commit(&tick);
            }
        };
        commit(&mut pair, &history[..split]);
        pair.enter("meadow", false);
        pair.run();
        commit(&mut pair, &history[split..]);
        if trim {
            pair.store.trim_tombstones(Utc::now() + Duration::seconds(1)).expect("trim");
        }
        let zone = ZoneId::new("meadow").expect("zone");
        for (s, d) in damages.iter().enumerate() {
            let key = ShardKey::new(SERVER, "world", None, zone.clone(), ShardId(s as u64)).expect("key");
            match d {
                Damage::None => {}
                Damage::Drop => { pair.cache.remove(&key); }
                Damage::Stale(n) => {
                    // An older, self-consistent copy: the server's objects at or below hwm - n.
                    if let Some(c) = pair.cache.get_mut(&key) {
                        let hwm = c.header.hwm.0.saturating_sub(*n);
                        c.objects.retain(|o| o.version.0 <= hwm);
                        c.header.hwm.0 = hwm;
                        c.header.digest = recompute_digest(&c.objects);
                    }
                }
                Damage::Lie => {
                    if let Some(c) = pair.cache.get_mut(&key) && !c.objects.is_empty() {
                        c.objects.pop();
                    }
                }
                Damage::Epoch => {
                    if let Some(c) = pair.cache.get_mut(&key) {
                        c.header.epoch.0 ^= 1;
                    }
                }
            }
        }
        pair.net.one_way = one_way as f64 / 1000.0;
        pair.net.loss = f64::from(loss) / 100.0;
        pair.enter("meadow", true);
        pair.run();
        prop_assert!(pair.failures.is_empty());
        pair.assert_in_sync("meadow");
        let store_total: usize = (0..4).map(|s| pair.store.snapshot(ShardId(s)).expect("snapshot").objects.len()).sum();
        prop_assert_eq!(last_stats(&pair).objects as usize, store_total);
    }
}

#[test]
fn a_head_whose_copy_then_fails_to_load_is_fetched_by_repair() {
    let mut pair = Pair::new("meadow", 2, 10);
    fill(&mut pair, 2, 30, 0);
    pair.enter("meadow", false);
    pair.run();
    // The header reads fine, but the body is damaged: the head is sent, the
    // copy never arrives.
    let zone = ZoneId::new("meadow").expect("zone");
    let heads: Vec<_> = pair.cache.values().map(|c| c.header.clone()).collect();
    let copies: Vec<_> = pair
        .cache
        .values()
        .filter(|c| c.header.key.shard != ShardId(1))
        .cloned()
        .collect();
    let request = pair.client.enter_zone(0.0, zone, &heads, false);
    pair.run();
    pair.client
        .provide_copies(0.0, request, copies.into_iter().map(CheckedCopy::new).collect())
        .expect("copies");
    pair.run();
    let stats = last_stats(&pair);
    // The missing copy is repaired; the other is confirmed by the root
    // once the repaired head stands in for the missing one.
    assert_eq!(
        (stats.shards_fresh, stats.shards_repaired, stats.round_trips),
        (1, 1, 2)
    );
    pair.assert_in_sync("meadow");
}

#[test]
fn an_entry_whose_answer_never_comes_times_out_instead_of_waiting_for_ever() {
    use hoard_proto::sync::client::{ENTRY_TIMEOUT_SECS, Effect};
    let mut pair = Pair::new("meadow", 2, 1);
    fill(&mut pair, 2, 5, 0);
    // The request goes out and the network then loses everything: the
    // answer never arrives (the pair is not run).
    pair.enter("meadow", true);
    let started = pair.net.now;
    assert_eq!(pair.client.poll_timeout(), Some(started + ENTRY_TIMEOUT_SECS));
    pair.client.handle_timeout(started + ENTRY_TIMEOUT_SECS - 1.0);
    assert!(
        !std::iter::from_fn(|| pair.client.poll_effect()).any(|e| matches!(e, Effect::EntryTimedOut { .. })),
        "not before its time"
    );
    pair.client.handle_timeout(started + ENTRY_TIMEOUT_SECS);
    let timed_out: Vec<_> = std::iter::from_fn(|| pair.client.poll_effect())
        .filter_map(|e| match e {
            Effect::EntryTimedOut { zone, .. } => Some(zone),
            _ => None,
        })
        .collect();
    assert_eq!(timed_out, vec![hoard_engine::ZoneId::new("meadow").expect("zone")]);
    assert_eq!(pair.client.poll_timeout(), None, "nothing left in flight");
    // The late answer, if it ever comes, is ignored, not misapplied.
    pair.run();
    assert!(pair.ready.is_empty(), "an abandoned entry never becomes ready");
}

/// Bytes both ways of a warm, unchanged entry of a zone of `shards` shards.
fn warm_entry_bytes(shards: u64, separate_commits: bool) -> (u64, u64) {
    let mut pair = Pair::new("meadow", shards, 11);
    if separate_commits {
        // Every shard last changed at its own seq.
        for s in 0..shards {
            let mut tick = ChangeSet::new();
            tick.upsert(ShardId(s), ObjectId(s * 1000), state(s));
            pair.commit(&tick);
        }
    } else {
        fill(&mut pair, shards, 2, 0);
    }
    pair.enter("meadow", false);
    pair.run();
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    assert_eq!((stats.shards_fresh, stats.round_trips), (shards as u32, 1));
    pair.assert_in_sync("meadow");
    (stats.bytes_tx, stats.bytes_rx)
}

#[test]
fn a_warm_unchanged_entry_costs_little_more_for_more_shards() {
    let (tx64, rx64) = warm_entry_bytes(64, false);
    let (tx1k, rx1k) = warm_entry_bytes(1024, false);
    assert!(tx64 + rx64 <= 1024, "64 shards: {tx64} up, {rx64} down");
    let per_shard = (tx1k + rx1k - tx64 - rx64) as f64 / 960.0;
    assert!(per_shard <= 4.0, "{per_shard:.2} bytes per additional shard");
    // Shards that last changed at different seqs cost their hwm distance.
    let (tx, rx) = warm_entry_bytes(64, true);
    assert!(tx + rx <= 1024, "64 shards at 64 seqs: {tx} up, {rx} down");
}

#[test]
fn a_copy_consistent_with_itself_but_not_the_server_is_caught_by_the_root() {
    let mut pair = Pair::new("meadow", 4, 12);
    fill(&mut pair, 4, 20, 0);
    pair.enter("meadow", false);
    pair.run();
    // One object of shard 2 changes in the cache and the header follows it:
    // the copy checks out against itself, at the server's hwm.
    let key = ShardKey::new(SERVER, "world", None, ZoneId::new("meadow").expect("zone"), ShardId(2)).expect("key");
    let copy: &mut CachedShard = pair.cache.get_mut(&key).expect("cached");
    copy.objects[5].state = state(777_777);
    copy.header.digest = recompute_digest(&copy.objects);
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    // Its tag points at it: only it is repaired, and the root then confirms
    // the other three.
    assert_eq!(
        (stats.shards_fresh, stats.shards_repaired, stats.round_trips),
        (3, 1, 2)
    );
    pair.assert_in_sync("meadow");
}

/// Changes object 7 of `copy` (values from `from` on) until the copy's head
/// has the same `Fresh` tag as before (1 in 256 tries): a wrong copy only
/// the root can tell apart. Its header follows its objects.
fn forge_matching_tag(copy: &mut CachedShard, from: u64) {
    use hoard_proto::wire::head_tag;
    let h = copy.header.clone();
    let shard = h.key.shard;
    let tag = head_tag(shard, h.epoch, h.hwm, &h.digest);
    for n in from.. {
        copy.objects[7].state = state(n);
        copy.header.digest = recompute_digest(&copy.objects);
        if head_tag(shard, h.epoch, h.hwm, &copy.header.digest) == tag {
            return;
        }
    }
}

#[test]
fn a_wrong_copy_whose_tag_happens_to_match_is_caught_by_the_root() {
    let mut pair = Pair::new("meadow", 4, 13);
    fill(&mut pair, 4, 20, 0);
    pair.enter("meadow", false);
    pair.run();
    // Change one object of shard 1 until the copy's head has the same tag
    // as the server's (1 in 256): only the root can tell them apart.
    let key = ShardKey::new(SERVER, "world", None, ZoneId::new("meadow").expect("zone"), ShardId(1)).expect("key");
    let copy: &mut CachedShard = pair.cache.get_mut(&key).expect("cached");
    forge_matching_tag(copy, 1_000_000);
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    // No tag points anywhere, so every selected copy is repaired.
    assert_eq!(
        (stats.shards_fresh, stats.shards_repaired, stats.round_trips),
        (0, 4, 2)
    );
    pair.assert_in_sync("meadow");
}

#[test]
fn a_wrong_copy_the_tags_miss_is_caught_when_the_root_is_checked_again() {
    let mut pair = Pair::new("meadow", 4, 14);
    fill(&mut pair, 4, 20, 0);
    pair.enter("meadow", false);
    pair.run();
    let zone = ZoneId::new("meadow").expect("zone");
    // Shard 2 differs and its tag shows it; shard 1 differs behind a
    // matching tag.
    let key2 = ShardKey::new(SERVER, "world", None, zone.clone(), ShardId(2)).expect("key");
    let copy: &mut CachedShard = pair.cache.get_mut(&key2).expect("cached");
    copy.objects[4].state = state(555_555);
    copy.header.digest = recompute_digest(&copy.objects);
    let key1 = ShardKey::new(SERVER, "world", None, zone, ShardId(1)).expect("key");
    let copy: &mut CachedShard = pair.cache.get_mut(&key1).expect("cached");
    forge_matching_tag(copy, 2_000_000);
    pair.enter("meadow", false);
    pair.run();
    let stats = last_stats(&pair);
    // Shard 2 is repaired first; the root over its repaired head and the
    // others still differs, so the others are repaired in a second wave.
    assert_eq!(
        (stats.shards_fresh, stats.shards_repaired, stats.round_trips),
        (0, 4, 3)
    );
    pair.assert_in_sync("meadow");
}

/// The client rebuilds a zone's transient state from patches of the one it
/// holds, drops patches it holds no base for until a whole state comes, and
/// refuses a patch that reads past its base.
#[test]
fn a_transient_patch_applies_to_the_state_held_and_only_to_it() {
    use hoard_proto::sync::client::Effect;
    use hoard_proto::transient::base_tag;
    use hoard_proto::wire::{Message, PatchOp, Transient, TransientPatch};

    let mut pair = Pair::new("meadow", 1, 1);
    pair.enter("meadow", true);
    pair.run();
    let zone = ZoneId::new("meadow").expect("zone");
    let received = |pair: &mut Pair, msg: Message| {
        let len = msg.to_frame().len();
        let result = pair.client.handle(pair.net.now, msg, len);
        let mut states = Vec::new();
        while let Some(effect) = pair.client.poll_effect() {
            if let Effect::Transient { payload, .. } = effect {
                states.push(payload);
            }
        }
        result.map(|()| states)
    };
    let patch = |base: &[u8], ops: Vec<PatchOp>| {
        Message::TransientPatch(TransientPatch {
            zone: zone.clone(),
            base: base_tag(base).to_vec(),
            ops,
        })
    };
    // No base yet: dropped.
    assert_eq!(
        received(&mut pair, patch(b"abcdef", vec![PatchOp(0, 6, b"g".to_vec())])),
        Ok(vec![])
    );
    let whole = Message::Transient(Transient {
        zone: zone.clone(),
        payload: b"abcdef".to_vec(),
    });
    assert_eq!(received(&mut pair, whole), Ok(vec![b"abcdef".to_vec()]));
    assert_eq!(
        received(
            &mut pair,
            patch(b"abcdef", vec![PatchOp(0, 3, b"X".to_vec()), PatchOp(4, 2, vec![])])
        ),
        Ok(vec![b"abcXef".to_vec()])
    );
    // A patch of another base: dropped, and so are the ones after it until
    // a whole state.
    assert_eq!(
        received(&mut pair, patch(b"other", vec![PatchOp(0, 1, vec![])])),
        Ok(vec![])
    );
    assert_eq!(
        received(&mut pair, patch(b"abcXef", vec![PatchOp(0, 1, vec![])])),
        Ok(vec![])
    );
    // A patch that copies past its base is the server breaking the protocol.
    let whole = Message::Transient(Transient {
        zone: zone.clone(),
        payload: b"abc".to_vec(),
    });
    assert_eq!(received(&mut pair, whole), Ok(vec![b"abc".to_vec()]));
    assert!(received(&mut pair, patch(b"abc", vec![PatchOp(1, 3, vec![])])).is_err());
}
