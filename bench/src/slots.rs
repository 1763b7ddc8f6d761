//! `hoard-bench slots`: how long an honest player's zone entry waits while
//! hostile connections hold the server's answer slots — connections that
//! sign in, ask for two cold entries each and then freeze their receive
//! windows at 64 KiB, from two addresses (127.0.0.2 and 127.0.0.3, 32
//! connections each: the per-address connection limit).
//!
//! The server is a `hoard-demo server` process of each binary given
//! (`--server-bin`, repeatable: a build from before a change beside one
//! from after, measured in the same run), on a generated world. For each
//! wave the hostile connections are opened, left to fill their windows, and
//! then a returning player (warm cache) and a new one (no cache) enter
//! `meadow` as `hoard-demo client --headless` processes; their entry times
//! are what the table shows, beside the same entries on the quiet server.
//!
//! ```text
//! cargo run --release -p hoard-bench -- slots --server-bin target/release/hoard-demo
//! ```

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use hoard_engine::ServerIdentity;
use hoard_net::testing::{FrozenReader, frozen_endpoint, frozen_reader, hello_and_cold_entries, stalled};

use crate::report::{median, ms, print_table, write_json};

/// Options of `slots`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// A `hoard-demo` binary to serve (repeat to compare builds, e.g. one
    /// built before a change and one after).
    #[arg(long = "server-bin", required = true)]
    servers: Vec<PathBuf>,
    /// Hostile connections, split between two addresses.
    #[arg(long, default_value_t = 64)]
    hostile: usize,
    /// Waves of hostile connections, one after another.
    #[arg(long, default_value_t = 3)]
    waves: usize,
}

/// An honest entry's time: wall time of the client process, and the entry
/// time the client reports.
#[derive(Clone, Copy, Debug)]
struct Entry {
    wall: Duration,
    reported: Duration,
}

pub(crate) fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for bin in &args.servers {
        let label = bin.display().to_string();
        let measured = measure(bin, args, &runtime).with_context(|| format!("measuring {label}"))?;
        for (case, entries) in &measured {
            let wall: Vec<Duration> = entries.iter().map(|e| e.wall).collect();
            let reported: Vec<Duration> = entries.iter().map(|e| e.reported).collect();
            let max = wall.iter().max().copied().unwrap_or_default();
            rows.push(vec![
                label.clone(),
                (*case).to_owned(),
                entries.len().to_string(),
                format!("{:.0}", ms(median(reported.clone()))),
                format!("{:.0}", ms(median(wall.clone()))),
                format!("{:.0}", ms(max)),
            ]);
            results.push(serde_json::json!({
                "server": label,
                "case": case,
                "entries": entries.len(),
                "entry_ms_median": ms(median(reported)),
                "wall_ms_median": ms(median(wall)),
                "wall_ms_max": ms(max),
            }));
        }
    }
    print_table(
        &format!(
            "an honest player's entry of meadow (64 shards) beside {} hostile connections from 2 addresses, {} waves",
            args.hostile, args.waves
        ),
        &[
            "server",
            "case",
            "n",
            "entry ms (median)",
            "process ms (median)",
            "process ms (max)",
        ],
        &rows,
    );
    write_json(
        out,
        "slots",
        &serde_json::json!({
            "hostile": args.hostile,
            "waves": args.waves,
            "results": results,
        }),
    )
}

/// A running `hoard-demo server`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    identity: ServerIdentity,
    bin: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &Path, world: &Path, data: &Path) -> anyhow::Result<Server> {
    let mut child = Command::new(bin)
        .args(["server", "--dev", "--listen", "127.0.0.1:0", "--world"])
        .arg(world)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let listening: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("listening line {line:?}"))?;
    let addr = listening["addr"].as_str().context("addr")?.parse()?;
    let identity = listening["fingerprint"]
        .as_str()
        .context("fingerprint")?
        .parse()
        .map_err(|e| anyhow::anyhow!("fingerprint: {e}"))?;
    Ok(Server {
        child,
        addr,
        identity,
        bin: bin.to_owned(),
    })
}

