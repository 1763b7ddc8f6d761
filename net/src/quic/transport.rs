//! quinn transport settings: bounded windows (quinn's default connection
//! receive window is unbounded), stream limits, an initial congestion
//! window sized for bulk zone answers, clients asked to acknowledge bulk
//! answers every [`ACK_EVERY`] packets, and path MTU discovery off unless a
//! server asks for it.
//!
//! Path MTU discovery sends padded probes of up to 1,452 bytes from each
//! side once a connection is up (four or so from each on a clean path):
//! about 5.6 KB down and as much up, where a warm zone entry moves a few
//! hundred bytes of hoard data. What it buys is fewer, larger packets for
//! bulk transfers: on a cold entry 1,200-byte packets carry 0.4% more bytes
//! than 1,452-byte ones and take ~17% more packets. A client never sends
//! bulk, so it never probes; a server probes only when
//! `ServerOptions::mtu_discovery` says so (players who mostly load big
//! zones cold, over links that carry larger packets).

// Reached from other crates only through `hoard_net::testing`.
#![cfg_attr(not(feature = "testing"), allow(unreachable_pub))]

use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::CubicConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Bytes a connection may have in flight towards the client (per connection).
pub(crate) const CONNECTION_WINDOW: u32 = 24 * 1024 * 1024;
/// Bytes one stream may have in flight.
pub(crate) const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// Initial congestion window: a zone answer's first round trips carry this
/// much rather than ten packets, so short bulk transfers are not all slow start.
pub(crate) const INITIAL_WINDOW: u64 = 160 * 1024;

/// A client acknowledges every this many packets of a bulk transfer (and
/// within its ack delay otherwise), as the server asks with the QUIC ACK
/// frequency extension: a cold entry's ACKs cost the client's upload and
/// the server's receive path, and one per two packets is more than
/// congestion control needs.
pub(crate) const ACK_EVERY: u32 = 10;

/// A connection silent for this long (no keep-alive either) is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

fn base() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(u64::from(CONNECTION_WINDOW));
    let mut cubic = CubicConfig::default();
    cubic.initial_window(INITIAL_WINDOW);
    t.congestion_controller_factory(Arc::new(cubic));
    // A peer that vanishes without closing (a killed client) is noticed
    // within the idle timeout: it leaves its zone's presence that fast.
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    if let Ok(idle) = IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t.mtu_discovery_config(None);
    t
}

/// The server side as its options say: path MTU discovery on (quinn's
/// defaults: probes up to 1,452 bytes, again every 10 minutes) or off, and
/// the longest a client is asked to hold its acknowledgments (`None`:
/// quinn's choice, the client's own `max_ack_delay`, 25 ms).
///
/// quinn asks a client for at most the path's round trip (and at least
/// 25 ms): a longer `ack_delay` only tells on paths slower than that, where
/// a client receiving a tick's packet every 50 ms otherwise acknowledges
/// each one. What it costs: a lost packet at the end of a burst is resent
/// up to `ack_delay` later (QUIC's probe timeout includes it).
pub(crate) fn server_with(mtu_discovery: bool, ack_delay: Option<Duration>) -> TransportConfig {
    let mut t = server();
    if mtu_discovery {
        t.mtu_discovery_config(Some(quinn::MtuDiscoveryConfig::default()));
    }
    if ack_delay.is_some() {
        t.ack_frequency_config(Some(ack_frequency(ack_delay)));
    }
    t
}

/// What the server asks of a client's acknowledgments: one every
/// [`ACK_EVERY`] packets, within `max_delay` (`None`: the client's own).
fn ack_frequency(max_delay: Option<Duration>) -> quinn::AckFrequencyConfig {
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(VarInt::from_u32(ACK_EVERY - 1));
    ack.max_ack_delay(max_delay);
    ack
}

/// The server side: a client may open one control stream (and a spare) and
/// no unidirectional streams; the server's receive window stays small, since
/// clients only send control messages.
pub fn server() -> TransportConfig {
    let mut t = base();
    t.ack_frequency_config(Some(ack_frequency(None)));
    t.max_concurrent_bidi_streams(VarInt::from_u32(2));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(1024 * 1024));
    t.receive_window(VarInt::from_u32(2 * 1024 * 1024));
    t
}

/// The WebTransport server side: as [`server`], but a browser opens
/// HTTP/3's streams too — its control stream and QPACK's encoder and
/// decoder streams (unidirectional), its session's CONNECT stream
/// (bidirectional) beside hoard's control stream.
pub(crate) fn web_server() -> TransportConfig {
    let mut t = server();
    t.max_concurrent_bidi_streams(VarInt::from_u32(4));
    t.max_concurrent_uni_streams(VarInt::from_u32(4));
    t
}

/// The client side: the server opens answer streams and one delta stream.
pub fn client() -> TransportConfig {
    let mut t = base();
    t.max_concurrent_bidi_streams(VarInt::from_u32(0));
    t.max_concurrent_uni_streams(VarInt::from_u32(64));
    t
}
