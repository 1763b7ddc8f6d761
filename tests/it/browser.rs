//! The cross-client tests: a native client App and the browser client
//! (`web/`, in Debian's Chromium driven by `web/test/cross.mjs`) in one zone
//! of one server, which serves raw QUIC and WebTransport side by side; each
//! sees the change the other makes. And a browser through relays (each with
//! a WebTransport endpoint of its own): an honest relay's shards and deltas
//! verify against the world's signature; a relay that alters a shard (and
//! recomputes its digest, as a liar would) is caught.
//!
//! Needs `node`, `web/node_modules` (`npm ci` in `web/`) and Chromium at
//! `/usr/bin/chromium` (or `$CHROMIUM`); `.ci/test` installs them.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use bevy_app::App;
use hoard::net::quic::relay::tamper::Tamper;
use hoard::net::quic::relay::{RelayHandle, RelayOptions, start_relay, start_tampering_relay};
use hoard::prelude::*;
use hoard::server::{WEB_PATH, WebCertificate, WebEndpoint, WebTransportOptions};
use serde_json::{Value, json};

use super::apps::{AddStones, entered, registry, run_until, server, server_with, stones_of};

/// The browser half: a node process, killed when dropped.
struct Browser {
    child: Child,
    commands: ChildStdin,
    events: Receiver<Value>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web")
}

impl Browser {
    fn start(options: &Value) -> Browser {
        let web = web_dir();
        assert!(
            web.join("node_modules/playwright-core").is_dir(),
            "the browser client's packages are missing: run `npm ci` in web/ (.ci/test does)"
        );
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            std::path::Path::new(&chromium).exists(),
            "no Chromium at {chromium}: install Debian's `chromium` (.ci/test does) or set CHROMIUM"
        );
        let mut child = Command::new("node")
            .arg(web.join("test/cross.mjs"))
            .arg(options.to_string())
            .current_dir(&web)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (Node 20 or later on PATH)");
        let commands = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && tx.send(event).is_err()
                {
                    return;
                }
            }
        });
        Browser {
            child,
            commands,
            events,
        }
    }

    fn send(&mut self, command: Value) {
        writeln!(self.commands, "{command}").expect("the browser half takes commands");
    }

    /// Steps the server and the native client until the browser half says
    /// something, and returns it (failing on its `failed`, or after 60 s).
    fn next(&self, server: &mut App, native: &mut App) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            server.update();
            native.update();
            if let Ok(event) = self.events.recv_timeout(Duration::from_millis(2)) {
                assert_ne!(event["event"], "failed", "the browser half failed: {event}");
                return event;
            }
            assert!(Instant::now() < deadline, "the browser half said nothing for 60 s");
        }
    }
}

/// The hex of a hash.
fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The browser half's options for a page reaching `web`.
fn page_options(web: &WebEndpoint, token: &str, world: Option<&ServerIdentity>) -> Value {
    json!({
        "url": format!("https://127.0.0.1:{}{WEB_PATH}", web.addr.port()),
        "certificateHashes": web.certificate_hashes().iter().map(hex).collect::<Vec<_>>(),
        "token": token,
        "registry": [
            { "name": "crate", "version": 1 },
            { "name": "add_stones", "version": 1, "intent": true },
        ],
        "zone": "meadow",
        "world": world.map(ToString::to_string),
    })
}

#[test]
fn a_native_client_and_a_browser_see_each_others_changes() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("cache");
    let mut server = server_with(data.path(), |options| {
        options.web_transport = Some(WebTransportOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            certificate: WebCertificate::Development,
        });
    });
    let mut ann = entered(&mut server, cache.path(), "ann");
    let handle = &server.world().resource::<HoardServer>().handle;
    let web = handle.web.as_ref().expect("a WebTransport endpoint");
    let token = handle
        .auth
        .issue("bob", chrono::Utc::now().timestamp() + 600)
        .expect("token");
    let mut bob = Browser::start(&page_options(web, &token, None));

    let ready = bob.next(&mut server, &mut ann);
    assert_eq!(ready["event"], "ready", "{ready}");
    let stats = &ready["stats"];
    assert_eq!(stats["objects"], 40, "the browser sees the meadow's 40 crates: {stats}");
    assert_eq!(
        stats["snapshot"], stats["shards"],
        "a first visit is all snapshots: {stats}"
    );

    // The native player's change reaches the browser.
    ann.world()
        .resource::<Hoard>()
        .send(&AddStones { object: 7, stones: 5 })
        .expect("queued");
    run_until(&mut server, &mut [&mut ann], |w| stones_of(w, 7) == Some(5));
    bob.send(json!({ "expect": ["crate", 7, [5]] }));
    let seen = bob.next(&mut server, &mut ann);
    assert_eq!(seen["event"], "seen", "{seen}");

    // The browser player's change reaches the native one, once processed.
    bob.send(json!({ "act": ["add_stones", [8, 3]] }));
    let outcome = bob.next(&mut server, &mut ann);
    assert_eq!(outcome["event"], "processed", "{outcome}");
    run_until(&mut server, &mut [&mut ann], |w| stones_of(w, 8) == Some(3));

    // A live copy a delta does not follow (the page's copy of crate 10's
    // shard made to claim one seq less) is repaired, and the change shows.
    bob.send(json!({ "damage": 10 % 4 }));
    assert_eq!(bob.next(&mut server, &mut ann)["event"], "damaged");
    ann.world()
        .resource::<Hoard>()
        .send(&AddStones { object: 10, stones: 6 })
        .expect("queued");
    run_until(&mut server, &mut [&mut ann], |w| stones_of(w, 10) == Some(6));
    bob.send(json!({ "expect": ["crate", 10, [6]] }));
    let seen = bob.next(&mut server, &mut ann);
    assert_eq!(seen["event"], "seen", "{seen}");
    bob.send(json!({ "repairs": true }));
    let repairs = bob.next(&mut server, &mut ann);
    assert_eq!(repairs["live"], 1, "one repair mended the copy: {repairs}");

    // And a refusal reaches the browser with the game's code and reason.
    bob.send(json!({ "act": ["add_stones", [8, 1000]] }));
    let refused = bob.next(&mut server, &mut ann);
    assert_eq!(refused["event"], "refused", "{refused}");
    assert_eq!(refused["code"], super::apps::TOO_MANY, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("100 stones at most")),
        "{refused}"
    );
}

