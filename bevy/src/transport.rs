//! The client plugin's transport: how [`HoardClientPlugin`] connects
//! ([`ClientTransport`]) and what it asks of a connection ([`ClientLink`]).
//! The plugin's systems only make requests that never block the frame and,
//! once a frame, take what arrived ([`Arrived`]) and turn it into entities
//! and Bevy messages; everything about sockets, runtimes and disks is the
//! transport's. [`QuicTransport`] (hoard-net's QUIC client on a runtime of
//! its own) is the one hoard ships; another transport implements these two
//! traits and is given to [`HoardClientPlugin::with_transport`], without a
//! change to the plugin.
//!
//! [`HoardClientPlugin`]: crate::client::HoardClientPlugin
//! [`HoardClientPlugin::with_transport`]: crate::client::HoardClientPlugin::with_transport

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use hoard_engine::lock::lock;
use hoard_engine::{PublishRegistry, ShardId, ZoneId};
use hoard_net::quic::client::{ClientOptions, HoardClient, PendingEntry};
use hoard_proto::client::{ClientError, ClientUpdate};
use hoard_proto::sync::client::EntryProgress;

use crate::client::ZoneRequest;

/// Intents queued for sending, at most; more is an error to the caller.
pub const INTENT_QUEUE: usize = 256;

/// How the client plugin reaches a world.
pub trait ClientTransport: Send + Sync + 'static {
    /// Starts connecting as a client of `registry` (entering `entering` as
    /// part of it, where the transport can: its request right behind the
    /// sign-in); the plugin polls what this returns once a frame.
    fn connect(&self, registry: PublishRegistry, entering: Option<ZoneId>) -> Box<dyn Connecting>;
}

/// A connection being made.
pub trait Connecting: Send + Sync + 'static {
    /// The connection once made, or why it could not be; `None` while it
    /// is under way. Never blocks.
    fn poll(&mut self) -> Option<Result<Arc<dyn ClientLink>, ClientError>>;
}

/// What arrived on a connection since the plugin last took it.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Arrived {
    /// The world's updates, in order (see [`ClientUpdate`]).
    pub updates: Vec<ClientUpdate>,
    /// Requests that failed (a zone entry refused or timed out, an intent
    /// that could not be sent).
    pub failures: Vec<ClientError>,
    /// How far each zone entry in flight has come.
    pub progress: Vec<(ZoneId, EntryProgress)>,
}

/// A connection to a world, as the client plugin drives it.
pub trait ClientLink: Send + Sync + 'static {
    /// The player the server knows this client as.
    fn perspective(&self) -> &str;
    /// The zones it may enter.
    fn zones(&self) -> &[ZoneId];
    /// The registry objects are decoded with.
    fn registry(&self) -> &PublishRegistry;
    /// Enters, prefetches or leaves a zone, without blocking; a failure
    /// comes back in [`Arrived::failures`].
    fn request(&self, request: ZoneRequest);
    /// Queues an encoded intent to be sent in order, without blocking;
    /// returns its seq (named by its `IntentsProcessed` or `IntentRejected`).
    fn send_intent(&self, kind: &str, payload: Vec<u8>) -> Result<u32, ClientError>;
    /// What arrived since the last call.
    fn take(&self) -> Arrived;
    /// The latest transient state of an entered zone.
    fn transient(&self, zone: &ZoneId) -> Option<Vec<u8>>;
    /// The shards of `zone` held live (empty for a zone not entered).
    fn zone_shards(&self, zone: &ZoneId) -> Vec<ShardId>;
    /// Closes the connection, waiting briefly until the server was told.
    /// Called from outside any async runtime (a game's main thread).
    fn close(&self);
    /// The link itself, for a game that needs its transport's own API
    /// (downcast to [`QuicLink`] for the QUIC client).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// hoard-net's QUIC client on a tokio runtime of its own (two worker
