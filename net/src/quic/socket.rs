//! The UDP sockets under the QUIC endpoints, with receive and send buffers
//! sized for bursts.
//!
//! A server's one socket takes every client's datagrams, and a tick's
//! deltas leave it at once; a shared client socket carries dozens of
//! connections. The kernel's default buffers (about 200 KiB) overflow in
//! such bursts, and a datagram dropped there is only retransmitted after a
//! probe timeout — during a handshake, a second. The buffers asked for here
//! are capped by the kernel (on Linux `net.core.rmem_max` and
//! `net.core.wmem_max`); a cap below them is logged once, with the setting
//! to raise.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::SockRef;

/// Receive buffer asked for each endpoint's socket.
pub(crate) const RECV_BUFFER: usize = 4 << 20;
/// Send buffer asked for each endpoint's socket.
pub(crate) const SEND_BUFFER: usize = 4 << 20;

/// Binds a UDP socket at `addr` and widens its buffers.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    widen(&socket);
    Ok(socket)
}

/// Asks for [`RECV_BUFFER`] and [`SEND_BUFFER`]; what the kernel grants
/// instead is logged (once per process), not an error: the endpoint works
/// with smaller buffers, it only drops more in bursts.
fn widen(socket: &UdpSocket) {
    static CAPPED: AtomicBool = AtomicBool::new(false);
    let sock = SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(RECV_BUFFER);
    let _ = sock.set_send_buffer_size(SEND_BUFFER);
    let recv = sock.recv_buffer_size().unwrap_or(0);
    let send = sock.send_buffer_size().unwrap_or(0);
    tracing::debug!(recv, send, "UDP socket buffers");
    // Linux reports double the size it was set to (its bookkeeping share).
    if (recv < RECV_BUFFER || send < SEND_BUFFER) && !CAPPED.swap(true, Ordering::Relaxed) {
        tracing::info!(
            recv,
            send,
            wanted = RECV_BUFFER,
            "the kernel caps UDP socket buffers below what was asked; bursts of many clients may be dropped \
             and retransmitted late (raise net.core.rmem_max and net.core.wmem_max)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel allows (Linux), or the asked size elsewhere.
    fn cap(setting: &str, asked: usize) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{setting}"))
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map_or(asked, |max| max.min(asked))
    }

    #[test]
    fn a_bound_socket_has_the_buffers_asked_for_up_to_the_kernels_cap() {
        let socket = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let sock = SockRef::from(&socket);
        let recv = sock.recv_buffer_size().expect("recv");
        let send = sock.send_buffer_size().expect("send");
        assert!(recv >= cap("rmem_max", RECV_BUFFER), "receive buffer {recv}");
        assert!(send >= cap("wmem_max", SEND_BUFFER), "send buffer {send}");
    }
}
