//! The demo's client as a Bevy App on `HoardClientPlugin`: the terminal
//! client, the headless client and `play` all run one. The App connects on
//! the plugin's runtime; zones are entered, prefetched and left with
//! `ZoneRequest` messages, intents go through the `Hoard` resource, and what
//! happened comes back as `HoardEvent` messages, collected here after each
//! frame. Replicated objects are entities of the App's world.
//!
//! The loop is the game's: [`ClientApp::frame`] runs one update;
//! [`ClientApp::until`] runs frames (at [`FRAME`] pace) until a condition on
//! the world and the frame's events holds, or a deadline passes.

use std::time::{Duration, Instant};

use bevy_app::prelude::*;
use bevy_ecs::prelude::*;
use hoard_bevy::Replicated;
use hoard_bevy::client::{Hoard, HoardClientPlugin, HoardEvent, ZoneRequest};
use hoard_engine::{ShardId, ZoneId};
use hoard_net::quic::client::{ClientEvent, ClientOptions};
use hoard_proto::sync::client::{EntryProgress, EntryStats};

use crate::game::{self, ZoneInfo};

/// The pace of the client's frames while it waits for something.
pub(crate) const FRAME: Duration = Duration::from_millis(10);
/// How long connecting may take (the handshake and `Hello`).
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// How long an entry may take before the client gives up (the sync's own
/// entry timeout is shorter; this only catches a plugin that never answers).
const ENTER_WITHIN: Duration = Duration::from_secs(180);

/// The events of the frame just run.
#[derive(Resource, Default)]
struct Inbox(Vec<HoardEvent>);

fn collect(mut events: MessageReader<HoardEvent>, mut inbox: ResMut<Inbox>) {
    inbox.0.extend(events.read().cloned());
}

/// A connected client App.
pub(crate) struct ClientApp {
    app: App,
    perspective: String,
    /// Events of a frame already run that no caller has looked at yet.
    backlog: Vec<HoardEvent>,
    /// How it connected (to connect to another server of the world).
    options: ClientOptions,
}

/// Most times one entry follows `ZoneElsewhere` to another server.
const MAX_REDIRECTS: usize = 4;

impl Drop for ClientApp {
    /// The server is told the client goes (a client sent on to another
    /// server must not stay signed in here until the idle timeout).
    fn drop(&mut self) {
        if let Some(hoard) = self.app.world().get_resource::<Hoard>() {
            hoard.close();
        }
    }
}

/// An entry answered "served by another server of this world, at `address`".
#[derive(Debug, thiserror::Error)]
#[error("zone {zone} is served by {address}")]
pub(crate) struct Redirected {
    pub(crate) zone: ZoneId,
    pub(crate) address: String,
}

impl ClientApp {
    /// Builds the App and runs frames until it is connected. With `first`,
    /// that zone is entered as part of connecting (its `EnterZone` right
    /// behind `Hello`): wait for it with [`ClientApp::ready`].
    pub(crate) fn connect(options: ClientOptions, first: Option<&ZoneId>) -> anyhow::Result<ClientApp> {
        let mut app = App::new();
        let mut plugin = HoardClientPlugin::with_registry(options.clone(), game::registry());
        if let Some(zone) = first {
            plugin = plugin.entering(zone.clone());
        }
        app.add_plugins(plugin)
            .init_resource::<Inbox>()
            .add_systems(Update, collect);
        let mut client = ClientApp {
            app,
            perspective: String::new(),
            backlog: Vec::new(),
            options,
        };
        let deadline = Instant::now() + CONNECT_WITHIN;
        loop {
            let mut events = client.frame()?;
            if let Some(e) = events.iter().find_map(|e| match e {
                HoardEvent::Failed(e) => Some(e.clone()),
                _ => None,
            }) {
                // The zone entered with `Hello` is served by another server.
                if let hoard_net::quic::client::ClientError::ZoneElsewhere { zone, address } = e {
                    return Err(anyhow::Error::new(Redirected { zone, address }));
                }
                anyhow::bail!("{e}");
            }
            if let Some(i) = events.iter().position(|e| matches!(e, HoardEvent::Connected { .. })) {
                if let HoardEvent::Connected { perspective, .. } = events.remove(i) {
                    client.perspective = perspective;
                }
                // What came in the same frame (a pipelined entry's
                // `ZoneReady`) is for the next caller.
                client.backlog = events;
                return Ok(client);
            }
            if Instant::now() >= deadline {
                anyhow::bail!("still connecting after {} s", CONNECT_WITHIN.as_secs());
            }
            std::thread::sleep(FRAME);
        }
    }