/// threads, started at connect).
#[derive(Clone, Debug)]
pub struct QuicTransport {
    options: ClientOptions,
}

impl QuicTransport {
    /// Connects with `options`.
    pub fn new(options: ClientOptions) -> QuicTransport {
        QuicTransport { options }
    }
}

/// A connection made, with the entry started as part of it.
type Connected = Result<(HoardClient, Option<(ZoneId, PendingEntry)>), ClientError>;

impl ClientTransport for QuicTransport {
    fn connect(&self, registry: PublishRegistry, entering: Option<ZoneId>) -> Box<dyn Connecting> {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hoard-client")
            .enable_all()
            .build()
        {
            Ok(runtime) => Arc::new(runtime),
            Err(e) => {
                let failed = ClientError::Lost(format!("cannot start the client's runtime: {e}"));
                return Box::new(QuicConnecting {
                    runtime: None,
                    task: None,
                    failed: Some(failed),
                });
            }
        };
        let options = self.options.clone();
        let task = match entering {
            None => runtime.spawn(async move { HoardClient::connect(options, registry).await.map(|c| (c, None)) }),
            Some(zone) => runtime.spawn(async move {
                HoardClient::connect_and_enter(options, registry, &zone)
                    .await
                    .map(|(client, entry)| (client, Some((zone, entry))))
            }),
        };
        Box::new(QuicConnecting {
            runtime: Some(runtime),
            task: Some(task),
            failed: None,
        })
    }
}

struct QuicConnecting {
    runtime: Option<Arc<tokio::runtime::Runtime>>,
    task: Option<tokio::task::JoinHandle<Connected>>,
    /// The runtime could not be started.
    failed: Option<ClientError>,
}

impl Connecting for QuicConnecting {
    fn poll(&mut self) -> Option<Result<Arc<dyn ClientLink>, ClientError>> {
        if let Some(failed) = self.failed.take() {
            return Some(Err(failed));
        }
        if !self.task.as_ref()?.is_finished() {
            return None;
        }
        let task = self.task.take()?;
        let runtime = self.runtime.clone()?;
        // The task has finished: this takes its result without waiting.
        let result = finished(task).unwrap_or_else(|e| Err(ClientError::Lost(e)));
        Some(result.map(|(client, first_entry)| QuicLink::start(client, first_entry, runtime) as Arc<dyn ClientLink>))
    }
}

/// A QUIC connection as the plugin drives it: zone requests run as tasks
/// of the client's runtime, intents go through one sender task (so they
/// leave in the order they were queued), and failures and the zones being
/// entered are kept for [`ClientLink::take`].
pub struct QuicLink {
    client: Arc<HoardClient>,
    runtime: Arc<tokio::runtime::Runtime>,
    failures: Arc<Mutex<Vec<ClientError>>>,
    intents: tokio::sync::mpsc::Sender<(u32, String, Vec<u8>)>,
    /// Zones whose entry is in flight (their progress is reported).
    entering: Arc<Mutex<BTreeSet<ZoneId>>>,
}

impl std::fmt::Debug for QuicLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicLink")
            .field("perspective", &self.client.perspective())
            .finish_non_exhaustive()
    }
}

impl QuicLink {
    fn start(
        client: HoardClient,
        first_entry: Option<(ZoneId, PendingEntry)>,
        runtime: Arc<tokio::runtime::Runtime>,
    ) -> Arc<QuicLink> {
        let client = Arc::new(client);
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (intents, mut queue) = tokio::sync::mpsc::channel::<(u32, String, Vec<u8>)>(INTENT_QUEUE);
        let (sender, sender_failures) = (client.clone(), failures.clone());
        runtime.spawn(async move {
            while let Some((seq, kind, payload)) = queue.recv().await {
                if let Err(e) = sender.send_encoded_intent(seq, &kind, payload).await {
                    lock(&sender_failures).push(e);
                    return;
                }
            }
        });
        let link = Arc::new(QuicLink {
            client,
            runtime,
            failures,
            intents,
            entering: Arc::new(Mutex::new(BTreeSet::new())),
        });
        if let Some((zone, entry)) = first_entry {
            // The entry started with the connection: its progress is
            // reported, and its failure, like any other.
            lock(&link.entering).insert(zone.clone());
            let (entering, failures) = (link.entering.clone(), link.failures.clone());
            link.runtime.spawn(async move {
                let result = entry.wait().await;
                lock(&entering).remove(&zone);
                if let Err(e) = result {
                    note_failure(&failures, &zone, e);
                }
            });
        }
        link
    }

