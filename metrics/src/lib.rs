//! hoard-metrics, a hoard server's Prometheus metrics: what an operator watches (clients,
//! zone entries and their latency, bytes sent, tick and commit times, the
//! commit queue, store size, subscribers per zone, rejected intents,
//! disconnects by reason), kept with the `prometheus-client` crate and
//! served as Prometheus text over HTTP by `tiny_http` ([`MetricsExporter`]).
//!
//! Every label takes values from a small fixed set (or the world's zone
//! names), so no series grows without bound.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hoard_engine::ChangeSet;
use hoard_engine::store::{CommitError, CommitReceipt, StoreLayer, WorldStore};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label set of one `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: &'static str,
}

/// A label set naming a zone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabel {
    /// The zone.
    pub zone: String,
}

/// A label set naming a stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// `control`, `answer` or `delta`.
    pub stream: &'static str,
}

/// A label set giving a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

fn seconds_histogram() -> Histogram {
    // 0.1 ms to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Frame and commit times: finer where a 20 Hz frame's budget is decided,
/// with 50 ms (the whole budget) a bucket bound, so a p99 read off the
/// buckets says whether ticks kept within it.
fn budget_histogram() -> Histogram {
    const MS: [f64; 18] = [
        0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0, 250.0, 500.0, 1000.0, 2500.0,
        5000.0,
    ];
    Histogram::new(MS.iter().map(|ms| ms / 1000.0))
}

fn kind_seconds() -> Histogram {
    seconds_histogram()
}

/// The server's metrics. Cheap to update from any thread.
pub struct ServerMetrics {
    registry: Registry,
    data_dir: Option<PathBuf>,
    /// Live connections.
    pub connected: Gauge,
    /// Zone entries answered, by kind: `cold` (the client held nothing of the
    /// zone), `warm` (it held copies) or `repair`.
    pub entries: Family<KindLabel, Counter>,
    /// Time from a zone request's arrival to the end of its answer, by kind.
    pub entry_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// Shard answers, by kind: `up_to_date`, `changes`, `manifest`, `snapshot`.
    pub shard_answers: Family<KindLabel, Counter>,
    /// Application bytes (frames) written, by stream.
    pub sent_bytes: Family<StreamLabel, Counter>,
    /// Time of one world frame: inputs in, the game's systems, gather,
    /// commit and publish.
    pub tick_seconds: Histogram,
    /// Time of one durable commit.
    pub commit_seconds: Histogram,
    /// Objects in one durable commit.
    pub commit_objects: Histogram,
    /// Changed objects not yet durable (the commit queue).
    pub commit_queue: Gauge,
    /// Intents applied but not yet confirmed durable.
    pub unconfirmed_intents: Gauge,
    /// Bytes of the data directory's files (the embedded store and keys).
    pub store_bytes: Gauge,
    /// Sessions following each zone.
    pub zone_subscribers: Family<ZoneLabel, Gauge>,
    /// Intents accepted for the world.
    pub intents: Counter,
    /// Intents refused, by reason: `unavailable` (the store fails),
    /// `unknown` (not a registered intent or not decodable), `overload`.
    pub rejected_intents: Family<ReasonLabel, Counter>,
    /// Live deltas queued to sessions.
    pub deltas: Counter,
    /// Connections ended, by reason: `closed`, `lost`, `slow_consumer`,
    /// `hello_timeout`, `refused`, `replaced`, `server`.
    pub disconnects: Family<ReasonLabel, Counter>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics")
            .field("connected", &self.connected.get())
            .finish_non_exhaustive()
    }
}

impl ServerMetrics {
    /// Fresh metrics; `data_dir`, when given, is measured for `store_bytes`
    /// at each scrape.
    pub fn new(data_dir: Option<PathBuf>) -> ServerMetrics {
        let mut registry = Registry::with_prefix("hoard");
        let m = ServerMetrics {
            registry: Registry::default(),
            data_dir,
            connected: Gauge::default(),
            entries: Family::default(),
            entry_seconds: Family::new_with_constructor(kind_seconds),
            shard_answers: Family::default(),
            sent_bytes: Family::default(),
            tick_seconds: budget_histogram(),
            commit_seconds: budget_histogram(),
            commit_objects: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            commit_queue: Gauge::default(),
            unconfirmed_intents: Gauge::default(),
            store_bytes: Gauge::default(),
            zone_subscribers: Family::default(),
            intents: Counter::default(),
            rejected_intents: Family::default(),
            deltas: Counter::default(),
            disconnects: Family::default(),
        };
        registry.register("connected_clients", "Live client connections", m.connected.clone());
        registry.register(
            "zone_entries",
            "Zone entries answered, by kind (cold, warm, repair)",
            m.entries.clone(),
        );
        registry.register(
            "zone_entry_seconds",
            "Time from a zone request's arrival to the end of its answer",
            m.entry_seconds.clone(),
        );
        registry.register("shard_answers", "Shard answers by kind", m.shard_answers.clone());
        registry.register("sent_bytes", "Application bytes sent, by stream", m.sent_bytes.clone());
        registry.register(
            "tick_seconds",
            "World frame time: inputs, game systems, gather, commit, publish",
            m.tick_seconds.clone(),
        );
        registry.register("commit_seconds", "Durable commit time", m.commit_seconds.clone());
        registry.register("commit_objects", "Objects per durable commit", m.commit_objects.clone());
        registry.register(
            "commit_queue_objects",
            "Changed objects not yet durable",
            m.commit_queue.clone(),
        );
        registry.register(
            "unconfirmed_intents",
            "Intents applied, waiting for their commit",
            m.unconfirmed_intents.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes of the data directory's files",
            m.store_bytes.clone(),
        );
        registry.register(
            "zone_subscribers",
            "Sessions following each zone",
            m.zone_subscribers.clone(),
        );
        registry.register("intents", "Intents accepted for the world", m.intents.clone());
        registry.register(
            "rejected_intents",
            "Intents refused, by reason",
            m.rejected_intents.clone(),
        );
        registry.register("deltas", "Live deltas queued to sessions", m.deltas.clone());
        registry.register("disconnects", "Connections ended, by reason", m.disconnects.clone());
        ServerMetrics { registry, ..m }
    }

    /// Counts a connection ended for `reason`.
    pub fn disconnect(&self, reason: &'static str) {
        self.disconnects.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts an intent refused for `reason`.
    pub fn reject(&self, reason: &'static str) {
        self.rejected_intents.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Bytes written on a stream kind (`control`, `answer`, `delta`) so far,
    /// as they went on the stream (packed where they were).
    pub fn sent_bytes(&self, stream: &'static str) -> u64 {
        self.sent_bytes.get_or_create(&StreamLabel { stream }).get()
    }

    /// Counts bytes written on a stream.
    pub fn sent(&self, stream: &'static str, bytes: usize) {
        self.sent_bytes
            .get_or_create(&StreamLabel { stream })
            .inc_by(bytes as u64);
    }

    /// The metrics as Prometheus text (the data directory measured now).
    pub fn encode(&self) -> String {
        if let Some(dir) = &self.data_dir {
            self.store_bytes.set(dir_bytes(dir) as i64);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The bytes of the regular files directly in `dir` (0 if unreadable).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Serves `/metrics` (any path, in fact) as Prometheus text on its own
/// thread until dropped, one scrape at a time (tiny_http queues the
/// connections; a scrape is a few KB).
pub struct MetricsExporter {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsExporter").field("addr", &self.addr).finish()
    }
}

impl MetricsExporter {
    /// Binds `addr` (port 0 picks one) and serves `metrics` there.
    pub fn start(addr: SocketAddr, metrics: Arc<ServerMetrics>) -> std::io::Result<MetricsExporter> {
        let server = Arc::new(tiny_http::Server::http(addr).map_err(std::io::Error::other)?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("the metrics listener has no IP address"))?;
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("hoard-metrics".into())
            .spawn(move || {
                // `incoming_requests` ends when the server is unblocked on drop.
                for request in serving.incoming_requests() {
                    let body = metrics.encode();
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4; charset=utf-8"[..],
                    )
                    .expect("a valid static header");
                    let response = tiny_http::Response::from_string(body)
                        .with_header(header)
                        .with_chunked_threshold(usize::MAX);
                    if let Err(e) = request.respond(response) {
                        tracing::debug!(error = %e, "a metrics scrape ended early");
                    }
                }
            })?;
        tracing::info!(%addr, "serving Prometheus metrics");
        Ok(MetricsExporter {
            addr,
            server,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsExporter {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A store that times each commit and counts its objects for the metrics,
/// and passes everything else through. The server's tick core commits
/// through one.
pub struct MeteredStore {
    inner: Arc<dyn WorldStore>,
    metrics: Arc<ServerMetrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn WorldStore>, metrics: Arc<ServerMetrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    fn timed(
        &self,
        changes: &ChangeSet,
        commit: impl FnOnce() -> Result<CommitReceipt, CommitError>,
    ) -> Result<CommitReceipt, CommitError> {
        let started = Instant::now();
        let result = commit();
        if result.is_ok() {
            self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.commit_objects.observe(changes.len() as f64);
        }
        result
    }
}

impl StoreLayer for MeteredStore {
    fn inner(&self) -> &dyn WorldStore {
        &*self.inner
    }
    fn commit(&self, changes: &ChangeSet) -> Result<CommitReceipt, CommitError> {
        self.timed(changes, || self.inner.commit(changes))
    }
    fn commit_with_schema(
        &self,
        changes: &ChangeSet,
        schema: &BTreeMap<String, u32>,
    ) -> Result<CommitReceipt, CommitError> {
        self.timed(changes, || self.inner.commit_with_schema(changes, schema))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_with_its_labels_and_counts() {
        let m = ServerMetrics::new(None);
        m.entries.get_or_create(&KindLabel { kind: "warm" }).inc_by(3);
        m.reject("unavailable");
        m.sent("answer", 1234);
        m.tick_seconds.observe(0.004);
        let text = m.encode();
        assert!(text.contains("hoard_zone_entries_total{kind=\"warm\"} 3"), "{text}");
        assert!(
            text.contains("hoard_rejected_intents_total{reason=\"unavailable\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hoard_sent_bytes_total{stream=\"answer\"} 1234"),
            "{text}"
        );
        assert!(text.contains("hoard_tick_seconds_count 1"), "{text}");
        // The 20 Hz budget is a bucket bound; a 4 ms tick is within it.
        assert!(text.contains("hoard_tick_seconds_bucket{le=\"0.05\"} 1"), "{text}");
        assert!(text.contains("hoard_tick_seconds_bucket{le=\"0.002\"} 0"), "{text}");
        assert!(text.contains("# TYPE hoard_commit_seconds histogram"), "{text}");
    }
}
