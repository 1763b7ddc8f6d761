//! `hoard-demo server`: a dedicated server for the demo world, and
//! `hoard-demo server token` to issue player tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Args, Subcommand};
use hoard_bevy::HoardServer;
use hoard_net::quic::server::ServerOptions;
use hoard_proto::intent_sig::PlayerKey;
use hoard_proto::world_token::TokenKey;
use hoard_trust::tls::ServerKeys;

use hoard_engine::ZoneId;
use hoard_engine::store::LeaseHolder;

use crate::cli::progress::Progress;
use crate::cli::world::default_world_dir;
use crate::game;

/// Runs the server, or issues a token.
///
/// Example: `hoard-demo server --data ./server-data --listen 127.0.0.1:7000`
/// (imports `assets/world` on first start; `--world DIR` serves another, such
/// as one made by `hoard-demo world generate`), then
/// `hoard-demo server token --data ./server-data --player ann`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServerArgs {
    #[command(subcommand)]
    command: Option<ServerCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// The data directory: world store, certificate, key, token secret.
    #[arg(long, default_value = "hoard-server-data")]
    data: PathBuf,
    /// The world store: a PostgreSQL URL (`postgres://user@host:port/db`,
    /// for a world shared by several servers; TLS with
    /// `?sslmode=verify-full&sslrootcert=CA.pem`, see docs/STORE.md).
    /// Default: the embedded store in the data directory.
    #[arg(long)]
    store: Option<String>,
    /// The PostgreSQL schema holding the world's tables (created if
    /// missing), so one database can hold several worlds. Default: `public`.
    #[arg(long, requires = "store")]
    store_schema: Option<String>,
    /// Serve only these zones of the world (comma-separated), sharing the
    /// PostgreSQL store with the world's other servers: their leases are
    /// taken (waiting, as a standby, while another server holds one), and
    /// clients entering any other zone are sent to the server serving it.
    /// The world's servers share one data directory's keys and token secret.
    #[arg(long, value_delimiter = ',', requires = "store")]
    zones: Vec<ZoneId>,
    /// This server's name among the world's servers (default: its address).
    #[arg(long)]
    name: Option<String>,
    /// The address clients are sent to for this server's zones (default:
    /// the listen address, which must then name a port).
    #[arg(long)]
    advertise: Option<String>,
    /// How long a zone lease lasts unless renewed: a dead server's zones are
    /// taken over this long after it stopped renewing.
    #[arg(long, default_value_t = 10.0)]
    lease_secs: f64,
    /// Address to listen on (port 0 picks a free one; the JSON line says which).
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// The world imported on first start (when the data directory is empty).
    #[arg(long, default_value_os_t = default_world_dir())]
    world: PathBuf,
    /// World ticks per second.
    #[arg(long, default_value_t = 20)]
    tick_hz: u32,
    /// Most sends per second of a zone's presence list (0: every tick it
    /// changes); each player in the zone gets the whole list each time.
    #[arg(long, default_value_t = 10)]
    transient_hz: u32,
    /// Probe each player's path for packets over 1,200 bytes (QUIC path
    /// MTU discovery): fewer packets for big cold entries, ~5.6 KB of probes
    /// per connection.
    #[arg(long)]
    mtu_discovery: bool,
    /// Ask each player to hold acknowledgments of the server's packets up
    /// to this many milliseconds (QUIC ACK frequency; at most the path's
    /// round trip, at least 25 ms): fewer ACK datagrams for the server on
    /// slow paths, a lost last packet resent that much later. 0: the
    /// player's own delay (25 ms).
    #[arg(long, default_value_t = 100)]
    ack_delay_ms: u64,
    /// Play in a browser: the WebTransport endpoint on this UDP address and
    /// the page on this TCP address (the same port for both, e.g.
    /// 127.0.0.1:8080; open http://127.0.0.1:8080/). The endpoint makes its
    /// own short-lived certificate, which the page is told.
    #[arg(long)]
    web: Option<SocketAddr>,
    /// Accept `dev:<name>` tokens. For local development only.
    #[arg(long)]
    dev: bool,
    /// Serve Prometheus metrics over HTTP here (e.g. 127.0.0.1:9100; port 0
    /// picks one, the JSON line says which).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Most simultaneous connections.
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// Most simultaneous connections from one IP address (raise it for a
    /// load test whose bots all come from one machine).
    #[arg(long, default_value_t = 32)]
    max_connections_per_ip: usize,
}

