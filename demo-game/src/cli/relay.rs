//! `hoard-demo relay`: carries a world's zones from an upstream (the world's
//! server, or another relay) to players near it, with the origin's
//! signatures, so players can trust it without trusting whoever runs it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hoard_engine::{ServerIdentity, ZoneId};
use hoard_net::quic::relay::{RelayOptions, start_relay};
use hoard_net::quic::server::{WebCertificate, WebTransportOptions};

use crate::game;

/// Options of the relay.
///
/// Example: `hoard-demo relay --upstream 127.0.0.1:7000 --listen 127.0.0.1:7100 --data ./relay-data --token $(hoard-demo server token --player relay-eu)`;
/// players then connect with `hoard-demo client --server 127.0.0.1:7100 --world FINGERPRINT`
/// (the world's fingerprint, which the relay prints).
#[derive(Args)]
pub(crate) struct RelayArgs {
    /// The upstream: the world's server, or another relay of it.
    #[arg(long)]
    upstream: SocketAddr,
    /// Require this upstream fingerprint (otherwise trusted on first use).
    #[arg(long)]
    upstream_fingerprint: Option<ServerIdentity>,
    /// The world's fingerprint, when the upstream is itself a relay.
    #[arg(long)]
    world: Option<ServerIdentity>,
    /// The relay's token upstream (`hoard-demo server token --player NAME`
    /// at the world's server; a relay of a relay in dev mode may use
    /// `dev:NAME`).
    #[arg(long)]
    token: String,
    /// Address players connect to.
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// The relay's directory: its own key, its token secret, its cache.
    #[arg(long, default_value = "hoard-relay-data")]
    data: PathBuf,
    /// Zones to carry (comma-separated; default: every zone the upstream
    /// lets the relay enter).
    #[arg(long, value_delimiter = ',')]
    zones: Vec<ZoneId>,
    /// Accept `dev:<name>` tokens from players. For local development only.
    #[arg(long)]
    dev: bool,
    /// Also carry the actions of players whose tokens bind no key (a
    /// trusted relay, the previous protocol's way): copy the world's
    /// `token.secret` into --data first. Signed actions (world tokens
    /// binding the player's key) are carried without it; other actions are
    /// refused, and those players act at the world's server.
    #[arg(long)]
    carry_actions: bool,
    /// Most simultaneous player connections.
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// Most simultaneous connections from one IP address.
    #[arg(long, default_value_t = 32)]
    max_connections_per_ip: usize,
    /// Play through this relay in a browser: its WebTransport endpoint on
    /// this UDP address and the page on this TCP address (the same port,
    /// e.g. 127.0.0.1:8180; open http://127.0.0.1:8180/). The page checks
    /// every shard against the world's signature, as a native client
    /// through a relay does.
    #[arg(long)]
    web: Option<SocketAddr>,
}

pub(crate) fn run(args: RelayArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let relay = start_relay(
            RelayOptions {
                listen: args.listen,
                data_dir: args.data,
                upstream: args.upstream,
                upstream_pin: args.upstream_fingerprint,
                world: args.world,
                token: args.token,
                service: "world".into(),
                zones: args.zones,
                dev_mode: args.dev,
                max_connections: args.max_connections,
                max_connections_per_ip: args.max_connections_per_ip,
                carry_actions: args.carry_actions,
                web_transport: args.web.map(|listen| WebTransportOptions {
                    listen,
                    certificate: WebCertificate::Development,
                }),
            },
            game::registry(),
        )
        .await
        .context("starting the relay")?;
        let page = match (args.web, &relay.server.web) {
            (Some(addr), Some(web)) => Some(super::web::serve(
                addr,
                super::web::PageInfo {
                    relay: true,
                    ..super::web::PageInfo::of(web, relay.world.to_string(), args.dev, game::registry())
                },
            )?),
            _ => None,
        };
        println!(
            "{}",
            serde_json::json!({
                "event": "relaying",
                "addr": relay.addr().to_string(),
                "fingerprint": relay.server.identity.to_string(),
                "world": relay.world.to_string(),
                "upstream": args.upstream.to_string(),
                "web": page.map(|a| format!("http://{a}/")),
            })
        );
        let signal = super::signals::stop_signal().await;
        eprintln!("hoard-demo: {signal}: stopping the relay");
        // A second signal while the relay drains ends it at once.
        tokio::spawn(async {
            let again = super::signals::stop_signal().await;
            eprintln!("hoard-demo: {again} again: stopping at once");
            std::process::exit(1);
        });
        relay.shutdown().await;
        Ok(0)
    })
}