    /// The QUIC client.
    pub fn client(&self) -> &HoardClient {
        &self.client
    }
}

/// Keeps a failed entry's error for the game; a redirect to the zone's
/// server is not a failure (the game follows it): no warning for it.
fn note_failure(failures: &Mutex<Vec<ClientError>>, zone: &ZoneId, e: ClientError) {
    if matches!(e, ClientError::ZoneElsewhere { .. }) {
        tracing::debug!(%zone, error = %e, "zone entry redirected");
    } else {
        tracing::warn!(%zone, error = %e, "zone entry failed");
    }
    lock(failures).push(e);
}

impl ClientLink for QuicLink {
    fn perspective(&self) -> &str {
        self.client.perspective()
    }

    fn zones(&self) -> &[ZoneId] {
        self.client.zones()
    }

    fn registry(&self) -> &PublishRegistry {
        self.client.registry()
    }

    fn request(&self, request: ZoneRequest) {
        let client = self.client.clone();
        let failures = self.failures.clone();
        let entering = self.entering.clone();
        if let ZoneRequest::Enter(zone) = &request {
            lock(&entering).insert(zone.clone());
        }
        self.runtime.spawn(async move {
            let result = match &request {
                ZoneRequest::Enter(zone) => {
                    let result = client.enter_zone(zone).await.map(|_| ());
                    lock(&entering).remove(zone);
                    result
                }
                ZoneRequest::Prefetch(zone) => client.prefetch(zone).await,
                ZoneRequest::Leave(zone) => client.leave_zone(zone).await,
            };
            if let Err(e) = result {
                tracing::warn!(?request, error = %e, "zone request failed");
                lock(&failures).push(e);
            }
        });
    }

    fn send_intent(&self, kind: &str, payload: Vec<u8>) -> Result<u32, ClientError> {
        let seq = self.client.next_intent_seq();
        self.intents
            .try_send((seq, kind.to_owned(), payload))
            .map_err(|_| ClientError::Lost(format!("more than {INTENT_QUEUE} intents waiting to be sent")))?;
        Ok(seq)
    }

    fn take(&self) -> Arrived {
        let progress = lock(&self.entering)
            .iter()
            .filter_map(|zone| Some((zone.clone(), self.client.entry_progress(zone)?)))
            .collect();
        Arrived {
            progress,
            updates: self.client.take_updates(),
            failures: std::mem::take(&mut *lock(&self.failures)),
        }
    }

    fn transient(&self, zone: &ZoneId) -> Option<Vec<u8>> {
        self.client.transient(zone)
    }

    fn zone_shards(&self, zone: &ZoneId) -> Vec<ShardId> {
        self.client.zone_shards(zone)
    }

    fn close(&self) {
        self.runtime
            .block_on(self.client.close_and_wait(std::time::Duration::from_millis(500)));
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The output of a finished task, without blocking (and so without needing
/// to be outside a runtime, whatever the caller runs on).
fn finished<T>(task: tokio::task::JoinHandle<T>) -> Result<T, String> {
    use std::future::Future;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut task = std::pin::pin!(task);
    match task.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(result) => result.map_err(|e| e.to_string()),
        std::task::Poll::Pending => Err("the connection task had not finished".into()),
    }
}
