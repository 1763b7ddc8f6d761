//! What the bots measured, shared by all of them: latency histograms
//! (hdrhistogram, in microseconds), counters, errors by kind, and a
//! per-second timeline. Every latency is taken from when the thing was
//! *due* by the bot's schedule, not when it was sent, so a bot delayed by
//! an overloaded machine shows the delay (no coordinated omission).
//!
//! Besides the whole run, the same latencies are kept for the part of it in
//! which every bot was connected (the ramp and the leaving left out): the
//! steady play the server is sized for, apart from the connect storm.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hoard_engine::{Seq, ShardId};
use serde::Serialize;

/// Highest latency a histogram records (longer ones are clamped): 10 min.
const MAX_MICROS: u64 = 600_000_000;
/// Action commits remembered for matching live updates to their cause.
const MAX_CAUSES: usize = 65_536;

fn histogram() -> Histogram<u64> {
    // 3 significant figures from 1 µs to 10 min: a few tens of KB each.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// What kind of zone entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EntryKind {
    /// The bot's cache held nothing of the zone.
    Cold,
    /// It held copies.
    Warm,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Second {
    /// Seconds since the start.
    pub(crate) t: u64,
    /// Bots connected at the end of the second.
    pub(crate) connected: u64,
    /// Zone entries finished in the second.
    pub(crate) entries: u64,
    /// Their 99th percentile latency, ms (none without entries).
    pub(crate) entry_p99_ms: Option<f64>,
    /// Actions answered in the second.
    pub(crate) actions: u64,
    /// Their 99th percentile latency, ms (none without actions).
    pub(crate) action_p99_ms: Option<f64>,
    /// Live updates received in the second.
    pub(crate) updates: u64,
    /// Errors in the second.
    pub(crate) errors: u64,
}

struct Inner {
    entries: BTreeMap<EntryKind, Histogram<u64>>,
    entry_bytes_rx: BTreeMap<EntryKind, u64>,
    entry_bytes_tx: BTreeMap<EntryKind, u64>,
    actions: Histogram<u64>,
    update_delay: Histogram<u64>,
    updates: u64,
    sent: u64,
    processed: u64,
    rejected: u64,
    errors: BTreeMap<String, u64>,
    connected: u64,
    /// The second being filled, and its own histograms.
    now: Second,
    now_entries: Histogram<u64>,
    now_actions: Histogram<u64>,
    timeline: Vec<Second>,
    /// For each shard commit an action of a bot caused: when the action was due.
    causes: HashMap<(ShardId, Seq), Instant>,
    cause_order: VecDeque<(ShardId, Seq)>,
    /// Bots in the run: while `connected` is this, play is steady.
    clients: u64,
    steady: SteadyHistograms,
    quic: QuicTotals,
}

/// What the bots' QUIC connections carried, summed as each one ends (from
/// quinn's connection statistics): which way the datagrams went and how
/// many of the bots' were acknowledgments, what a server's packet budget is
/// spent on.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct QuicTotals {
    /// Connections counted.
    pub(crate) connections: u64,
    /// Their lifetimes, summed (connection-seconds).
    pub(crate) seconds: f64,
    /// UDP datagrams the bots sent (to the server) and received (from it).
    pub(crate) datagrams_up: u64,
    pub(crate) datagrams_down: u64,
    /// UDP payload bytes, both ways.
    pub(crate) bytes_up: u64,
    pub(crate) bytes_down: u64,
    /// ACK frames the bots sent and received.
    pub(crate) acks_up: u64,
    pub(crate) acks_down: u64,
    /// Stream frames the bots sent and received (their messages).
    pub(crate) streams_up: u64,
    pub(crate) streams_down: u64,
    /// PING frames the bots sent (keep-alives of an otherwise quiet side).
    pub(crate) pings_up: u64,
}

impl QuicTotals {
    /// Per connection-second: datagrams up, down; ACK frames up.
    pub(crate) fn rates(&self) -> Option<(f64, f64, f64)> {
        let s = self.seconds;
        (s > 0.0).then(|| {
            (
                self.datagrams_up as f64 / s,
                self.datagrams_down as f64 / s,
                self.acks_up as f64 / s,
            )
        })
    }
}

/// Latencies recorded while every bot was connected.
struct SteadyHistograms {
    entries: Histogram<u64>,
    actions: Histogram<u64>,
    update_delay: Histogram<u64>,
    /// Seconds since the start of the first and last thing recorded.
    span: Option<(f64, f64)>,
}

impl SteadyHistograms {
    fn note(&mut self, at: f64) {
        let (from, _) = self.span.unwrap_or((at, at));
        self.span = Some((from, at));
    }
}

