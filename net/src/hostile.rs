//! Hostile clients for hoard's own tests and benches: connections that sign
//! in, ask for zones and then stop reading, their receive windows frozen
//! small, so every answer sent to them stalls on the server. What the
//! server's fair answer slots are measured and tested against (see
//! `quic::slots`). Not part of the API.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hoard_engine::{ServerIdentity, ZoneId};
use hoard_proto::wire::{EnterZone, Hello, Message, PROTOCOL_VERSION};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};

use hoard_trust::tls::{PinnedVerifier, SERVER_NAME, client_config};

/// The receive window a frozen reader offers, per stream and per connection:
/// the server may send this much and then waits for a client that never reads.
pub const FROZEN_WINDOW: u32 = 64 * 1024;

/// A client endpoint on `ip` (a loopback address such as 127.0.0.2, so that
/// several "addresses" run on one machine) whose connections pin `identity`
/// and offer only [`FROZEN_WINDOW`] of receive window.
pub fn frozen_endpoint(ip: IpAddr, identity: ServerIdentity) -> std::io::Result<Endpoint> {
    let verifier = Arc::new(PinnedVerifier::new("hostile", Some(identity), None));
    let tls = client_config(verifier).map_err(std::io::Error::other)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(std::io::Error::other)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(VarInt::from_u32(FROZEN_WINDOW));
    transport.receive_window(VarInt::from_u32(FROZEN_WINDOW));
    transport.max_concurrent_uni_streams(VarInt::from_u32(64));
    config.transport_config(Arc::new(transport));
    let mut endpoint = Endpoint::client(SocketAddr::new(ip, 0))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A connection that sent its frames and reads nothing the server sends.
#[derive(Debug)]
pub struct FrozenReader {
    /// The connection (to see whether and why the server closed it).
    pub conn: Connection,
    /// The control stream, kept open both ways (a dropped receiving side
    /// would tell the server to stop sending on it).
    _control: (SendStream, RecvStream),
}

/// Connects through `endpoint` to `server` and writes `frames` (a `Hello`,
/// then `EnterZone`s, each a whole frame) on a control stream, then reads
/// nothing, ever.
pub async fn frozen_reader(
    endpoint: &Endpoint,
    server: SocketAddr,
    frames: &[Vec<u8>],
) -> Result<FrozenReader, Box<dyn std::error::Error + Send + Sync>> {
    let conn = endpoint.connect(server, SERVER_NAME)?.await?;
    let (mut control, recv) = conn.open_bi().await?;
    for frame in frames {
        control.write_all(frame).await?;
    }
    Ok(FrozenReader {
        conn,
        _control: (control, recv),
    })
}

/// The frames a hostile reader sends: `Hello` with `token` for a client of
/// `registry` (its hash), then `entries` cold `EnterZone`s of `zone`
/// without live deltas.
pub fn hello_and_cold_entries(registry: [u8; 32], token: String, zone: &ZoneId, entries: u32) -> Vec<Vec<u8>> {
    let hello = Message::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        registry,
        service: "world".into(),
        token,
        codecs: Vec::new(),
        token_keys: false,
    });
    let enters = (1..=entries).map(|request| {
        Message::EnterZone(EnterZone {
            request,
            zone: zone.clone(),
            subscribe: false,
            have: Vec::new(),
            held: Vec::new(),
            proofs: false,
        })
    });
    std::iter::once(hello).chain(enters).map(|m| m.to_frame()).collect()
}

/// How many of `readers` have been sent at least 90% of their window:
/// their answers stall on the server now.
pub fn stalled(readers: &[FrozenReader]) -> usize {
    readers
        .iter()
        .filter(|r| r.conn.stats().udp_rx.bytes >= u64::from(FROZEN_WINDOW) * 9 / 10)
        .count()
}
