//! hoard-netsim, a UDP network simulator: a proxy between QUIC clients and a server that
//! adds one-way delay, jitter, random loss and a bandwidth cap (with a
//! bounded bottleneck buffer that drops its tail, as a router would), and
//! counts bytes and packets in each direction. Used by tests and the bench;
//! `hoard-demo netsim` runs it for game developers.
//!
//! Each client address gets its own upstream socket, so the server sees one
//! peer per client. Each direction of each peer is a FIFO: packets are
//! delivered in the order they were sent (jitter delays, never reorders).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoard_engine::lock::lock;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Link conditions, applied to each direction independently.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkConfig {
    /// One-way delay (a 50 ms round trip is 25 ms each way).
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per packet.
    pub jitter: Duration,
    /// Probability of dropping a packet.
    pub loss: f64,
    /// Bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// Bytes the bottleneck may queue before dropping (defaults to 256 KiB).
    pub queue_bytes: Option<u64>,
}

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct DirectionStats {
    /// Bytes forwarded.
    pub bytes: AtomicU64,
    /// Packets forwarded.
    pub packets: AtomicU64,
    /// Packets dropped (loss or full queue).
    pub dropped: AtomicU64,
}

/// Counters of both directions.
#[derive(Debug, Default)]
pub struct NetSimStats {
    /// Client → server.
    pub up: DirectionStats,
    /// Server → client.
    pub down: DirectionStats,
}

impl NetSimStats {
    /// `(bytes up, bytes down)` so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.bytes.load(Ordering::Relaxed),
            self.down.bytes.load(Ordering::Relaxed),
        )
    }
}

/// A bottleneck: when the link is next free.
struct Link {
    config: LinkConfig,
    free_at: Mutex<Instant>,
    rng: Mutex<u64>,
}

impl Link {
    fn new(config: LinkConfig, seed: u64) -> Link {
        Link {
            config,
            free_at: Mutex::new(Instant::now()),
            rng: Mutex::new(seed | 1),
        }
    }

    fn random(&self) -> f64 {
        // xorshift64*: only for simulated loss and jitter, never for security.
        let mut s = lock(&self.rng);
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// When a packet of `len` bytes sent now arrives, or `None` if dropped.
    fn schedule(&self, len: usize) -> Option<Instant> {
        if self.config.loss > 0.0 && self.random() < self.config.loss {
            return None;
        }
        let now = Instant::now();
        let departure = match self.config.rate_bps {
            Some(bps) if bps > 0 => {
                let mut free = lock(&self.free_at);
                let start = (*free).max(now);
                let queued = start.saturating_duration_since(now).as_secs_f64() * bps as f64 / 8.0;
                if queued > self.config.queue_bytes.unwrap_or(256 * 1024) as f64 {
                    return None;
                }
                let done = start + Duration::from_secs_f64(len as f64 * 8.0 / bps as f64);
                *free = done;
                done
            }
            _ => now,
        };
        let jitter = self.config.jitter.mul_f64(self.random());
        Some(departure + self.config.delay + jitter)
    }
}

/// A running simulator.
pub struct NetSim {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Counters.
    pub stats: Arc<NetSimStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NetSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Packets a direction of one peer may hold in flight; past this, more are
/// dropped (counted), so a flood cannot grow the simulator without bound.
const MAX_IN_FLIGHT: usize = 65_536;

/// One direction of one peer: packets go out in the order they came, each
/// when it is due. (A task per packet, as before, let packets due within the
/// same timer tick overtake each other; QUIC then drops a 1-RTT or 0-RTT
/// packet that overtakes the handshake packet it depends on, and the first
/// flight costs a retransmission — a round trip the network did not cause.)
type Lane = tokio::sync::mpsc::Sender<(Instant, Vec<u8>)>;

/// Starts a lane that sends each packet with `send` once it is due.
fn lane<S, F>(send: S) -> Lane
where
    S: Fn(Vec<u8>) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(MAX_IN_FLIGHT);
    tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            send(bytes).await;
        }
    });
    tx
}

fn forward(link: &Arc<Link>, stats: &Arc<NetSimStats>, up: bool, bytes: Vec<u8>, lane: &Lane) {
    let dir = if up { &stats.up } else { &stats.down };
    let len = bytes.len() as u64;
    match link.schedule(bytes.len()) {
        Some(at) if lane.try_send((at, bytes)).is_ok() => {
            dir.bytes.fetch_add(len, Ordering::Relaxed);
            dir.packets.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            dir.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts a simulator listening on `listen` and forwarding to `upstream`.
pub async fn start(listen: SocketAddr, upstream: SocketAddr, link: LinkConfig) -> std::io::Result<NetSim> {
    let front = Arc::new(UdpSocket::bind(listen).await?);
    let addr = front.local_addr()?;
    let stats = Arc::new(NetSimStats::default());
    let up_link = Arc::new(Link::new(link, 0x9e37_79b9_7f4a_7c15));
    let down_link = Arc::new(Link::new(link, 0xc2b2_ae3d_27d4_eb4f));
    let task_stats = stats.clone();
    let task = tokio::spawn(async move {
        let mut peers: HashMap<SocketAddr, Lane> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((len, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            let up = match peers.get(&client) {
                Some(lane) => lane.clone(),
                None => {
                    let bind: SocketAddr = if upstream.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }
                        .parse()
                        .unwrap_or(upstream);
                    let Ok(socket) = UdpSocket::bind(bind).await else {
                        continue;
                    };
                    if socket.connect(upstream).await.is_err() {
                        continue;
                    }
                    let socket = Arc::new(socket);
                    // Server → client for this peer.
                    let front_down = front.clone();
                    let down = lane(move |b: Vec<u8>| {
                        let front = front_down.clone();
                        async move {
                            let _ = front.send_to(&b, client).await;
                        }
                    });
                    let (socket2, stats, link) = (socket.clone(), task_stats.clone(), down_link.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(len) = socket2.recv(&mut buf).await {
                            forward(&link, &stats, false, buf[..len].to_vec(), &down);
                        }
                    });
                    let up = lane(move |b: Vec<u8>| {
                        let socket = socket.clone();
                        async move {
                            let _ = socket.send(&b).await;
                        }
                    });
                    peers.insert(client, up.clone());
                    up
                }
            };
            forward(&up_link, &task_stats, true, buf[..len].to_vec(), &up);
        }
    });
    Ok(NetSim { addr, stats, task })
}