/// The shared record.
pub(crate) struct Record {
    start: Instant,
    inner: Mutex<Inner>,
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

impl Inner {
    /// The steady histograms, if every bot is connected now.
    fn steady(&mut self) -> Option<&mut SteadyHistograms> {
        (self.clients > 0 && self.connected >= self.clients).then_some(&mut self.steady)
    }
}

impl Record {
    /// A connection that ends, open for `lived`: what it carried.
    pub(crate) fn quic(&self, stats: &hoard_net::quic::client::ConnectionStats, lived: Duration) {
        let mut r = hoard_engine::lock::lock(&self.inner);
        let q = &mut r.quic;
        q.connections += 1;
        q.seconds += lived.as_secs_f64();
        q.datagrams_up += stats.udp_tx.datagrams;
        q.datagrams_down += stats.udp_rx.datagrams;
        q.bytes_up += stats.udp_tx.bytes;
        q.bytes_down += stats.udp_rx.bytes;
        q.acks_up += stats.frame_tx.acks;
        q.acks_down += stats.frame_rx.acks;
        q.streams_up += stats.frame_tx.stream;
        q.streams_down += stats.frame_rx.stream;
        q.pings_up += stats.frame_tx.ping;
    }

    /// A record for a run of `clients` bots from `start`.
    pub(crate) fn new(start: Instant, clients: u64) -> Record {
        Record {
            start,
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                entry_bytes_rx: BTreeMap::new(),
                entry_bytes_tx: BTreeMap::new(),
                actions: histogram(),
                update_delay: histogram(),
                updates: 0,
                sent: 0,
                processed: 0,
                rejected: 0,
                quic: QuicTotals::default(),
                errors: BTreeMap::new(),
                connected: 0,
                now: Second::default(),
                now_entries: histogram(),
                now_actions: histogram(),
                timeline: Vec::new(),
                causes: HashMap::new(),
                cause_order: VecDeque::new(),
                clients,
                steady: SteadyHistograms {
                    entries: histogram(),
                    actions: histogram(),
                    update_delay: histogram(),
                    span: None,
                },
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = hoard_engine::lock::lock(&self.inner);
        f(&mut inner)
    }

    /// A zone entry due at `due` finished now.
    pub(crate) fn entry(&self, kind: EntryKind, due: Instant, bytes_rx: u64, bytes_tx: u64) {
        let us = micros(due.elapsed());
        let at = self.start.elapsed().as_secs_f64();
        self.with(|r| {
            if let Some(steady) = r.steady() {
                let _ = steady.entries.record(us);
                steady.note(at);
            }
            let _ = r.entries.entry(kind).or_insert_with(histogram).record(us);
            *r.entry_bytes_rx.entry(kind).or_default() += bytes_rx;
            *r.entry_bytes_tx.entry(kind).or_default() += bytes_tx;
            let _ = r.now_entries.record(us);
            r.now.entries += 1;
        });
    }

    /// An action was sent.
    pub(crate) fn sent(&self) {
        self.with(|r| r.sent += 1);
    }

    /// An action due at `due` was processed (durably) now.
    pub(crate) fn processed(&self, due: Instant) {
        let us = micros(due.elapsed());
        let at = self.start.elapsed().as_secs_f64();
        self.with(|r| {
            if let Some(steady) = r.steady() {
                let _ = steady.actions.record(us);
                steady.note(at);
            }
            r.processed += 1;
            let _ = r.actions.record(us);
            let _ = r.now_actions.record(us);
            r.now.actions += 1;
        });
    }

    /// An action was rejected by the server.
    pub(crate) fn rejected(&self) {
        self.with(|r| r.rejected += 1);
    }

    /// Something went wrong, of this kind.
    pub(crate) fn error(&self, kind: &str) {
        self.with(|r| {
            *r.errors.entry(kind.to_owned()).or_default() += 1;
            r.now.errors += 1;
        });
    }

    /// A bot connected (+1) or disconnected (-1).
    pub(crate) fn connected(&self, delta: i64) {
        self.with(|r| r.connected = r.connected.saturating_add_signed(delta));
    }

    /// The commit `(shard, seq)` carried an action that was due at `due`.
    pub(crate) fn caused(&self, shard: ShardId, seq: Seq, due: Instant) {
        self.with(|r| {
            if r.causes.insert((shard, seq), due).is_none() {
                r.cause_order.push_back((shard, seq));
            }
            while r.cause_order.len() > MAX_CAUSES {
                if let Some(old) = r.cause_order.pop_front() {
                    r.causes.remove(&old);
                }
            }
        });
    }

    /// A live update arrived.
    pub(crate) fn received(&self) {
        self.with(|r| {
            r.updates += 1;
            r.now.updates += 1;
        });
    }

    /// A live update of `(shard, seq)` received at `at`: its delay is
    /// measured if a bot's action caused it (the acting bot said so by now).
    pub(crate) fn resolve(&self, shard: ShardId, seq: Seq, at: Instant) {
        let t = at.saturating_duration_since(self.start).as_secs_f64();
        self.with(|r| {
            if let Some(due) = r.causes.get(&(shard, seq)) {
                let us = micros(at.saturating_duration_since(*due));
                let _ = r.update_delay.record(us);
                if let Some(steady) = r.steady() {
                    let _ = steady.update_delay.record(us);
                    steady.note(t);
                }
            }
        });
    }

    /// Closes the current second of the timeline.
    pub(crate) fn tick_second(&self) {
        let t = self.start.elapsed().as_secs();
        self.with(|r| {
            let mut second = std::mem::take(&mut r.now);
            second.t = t;
            second.connected = r.connected;
            let p99 = |h: &Histogram<u64>| (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
            second.entry_p99_ms = p99(&r.now_entries);
            second.action_p99_ms = p99(&r.now_actions);
            r.now_entries.reset();
            r.now_actions.reset();
            r.timeline.push(second);
        });
    }

    /// A summary of the run so far.
    pub(crate) fn summary(&self, elapsed: Duration) -> Summary {
        self.with(|r| {
            let entries = r
                .entries
                .iter()
                .map(|(kind, h)| {
                    let n = h.len().max(1);
                    (
                        *kind,
                        Latency::of(h).with_bytes(
                            r.entry_bytes_rx.get(kind).copied().unwrap_or(0) / n,
                            r.entry_bytes_tx.get(kind).copied().unwrap_or(0) / n,
                        ),
                    )
                })
                .collect();
            let entry_histograms = r.entries.iter().map(|(kind, h)| (*kind, buckets(h))).collect();
            Summary {
                seconds: elapsed.as_secs_f64(),
                entries,
                entry_histograms,
                entry_bytes_rx: r.entry_bytes_rx.values().sum(),
                actions: Latency::of(&r.actions),
                update_delay: Latency::of(&r.update_delay),
                updates: r.updates,
                updates_per_sec: r.updates as f64 / elapsed.as_secs_f64().max(1e-9),
                sent: r.sent,
                processed: r.processed,
                rejected: r.rejected,
                errors: r.errors.clone(),
                quic: r.quic.clone(),
                timeline: r.timeline.clone(),
                steady: r.steady.span.map(|(from_s, to_s)| SteadyLatency {
                    from_s,
                    to_s,
                    entries: Latency::of(&r.steady.entries),
                    actions: Latency::of(&r.steady.actions),
                    update_delay: Latency::of(&r.steady.update_delay),
                }),
            }
        })
    }
}

/// Percentiles of one histogram, ms.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Mean bytes received per entry (entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_rx: Option<u64>,
    /// Mean bytes sent per entry (entries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_tx: Option<u64>,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            bytes_rx: None,
            bytes_tx: None,
        }
    }