#[derive(Subcommand)]
enum ServerCommand {
    /// Print a token for a player (valid for --hours).
    ///
    /// Example: `hoard-demo server token --data ./server-data --player ann --hours 48`
    Token {
        /// The server's data directory.
        #[arg(long, default_value = "hoard-server-data")]
        data: PathBuf,
        /// The player's name (a-z, 0-9, _ and -).
        #[arg(long)]
        player: String,
        /// Hours the token stays valid.
        #[arg(long, default_value_t = 24 * 30)]
        hours: i64,
        /// Bind this player intent key (a PASERK `k4.public.…` the player's
        /// client made): their actions are then signed, and may go through
        /// any relay.
        #[arg(long, value_name = "K4PUBLIC", conflicts_with = "new_key")]
        key: Option<String>,
        /// Make a new player intent key, write it (PASERK `k4.secret.…`) to
        /// FILE for the player's client (`hoard-demo client --player-key
        /// FILE`), and bind it.
        #[arg(long, value_name = "FILE")]
        new_key: Option<PathBuf>,
    },
    /// List the world's token keys, or rotate, retire or add one.
    ///
    /// Tokens are signed with the key in `token.key`; every key listed is
    /// accepted. Rotate (a new `token.key`; the old key stays accepted),
    /// hand out new tokens, then retire the old key by its id. Every server
    /// of the world needs the same files (restart them to take a change).
    TokenKey {
        /// The server's data directory.
        #[arg(long, default_value = "hoard-server-data")]
        data: PathBuf,
        /// Make a new signing key; the current one stays accepted.
        #[arg(long)]
        rotate: bool,
        /// Stop accepting the key of this id (`k4.pid.…`).
        #[arg(long, value_name = "ID")]
        retire: Option<String>,
        /// Accept tokens signed with this key too (an account service's
        /// own, a PASERK `k4.public.…`).
        #[arg(long, value_name = "K4PUBLIC")]
        accept: Option<String>,
    },
}

pub(crate) fn run(args: ServerArgs) -> anyhow::Result<i32> {
    match args.command {
        Some(ServerCommand::Token {
            data,
            player,
            hours,
            key,
            new_key,
        }) => token(&data, &player, hours, key.as_deref(), new_key.as_deref()),
        Some(ServerCommand::TokenKey {
            data,
            rotate,
            retire,
            accept,
        }) => token_key(&data, rotate, retire.as_deref(), accept.as_deref()),
        None => serve(args.run),
    }
}

fn token(data: &Path, player: &str, hours: i64, key: Option<&str>, new_key: Option<&Path>) -> anyhow::Result<i32> {
    let keys = ServerKeys::load_or_create(data).with_context(|| format!("reading keys in {}", data.display()))?;
    // Ten years at most: a longer token is a mistake, and a huge --hours
    // must not wrap round into an already-expired token.
    anyhow::ensure!(
        (1..=24 * 366 * 10).contains(&hours),
        "--hours {hours}: a token must be valid for 1 hour to 10 years"
    );
    let expiry = chrono::Utc::now().timestamp() + hours * 3600;
    let bound = match (key, new_key) {
        (Some(key), _) => Some(
            *TokenKey::from_paserk(key)
                .map_err(|e| anyhow::anyhow!("--key: {e}"))?
                .bytes(),
        ),
        (None, Some(path)) => {
            let made = PlayerKey::generate();
            write_secret(path, &made.paserk()).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "player key written to {} (give it to the player's client)",
                path.display()
            );
            Some(made.public())
        }
        (None, None) => None,
    };
    println!("{}", keys.authority().issue_with_key(player, expiry, bound.as_ref())?);
    Ok(0)
}

/// Writes a secret key file readable by its owner only.
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{text}")?;
    file.sync_all()
}