    /// Connects and enters `zone`; if the server says another server of
    /// the world serves it, goes there — requiring the identity already
    /// verified (a world's servers share it, and the cache stays valid) —
    /// at most [`MAX_REDIRECTS`] times.
    pub(crate) fn connect_entered(
        mut options: ClientOptions,
        zone: &ZoneId,
    ) -> anyhow::Result<(ClientApp, EntryStats)> {
        let mut hops = 0;
        loop {
            let attempt = ClientApp::connect(options.clone(), Some(zone)).and_then(|mut app| {
                let stats = crate::cli::session::ready_with_progress(&mut app, zone)?;
                Ok((app, stats))
            });
            let e = match attempt {
                Ok(entered) => return Ok(entered),
                Err(e) => e,
            };
            let Some(redirect) = e.downcast_ref::<Redirected>() else {
                return Err(e);
            };
            anyhow::ensure!(
                hops < MAX_REDIRECTS,
                "zone {zone}: sent on {hops} times (last to {}); the world's servers disagree about who serves it",
                redirect.address
            );
            hops += 1;
            let known = hoard_trust::tls::KnownServers::new(options.cache_dir.join("known_servers"));
            let identity = options
                .pin
                .or_else(|| known.get(&options.server.to_string()))
                .ok_or_else(|| anyhow::anyhow!("the server that sent this client on has no known identity"))?;
            options = redirected(&options, identity, &redirect.address)?;
            tracing::info!(%zone, address = %redirect.address, "entering the zone on another server of the world");
        }
    }

