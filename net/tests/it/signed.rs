//! World tokens and signed actions through relays that hold no secret: the
//! relay checks the world's tokens with the world's signed token keys, and
//! carries a player's signed intents to the origin, which catches a relay
//! that alters, drops, reorders or replays one.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hoard_engine::{ServerIdentity, ZoneId};
use hoard_net::quic::client::{ClientError, ClientEvent, ClientOptions, ClientUpdate, HoardClient};
use hoard_net::quic::relay::tamper::IntentTamper;
use hoard_net::quic::relay::{RelayHandle, RelayOptions, start_intent_tampering_relay, start_relay};
use hoard_net::quic::server::ServerHandle;
use hoard_proto::intent_sig::PlayerKey;

use crate::e2e::{AddStones, registry, server};

fn zone() -> ZoneId {
    ZoneId::new("meadow").expect("zone")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A relay of `origin` whose data directory holds none of the world's
/// secrets (no `token.secret`, no `token.key` of the world's), and that is
/// not trusted to carry actions.
fn untrusted(data: &Path, origin: &ServerHandle) -> RelayOptions {
    RelayOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data.to_owned(),
        upstream: origin.addr,
        upstream_pin: Some(origin.identity),
        world: None,
        token: origin.auth.issue("relay-one", now() + 3600).expect("token"),
        service: "world".into(),
        zones: Vec::new(),
        dev_mode: false,
        max_connections: 100,
        max_connections_per_ip: 100,
        carry_actions: false,
        web_transport: None,
    }
}

/// ann's options through `relay`, with `token` and her intent key.
fn ann(
    relay: &RelayHandle,
    world: ServerIdentity,
    cache: &Path,
    token: String,
    key: Option<PlayerKey>,
) -> ClientOptions {
    let mut options = ClientOptions::new(relay.addr(), cache.to_owned(), token).with_pin(relay.server.identity);
    options.world = Some(world);
    options.player_key = key;
    options
}

fn refusal(result: Result<HoardClient, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Refused { code, message }) => (code, message),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("signed in with a token the relay should refuse"),
    }
}

