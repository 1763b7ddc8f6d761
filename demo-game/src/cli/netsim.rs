//! `hoard-demo netsim`: a UDP proxy with delay, jitter, loss and a bandwidth
//! cap, for trying a game under bad network conditions. It prints the bytes
//! and packets it forwarded each second.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use hoard_netsim::{LinkConfig, start};

/// Options of the simulator.
///
/// Example: `hoard-demo netsim --listen 127.0.0.1:7001 --upstream 127.0.0.1:7000 --rtt-ms 50 --rate-mbit 20`,
/// then point the client at 127.0.0.1:7001.
#[derive(Args)]
pub(crate) struct NetsimArgs {
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: SocketAddr,
    /// The server.
    #[arg(long, default_value = "127.0.0.1:7000")]
    upstream: SocketAddr,
    /// Round-trip delay added (half each way), in milliseconds.
    #[arg(long, default_value_t = 50)]
    rtt_ms: u64,
    /// Random extra one-way delay, up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Probability of losing a packet (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Bandwidth cap in megabits per second (0: none).
    #[arg(long, default_value_t = 20.0)]
    rate_mbit: f64,
    /// Stop after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

pub(crate) fn run(args: NetsimArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.loss),
        "--loss must be between 0 and 1, got {}",
        args.loss
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let link = LinkConfig {
            delay: Duration::from_millis(args.rtt_ms) / 2,
            jitter: Duration::from_millis(args.jitter_ms),
            loss: args.loss,
            rate_bps: (args.rate_mbit > 0.0).then_some((args.rate_mbit * 1e6) as u64),
            queue_bytes: None,
        };
        let sim = start(args.listen, args.upstream, link).await?;
        println!(
            "netsim: {} -> {} (rtt {} ms, jitter {} ms, loss {}, {} Mbit/s)",
            sim.addr, args.upstream, args.rtt_ms, args.jitter_ms, args.loss, args.rate_mbit
        );
        let mut elapsed = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            elapsed += 1;
            let s = &sim.stats;
            println!(
                "{elapsed:>5}s  up {} B / {} pkts ({} dropped)  down {} B / {} pkts ({} dropped)",
                s.up.bytes.load(Ordering::Relaxed),
                s.up.packets.load(Ordering::Relaxed),
                s.up.dropped.load(Ordering::Relaxed),
                s.down.bytes.load(Ordering::Relaxed),
                s.down.packets.load(Ordering::Relaxed),
                s.down.dropped.load(Ordering::Relaxed),
            );
            if args.seconds > 0 && elapsed >= args.seconds {
                return Ok(0);
            }
        }
    })
}
