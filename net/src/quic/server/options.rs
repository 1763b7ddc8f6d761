//! [`ServerOptions`]: what a server is told at start — where it listens,
//! its data directory, tick rate, limits and budgets — with defaults.

use super::*;

/// The longest a client is asked to hold its acknowledgments, by default
/// (see [`ServerOptions::ack_delay`]).
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_millis(100);

/// A [`ServerOptions::ack_delay`] given in milliseconds, as a command
/// line takes it: 0 for none (the client's own delay).
pub fn ack_delay_from_millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory: certificate, key, token secret (the store is opened by the caller).
    pub data_dir: PathBuf,
    /// The service name.
    pub service: String,
    /// World ticks per second.
    pub tick_hz: u32,
    /// Accept `dev:<name>` tokens (local development only; logged loudly).
    pub dev_mode: bool,
    /// Most simultaneous connections; more are refused.
    pub max_connections: usize,
    /// Live deltas queued per connection before it counts as a slow consumer
    /// and is disconnected.
    pub delta_queue: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Time a connection has to finish its handshake and send `Hello`.
    pub hello_timeout: Duration,
    /// Zone answers (and repairs) one connection may have in flight; while
    /// they are, its control stream is not read, so its memory stays bounded.
    pub answers_in_flight: usize,
    /// Zone answers in flight over all connections, in each of two pools:
    /// every request's first part (a repair, or the first 64 KiB of an
    /// entry's answer: a warm entry's whole answer, usually) goes under a
    /// light slot, an answer going on past it under a bulk slot, so small
    /// answers never wait behind large ones.
    pub answers_in_flight_total: usize,
    /// Of each pool, the slots one IP address may hold at once: while fewer
    /// than `answers_in_flight_total / answers_in_flight_per_ip` addresses
    /// fill their share, no address waits for another's answers (a few
    /// clients that request zones and stop reading cannot stall every
    /// player's entry).
    pub answers_in_flight_per_ip: usize,
    /// Longest wait for a client to take one frame of an answer (or for an
    /// answer slot) before it counts as a slow consumer and is disconnected.
    pub answer_stall: Duration,
    /// How long commits may keep failing (the store reopened and retried
    /// meanwhile) before the server gives up and reports a failure.
    pub store_retry_for: Duration,
    /// Where to serve Prometheus metrics over HTTP (`None`: not served; the
    /// metrics are still kept, see [`ServerHandle::metrics`]).
    pub metrics: Option<SocketAddr>,
    /// Most sends per second of one zone's transient state (0: every frame
    /// it changes). Every session in a zone gets the whole state each time,
    /// so the cost grows with the square of the zone's players; the cap
    /// bounds it. The latest state still always goes out.
    pub transient_hz: u32,
    /// Which server serves each zone, for a world spread over several
    /// servers (a client entering a zone served elsewhere is sent there).
    /// Default: every zone is served here.
    pub directory: Arc<dyn hoard_proto::sync::server::ZoneDirectory>,
    /// The address players reach the world at (`host:port`), which names it
    /// in `hoard://` URLs (a load error's, say). Default: the listen address.
    pub advertise: Option<String>,
    /// Probe each connection's path for packets larger than 1,200 bytes
    /// (QUIC path MTU discovery): fewer packets for big cold entries over
    /// links that carry them, at ~5.6 KB of probes per connection, which is
    /// most of a warm entry's bytes. Default: off.
    pub mtu_discovery: bool,
    /// The longest each client is asked to hold its acknowledgments of the
    /// server's packets (QUIC's ACK frequency extension; quinn asks for at
    /// most the path's round trip, and at least 25 ms). Longer means fewer
    /// ACK datagrams for the server to receive — a client gets a packet
    /// each tick with changes, and acknowledges each one within 25 ms
    /// otherwise — and a lost last packet resent that much later. `None`:
    /// the client's own delay (25 ms). Default: 100 ms (over a 200 ms
    /// round trip, a client getting a change every 50 ms sent 8 ACKs for 30
    /// changes rather than 29; net's
    /// `a_client_asked_to_hold_its_acks_sends_fewer_on_a_slow_path`).
    pub ack_delay: Option<Duration>,
    /// A WebTransport (HTTP/3) endpoint for browsers beside the raw QUIC
    /// one (see [`WebTransportOptions`]). Default: none.
    pub web_transport: Option<WebTransportOptions>,
}

impl ServerOptions {
    /// Defaults: 20 Hz, 1,000 connections (32 per address), 256 queued
    /// deltas, `Hello` within 5 s, 2 answers in flight per connection (128
    /// light and 128 bulk in all, 16 of each per address), 15 s for a client
    /// to take an answer frame, 60 s of store retries, no dev mode, no path
    /// MTU discovery, clients asked to hold their ACKs up to 100 ms.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerOptions {
        ServerOptions {
            listen,
            data_dir,
            service: "world".into(),
            tick_hz: 20,
            dev_mode: false,
            max_connections: 1000,
            delta_queue: 256,
            max_connections_per_ip: 32,
            hello_timeout: Duration::from_secs(5),
            answers_in_flight: 2,
            answers_in_flight_total: 128,
            answers_in_flight_per_ip: 16,
            answer_stall: Duration::from_secs(15),
            store_retry_for: Duration::from_secs(60),
            metrics: None,
            transient_hz: 10,
            directory: Arc::new(hoard_proto::sync::server::OneServer),
            advertise: None,
            mtu_discovery: false,
            ack_delay: Some(DEFAULT_ACK_DELAY),
            web_transport: None,
        }
    }

    /// The `hoard://` URL of the world served, as players reach it:
    /// [`ServerOptions::advertise`] if set (and `host:port`), else `bound`,
    /// the address the server is bound to.
    pub fn world_url(&self, bound: SocketAddr) -> hoard_engine::HoardUrl {
        let advertised = self
            .advertise
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(host, port)| Some((host.trim_matches(['[', ']']).to_owned(), port.parse::<u16>().ok()?)));
        let (host, port) = advertised.unwrap_or_else(|| (bound.ip().to_string(), bound.port()));
        hoard_engine::HoardUrl::service(host, port.max(1), self.service.clone())
    }
}
