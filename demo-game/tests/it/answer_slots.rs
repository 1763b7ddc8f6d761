//! A server process beside 64 connections from two addresses that sign in,
//! ask for two cold entries each and stop reading (their windows frozen at
//! 64 KiB): a returning player and a new one still enter at once, while
//! those connections stall, rather than after they are closed as slow
//! consumers (15 s).

use std::net::IpAddr;
use std::time::Duration;

use hoard_engine::{ServerIdentity, ZoneId};
use hoard_net::testing::{FrozenReader, frozen_endpoint, frozen_reader, hello_and_cold_entries, stalled};

use crate::server_client::{enter, server, token};

#[test]
fn connections_that_stall_their_answers_do_not_hold_up_other_players() {
    let data = tempfile::tempdir().expect("tempdir");
    let served = server(data.path());
    let warm = tempfile::tempdir().expect("tempdir");
    let alice = token(data.path(), "alice");
    let first = enter(&served, warm.path(), &alice, "meadow");
    assert_eq!(first["shards_snapshot"], 64);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let identity: ServerIdentity = served.fingerprint.parse().expect("fingerprint");
    let addr = served.addr.parse().expect("addr");
    let registry = hoard_demo::registry().hash().0;
    let meadow = ZoneId::new("meadow").expect("zone");
    let tokens: Vec<String> = (0..64).map(|i| token(data.path(), &format!("mallory-{i}"))).collect();
    let hostile: Vec<FrozenReader> = runtime.block_on(async {
        let mut hostile = Vec::new();
        for (a, ip) in [[127, 0, 0, 2], [127, 0, 0, 3]].into_iter().enumerate() {
            let endpoint = frozen_endpoint(IpAddr::from(ip), identity).expect("endpoint");
            for i in 0..32 {
                let frames = hello_and_cold_entries(registry, tokens[a * 32 + i].clone(), &meadow, 2);
                hostile.push(frozen_reader(&endpoint, addr, &frames).await.expect("hostile"));
            }
        }
        // Each address fills its share of the answer slots (16) with answers
        // that stall.
        tokio::time::timeout(Duration::from_secs(10), async {
            while stalled(&hostile) < 16 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the hostile answers stall");
        hostile
    });

    let returning = enter(&served, warm.path(), &alice, "meadow");
    assert_eq!(returning["shards_snapshot"], 0, "{returning}");
    let cold = tempfile::tempdir().expect("tempdir");
    let newcomer = enter(&served, cold.path(), &token(data.path(), "bob"), "meadow");
    assert_eq!(newcomer["shards_snapshot"], 64, "{newcomer}");
    // Both entered while every hostile connection was still stalled, not
    // after the slow consumers were closed.
    let open = hostile.iter().filter(|h| h.conn.close_reason().is_none()).count();
    assert_eq!(open, 64, "the entries did not wait for the stalled connections to go");
    drop(runtime);
}