/// One honest entry of `meadow` as a client process with `cache`.
fn honest_entry(server: &Server, player: &str, cache: &Path) -> anyhow::Result<Entry> {
    let started = Instant::now();
    let out = Command::new(&server.bin)
        .args([
            "client",
            "--headless",
            "--exit-after-ready",
            "--zone",
            "meadow",
            "--server",
        ])
        .arg(server.addr.to_string())
        .args(["--token", &format!("dev:{player}"), "--cache-dir"])
        .arg(cache)
        .output()?;
    let wall = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let reported = Duration::from_millis(ready["elapsed_ms"].as_u64().context("elapsed_ms")?);
    Ok(Entry { wall, reported })
}

/// The hostile connections of one wave, their windows filled (or as many as
/// the server lets fill: each address's share of its slots).
fn hostile_wave(
    server: &Server,
    count: usize,
    wave: usize,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Vec<FrozenReader>> {
    let registry = hoard_demo::registry().hash().0;
    let meadow = hoard_engine::ZoneId::new("meadow")?;
    runtime.block_on(async {
        let mut hostile = Vec::with_capacity(count);
        for (a, ip) in [[127, 0, 0, 2], [127, 0, 0, 3]].into_iter().enumerate() {
            let endpoint = frozen_endpoint(IpAddr::from(ip), server.identity)?;
            for i in 0..count / 2 {
                let frames = hello_and_cold_entries(registry, format!("dev:mallory-{wave}-{a}-{i}"), &meadow, 2);
                let reader = frozen_reader(&endpoint, server.addr, &frames)
                    .await
                    .map_err(|e| anyhow::anyhow!("hostile connection: {e}"))?;
                hostile.push(reader);
            }
        }
        // Settled once the number of filled windows has not grown for a
        // second (all of them on a server with one shared pool; each
        // address's share on one with fair slots).
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut last, mut since) = (0, Instant::now());
        while Instant::now() < deadline {
            let now = stalled(&hostile);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if now > 0 && since.elapsed() >= Duration::from_secs(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("  wave {wave}: {last} of {} hostile connections stalled", hostile.len());
        anyhow::Ok(hostile)
    })
}

type Measured = Vec<(&'static str, Vec<Entry>)>;

fn measure(bin: &Path, args: &Args, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Measured> {
    println!("{}:", bin.display());
    let dir = tempfile::tempdir()?;
    let world = dir.path().join("world");
    crate::demo::generate_world(bin, &world, 2, 700)?;
    let server = start_server(bin, &world, &dir.path().join("data"))?;
    let warm = dir.path().join("warm-cache");
    honest_entry(&server, "alice", &warm)?;
    let (mut quiet_warm, mut quiet_cold) = (Vec::new(), Vec::new());
    let (mut attacked_warm, mut attacked_cold) = (Vec::new(), Vec::new());
    for wave in 0..args.waves {
        quiet_warm.push(honest_entry(&server, "alice", &warm)?);
        let cold = dir.path().join(format!("quiet-cold-{wave}"));
        quiet_cold.push(honest_entry(&server, &format!("bob-{wave}"), &cold)?);
        let hostile = hostile_wave(&server, args.hostile, wave, runtime)?;
        attacked_warm.push(honest_entry(&server, "alice", &warm)?);
        let cold = dir.path().join(format!("attacked-cold-{wave}"));
        attacked_cold.push(honest_entry(&server, &format!("carol-{wave}"), &cold)?);
        let still_open = hostile.iter().filter(|h| h.conn.close_reason().is_none()).count();
        println!(
            "  wave {wave}: warm {:.0} ms, cold {:.0} ms beside them; {still_open} still open",
            ms(attacked_warm[wave].wall),
            ms(attacked_cold[wave].wall)
        );
        runtime.block_on(async {
            for h in &hostile {
                h.conn.close(0u32.into(), b"wave over");
            }
        });
        drop(hostile);
    }
    Ok(vec![
        ("quiet, warm", quiet_warm),
        ("quiet, cold", quiet_cold),
        ("hostile, warm", attacked_warm),
        ("hostile, cold", attacked_cold),
    ])
}
