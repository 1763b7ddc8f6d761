//! A UDP network simulator: a proxy between QUIC clients and a server that
//! adds one-way delay, jitter, random loss and a bandwidth cap (with a
//! bounded bottleneck buffer that drops its tail, as a router would), and
//! counts bytes and packets in each direction. Used by tests and the bench;
//! `hoard-demo netsim` runs it for game developers.
//!
//! Each client address gets its own upstream socket, so the server sees one
//! peer per client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        let mut s = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
                let mut free = self.free_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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

fn forward(
    link: &Arc<Link>,
    stats: &Arc<NetSimStats>,
    up: bool,
    bytes: Vec<u8>,
    send: impl FnOnce(Vec<u8>) -> tokio::task::JoinHandle<()> + Send + 'static,
) {
    let dir = if up { &stats.up } else { &stats.down };
    match link.schedule(bytes.len()) {
        None => {
            dir.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Some(at) => {
            dir.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            dir.packets.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let _ = send(bytes).await;
            });
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
        let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((len, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            let back = match peers.get(&client) {
                Some(s) => s.clone(),
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
                    peers.insert(client, socket.clone());
                    // Server → client for this peer.
                    let (front, socket2, stats, link) =
                        (front.clone(), socket.clone(), task_stats.clone(), down_link.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(len) = socket2.recv(&mut buf).await {
                            let front = front.clone();
                            forward(&link, &stats, false, buf[..len].to_vec(), move |b| {
                                tokio::spawn(async move {
                                    let _ = front.send_to(&b, client).await;
                                })
                            });
                        }
                    });
                    socket
                }
            };
            forward(&up_link, &task_stats, true, buf[..len].to_vec(), move |b| {
                tokio::spawn(async move {
                    let _ = back.send(&b).await;
                })
            });
        }
    });
    Ok(NetSim { addr, stats, task })
}