/// Starts a relay of `server`'s world with a WebTransport endpoint (lying
/// as `tamper` says), stepping the origin and `native` meanwhile.
fn relay_of(
    server: &mut App,
    native: &mut App,
    runtime: &tokio::runtime::Runtime,
    data: &std::path::Path,
    tamper: Option<Tamper>,
) -> RelayHandle {
    let handle = &server.world().resource::<HoardServer>().handle;
    // Each relay signs in upstream as a player of its own: two relays under
    // one name would replace each other's session at the origin (one
    // session per player), and the one starting would be refused.
    let name = if tamper.is_some() { "liar" } else { "relay" };
    let token = handle
        .auth
        .issue(name, chrono::Utc::now().timestamp() + 600)
        .expect("token");
    let options = RelayOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data.to_owned(),
        upstream: handle.addr,
        upstream_pin: Some(handle.identity),
        world: None,
        token,
        service: "world".into(),
        zones: Vec::new(),
        dev_mode: true,
        max_connections: 100,
        max_connections_per_ip: 100,
        carry_actions: false,
        web_transport: Some(WebTransportOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            certificate: WebCertificate::Development,
        }),
    };
    let started = match tamper {
        None => runtime.spawn(start_relay(options, registry())),
        Some(tamper) => runtime.spawn(start_tampering_relay(options, registry(), tamper)),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.is_finished() {
        server.update();
        native.update();
        assert!(Instant::now() < deadline, "the relay did not start in 30 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    runtime
        .block_on(started)
        .expect("the relay's task")
        .expect("the relay starts")
}

#[test]
fn a_browser_through_a_relay_checks_every_shard_against_the_worlds_signature() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("cache");
    let honest_dir = tempfile::tempdir().expect("relay");
    let liar_dir = tempfile::tempdir().expect("relay");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut server = server(data.path());
    let mut ann = entered(&mut server, cache.path(), "ann");
    let world = server.world().resource::<HoardServer>().handle.identity;

    // An honest relay: every shard and every delta verifies.
    let honest = relay_of(&mut server, &mut ann, &runtime, honest_dir.path(), None);
    assert_eq!(honest.world, world, "the relay speaks for the origin's world");
    let web = honest.server.web.as_ref().expect("the relay's WebTransport endpoint");
    let mut bob = Browser::start(&page_options(web, "dev:bob", Some(&world)));
    let ready = bob.next(&mut server, &mut ann);
    assert_eq!(ready["event"], "ready", "{ready}");
    assert_eq!(ready["stats"]["objects"], 40, "{ready}");
    assert_eq!(ready["stats"]["snapshot"], ready["stats"]["shards"], "{ready}");
    ann.world()
        .resource::<Hoard>()
        .send(&AddStones { object: 9, stones: 4 })
        .expect("queued");
    run_until(&mut server, &mut [&mut ann], |w| stones_of(w, 9) == Some(4));
    bob.send(json!({ "expect": ["crate", 9, [4]] }));
    let seen = bob.next(&mut server, &mut ann);
    assert_eq!(
        seen["event"], "seen",
        "the origin's change reaches the browser through the relay, signed: {seen}"
    );
    drop(bob);

    // A relay that flips a byte of each shard and recomputes its digest: the
    // digest check passes, the world's signature does not.
    let liar = relay_of(&mut server, &mut ann, &runtime, liar_dir.path(), Some(Tamper::FlipByte));
    let web = liar.server.web.as_ref().expect("the relay's WebTransport endpoint");
    let carl = Browser::start(&page_options(web, "dev:carl", Some(&world)));
    let refused = carl.next(&mut server, &mut ann);
    assert_eq!(refused["event"], "entry-failed", "{refused}");
    assert_eq!(refused["name"], "ProofError", "{refused}");
    assert!(
        refused["message"].as_str().is_some_and(|m| m.contains("signed head")),
        "{refused}"
    );
    // And a page that names another world is refused at sign-in.
    let other = ServerIdentity([7; 32]);
    let dave = Browser::start(&page_options(web, "dev:dave", Some(&other)));
    let refused = dave.next(&mut server, &mut ann);
    assert_eq!(refused["event"], "entry-failed", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("speaks for world")),
        "{refused}"
    );
    runtime.block_on(async {
        liar.shutdown().await;
        honest.shutdown().await;
    });
}