fn token_key(data: &Path, rotate: bool, retire: Option<&str>, accept: Option<&str>) -> anyhow::Result<i32> {
    use hoard_trust::token_keys::WorldTokenKeys;
    if rotate {
        let id = WorldTokenKeys::rotate(data)?;
        println!("new token key {id}; the previous one is still accepted until retired");
    }
    if let Some(id) = retire {
        anyhow::ensure!(WorldTokenKeys::retire(data, id)?, "no accepted key {id} to retire");
        println!("retired {id}");
    }
    if let Some(key) = accept {
        let key = TokenKey::from_paserk(key).map_err(|e| anyhow::anyhow!("--accept: {e}"))?;
        WorldTokenKeys::accept(data, &key)?;
        println!("now accepting {}", key.id());
    }
    let keys = WorldTokenKeys::load_or_create(data)?;
    for key in &keys.accepted {
        let role = if key == keys.signing.public() {
            "signs new tokens"
        } else {
            "accepted"
        };
        println!("{}  {}  {role}", key.id(), key.paserk());
    }
    Ok(0)
}

fn serve(args: RunArgs) -> anyhow::Result<i32> {
    let opened = game::server::ServerStore::open(&args.data, args.store.as_deref(), args.store_schema.as_deref())?;
    let store = opened.store.clone();
    let interrupted = Arc::new(AtomicBool::new(false));
    let failure = Arc::new(std::sync::Mutex::new(None::<String>));
    // A world on several servers: this one takes its zones' leases before
    // it loads them (a standby waits here), so what it loads is what the
    // previous owner last committed. On a first start the world is imported
    // first (nobody serves an empty store) and the leases taken after.
    let leases = match args.zones.is_empty() {
        true => None,
        false => Some(ZoneLeases::prepare(&args, &opened)?),
    };
    let mut first_start = store.zones()?.is_empty();
    // Servers of a world started together on an empty store: one imports
    // the world, the others wait for it and then start as on any day.
    let mut importing = false;
    if let Some(leases) = &leases
        && first_start
    {
        match leases.claim_import(&args, &interrupted)? {
            Some(ours) => {
                first_start = ours;
                importing = ours;
            }
            None => return Ok(0),
        }
    }
    let zones: Vec<String> = store
        .zones()?
        .iter()
        .filter(|z| z.as_str() != game::rules::INVENTORY_ZONE)
        .map(|z| z.to_string())
        .collect();
    let mut directory = None;
    if let Some(leases) = &leases
        && !first_start
    {
        // While another server holds a zone, this one is its standby: it
        // says so, and listens, sending players on to the zone's owner.
        let standby = leases.standby(&args, &opened)?;
        let taken = leases.take(&interrupted, &failure);
        if let Some(standby) = standby {
            standby.stop();
        }
        match taken? {
            Some(d) => directory = Some(d),
            None => return Ok(0),
        }
    }
    let mut options = ServerOptions::new(args.listen, args.data.clone());
    options.tick_hz = args.tick_hz;
    options.transient_hz = args.transient_hz;
    options.mtu_discovery = args.mtu_discovery;
    options.ack_delay = hoard_net::quic::server::ack_delay_from_millis(args.ack_delay_ms);
    options.dev_mode = args.dev;
    options.advertise = args.advertise.clone();
    options.metrics = args.metrics;
    options.max_connections = args.max_connections;
    options.max_connections_per_ip = args.max_connections_per_ip;
    options.web_transport = args.web.map(|listen| hoard_net::quic::server::WebTransportOptions {
        listen,
        certificate: hoard_net::quic::server::WebCertificate::Development,
    });
    if let Some((directory, _)) = &directory {
        options.directory = directory.clone();
    }
    let progress = Progress::new("importing", "objects");
    // The server is a Bevy App: the rules run in its Update, the hoard
    // plugin around them (and it binds the address).
    if let Some(leases) = &leases
        && first_start
    {
        // The directory the sessions ask is set before serving; the zones'
        // leases are taken right after the import, before the first frame.
        let d = leases.directory();
        options.directory = d.clone();
        directory = Some((d, std::time::Instant::now()));
    }
    let zone_server = leases
        .as_ref()
        .map(|l| {
            game::hosting::ZoneServer::new(l.store.clone(), l.holder.clone(), l.zones.clone(), interrupted.clone())
        })
        .transpose()?;
    let mut app = game::server::app(
        &opened,
        &args.world,
        options,
        zone_server.as_ref(),
        &progress.callback(),
    )?;
    progress.finish();
    if importing && let Some(leases) = &leases {
        leases.import_done()?;
    }
    if let Some(leases) = &leases
        && first_start
    {
        match leases.take(&interrupted, &failure)? {
            Some((_, taken)) => {
                if let Some((_, at)) = &mut directory {
                    *at = taken;
                }
            }
            None => {
                hoard_bevy::server::shutdown(&mut app);
                return Ok(0);
            }
        }
    }
    /// Where a browser player starts without `?zone=`: the meadow if served.
    fn start_zone(zones: &[String]) -> String {
        zones
            .iter()
            .find(|z| *z == "meadow")
            .or(zones.first())
            .cloned()
            .unwrap_or_else(|| "meadow".to_owned())
    }
    let zones = if zones.is_empty() {
        // A first start: the zones just imported.
        store
            .zones()?
            .iter()
            .filter(|z| z.as_str() != game::rules::INVENTORY_ZONE)
            .map(|z| z.to_string())
            .collect()
    } else {
        zones
    };
    {
        let server = app.world().resource::<HoardServer>();
        let page = match (args.web, &server.handle.web) {
            (Some(addr), Some(web)) => Some(super::web::serve(
                addr,
                super::web::PageInfo {
                    start_zone: start_zone(&zones),
                    ..super::web::PageInfo::of(web, server.handle.identity.to_string(), args.dev, game::registry())
                },
            )?),
            _ => None,
        };
        println!(
            "{}",
            serde_json::json!({
                "event": "listening",
                "addr": server.handle.addr.to_string(),
                "fingerprint": server.handle.identity.to_string(),
                "metrics": server.handle.metrics_addr.map(|a| format!("http://{a}/metrics")),
                "web": page.map(|a| format!("http://{a}/")),
                "zones": zones,
                "serving": args.zones.iter().map(ZoneId::as_str).collect::<Vec<_>>(),
                // From taking the zones' leases to serving them (loading the world).
                "serving_after_leases_ms": directory.as_ref().map(|(_, at)| at.elapsed().as_millis() as u64),
                // A takeover: from the previous owner's lease lapsing to holding the zones.
                "taken_after_expiry_ms": leases.as_ref().and_then(|l| l.took_over_after.get()).map(|d| d.as_millis() as u64),
            })
        );
        tracing::info!(addr = %server.handle.addr, "serving");
        server
            .runtime()
            .spawn(super::signals::stop_on_signal(interrupted.clone()));
    }
    // One frame per tick: the game's rules, then the durable commit and the
    // publishing (a game system that panics ends the process).
    let code = match game::server::run_frames(&mut app, args.tick_hz, &interrupted) {
        Some(reason) => {
            // Logged by the server; the one line an operator needs on stderr.
            eprintln!("hoard-demo: the server failed: {reason}");
            1
        }
        None => match hoard_engine::lock::lock(&failure).take() {
            Some(reason) => {
                eprintln!("hoard-demo: the server stopped: {reason}");
                1
            }
            None => {
                tracing::info!("interrupted; shutting down");
                0
            }
        },
    };
    hoard_bevy::server::shutdown(&mut app);
    // Stopped cleanly, every commit durable: the zones and players go at
    // once, rather than when the leases lapse.
    if code == 0
        && let Some(leases) = &leases
    {
        match leases.store.release_all() {
            Ok(()) => tracing::info!("released the zone and player leases"),
            Err(e) => tracing::warn!(error = %e, "could not release the leases; they lapse by themselves"),
        }
    }
    Ok(code)
}

