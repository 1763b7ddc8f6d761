//! Answer slots shared fairly: 64 connections from two addresses that ask
//! for zones and then stop reading do not hold up another player's zone
//! entry, warm or cold, while they stall.

use std::net::IpAddr;
use std::time::Duration;

use hoard_engine::ZoneId;
use hoard_net::quic::client::HoardClient;
use hoard_net::testing::{FrozenReader, frozen_endpoint, frozen_reader, hello_and_cold_entries, stalled};

use super::bad_input::{registry, server_with};
use super::e2e::options;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stall_from_two_addresses_do_not_hold_up_another_players_entry() {
    let data = tempfile::tempdir().expect("tempdir");
    // Answers that stall are given a minute before their connections are
    // closed as slow consumers: the honest entries below must not wait for
    // that (with one shared pool they did, every one of them).
    let server = server_with(data.path(), 1000, false, 20_000, |o| {
        o.answer_stall = Duration::from_secs(60);
    })
    .await;
    let meadow = ZoneId::new("meadow").expect("zone");
    // A returning player's cache, filled before the attack.
    let warm = tempfile::tempdir().expect("tempdir");
    let first = HoardClient::connect(options(&server, warm.path(), "alice"), registry())
        .await
        .expect("connect");
    first.enter_zone(&meadow).await.expect("first entry");
    first.close_and_wait(Duration::from_secs(1)).await;

    // 32 connections from each of two addresses (the per-address limit),
    // each signing in and asking for two cold entries of a zone whose
    // answer is larger than its receive window, then reading nothing.
    let mut hostile: Vec<FrozenReader> = Vec::new();
    for ip in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        let endpoint = frozen_endpoint(IpAddr::from(ip), server.identity).expect("endpoint");
        for i in 0..32 {
            let token = server
                .auth
                .issue(&format!("mallory-{}-{i}", ip[3]), chrono::Utc::now().timestamp() + 600)
                .expect("token");
            let frames = hello_and_cold_entries(registry().hash().0, token, &meadow, 2);
            hostile.push(frozen_reader(&endpoint, server.addr, &frames).await.expect("hostile"));
        }
    }
    // Their answers fill their windows and stall: each address's share of
    // the slots (16) is held by answers that stall now.
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if stalled(&hostile) >= 16 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every hostile connection got an answer to stall");

    // A returning player's warm entry, and a new player's cold one.
    let returning = entry_within(&server, warm.path(), "alice", &meadow)
        .await
        .expect("a warm entry is not held up by the stalled answers");
    assert_eq!(returning.shards_snapshot, 0, "warm: {returning:?}");
    let cold_cache = tempfile::tempdir().expect("tempdir");
    let newcomer = entry_within(&server, cold_cache.path(), "bob", &meadow)
        .await
        .expect("a cold entry is not held up by the stalled answers");
    assert_eq!(newcomer.objects, 20_000);
    // The hostile connections still stall (none was closed to make room).
    let open = hostile.iter().filter(|h| h.conn.close_reason().is_none()).count();
    assert_eq!(open, hostile.len(), "the stalled connections are all still open");
    server.shutdown().await;
}

/// `player` connects with `cache` and enters `zone`, within 30 s (half the
/// stall the hostile answers are given), or `None`.
async fn entry_within(
    server: &hoard_net::quic::server::ServerHandle,
    cache: &std::path::Path,
    player: &str,
    zone: &ZoneId,
) -> Option<hoard_proto::sync::client::EntryStats> {
    tokio::time::timeout(Duration::from_secs(30), async {
        let client = HoardClient::connect(options(server, cache, player), registry())
            .await
            .expect("connect");
        let stats = client.enter_zone(zone).await.expect("entry");
        client.close();
        stats
    })
    .await
    .ok()
}
