//! `hoard-demo bots`: a headless load test. N bots, each a real hoard
//! client with its own cache directory, live scripted random lives against
//! a server (see [`life`]) in one process; they ramp up at a set rate, a
//! progress line shows live figures, the run stops by itself after its
//! duration, and prints a table (zone entries cold and warm with
//! p50/p90/p99/max latency and bytes, actions, live updates and their
//! delay, errors by kind). `--report DIR` also writes `report.json` and a
//! self-contained `report.html` with plots; `--metrics URL` scrapes the
//! server's Prometheus metrics each second for the report.

mod life;
mod record;
mod report;
mod scrape;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hoard_engine::ServerIdentity;
use hoard_net::quic::client::{ClientOptions, client_endpoint};
use hoard_proto::auth::TokenAuthority;
use hoard_trust::tls::ServerKeys;
use hoard_world_cache::MemStorage;

use record::{Record, Summary};
use scrape::ServerSample;

/// Blocking threads of the bots' runtime, at most.
const BLOCKING_THREADS: usize = 8;

/// Runs N bots against a server.
///
/// Example: `hoard-demo bots --server 127.0.0.1:7000 --server-data ./server-data --clients 200 --duration 60 --metrics http://127.0.0.1:9100/metrics --report target/bots`
#[derive(Args, Debug)]
pub(crate) struct BotsArgs {
    /// The server's address.
    #[arg(long)]
    server: std::net::SocketAddr,
    /// How many bots.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// How long the run lasts, in seconds (from the first bot's start).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Bots started per second.
    #[arg(long, default_value_t = 100.0)]
    ramp: f64,
    /// Actions each bot sends per second.
    #[arg(long, default_value_t = 1.0)]
    actions_per_sec: f64,
    /// Seconds between a bot's zone changes: `A-B` (uniform) or `A`.
    #[arg(long, default_value = "10-20", value_parser = parse_range)]
    zone_change_every: (f64, f64),
    /// The work directory: each bot's cache is `bot-N` in it (kept, so a
    /// second run with the same directory starts warm). Default: a new
    /// directory under the system temp dir.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Start each bot whose cache does not exist yet from a copy of this
    /// cache directory (a warm cache, e.g. a bot's from an earlier run).
    #[arg(long)]
    warm_from: Option<PathBuf>,
    /// Keep each bot's cache files in memory instead of on disk (the cache
    /// works the same, checksums and journals included, and goes with the
    /// process): a thousand bots' journal appends cost path lookups and
    /// system calls a player's one cache never adds up to.
    #[arg(long)]
    caches_in_memory: bool,
    /// Skip the background audit of the cached copies each entry takes on
    /// trust (`SessionSettings::audit_cached_copies`; it rehashes every
    /// object of the zone, about 7% of a bot's CPU as bots change zones):
    /// the bots still check every digest and root the server sends.
    #[arg(long)]
    no_audit: bool,
    /// The server's data directory, to mint real tokens with its secret;
    /// without it the bots use `dev:` names (the server needs `--dev`).
    #[arg(long)]
    server_data: Option<PathBuf>,
    /// Require this server fingerprint (otherwise each bot trusts on first use).
    #[arg(long)]
    fingerprint: Option<ServerIdentity>,
    /// The server's Prometheus metrics URL, scraped each second for the report.
    #[arg(long)]
    metrics: Option<String>,
    /// Write report.json and report.html here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Seed of the bots' random lives.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as one JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// Each bot also prefetches every other zone of the world once it is in
    /// its own: the server then follows each bot in every zone (what a
    /// zone subscription costs the server, measured by
    /// `bench/scripts/memory.sh`).
    #[arg(long)]
    prefetch_all: bool,
    /// Bots that share one UDP socket (a QUIC endpoint): each socket's
    /// driver then reads many bots' datagrams per wake-up. 1 gives each bot
    /// its own, as each player's machine has; the server sees the same
    /// connections either way, told apart by their connection IDs.
    #[arg(long, default_value_t = 64)]
    bots_per_socket: usize,
}

fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let parse = |p: &str| p.trim().parse::<f64>().map_err(|e| format!("{p:?}: {e}"));
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(s)?, parse(s)?),
    };
    if !(lo > 0.0 && hi >= lo) {
        return Err(format!("{s}: give A-B seconds with 0 < A <= B"));
    }
    Ok((lo, hi))
}

/// Copies a directory tree (a bot's starting cache).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