/// Sets `flag` on Ctrl-C (before the server's runtime exists).
fn ctrlc_flag(flag: Arc<AtomicBool>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("hoard-signals".into())
        .spawn(move || {
            runtime.block_on(super::signals::stop_on_signal(flag));
        })?;
    Ok(())
}

/// How long a server may take to import the world on a first start before
/// another may take the import over.
const IMPORT_LEASE: std::time::Duration = std::time::Duration::from_secs(600);

/// A standby's endpoint: sends players on to the zones' owners.
struct Standby {
    runtime: tokio::runtime::Runtime,
    handle: hoard_net::quic::server::ServerHandle,
}

impl Standby {
    /// Closes its connections and frees the address for the server.
    fn stop(self) {
        let Standby { runtime, handle } = self;
        runtime.block_on(handle.shutdown());
    }
}

/// The leases of the zones `--zones` names, and how they are taken.
struct ZoneLeases {
    store: Arc<hoard_engine::store::PgStore>,
    zones: Vec<ZoneId>,
    holder: LeaseHolder,
    /// For a takeover: from the previous owner's lease lapsing to holding it.
    took_over_after: std::cell::Cell<Option<std::time::Duration>>,
    /// How long the database may stay unreachable before the server stops
    /// (the server's store retry window).
    store_retry_for: std::time::Duration,
    /// The store handle holding the claim on the world's first import,
    /// while this server imports it.
    import_claim: std::cell::RefCell<Option<hoard_engine::store::PgStore>>,
}