    /// [`ClientApp::connect_entered`] through the first of `servers` (the
    /// world's servers, in the order given) that answers: one that cannot
    /// be reached, or refuses (a server stopping, say), is left for the
    /// next. Fails, naming each server's reason, if none does.
    pub(crate) fn connect_entered_any(
        options: ClientOptions,
        servers: &[std::net::SocketAddr],
        zone: &ZoneId,
    ) -> anyhow::Result<(ClientApp, EntryStats)> {
        let mut reasons = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            let options = ClientOptions {
                server: *server,
                ..options.clone()
            };
            match ClientApp::connect_entered(options, zone) {
                Ok(entered) => return Ok(entered),
                Err(e) if i + 1 < servers.len() => {
                    tracing::warn!(%server, error = %format!("{e:#}"), "this server of the world did not answer; trying the next");
                    reasons.push(format!("{server}: {e:#}"));
                }
                Err(e) if reasons.is_empty() => return Err(e),
                Err(e) => {
                    reasons.push(format!("{server}: {e:#}"));
                    anyhow::bail!("none of the world's servers answered: {}", reasons.join("; "));
                }
            }
        }
        anyhow::bail!("no server address given")
    }

    /// Enters `zone` on the server the world says serves it, as
    /// [`ClientApp::connect_entered`] does, from this connection's options
    /// and the identity it verified.
    ///
    /// This connection is closed first, so the cache it holds is free for
    /// the next one; this client is of no further use.
    pub(crate) fn connect_elsewhere(
        &mut self,
        address: &str,
        zone: &ZoneId,
    ) -> anyhow::Result<(ClientApp, EntryStats)> {
        let identity = self.hoard().identity();
        let options = redirected(&self.options, identity, address)?;
        if let Some(hoard) = self.app.world_mut().remove_resource::<Hoard>() {
            hoard.close();
        }
        ClientApp::connect_entered(options, zone)
    }

    /// The player this client acts as.
    pub(crate) fn perspective(&self) -> &str {
        &self.perspective
    }

    /// The connection (present once connected).
    pub(crate) fn hoard(&self) -> Hoard {
        self.app.world().resource::<Hoard>().clone()
    }

    /// The App's world: the replicated objects.
    pub(crate) fn world_mut(&mut self) -> &mut World {
        self.app.world_mut()
    }

    /// Asks for a zone to be entered, prefetched or left.
    pub(crate) fn request(&mut self, request: ZoneRequest) {
        self.app.world_mut().write_message(request);
    }

    /// Runs one frame and returns its events. A disconnection is an error.
    pub(crate) fn frame(&mut self) -> anyhow::Result<Vec<HoardEvent>> {
        self.app.update();
        let mut events = std::mem::take(&mut self.backlog);
        events.append(&mut self.app.world_mut().resource_mut::<Inbox>().0);
        for e in &events {
            if let HoardEvent::Client(ClientEvent::Disconnected { reason }) = e {
                anyhow::bail!("disconnected: {reason}");
            }
        }
        Ok(events)
    }

    /// Runs frames until `check` (given the world and each frame's events)
    /// returns an answer, or fails saying it was still `what` after `within`.
    pub(crate) fn until<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&mut World, &[HoardEvent]) -> Option<anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let events = self.frame()?;
            if let Some(answer) = check(self.app.world_mut(), &events) {
                return answer;
            }
            if Instant::now() >= deadline {
                anyhow::bail!("still {what} after {} s", within.as_secs());
            }
            std::thread::sleep(FRAME);
        }
    }

    /// Enters `zone`, handing each step of its progress to `report`, and
    /// returns what the entry cost once its objects are in the world.
    pub(crate) fn enter(&mut self, zone: &ZoneId, report: impl FnMut(EntryProgress)) -> anyhow::Result<EntryStats> {
        self.request(ZoneRequest::Enter(zone.clone()));
        self.ready(zone, report)
    }

    /// Runs frames until the entry of `zone` under way is ready, handing
    /// each step of its progress to `report`.
    pub(crate) fn ready(&mut self, zone: &ZoneId, mut report: impl FnMut(EntryProgress)) -> anyhow::Result<EntryStats> {
        self.until(ENTER_WITHIN, &format!("entering {zone}"), |_, events| {
            events.iter().find_map(|e| match e {
                HoardEvent::EntryProgress { zone: z, progress } if z == zone => {
                    report(*progress);
                    None
                }
                HoardEvent::Client(ClientEvent::ZoneReady { zone: z, stats }) if z == zone => Some(Ok(stats.clone())),
                HoardEvent::Client(ClientEvent::ZoneDenied { zone: z, message }) if z == zone => {
                    Some(Err(anyhow::anyhow!("zone {zone} denied: {message}")))
                }
                HoardEvent::Client(ClientEvent::ZoneElsewhere { zone: z, address }) if z == zone => {
                    Some(Err(anyhow::Error::new(Redirected {
                        zone: zone.clone(),
                        address: address.clone(),
                    })))
                }
                HoardEvent::Failed(hoard_net::quic::client::ClientError::ZoneElsewhere { zone: z, address })
                    if z == zone =>
                {
                    Some(Err(anyhow::Error::new(Redirected {
                        zone: zone.clone(),
                        address: address.clone(),
                    })))
                }
                HoardEvent::Failed(e) => Some(Err(anyhow::anyhow!("entering {zone}: {e}"))),
                _ => None,
            })
        })
    }

    /// The shards `zone` holds, as the client knows them.
    pub(crate) fn zone_shards(&self, zone: &ZoneId) -> Vec<ShardId> {
        self.hoard().zone_shards(zone)
    }

    /// The latest transient state of `zone` (who stands where).
    pub(crate) fn transient(&self, zone: &ZoneId) -> Option<Vec<u8>> {
        self.hoard().transient(zone)
    }

    /// The `zone` object of `zone`, among the replicated objects.
    pub(crate) fn zone_info(&mut self, zone: &ZoneId) -> Option<ZoneInfo> {
        let shards = self.zone_shards(zone);
        let world = self.app.world_mut();
        world
            .query::<(&Replicated, &ZoneInfo)>()
            .iter(world)
            .find(|(r, _)| shards.contains(&r.shard))
            .map(|(_, info)| info.clone())
    }
}

/// `options` for the server at `address`, pinned to the world's `identity`.
fn redirected(
    options: &ClientOptions,
    identity: hoard_engine::ServerIdentity,
    address: &str,
) -> anyhow::Result<ClientOptions> {
    let server = std::net::ToSocketAddrs::to_socket_addrs(address)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| anyhow::anyhow!("the server address {address:?} a server sent does not resolve"))?;
    Ok(ClientOptions {
        server,
        pin: Some(identity),
        ..options.clone()
    })
}