    fn with_bytes(self, rx: u64, tx: u64) -> Latency {
        Latency {
            bytes_rx: Some(rx),
            bytes_tx: Some(tx),
            ..self
        }
    }
}

/// A histogram as (upper bound ms, count) buckets on a log scale, for plots.
fn buckets(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    h.iter_log(100, 1.5)
        .map(|v| (v.value_iterated_to() as f64 / 1000.0, v.count_since_last_iteration()))
        .collect()
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) seconds: f64,
    pub(crate) entries: BTreeMap<EntryKind, Latency>,
    pub(crate) entry_histograms: BTreeMap<EntryKind, Vec<(f64, u64)>>,
    /// Bytes received for all entries.
    pub(crate) entry_bytes_rx: u64,
    pub(crate) actions: Latency,
    pub(crate) update_delay: Latency,
    pub(crate) updates: u64,
    pub(crate) updates_per_sec: f64,
    pub(crate) sent: u64,
    pub(crate) processed: u64,
    pub(crate) rejected: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    /// What the bots' connections carried.
    pub(crate) quic: QuicTotals,
    pub(crate) timeline: Vec<Second>,
    /// The latencies while every bot was connected (`None`: never all).
    pub(crate) steady: Option<SteadyLatency>,
}

/// Latencies while every bot was connected.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SteadyLatency {
    /// Seconds since the start of the first and last one recorded.
    pub(crate) from_s: f64,
    pub(crate) to_s: f64,
    /// Zone entries (all warm in a warm run; cold ones are in the table).
    pub(crate) entries: Latency,
    pub(crate) actions: Latency,
    pub(crate) update_delay: Latency,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_part_holds_only_what_happened_while_all_were_connected() {
        let start = Instant::now();
        let record = Record::new(start, 2);
        let due = start;
        record.entry(EntryKind::Warm, due, 10, 1);
        record.connected(1);
        record.processed(due);
        assert!(record.summary(start.elapsed()).steady.is_none(), "one of two connected");
        record.connected(1);
        record.entry(EntryKind::Warm, due, 10, 1);
        record.processed(due);
        record.processed(due);
        record.connected(-1);
        record.processed(due);
        let s = record.summary(start.elapsed());
        let steady = s.steady.expect("both were connected for a while");
        assert_eq!((steady.entries.count, steady.actions.count), (1, 2));
        assert_eq!((s.entries[&EntryKind::Warm].count, s.actions.count), (2, 4));
        assert!(steady.from_s <= steady.to_s);
    }
}