impl ZoneLeases {
    fn prepare(args: &RunArgs, opened: &game::server::ServerStore) -> anyhow::Result<ZoneLeases> {
        let store = opened
            .postgres
            .clone()
            .context("--zones needs a PostgreSQL store (--store postgres://...)")?;
        anyhow::ensure!(
            args.advertise.is_some() || args.listen.port() != 0,
            "--zones: give --advertise ADDR, or a --listen address with a port, so other servers can send clients here"
        );
        anyhow::ensure!(
            args.lease_secs >= 1.0,
            "--lease-secs {}: at least 1 second",
            args.lease_secs
        );
        let address = args.advertise.clone().unwrap_or_else(|| args.listen.to_string());
        Ok(ZoneLeases {
            store,
            zones: args.zones.clone(),
            holder: LeaseHolder {
                owner: args.name.clone().unwrap_or_else(|| address.clone()),
                address,
                ttl: std::time::Duration::from_secs_f64(args.lease_secs),
            },
            took_over_after: std::cell::Cell::new(None),
            import_claim: std::cell::RefCell::new(None),
            store_retry_for: ServerOptions::new(args.listen, args.data.clone()).store_retry_for,
        })
    }

    /// If another server holds any of the zones: prints the `standby`
    /// line and starts an endpoint on the server's address that serves no
    /// zone of its own (it takes no lease and writes nothing) and sends
    /// each player entering a zone to its owner, until this server has
    /// taken its zones over and stops it.
    fn standby(&self, args: &RunArgs, opened: &game::server::ServerStore) -> anyhow::Result<Option<Standby>> {
        let mut served_by = serde_json::Map::new();
        for zone in &self.zones {
            if let Some(lease) = self.store.zone_lease(zone)?
                && lease.expires_at > chrono::Utc::now()
                && lease.owner != self.holder.owner
            {
                served_by.insert(zone.to_string(), serde_json::Value::String(lease.address));
            }
        }
        if served_by.is_empty() {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hoard-standby")
            .enable_all()
            .build()?;
        let mut options = ServerOptions::new(args.listen, args.data.clone());
        options.dev_mode = args.dev;
        options.advertise = args.advertise.clone();
        options.max_connections = args.max_connections;
        options.max_connections_per_ip = args.max_connections_per_ip;
        // No zone is this server's yet: every entry goes to its owner.
        options.directory = Arc::new(game::leases::LeaseDirectory::new(self.store.clone(), &[]));
        let registry = game::registry();
        let idle = hoard_net::quic::server::Game::new(
            bevy_ecs::world::World::new(),
            bevy_ecs::schedule::Schedule::default(),
            hoard_engine::Publisher::new(registry),
            hoard_proto::intents::IntentRegistry::new(),
        );
        let handle = runtime
            .block_on(hoard_net::quic::server::start(options, opened.store.clone(), idle))
            .context("listening as a standby")?;
        println!(
            "{}",
            serde_json::json!({
                "event": "standby",
                "addr": handle.addr.to_string(),
                "fingerprint": handle.identity.to_string(),
                "zones": self.zones.iter().map(ZoneId::as_str).collect::<Vec<_>>(),
                "served_by": served_by,
            })
        );
        tracing::info!(addr = %handle.addr, "standby: sending players to the zones' owners");
        Ok(Some(Standby { runtime, handle }))
    }

    /// Whether this server imports the world into the empty store (`Some(true)`),
    /// or another server of the world did and it is done (`Some(false)`,
    /// after waiting for it with a line saying so); `None` if interrupted
    /// while waiting. The import is claimed by a lease on the import's
    /// completion marker, long enough for any import (if its server dies,
    /// the next to take it finds an unfinished import and refuses it).
    fn claim_import(&self, args: &RunArgs, interrupted: &Arc<AtomicBool>) -> anyhow::Result<Option<bool>> {
        ctrlc_flag(interrupted.clone())?;
        // The claim is held through a store handle of its own: a store that
        // holds zone leases fences its commits to them, and the import
        // commits every zone.
        let url = args.store.as_deref().context("--zones needs a PostgreSQL store")?;
        let mut options = hoard_engine::store::PgOptions::new(url);
        options.schema = args.store_schema.clone();
        let claims = hoard_engine::store::PgStore::open(&options)?;
        let marker = ZoneId::new(game::rules::INVENTORY_ZONE)?;
        let importer = LeaseHolder {
            ttl: IMPORT_LEASE,
            ..self.holder.clone()
        };
        let mut announced = false;
        loop {
            if hoard_engine::store::WorldStore::zones(&*self.store)?.contains(&marker) {
                return Ok(Some(false));
            }
            match claims.acquire_zone(&marker, &importer) {
                Ok(_) if hoard_engine::store::WorldStore::zones(&*self.store)?.is_empty() => {
                    *self.import_claim.borrow_mut() = Some(claims);
                    return Ok(Some(true));
                }
                Ok(_) => {
                    // Another server's import, cut short (or finished
                    // between the two reads): not ours to redo.
                    claims.release_zone(&marker)?;
                    return Ok(Some(false));
                }
                Err(hoard_engine::store::LeaseError::Held(lease)) => {
                    if !announced {
                        eprintln!(
                            "the world is being imported by {} at {}; waiting for it to finish",
                            lease.owner, lease.address
                        );
                        announced = true;
                    }
                }
                Err(e) => return Err(e.into()),
            }
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Gives back the import's lease once the world is imported.
    fn import_done(&self) -> anyhow::Result<()> {
        if let Some(claims) = self.import_claim.borrow_mut().take() {
            claims.release_zone(&ZoneId::new(game::rules::INVENTORY_ZONE)?)?;
        }
        Ok(())
    }

    fn directory(&self) -> Arc<game::leases::LeaseDirectory> {
        Arc::new(game::leases::LeaseDirectory::new(self.store.clone(), &self.zones))
    }

    /// Takes the leases (waiting while others hold them; `None` if
    /// interrupted meanwhile) and keeps them renewed; the directory the
    /// sessions ask, and when the last lease was taken.
    #[allow(clippy::type_complexity)]
    fn take(
        &self,
        interrupted: &Arc<AtomicBool>,
        failure: &Arc<std::sync::Mutex<Option<String>>>,
    ) -> anyhow::Result<Option<(Arc<game::leases::LeaseDirectory>, std::time::Instant)>> {
        // Ctrl-C while waiting for a lease.
        ctrlc_flag(interrupted.clone())?;
        let Some(report) = game::leases::take_zones(&self.store, &self.zones, &self.holder, interrupted)? else {
            return Ok(None);
        };
        if let Some(after) = report.after_expiry {
            self.took_over_after.set(Some(after));
        }
        let taken = std::time::Instant::now();
        game::leases::keep_renewed(
            self.store.clone(),
            self.holder.clone(),
            interrupted.clone(),
            failure.clone(),
            self.store_retry_for,
        )?;
        Ok(Some((self.directory(), taken)))
    }
}
