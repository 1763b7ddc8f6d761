//! `hoard-demo server --web ADDR`: the game in a browser. The server's
//! WebTransport endpoint listens on UDP `ADDR`, and this small HTTP server
//! (tiny_http, one thread) on TCP `ADDR` serves the page, the browser client
//! (`web/dist/hoard.js`) and the game drawn on a canvas (`web/dist/demo.js`),
//! both built into the binary, and `/hoard.json`: where the WebTransport
//! endpoint is, the development certificate's hashes, the world's identity,
//! the game's registry, the zone a player starts in, whether `dev:`
//! tokens are taken, and whether this is a relay (`hoard-demo relay --web`),
//! through which the page asks for the world's signed heads.

use std::net::SocketAddr;
use std::sync::Arc;

use hoard_engine::PublishRegistry;
use hoard_net::quic::server::{WEB_PATH, WebEndpoint};

const INDEX: &str = include_str!("../../../web/static/index.html");
const CLIENT: &str = include_str!("../../../web/dist/hoard.js");
const GAME: &str = include_str!("../../../web/dist/demo.js");

/// What the page is told about the server.
pub(crate) struct PageInfo {
    pub(crate) web_transport: SocketAddr,
    pub(crate) hashes: Arc<dyn Fn() -> Vec<[u8; 32]> + Send + Sync>,
    pub(crate) world: String,
    pub(crate) dev: bool,
    pub(crate) registry: PublishRegistry,
    /// Where a player starts unless the page's URL names a zone.
    pub(crate) start_zone: String,
    /// A relay's page: the page checks every shard against the world's
    /// signature (`world` in `HoardWebClient.connect`).
    pub(crate) relay: bool,
}

impl PageInfo {
    pub(crate) fn of(web: &WebEndpoint, world: String, dev: bool, registry: PublishRegistry) -> PageInfo {
        PageInfo {
            web_transport: web.addr,
            hashes: Arc::new(web.certificate_hashes_source()),
            world,
            dev,
            registry,
            start_zone: "meadow".to_owned(),
            relay: false,
        }
    }

    fn json(&self) -> String {
        let host = match self.web_transport.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let registry: Vec<_> = self
            .registry
            .components()
            .map(|(name, version)| serde_json::json!({ "name": name, "version": version }))
            .chain(
                self.registry
                    .intents()
                    .map(|(name, version)| serde_json::json!({ "name": name, "version": version, "intent": true })),
            )
            .collect();
        serde_json::json!({
            "url": format!("https://{host}:{}{WEB_PATH}", self.web_transport.port()),
            "certificateHashes": (self.hashes)().iter().map(hex).collect::<Vec<_>>(),
            "world": self.world,
            "dev": self.dev,
            "registry": registry,
            "startZone": self.start_zone,
            "relay": self.relay,
        })
        .to_string()
    }
}

/// Serves the page on TCP `addr` from a thread of its own, for the
/// process's life.
pub(crate) fn serve(addr: SocketAddr, info: PageInfo) -> anyhow::Result<SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(|e| anyhow::anyhow!("serving the page on {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow::anyhow!("the page's server has no IP address"))?;
    std::thread::Builder::new().name("hoard-web".into()).spawn(move || {
        for request in server.incoming_requests() {
            let (body, kind) = match request.url().split('?').next().unwrap_or("/") {
                "/" | "/index.html" => (INDEX.to_owned(), "text/html; charset=utf-8"),
                "/hoard.js" => (CLIENT.to_owned(), "text/javascript; charset=utf-8"),
                "/demo.js" => (GAME.to_owned(), "text/javascript; charset=utf-8"),
                "/hoard.json" => (info.json(), "application/json"),
                "/favicon.ico" => {
                    let _ = request.respond(tiny_http::Response::empty(204));
                    continue;
                }
                _ => {
                    let _ = request.respond(tiny_http::Response::from_string("not found").with_status_code(404));
                    continue;
                }
            };
            let mut response = tiny_http::Response::from_string(body);
            if let Ok(header) = tiny_http::Header::from_bytes(&b"Content-Type"[..], kind.as_bytes()) {
                response = response.with_header(header);
            }
            // Any page may read where this endpoint is (a game's own page
            // playing through a relay, `?relay=`): it is public.
            if kind == "application/json"
                && let Ok(header) = tiny_http::Header::from_bytes(&b"Access-Control-Allow-Origin"[..], &b"*"[..])
            {
                response = response.with_header(header);
            }
            if let Err(e) = request.respond(response) {
                tracing::debug!(error = %e, "the page's response failed");
            }
        }
    })?;
    Ok(bound)
}
