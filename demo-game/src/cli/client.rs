//! `hoard-demo client`: joins a server. With `--headless --zone Z` it enters
//! the zone without a terminal and prints one JSON line per zone entry.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use clap::Args;
use hoard_bevy::Replicated;
use hoard_bevy::client::HoardEvent;
use hoard_engine::{ServerIdentity, ZoneId};
use hoard_net::quic::client::{ClientEvent, ClientOptions};

use crate::cli::app::ClientApp;
use crate::cli::session::Session;
use crate::game;
use crate::game::presence::Presence;

/// How long the server may take to answer the actions, or to show what
/// `--expect-item` / `--expect-player` wait for.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Options of the client.
///
/// Example: `hoard-demo client --server 127.0.0.1:7000 --token $(hoard-demo server token --player ann)`
/// plays in the terminal; add `--headless --zone meadow --exit-after-ready`
/// to print the entry as a JSON line and exit.
#[derive(Args)]
pub(crate) struct ClientArgs {
    /// The server's address; or the world's servers' addresses,
    /// comma-separated (`A,B,C`), tried in order until one answers (a dead
    /// server is not a dead end; any of a world's servers sends the player
    /// on to the one serving their zone).
    #[arg(long, default_value = "127.0.0.1:7000", value_delimiter = ',', num_args = 1)]
    server: Vec<SocketAddr>,
    /// The cache root (default: $XDG_CACHE_HOME/hoard, or ~/.cache/hoard).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The player's token.
    #[arg(long)]
    token: String,
    /// The player's intent key (a PASERK `k4.secret.…` file, as
    /// `hoard-demo server token --new-key FILE` writes it), when the token
    /// binds one: every action is then signed with it, so it can go
    /// through any relay.
    #[arg(long, value_name = "FILE")]
    player_key: Option<PathBuf>,
    /// Require this server fingerprint (otherwise trust on first use).
    #[arg(long)]
    fingerprint: Option<ServerIdentity>,
    /// The world's fingerprint, when --server is a relay of it: the cache
    /// is the world's (valid through any relay and at the world's server),
    /// and every shard is checked against the world's signatures.
    #[arg(long)]
    world: Option<ServerIdentity>,
    /// Run without a terminal: enter --zone and print JSON lines.
    #[arg(long)]
    headless: bool,
    /// Ask for answers and deltas uncompressed (to compare the bytes).
    #[arg(long)]
    no_compression: bool,
    /// The zone to enter.
    #[arg(long, default_value = "meadow")]
    zone: ZoneId,
    /// Exit once the zone is ready (and every --act and --say answered, any --expect-chat, --expect-item or
    /// --expect-player seen).
    #[arg(long)]
    exit_after_ready: bool,
    /// An action to send once the zone is ready, as JSON (repeatable), e.g.
    /// `{"Move":{"zone":0,"x":40,"y":41}}` or `{"PickUp":{"object":7}}`.
    #[arg(long)]
    act: Vec<String>,
    /// A chat line to say to the zone once it is ready (repeatable; say it
    /// after a `--act` Move, so you stand somewhere).
    #[arg(long)]
    say: Vec<String>,
    /// Wait (up to 10 s) until someone says TEXT in the zone, then print who.
    #[arg(long, value_name = "TEXT")]
    expect_chat: Option<String>,
    /// Wait (up to 10 s) until item ID lies at X,Y, then print it: `ID:X:Y`.
    #[arg(long, value_name = "ID:X:Y")]
    expect_item: Option<String>,
    /// Wait (up to 10 s) until player NAME is in the zone, then print where.
    #[arg(long, value_name = "NAME")]
    expect_player: Option<String>,
}

impl ClientArgs {
    /// Whether the client runs without its terminal UI.
    pub(crate) fn headless(&self) -> bool {
        self.headless
    }
}