/// Waits for the answers to `seqs`: processed, or why not.
async fn answers(client: &HoardClient, seqs: &[u32]) -> Vec<Result<u32, String>> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while out.len() < seqs.len() {
            client.changed().await;
            for u in client.take_updates() {
                match u {
                    ClientUpdate::Event(ClientEvent::IntentsProcessed { seqs: done }) => {
                        out.extend(done.into_iter().filter(|s| seqs.contains(s)).map(Ok));
                    }
                    ClientUpdate::Event(ClientEvent::IntentRejected { seq, message, .. }) if seqs.contains(&seq) => {
                        out.push(Err(message));
                    }
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("every intent answered");
    out
}

/// Sends one `add_stones` of `stones` to crate 2005 and waits for it to be
/// processed at the origin.
async fn acts(client: &HoardClient, stones: u32, why: &str) {
    let seq = client
        .send_intent("add_stones", &AddStones { object: 2005, stones })
        .await
        .expect("sent");
    assert_eq!(answers(client, &[seq]).await, vec![Ok(seq)], "{why}");
}

/// Waits for the session to end; returns the seqs processed meanwhile and
/// the reason it ended.
async fn until_ended(client: &HoardClient) -> (Vec<u32>, String) {
    let mut processed = Vec::new();
    let reason = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            client.changed().await;
            for u in client.take_updates() {
                match u {
                    ClientUpdate::Event(ClientEvent::IntentsProcessed { seqs }) => processed.extend(seqs),
                    ClientUpdate::Event(ClientEvent::Disconnected { reason }) => return reason,
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("the session ends");
    (processed, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_secrets_checks_world_tokens_and_carries_signed_actions() {
    let (data, other_data, relay_data, cache) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let origin = server(data.path(), 4, 25).await;
    let relay = start_relay(untrusted(relay_data.path(), &origin), registry())
        .await
        .expect("relay");
    assert!(
        !relay_data.path().join("token.secret").exists() || {
            let world_secret = std::fs::read(data.path().join("token.secret")).expect("secret");
            std::fs::read(relay_data.path().join("token.secret")).expect("secret") != world_secret
        }
    );

    // Refused: a forged token (a byte of its claims changed), an expired
    // one, another world's.
    let key = PlayerKey::generate();
    let token = origin
        .auth
        .issue_with_key("ann", now() + 3600, Some(&key.public()))
        .expect("token");
    let mut forged = token.clone().into_bytes();
    forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let expired = origin
        .auth
        .issue_with_key("ann", now() - 10, Some(&key.public()))
        .expect("token");
    let other = server(other_data.path(), 1, 1).await;
    let foreign = other
        .auth
        .issue_with_key("ann", now() + 3600, Some(&key.public()))
        .expect("token");
    for (bad, code, why) in [
        (forged, 4, "forged"),
        (expired, 5, "expired"),
        (foreign, 4, "does not accept"),
    ] {
        let (got, message) =
            refusal(HoardClient::connect(ann(&relay, origin.identity, cache.path(), bad, None), registry()).await);
        assert_eq!(got, code, "{message}");
        assert!(message.contains(why) || code == 5, "{message}");
    }
    other.shutdown().await;

    // A client without the key its token binds cannot act (told at once).
    let keyless = HoardClient::connect(
        ann(&relay, origin.identity, cache.path(), token.clone(), None),
        registry(),
    )
    .await
    .expect("signs in");
    let refused = keyless
        .send_intent(
            "add_stones",
            &AddStones {
                object: 2005,
                stones: 1,
            },
        )
        .await
        .expect_err("an unsigned intent with a token binding a key");
    assert!(refused.to_string().contains("player_key"), "{refused}");
    keyless.close_and_wait(Duration::from_secs(2)).await;
    drop(keyless);

    // Accepted, and her signed action goes through to the origin.
    let client = HoardClient::connect(ann(&relay, origin.identity, cache.path(), token, Some(key)), registry())
        .await
        .expect("ann signs in at the relay with her world token");
    client.enter_zone(&zone()).await.expect("enter");
    acts(&client, 10, "processed at the origin").await;
    client.close_and_wait(Duration::from_secs(2)).await;
    drop(client);

    // A relay of that relay: the world's token keys come down signed by the
    // world, and ann's signed action goes up two hops.
    let second_data = tempfile::tempdir().expect("tempdir");
    let mut second = untrusted(second_data.path(), &origin);
    (second.upstream, second.upstream_pin, second.world) =
        (relay.addr(), Some(relay.server.identity), Some(origin.identity));
    second.token = origin.auth.issue("relay-two", now() + 3600).expect("token");
    let second = start_relay(second, registry()).await.expect("second relay");
    let key = PlayerKey::generate();
    let token = origin
        .auth
        .issue_with_key("ann", now() + 3600, Some(&key.public()))
        .expect("token");
    let cache = tempfile::tempdir().expect("tempdir");
    let client = HoardClient::connect(
        ann(&second, origin.identity, cache.path(), token, Some(key)),
        registry(),
    )
    .await
    .expect("ann signs in two relays away");
    acts(&client, 1, "processed at the origin, two hops up").await;
    assert_eq!(origin.stats.bad_intents.load(Ordering::Relaxed), 0);
    client.close_and_wait(Duration::from_secs(2)).await;
    drop(client);
    second.shutdown().await;
    relay.shutdown().await;
    origin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_catches_a_relay_that_alters_drops_reorders_or_replays_an_intent() {
    let data = tempfile::tempdir().expect("tempdir");
    let origin = server(data.path(), 4, 25).await;
    for (n, tamper) in [
        IntentTamper::Alter,
        IntentTamper::Drop,
        IntentTamper::Reorder,
        IntentTamper::Replay,
    ]
    .into_iter()
    .enumerate()
    {
        let (relay_data, cache) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let liar = start_intent_tampering_relay(untrusted(relay_data.path(), &origin), registry(), tamper)
            .await
            .expect("relay");
        let key = PlayerKey::generate();
        let token = origin
            .auth
            .issue_with_key("ann", now() + 3600, Some(&key.public()))
            .expect("token");
        let client = HoardClient::connect(ann(&liar, origin.identity, cache.path(), token, Some(key)), registry())
            .await
            .expect("ann signs in");
        let mut seqs = Vec::new();
        for _ in 0..2 {
            let act = AddStones {
                object: 2006,
                stones: 1,
            };
            seqs.push(client.send_intent("add_stones", &act).await.expect("sent"));
        }
        // The origin ends the player's session there: the lie is caught.
        tokio::time::timeout(Duration::from_secs(15), async {
            while origin.stats.bad_intents.load(Ordering::Relaxed) <= n as u64 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{tamper:?}: the origin did not catch it"));
        // The player's session ends too, with the origin's reason; the
        // second intent was not applied (bar a replay's, taken once).
        let (processed, reason) = until_ended(&client).await;
        assert!(
            reason.contains("closed your session through this relay"),
            "{tamper:?}: {reason}"
        );
        if tamper != IntentTamper::Replay {
            assert!(
                !processed.contains(&seqs[1]),
                "{tamper:?}: intent {} was applied",
                seqs[1]
            );
        }
        client.close_and_wait(Duration::from_secs(2)).await;
        drop(client);
        liar.shutdown().await;
    }
    assert_eq!(origin.stats.bad_intents.load(Ordering::Relaxed), 4);
    origin.shutdown().await;
}

/// docs/examples/mint_token.py mints a token with a stock PASETO package
/// (`pyseto`, as an account service in Python would) that signs in, binding
/// the player's key, and whose signed action the origin processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_by_the_python_script_signs_in_and_acts() {
    let (data, cache) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let origin = server(data.path(), 4, 25).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/mint_token.py");
    let key = PlayerKey::generate();
    let minted = std::process::Command::new("python3")
        .arg(&script)
        .arg(data.path().join("token.key"))
        .arg(origin.identity.to_string())
        .args(["ann", "1", &key.public_paserk()])
        .output()
        .expect("python3 runs");
    assert!(
        minted.status.success(),
        "mint_token.py failed (it needs `pip install pyseto`; .ci/test installs it): {}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8(minted.stdout).expect("utf-8").trim().to_owned();
    assert!(token.starts_with("v4.public."), "{token}");
    let mut options = ClientOptions::new(origin.addr, cache.path().to_owned(), token).with_pin(origin.identity);
    options.player_key = Some(key);
    let client = HoardClient::connect(options, registry())
        .await
        .expect("the Python-minted token signs in");
    assert_eq!(client.perspective(), "ann");
    client.enter_zone(&zone()).await.expect("enter");
    acts(&client, 1, "a signed action at the origin").await;
    client.close_and_wait(Duration::from_secs(2)).await;
    drop(client);
    origin.shutdown().await;
}
