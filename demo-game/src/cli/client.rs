//! `hoard-demo client`: joins a server. With `--headless --zone Z` it enters
//! the zone without a terminal and prints one JSON line per zone entry.

use std::net::SocketAddr;
use std::path::PathBuf;

use bevy_ecs::world::World;
use clap::Args;
use hoard_engine::{ServerIdentity, ZoneId};
use hoard_net::quic::client::{ClientOptions, HoardClient};

use crate::game;

/// Options of the client.
///
/// Example: `hoard-demo client --server 127.0.0.1:7000 --cache-dir ./cache --token $(hoard-demo server token --player ann) --headless --zone meadow --exit-after-ready`
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
    /// Exit once the zone is ready.
    #[arg(long)]
    exit_after_ready: bool,
}

pub(crate) fn run(args: ClientArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.headless,
        "the terminal client is not built yet; use --headless --zone ZONE"
    );
    let cache_dir = args.cache_dir.unwrap_or_else(crate::cli::cache::default_cache_dir);
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
        let stats = client.enter_zone(&args.zone).await?;
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
