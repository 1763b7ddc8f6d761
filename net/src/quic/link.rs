//! [`Link`]: one client's connection as the server's machinery uses it —
//! a raw QUIC connection (ALPN `hoard/…`), or a WebTransport session over
//! HTTP/3 (ALPN `h3`, how browsers reach the server). Both carry the same
//! hoard streams: the client's one bidirectional control stream and the
//! server's unidirectional answer and delta streams. On WebTransport each
//! stream begins with the session's header (RFC 9220 / the WebTransport
//! over HTTP/3 draft: a stream type and the session id, both QUIC
//! varints), which this module writes on the streams the server opens and
//! reads off the control stream; after it the bytes are hoard's frames,
//! exactly as on raw QUIC. A close goes to the browser as the session's
//! `CLOSE_WEBTRANSPORT_SESSION` (code and reason, which the page sees)
//! rather than as a bare QUIC close. `web-transport-quinn` performs the
//! HTTP/3 SETTINGS and extended CONNECT handshake; everything else is the
//! same code as raw QUIC.

use std::sync::{Arc, OnceLock};

use quinn::{Connection, RecvStream, SendStream};
use web_transport_quinn::proto::{Frame, StreamUni, VarInt};

use hoard_proto::wire::ErrorCode;

/// One client's connection (cheap to clone: handles).
#[derive(Clone)]
pub(crate) struct Link {
    conn: Connection,
    /// Boxed: a session's handle is large, and links travel in commands.
    web: Option<Arc<WebSession>>,
}

/// A WebTransport session's handle and its id.
struct WebSession {
    /// Kept for the session's life: it holds the HTTP/3 control and
    /// CONNECT streams (dropping them would end the session), and closes
    /// with the capsule.
    session: web_transport_quinn::Session,
    /// The session's id (its CONNECT stream's), which names the session on
    /// every stream: read off the control stream's header, which comes
    /// before any stream the server opens (answers and deltas follow the
    /// `Hello` on it).
    id: OnceLock<u64>,
}

/// Why a control stream could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    #[error("control stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("the client's stream is not a WebTransport stream of this session")]
    NotThisSession,
}

impl Link {
    /// A raw QUIC connection.
    pub(crate) fn quic(conn: Connection) -> Link {
        Link { conn, web: None }
    }

    /// A WebTransport session accepted on `conn` (the CONNECT answered).
    pub(crate) fn web(conn: Connection, session: web_transport_quinn::Session) -> Link {
        Link {
            conn,
            web: Some(Arc::new(WebSession {
                session,
                id: OnceLock::new(),
            })),
        }
    }

    /// The QUIC connection underneath (stats, addresses, close reasons).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The client's control stream, its WebTransport header (if any) read
    /// and checked.
    pub(crate) async fn accept_control(&self) -> Result<(SendStream, RecvStream), AcceptError> {
        let (send, mut recv) = self.conn.accept_bi().await?;
        if let Some(web) = &self.web {
            let kind = read_varint(&mut recv).await?;
            let session = read_varint(&mut recv).await?;
            // A session is named by a client-initiated bidirectional
            // stream's id (a multiple of 4).
            if kind != Frame::WEBTRANSPORT.0.into_inner() || session % 4 != 0 || web.id.set(session).is_err() {
                return Err(AcceptError::NotThisSession);
            }
        }
        Ok((send, recv))
    }

    /// Opens a stream to the client, its WebTransport header (if any)
    /// written first.
    pub(crate) async fn open_uni(&self) -> Result<SendStream, quinn::ConnectionError> {
        let mut send = self.conn.open_uni().await?;
        if let Some(web) = &self.web {
            let mut header = Vec::with_capacity(16);
            StreamUni::WEBTRANSPORT.encode(&mut header);
            // Read off the control stream, so a varint.
            let id = web.id.get().copied().unwrap_or_default();
            if let Ok(id) = VarInt::from_u64(id) {
                id.encode(&mut header);
            }
            send.write_all(&header).await.map_err(|e| match e {
                quinn::WriteError::ConnectionLost(e) => e,
                _ => quinn::ConnectionError::LocallyClosed,
            })?;
        }
        Ok(send)
    }

    /// Closes the connection with hoard's `code` and `reason`: as a QUIC
    /// application close, or as the WebTransport session's close.
    pub(crate) fn close(&self, code: ErrorCode, reason: &[u8]) {
        match &self.web {
            Some(web) => web.session.close(code as u32, reason),
            None => self.conn.close(quinn::VarInt::from_u32(code as u32), reason),
        }
    }
}

impl hoard_server::CloseLink for Link {
    fn close(&self, code: ErrorCode, reason: &[u8]) {
        Link::close(self, code, reason);
    }
}

/// Reads one QUIC variable-length integer off a stream.
async fn read_varint(recv: &mut RecvStream) -> Result<u64, quinn::ReadExactError> {
    let mut bytes = [0u8; 8];
    recv.read_exact(&mut bytes[..1]).await?;
    let len = 1usize << (bytes[0] >> 6);
    recv.read_exact(&mut bytes[1..len]).await?;
    let mut buf = &bytes[..len];
    // Exactly `len` bytes of a varint whose first byte said `len`: decodes.
    Ok(VarInt::decode(&mut buf).map(u64::from).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_are_the_drafts_bytes() {
        // The bidirectional stream signal is 0x41 and the unidirectional
        // stream type 0x54 (draft-ietf-webtrans-http3), session 0: the
        // browser's first client-initiated bidirectional stream.
        let mut bi = Vec::new();
        Frame::WEBTRANSPORT.encode(&mut bi);
        VarInt::from_u32(0).encode(&mut bi);
        assert_eq!(bi, [0x40, 0x41, 0x00]);
        let mut uni = Vec::new();
        StreamUni::WEBTRANSPORT.encode(&mut uni);
        VarInt::from_u32(4).encode(&mut uni);
        assert_eq!(uni, [0x40, 0x54, 0x04]);
    }
}