/// The player key to sign actions with: the one in `file`, which must be
/// the key `token` binds; none if the token binds none.
fn player_key(
    token: &str,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<hoard_proto::intent_sig::PlayerKey>> {
    let bound = hoard_proto::world_token::bound_key(token);
    match (bound, file) {
        (None, None) => Ok(None),
        (None, Some(path)) => anyhow::bail!(
            "--player-key {}: the token binds no player key, so actions are not signed; mint a token with the key bound",
            path.display()
        ),
        (Some(_), None) => anyhow::bail!(
            "the token binds a player key: give its key file with --player-key FILE (actions are signed with it)"
        ),
        (Some(bound), Some(path)) => {
            let key = read_player_key(path)?;
            anyhow::ensure!(
                key.public() == bound,
                "--player-key {}: not the key the token binds ({})",
                path.display(),
                hoard_proto::world_token::TokenKey::from_bytes(bound).paserk()
            );
            Ok(Some(key))
        }
    }
}

/// Reads a player key file (a PASERK `k4.secret.…`).
fn read_player_key(path: &std::path::Path) -> anyhow::Result<hoard_proto::intent_sig::PlayerKey> {
    let text = anyhow::Context::with_context(std::fs::read_to_string(path), || {
        format!("reading the player key {}", path.display())
    })?;
    hoard_proto::intent_sig::PlayerKey::from_paserk(&text)
        .map_err(|e| anyhow::anyhow!("--player-key {}: {e}", path.display()))
}

pub(crate) fn run(args: ClientArgs) -> anyhow::Result<i32> {
    let cache_dir = args.cache_dir.unwrap_or_else(crate::cli::cache::default_cache_dir);
    if !args.headless {
        let log = cache_dir.join("client.log");
        crate::cli::logging::to_file(&log, "info,quinn=warn,rustls=warn");
        eprintln!("hoard-demo: logging to {}", log.display());
    }
    let player_key = player_key(&args.token, args.player_key.as_deref())?;
    let server = *args
        .server
        .first()
        .ok_or_else(|| anyhow::anyhow!("--server: give an address"))?;
    let mut options = ClientOptions::new(server, cache_dir, args.token);
    options.pin = args.fingerprint;
    options.world = args.world;
    options.compression = !args.no_compression;
    options.player_key = player_key;
    // The client is a Bevy App on `HoardClientPlugin`; dropping it closes
    // the connection and releases the cache.
    // The zone is entered as part of connecting: `EnterZone` right behind
    // `Hello`, one round trip after the handshake.
    if !args.headless {
        let (app, stats) = ClientApp::connect_entered_any(options, &args.server, &args.zone)?;
        let mut session = Session::start(app, args.zone, stats)?;
        let result = session.run_terminal();
        let last = session.last_entry().cloned();
        session.leave()?;
        if let Some(stats) = last {
            println!("{}", crate::tui::status(&stats));
        }
        return result.map(|()| 0);
    }
    let (mut app, stats) = ClientApp::connect_entered_any(options, &args.server, &args.zone)?;
    println!(
        "{}",
        serde_json::json!({
            "event": "zone_ready",
            "zone": args.zone.as_str(),
            "shards": stats.shards,
            "shards_fresh": stats.shards_fresh,
            "shards_delta": stats.shards_delta,
            "shards_snapshot": stats.shards_snapshot,
            "shards_repaired": stats.shards_repaired,
            "objects": stats.objects,
            "bytes_rx": stats.bytes_rx,
            "bytes_tx": stats.bytes_tx,
            "round_trips": stats.round_trips,
            "elapsed_ms": stats.elapsed_ms,
        })
    );
    let mut unanswered = std::collections::HashMap::new();
    let hoard = app.hoard();
    for act in &args.act {
        let action: crate::game::rules::Action =
            serde_json::from_str(act).map_err(|e| anyhow::anyhow!("--act {act}: {e}"))?;
        let seq = hoard.send_intent(crate::game::rules::ACTION, &action)?;
        unanswered.insert(seq, act.clone());
    }
    for line in &args.say {
        let say = crate::game::chat::Say { text: line.clone() };
        let seq = hoard.send_intent(crate::game::chat::SAY, &say)?;
        unanswered.insert(seq, format!("--say {line:?}"));
    }
    // Each action is answered: processed (and its effects durable and
    // already received) or rejected.
    if !unanswered.is_empty() {
        app.until(
            ANSWER_WITHIN,
            "waiting for the server to answer the actions",
            |_, events| {
                for event in events {
                    match event {
                        HoardEvent::Client(ClientEvent::IntentsProcessed { seqs }) => {
                            for seq in seqs {
                                unanswered.remove(seq);
                            }
                        }
                        HoardEvent::Client(ClientEvent::IntentRejected { seq, code, message }) => {
                            let act = unanswered.remove(seq).unwrap_or_default();
                            return Some(Err(anyhow::anyhow!("--act {act} was rejected ({code}): {message}")));
                        }
                        HoardEvent::Failed(e) => return Some(Err(anyhow::anyhow!("{e}"))),
                        _ => {}
                    }
                }
                unanswered.is_empty().then_some(Ok(()))
            },
        )?;
    }
    if let Some(expected) = &args.expect_chat {
        let from = app.until(
            ANSWER_WITHIN,
            &format!("waiting for someone to say {expected:?}"),
            |_, events| {
                events.iter().find_map(|event| match event {
                    HoardEvent::Client(ClientEvent::GameMessage { kind, payload, .. })
                        if kind == crate::game::chat::CHAT =>
                    {
                        rmp_serde::from_slice::<crate::game::chat::Chat>(payload)
                            .ok()
                            .filter(|chat| chat.text == *expected)
                            .map(|chat| Ok(chat.from))
                    }
                    _ => None,
                })
            },
        )?;
        println!(
            "{}",
            serde_json::json!({ "event": "chat", "from": from, "text": expected })
        );
    }
    if let Some(expect) = &args.expect_item {
        let parts: Vec<u64> = expect.split(':').map(str::parse).collect::<Result<_, _>>()?;
        let [id, x, y] = parts[..] else {
            anyhow::bail!("--expect-item takes ID:X:Y")
        };
        let mut seen = Vec::new();
        let found = app.until(
            ANSWER_WITHIN,
            &format!("waiting for item {id} at {x},{y}"),
            |world, _| {
                seen = world
                    .query::<(&Replicated, &game::Item)>()
                    .iter(world)
                    .filter(|(r, _)| r.object.0 == id)
                    .map(|(_, i)| (i.x, i.y))
                    .collect::<Vec<_>>();
                (seen == [(x as u16, y as u16)]).then_some(Ok(()))
            },
        );
        found.map_err(|e| anyhow::anyhow!("{e} (seen at {seen:?})"))?;
        println!(
            "{}",
            serde_json::json!({ "event": "item", "object": id, "x": x, "y": y, "copies": 1 })
        );
    }
    if let Some(name) = &args.expect_player {
        let hoard = app.hoard();
        let zone = args.zone.clone();
        let (x, y) = app.until(
            ANSWER_WITHIN,
            &format!("waiting for player {name} in {zone}"),
            |_, _| {
                let presence = hoard.transient(&zone).map(|b| Presence::decode(&b)).unwrap_or_default();
                presence
                    .0
                    .iter()
                    .find(|(n, ..)| n == name)
                    .map(|(_, x, y)| Ok((*x, *y)))
            },
        )?;
        println!(
            "{}",
            serde_json::json!({ "event": "player", "name": name, "x": x, "y": y })
        );
    }
    if !args.exit_after_ready {
        // Stay in the zone until the connection ends.
        loop {
            app.frame()?;
            std::thread::sleep(crate::cli::app::FRAME);
        }
    }
    Ok(0)
}
