//! The journeys a game relies on: a cold entry, a warm re-entry from the
//! cache, a live change seen by a second client, a refused intent, and a
//! client dropped without closing.

use hoard::prelude::*;

use super::apps::{AddStones, Crate, client, ready, run_until, server, stones_of};

#[test]
fn cold_entry_then_a_warm_reentry_from_the_cache() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut server = server(data.path());
    let mut first = client(&server, cache.path(), "ann");
    run_until(&mut server, &mut [&mut first], |w| ready(w).is_some());
    let cold = ready(first.world()).expect("ready");
    assert_eq!(
        (cold.objects, cold.shards_snapshot),
        (40, 4),
        "cold: every shard fetched whole"
    );
    let crates = first.world_mut().query::<&Crate>().iter(first.world()).count();
    assert_eq!(crates, 40, "the objects are entities");
    drop(first); // without close: the cache is released

    let mut again = client(&server, cache.path(), "ann");
    run_until(&mut server, &mut [&mut again], |w| ready(w).is_some());
    let warm = ready(again.world()).expect("ready");
    assert_eq!(
        (warm.objects, warm.shards_fresh),
        (40, 4),
        "warm: every shard fresh from the cache"
    );
    assert!(
        warm.bytes_rx < cold.bytes_rx / 4,
        "warm {} bytes vs cold {}",
        warm.bytes_rx,
        cold.bytes_rx
    );
}

#[test]
fn a_change_one_player_makes_is_seen_by_another() {
    let data = tempfile::tempdir().expect("tempdir");
    let (ann_cache, bob_cache) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let mut server = server(data.path());
    let mut ann = client(&server, ann_cache.path(), "ann");
    let mut bob = client(&server, bob_cache.path(), "bob");
    run_until(&mut server, &mut [&mut ann, &mut bob], |w| ready(w).is_some());
    run_until(&mut server, &mut [&mut bob, &mut ann], |w| ready(w).is_some());
    ann.world()
        .resource::<Hoard>()
        .send_intent("add_stones", &AddStones { object: 7, stones: 3 })
        .expect("queued");
    run_until(&mut server, &mut [&mut bob, &mut ann], |w| stones_of(w, 7) == Some(3));
    assert_eq!(stones_of(ann.world_mut(), 7), Some(3));
}

#[test]
fn an_intent_the_server_does_not_know_is_rejected_by_seq() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let mut server = server(data.path());
    let mut ann = client(&server, cache.path(), "ann");
    run_until(&mut server, &mut [&mut ann], |w| ready(w).is_some());
    let seq = ann
        .world()
        .resource::<Hoard>()
        .send_intent("teleport", &AddStones { object: 1, stones: 1 })
        .expect("queued");
    run_until(&mut server, &mut [&mut ann], |w| {
        w.resource::<super::apps::Seen>()
            .events
            .iter()
            .any(|e| matches!(e, HoardEvent::Client(ClientEvent::IntentRejected { seq: s, .. }) if *s == seq))
    });
    assert_eq!(stones_of(ann.world_mut(), 1), Some(0), "nothing applied");
}