pub(crate) fn run(args: BotsArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(
        args.duration > 0.0 && args.duration <= 24.0 * 3600.0,
        "--duration must be between 0 and 24 hours"
    );
    anyhow::ensure!(args.ramp > 0.0, "--ramp must be positive");
    anyhow::ensure!(args.bots_per_socket > 0, "--bots-per-socket must be at least 1");
    anyhow::ensure!(
        args.actions_per_sec > 0.0 && args.actions_per_sec <= 50.0,
        "--actions-per-sec must be in (0, 50]"
    );
    let work = match &args.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("hoard-bots-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let tokens = Tokens::new(args.server_data.as_deref())?;
    let mut bots = Vec::with_capacity(args.clients);
    for n in 0..args.clients {
        let name = format!("bot-{n}");
        let cache_dir = work.join(&name);
        let mut cache_files = None;
        if args.caches_in_memory {
            // On disk: the lock and the server trusted on first use.
            std::fs::create_dir_all(&cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
            let files = match &args.warm_from {
                Some(warm) => {
                    let known = warm.join("known_servers");
                    if known.exists() {
                        std::fs::copy(&known, cache_dir.join("known_servers"))?;
                    }
                    MemStorage::copy_of(warm, &cache_dir)
                        .with_context(|| format!("copying {} for {name}", warm.display()))?
                }
                None => MemStorage::new(),
            };
            cache_files = Some(Arc::new(files) as Arc<dyn hoard_world_cache::Storage>);
        } else if let Some(warm) = &args.warm_from
            && !cache_dir.exists()
        {
            copy_tree(warm, &cache_dir).with_context(|| format!("copying {} for {name}", warm.display()))?;
        }
        let mut options = ClientOptions::new(args.server, cache_dir, tokens.issue(&name)?);
        options.pin = args.fingerprint;
        options.cache_files = cache_files;
        options.audit_cached_copies = !args.no_audit;
        bots.push((name, options));
    }
    // Thousands of clients hand short file work (journal appends, cache
    // loads) to blocking threads: a few threads that stay busy take them
    // in turn, where a pool of hundreds woke a sleeping thread for each.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("starting the runtime")?;
    let (summary, server) = runtime.block_on(drive(&args, bots));
    let totals = server.last().map(|s| s.values.clone()).unwrap_or_default();
    let steady = scrape::steady(&server, args.clients);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "bots": &summary, "server_totals": &totals, "server_steady": &steady, "work": work })
        );
    } else {
        print_table(&summary, steady.as_ref());
    }
    if let Some(dir) = &args.report {
        let settings = serde_json::json!({
            "server": args.server.to_string(),
            "clients": args.clients,
            "duration_s": args.duration,
            "ramp_per_s": args.ramp,
            "actions_per_sec": args.actions_per_sec,
            "zone_change_every_s": [args.zone_change_every.0, args.zone_change_every.1],
            "warm_from": args.warm_from,
            "seed": args.seed,
        });
        report::write(
            dir,
            &report::Report {
                settings,
                bots: &summary,
                server: &server,
                server_totals: totals,
                server_steady: steady,
            },
        )?;
        eprintln!("report: {}", dir.join("report.html").display());
    }
    Ok(if summary.errors.is_empty() { 0 } else { 2 })
}

/// Token minting: real tokens from the server's secret, or dev names.
enum Tokens {
    Real(TokenAuthority),
    Dev,
}

impl Tokens {
    fn new(server_data: Option<&Path>) -> anyhow::Result<Tokens> {
        Ok(match server_data {
            Some(dir) => {
                anyhow::ensure!(
                    dir.join("token.secret").exists() || dir.exists(),
                    "--server-data {}: no such directory",
                    dir.display()
                );
                let keys =
                    ServerKeys::load_or_create(dir).with_context(|| format!("reading keys in {}", dir.display()))?;
                Tokens::Real(keys.authority())
            }
            None => Tokens::Dev,
        })
    }

    fn issue(&self, name: &str) -> anyhow::Result<String> {
        Ok(match self {
            Tokens::Real(auth) => auth.issue(name, chrono::Utc::now().timestamp() + 24 * 3600)?,
            Tokens::Dev => format!("{}{name}", hoard_proto::auth::DEV_PREFIX),
        })
    }
}

