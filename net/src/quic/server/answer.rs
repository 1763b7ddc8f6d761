//! [`AnswerSender`]: one zone answer on a stream of its own, each shard's
//! message built on a blocking thread only when its turn comes, within the
//! connection's and the server's answer slots; live deltas start once it
//! is sent, if the zone is still wanted.

use super::*;

/// Answer bytes built per blocking call (at least one shard each).
pub(super) const ANSWER_BATCH_BYTES: usize = 1024 * 1024;

/// A connection's zones with live deltas wanted, by the entry starting them
/// (proto's rule; the lock is the connection's control loop and its answer
/// tasks sharing it).
pub(super) type Wanted = Arc<std::sync::Mutex<Subscriptions>>;

/// Sends one answer on its own stream, building each shard's message on a
/// blocking thread only when its turn comes, then starts live deltas.
pub(super) struct AnswerSender {
    pub(super) link: Link,
    /// The server's bulk slots, for an answer going on past its light part.
    pub(super) bulk: Arc<FairPool>,
    pub(super) store: Arc<dyn WorldStore>,
    pub(super) stats: Arc<ServerStats>,
    pub(super) metrics: Arc<ServerMetrics>,
    /// The entry's kind for the metrics, and when its request came.
    pub(super) entry: Option<(&'static str, Instant)>,
    pub(super) commands: std_mpsc::Sender<Command>,
    pub(super) wanted: Wanted,
    pub(super) stall: Duration,
    pub(super) id: SessionId,
    /// The codec the client reads packed frames in, if any.
    pub(super) codec: Option<u8>,
}

impl AnswerSender {
    /// Sends `plan`: its first [`LIGHT_ANSWER_BYTES`] under `light` (the
    /// request's light slot), the rest under a bulk slot of this address's
    /// share, waited for only if the answer goes on past them.
    pub(super) async fn send(self, mut plan: AnswerPlan, light: Option<Slot>) {
        // The light slot is held until the answer goes on past its light
        // part; then a bulk slot is held instead, to the end.
        let mut light = light;
        let mut bulk: Option<Slot> = None;
        let mut light_part_sent = false;
        let slow = |why: &'static str| {
            self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            self.metrics.disconnect("slow_consumer");
            static STALLED: LogLimit = LogLimit::new();
            if let Some(left_out) = STALLED.allow() {
                tracing::warn!(peer = %self.link.conn().remote_address(), left_out, "{why}; disconnecting");
            }
            self.link
                .close(ErrorCode::SlowConsumer, b"slow consumer: answer not read");
        };
        let Ok(Ok(mut stream)) = tokio::time::timeout(self.stall, self.link.open_uni()).await else {
            return slow("no stream for a zone answer in time");
        };
        loop {
            // Past its light part, an answer goes on under a bulk slot.
            if light_part_sent && bulk.is_none() && !plan.is_done() {
                let ip = self.link.conn().remote_address().ip();
                match tokio::time::timeout(self.stall * 2, self.bulk.take(ip)).await {
                    Ok(taken) => bulk = Some(taken),
                    Err(_) => {
                        static BUSY: LogLimit = LogLimit::new();
                        if let Some(left_out) = BUSY.allow() {
                            tracing::warn!(peer = %self.link.conn().remote_address(), left_out, "no answer slot for this address in time; disconnecting");
                        }
                        self.metrics.disconnect("busy");
                        self.link
                            .close(ErrorCode::Unavailable, b"the server is too busy to answer; try again");
                        return;
                    }
                }
                drop(light.take());
            }
            let budget = if bulk.is_some() {
                ANSWER_BATCH_BYTES
            } else {
                LIGHT_ANSWER_BYTES
            };
            // Build the next messages on a blocking thread: several shards at
            // a time up to a byte budget (a warm entry's answers are tiny),
            // so the answer held in memory stays bounded by the budget plus
            // one shard.
            let store = self.store.clone();
            let codec = self.codec;
            let built = tokio::task::spawn_blocking(move || {
                let mut frames = Vec::new();
                let mut bytes = 0;
                let mut failed = None;
                while bytes < budget {
                    match plan.step() {
                        AnswerStep::Done => break,
                        AnswerStep::Send(m) => {
                            bytes += object_bytes(&m).max(64);
                            // Shard answers of any allowed size go in frames under the limit.
                            for part in split(m, PART_BYTES) {
                                frames.extend_from_slice(&part.to_frame());
                            }
                        }
                        AnswerStep::Read(read) => {
                            if let Err(e) = plan.supply(read.run(&*store)) {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
                // Compressed here, off the async workers, where the client asked.
                (plan, packed(codec, frames), failed)
            })
            .await;
            let Ok((returned, wire, failed)) = built else {
                return; // the runtime is shutting down
            };
            plan = returned;
            light_part_sent = true;
            let done = wire.is_empty() && failed.is_none();
            if !wire.is_empty() {
                match tokio::time::timeout(self.stall, stream.write_all(&wire)).await {
                    Ok(Ok(())) => self.metrics.sent("answer", wire.len()),
                    Ok(Err(_)) => return, // the connection ended
                    Err(_) => return slow("zone answer not taken in time"),
                }
            }
            if let Some(e) = failed {
                tracing::error!(zone = %plan.zone(), error = %e, "reading a shard for an answer failed");
                self.link
                    .close(ErrorCode::Server, b"the server could not read the zone");
                return;
            }
            if done {
                break;
            }
        }
        let _ = stream.finish();
        if let Some((kind, since)) = self.entry {
            let label = KindLabel { kind };
            self.metrics.entries.get_or_create(&label).inc();
            self.metrics
                .entry_seconds
                .get_or_create(&label)
                .observe(since.elapsed().as_secs_f64());
            for answer in plan.kinds() {
                let kind = match answer {
                    AnswerKind::UpToDate => "up_to_date",
                    AnswerKind::Changes => "changes",
                    AnswerKind::Manifest => "manifest",
                    _ => "snapshot",
                };
                self.metrics.shard_answers.get_or_create(&KindLabel { kind }).inc();
            }
        }
        // Under the lock the control loop records a leave under: a zone left
        // while this answer was being sent stays left.
        let wanted = lock(&self.wanted);
        if let Some((zone, shards)) = wanted.answered(&plan) {
            let _ = self.commands.send(Command::Tick(TickInput::Subscribe {
                id: self.id,
                zone,
                shards,
                proofs: plan.proves(),
            }));
        }
    }
}
