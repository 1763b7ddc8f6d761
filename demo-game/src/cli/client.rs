//! `hoard-demo client`: joins a server. With `--headless --zone Z` it enters
//! the zone without a terminal and prints one JSON line per zone entry.

use std::net::SocketAddr;
use std::path::PathBuf;

use bevy_ecs::world::World;
use clap::Args;
use hoard_engine::{ServerIdentity, ZoneId};
use hoard_net::quic::client::{ClientEvent, ClientOptions, HoardClient};

use crate::cli::session::Session;
use crate::game;
use crate::game::presence::Presence;

/// Options of the client.
///
/// Example: `hoard-demo client --server 127.0.0.1:7000 --token $(hoard-demo server token --player ann)`
/// plays in the terminal; add `--headless --zone meadow --exit-after-ready`
/// to print the entry as a JSON line and exit.
#[derive(Args)]
pub(crate) struct ClientArgs {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    server: SocketAddr,
    /// The cache root (default: $XDG_CACHE_HOME/hoard, or ~/.cache/hoard).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The player's token.
    #[arg(long)]
    token: String,
    /// Require this server fingerprint (otherwise trust on first use).
    #[arg(long)]
    fingerprint: Option<ServerIdentity>,
    /// Run without a terminal: enter --zone and print JSON lines.
    #[arg(long)]
    headless: bool,
    /// The zone to enter.
    #[arg(long, default_value = "meadow")]
    zone: ZoneId,
    /// Exit once the zone is ready (and every --act answered, any --expect-item or --expect-player seen).
    #[arg(long)]
    exit_after_ready: bool,
    /// An action to send once the zone is ready, as JSON (repeatable), e.g.
    /// `{"Move":{"zone":0,"x":40,"y":41}}` or `{"PickUp":{"object":7}}`.
    #[arg(long)]
    act: Vec<String>,
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

pub(crate) fn run(args: ClientArgs) -> anyhow::Result<i32> {
    let cache_dir = args.cache_dir.unwrap_or_else(crate::cli::cache::default_cache_dir);
    if !args.headless {
        let log = cache_dir.join("client.log");
        crate::cli::logging::to_file(&log, "info,quinn=warn,rustls=warn");
        eprintln!("hoard-demo: logging to {}", log.display());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let options = ClientOptions {
            server: args.server,
            cache_dir,
            token: args.token,
            service: "world".into(),
            pin: args.fingerprint,
        };
        let client = HoardClient::connect(options, game::registry()).await?;
        if !args.headless {
            let player = client.perspective().to_owned();
            let mut session = Session::start(&client, &player, args.zone).await?;
            let result = tokio::task::block_in_place(|| session.run_terminal());
            session.leave().await?;
            client.close();
            if let Some(stats) = session.last_entry() {
                println!("{}", crate::tui::status(stats));
            }
            return result.map(|()| 0);
        }
        let stats = crate::cli::session::enter_with_progress(&client, &args.zone).await?;
        let mut world = World::new();
        client.update(&mut world);
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
        for act in &args.act {
            let action: crate::game::rules::Action =
                serde_json::from_str(act).map_err(|e| anyhow::anyhow!("--act {act}: {e}"))?;
            let seq = client.send_intent(crate::game::rules::ACTION, &action).await?;
            unanswered.insert(seq, act.clone());
        }
        // Each action is answered: processed (and its effects durable and
        // already received) or rejected.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !unanswered.is_empty() {
            for event in client.update(&mut world) {
                match event {
                    ClientEvent::IntentsProcessed { seqs } => {
                        for seq in seqs {
                            unanswered.remove(&seq);
                        }
                    }
                    ClientEvent::IntentRejected { seq, message } => {
                        let act = unanswered.remove(&seq).unwrap_or_default();
                        anyhow::bail!("--act {act} was rejected: {message}");
                    }
                    ClientEvent::Disconnected { reason } => anyhow::bail!("disconnected: {reason}"),
                    _ => {}
                }
            }
            if unanswered.is_empty() {
                break;
            }
            tokio::time::timeout_at(deadline, client.changed())
                .await
                .map_err(|_| anyhow::anyhow!("the server did not answer {} action(s) within 10 s", unanswered.len()))?;
        }
        if let Some(expect) = &args.expect_item {
            let parts: Vec<u64> = expect.split(':').map(str::parse).collect::<Result<_, _>>()?;
            let [id, x, y] = parts[..] else {
                anyhow::bail!("--expect-item takes ID:X:Y")
            };
            wait_for(&client, &mut world, |world| {
                let found: Vec<(u16, u16)> = world
                    .query::<(&hoard_net::quic::client::Replicated, &game::Item)>()
                    .iter(world)
                    .filter(|(r, _)| r.object.0 == id)
                    .map(|(_, i)| (i.x, i.y))
                    .collect();
                if found == [(x as u16, y as u16)] {
                    Ok(serde_json::json!({ "event": "item", "object": id, "x": x, "y": y, "copies": found.len() }))
                } else {
                    Err(format!("item {id} did not appear at {x},{y} (seen at {found:?})"))
                }
            })
            .await?;
        }
        if let Some(name) = &args.expect_player {
            wait_for(&client, &mut world, |_| {
                let presence = client
                    .transient(&args.zone)
                    .map(|b| Presence::decode(&b))
                    .unwrap_or_default();
                match presence.0.iter().find(|(n, ..)| n == name) {
                    Some((_, x, y)) => Ok(serde_json::json!({ "event": "player", "name": name, "x": x, "y": y })),
                    None => Err(format!("player {name} did not appear in {}", args.zone)),
                }
            })
            .await?;
        }
        if !args.exit_after_ready {
            loop {
                client.changed().await;
                for event in client.update(&mut world) {
                    if let hoard_net::quic::client::ClientEvent::Disconnected { reason } = event {
                        anyhow::bail!("disconnected: {reason}");
                    }
                }
            }
        }
        client.close();
        Ok(0)
    })
}

/// Waits (up to 10 s) until `check` finds what it looks for in the
/// client's world, and prints the JSON line it returns; otherwise fails
/// with its last complaint.
async fn wait_for(
    client: &HoardClient,
    world: &mut World,
    mut check: impl FnMut(&mut World) -> Result<serde_json::Value, String>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        client.update(world);
        match check(world) {
            Ok(line) => {
                println!("{line}");
                return Ok(());
            }
            Err(not_yet) => tokio::time::timeout_at(deadline, client.changed())
                .await
                .map_err(|_| anyhow::anyhow!("{not_yet} within 10 s"))?,
        }
    }
}