/// Runs the bots and the scraper until the end; returns what they measured.
async fn drive(args: &BotsArgs, bots: Vec<(String, ClientOptions)>) -> (Summary, Vec<ServerSample>) {
    let start = Instant::now();
    let record = Arc::new(Record::new(start, args.clients as u64));
    let plan = life::Plan {
        actions_per_sec: args.actions_per_sec,
        zone_change_every: args.zone_change_every,
        stop_at: start + Duration::from_secs_f64(args.duration),
        prefetch_all: args.prefetch_all,
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut sockets = Vec::new();
    for (n, (name, mut options)) in bots.into_iter().enumerate() {
        if args.bots_per_socket > 1 {
            if n % args.bots_per_socket == 0 {
                match client_endpoint(args.server) {
                    Ok(endpoint) => sockets.push(endpoint),
                    Err(e) => {
                        tracing::warn!(error = %e, "opening a shared socket failed; the bots open their own");
                        record.error("shared socket");
                    }
                }
            }
            options.endpoint = sockets.last().cloned();
        }
        let due = start + Duration::from_secs_f64(n as f64 / args.ramp);
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(n as u64);
        tasks.spawn(life::live(options, name, seed, due, plan.clone(), record.clone()));
    }
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("a valid progress template"),
    );
    let mut server = Vec::new();
    let mut second = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
    // The bots stop by themselves at the end; a bot stuck past a grace
    // period (a connection that never answers) is abandoned.
    let grace = plan.stop_at + Duration::from_secs(30);
    loop {
        tokio::select! {
            done = tasks.join_next() => {
                if done.is_none() {
                    break;
                }
            }
            _ = second.tick() => {
                record.tick_second();
                if let Some(url) = &args.metrics {
                    let url = url.clone();
                    let t = start.elapsed().as_secs_f64();
                    match tokio::task::spawn_blocking(move || scrape::scrape(&url, t)).await {
                        Ok(Ok(mut sample)) => {
                            if let Some(prev) = server.last() {
                                let prev: &ServerSample = prev;
                                sample.tick_p99_ms = scrape::p99_between(&prev.tick, &sample.tick);
                                sample.commit_p99_ms = scrape::p99_between(&prev.commit, &sample.commit);
                            }
                            server.push(sample);
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "scraping the server's metrics failed");
                            record.error("metrics scrape");
                        }
                        Err(_) => {}
                    }
                }
                let s = record.summary(start.elapsed());
                let last = s.timeline.last().cloned().unwrap_or_default();
                progress.set_message(format!(
                    "bots {}/{} · entries {} (p99 {:.0} ms) · actions {} (p99 {:.0} ms) · updates {}/s · errors {}",
                    last.connected,
                    args.clients,
                    s.entries.values().map(|l| l.count).sum::<u64>(),
                    last.entry_p99_ms.unwrap_or(0.0),
                    s.processed,
                    last.action_p99_ms.unwrap_or(0.0),
                    last.updates,
                    s.errors.values().sum::<u64>(),
                ));
                progress.tick();
                if Instant::now() > grace {
                    let stuck = tasks.len();
                    tracing::warn!(stuck, "bots still running past the end; abandoning them");
                    for _ in 0..stuck {
                        record.error("stuck at the end");
                    }
                    tasks.abort_all();
                    break;
                }
            }
        }
    }
    progress.finish_and_clear();
    // The shared sockets send the bots' closes: wait (briefly) until sent.
    let idle = async {
        for socket in &sockets {
            socket.wait_idle().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), idle).await;
    // A last scrape, after every bot has gone, for the totals.
    if let Some(url) = &args.metrics {
        let url = url.clone();
        let t = start.elapsed().as_secs_f64();
        if let Ok(Ok(sample)) = tokio::task::spawn_blocking(move || scrape::scrape(&url, t)).await {
            server.push(sample);
        }
    }
    (record.summary(start.elapsed()), server)
}

fn print_table(s: &Summary, steady: Option<&scrape::Steady>) {
    println!(
        "{:<28} {:>8} {:>9} {:>9} {:>9} {:>9} {:>16}",
        "", "count", "p50 ms", "p90 ms", "p99 ms", "max ms", "bytes down/up"
    );
    for (kind, l) in &s.entries {
        println!(
            "{:<28} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>16}",
            format!("zone entries, {kind:?}").to_lowercase(),
            l.count,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
            format!("{}/{}", l.bytes_rx.unwrap_or(0), l.bytes_tx.unwrap_or(0))
        );
    }
    let latency = |what: &str, l: &record::Latency| {
        println!(
            "{:<28} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            what, l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        );
    };
    latency("actions (due → durable)", &s.actions);
    latency("live update delay", &s.update_delay);
    if let Some(st) = &s.steady {
        println!("while all were connected ({:.0}-{:.0} s):", st.from_s, st.to_s);
        latency("  zone entries", &st.entries);
        latency("  actions (due → durable)", &st.actions);
        latency("  live update delay", &st.update_delay);
    }
    println!(
        "actions sent {}, processed {}, rejected {}; live updates {} ({:.0}/s); {:.0} s",
        s.sent, s.processed, s.rejected, s.updates, s.updates_per_sec, s.seconds
    );
    let q = &s.quic;
    if let Some((up, down, acks)) = q.rates() {
        println!(
            "QUIC per connection-second ({} connections): datagrams down {down:.1} ({:.0} B each), \
             up {up:.1} ({:.0} B each; {acks:.1} ACK frames, {:.2} stream frames, {:.2} pings)",
            q.connections,
            q.bytes_down as f64 / q.datagrams_down.max(1) as f64,
            q.bytes_up as f64 / q.datagrams_up.max(1) as f64,
            q.streams_up as f64 / q.seconds,
            q.pings_up as f64 / q.seconds,
        );
    }
    if let Some(st) = steady {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("≤ {v:.0} ms"));
        println!(
            "server while all were connected ({:.0}-{:.0} s): {:.0} frames, frame p99 {}, commit p99 {}",
            st.from_s,
            st.to_s,
            st.ticks,
            ms(st.tick_p99_ms),
            ms(st.commit_p99_ms)
        );
    }
    if s.errors.is_empty() {
        println!("errors: none");
    } else {
        for (kind, n) in &s.errors {
            println!("errors, {kind}: {n}");
        }
    }
}
