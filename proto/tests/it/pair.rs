//! A two-sided test pair, in the spirit of quinn-proto's `Pair`: the server
//! session, the tick core (subscriptions, commits, publishing) and the store
//! on one side, the client sync and an in-memory
//! cache on the other, joined by a simulated network with one-way latency,
//! jitter-free ordered streams and loss (a lost packet costs a retransmission
//! timeout, as QUIC's reliable streams would), driven by a simulated clock.
//! The store is reached only through the state machines' read effects, so
//! it can be made slow (each read answered `store_latency` simulated
//! seconds later, other traffic going on meanwhile) or failing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use bevy_ecs::world::World;
use hoard_engine::shard::{CachedShard, ShardKey};
use hoard_engine::store::{ReadError, ShardSpec, StoreFault, StoreRead, StoreReply, WorldStore, run_commit};
use hoard_engine::{ChangeSet, MemoryStore, PublishRegistry, Publisher, RegistryHash, ServerIdentity, ShardId, ZoneId};
use hoard_proto::auth::TokenAuthority;
use hoard_proto::intents::ReceivedIntent;
use hoard_proto::sync::answer::{AnswerPlan, AnswerStep};
use hoard_proto::sync::client::{CheckedCopy, ClientConfig, ClientSync, Effect, EntryStats};
use hoard_proto::sync::hub::HubRead;
use hoard_proto::sync::server::{Output, ServerSession, SessionConfig};
use hoard_proto::sync::tick::{TickCore, TickInput};
use hoard_proto::wire::{ErrorCode, Hello, Message, PROTOCOL_VERSION};

pub(crate) const SERVER: ServerIdentity = ServerIdentity([1; 32]);
pub(crate) const REGISTRY: RegistryHash = RegistryHash([2; 32]);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum To {
    Server,
    ClientControl,
    ClientAnswer(u32),
    ClientDelta,
    /// A store read done (by its id in `Pair::reads`).
    Store(u64),
}

/// Who asked for a store read.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// The session (one read at a time).
    Session,
    /// The answer to this request.
    Answer(u32),
    /// The tick core's subscriptions (the read's ticket).
    Tick(u64),
}

/// A frame in flight: (delivery time in µs, send order, destination, bytes).
type InFlight = Reverse<(u64, u64, To, Vec<u8>)>;

/// The simulated network.
pub(crate) struct Net {
    pub(crate) now: f64,
    pub(crate) one_way: f64,
    pub(crate) loss: f64,
    pub(crate) rto: f64,
    rng: fastrand::Rng,
    seq: u64,
    queue: BinaryHeap<InFlight>,
    /// Per stream, the last delivery time: streams are ordered.
    last: BTreeMap<To, u64>,
}

fn micros(t: f64) -> u64 {
    (t * 1e6).round() as u64
}

impl Net {
    /// An event `after` seconds from now, with no bytes (a store read done).
    fn after(&mut self, after: f64, to: To) {
        self.seq += 1;
        self.queue
            .push(Reverse((micros(self.now + after), self.seq, to, Vec::new())));
    }

    fn send(&mut self, to: To, msg: &Message) {
        let mut at = self.now + self.one_way;
        while self.rng.f64() < self.loss {
            at += self.rto;
        }
        let at = micros(at).max(self.last.get(&to).copied().unwrap_or(0));
        self.last.insert(to.clone(), at);
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, to, msg.to_frame())));
    }
}

/// The one session of the pair, as the tick core knows it.
pub(crate) const SESSION: u64 = 1;

/// Both sides and the network between them.
pub(crate) struct Pair {
    pub(crate) store: Arc<dyn WorldStore>,
    pub(crate) net: Net,
    session: ServerSession,
    /// Which answers start live deltas (proto's rule, as the QUIC driver keeps it).
    subscriptions: hoard_proto::sync::answer::Subscriptions,
    /// The server's tick core and the world it gathers from.
    pub(crate) tick: TickCore,
    pub(crate) world: World,
    pub(crate) publisher: Publisher,
    pub(crate) client: ClientSync,
    /// The client's disk cache.
    pub(crate) cache: BTreeMap<ShardKey, CachedShard>,
    /// Zone ready events seen.
    pub(crate) ready: Vec<(ZoneId, EntryStats)>,
    /// The progress of the last entry started, after each answer frame.
    pub(crate) progress: Vec<Option<hoard_proto::sync::client::EntryProgress>>,
    entering: Option<ZoneId>,
    pub(crate) denied: Vec<(ZoneId, u16)>,
    pub(crate) failures: Vec<(u16, String)>,
    pub(crate) bytes_to_server: u64,
    pub(crate) bytes_to_client: u64,
    /// The largest frame the client sent (each must fit a control frame).
    pub(crate) largest_to_server: usize,
    /// What the client saw of the tick core, in order of arrival.
    pub(crate) seen: Vec<Seen>,
    /// Hand cached copies over as the QUIC client does (their header
    /// digests taken on trust, `CheckedCopy::from_verified_file`) rather
    /// than recomputed.
    pub(crate) trust_copies: bool,
    /// Each store read is answered this many simulated seconds after it
    /// is asked for (0: at once, inline).
    pub(crate) store_latency: f64,
    /// Every store read fails (a store that cannot be reached).
    pub(crate) store_failing: bool,
    /// Store reads out, by id: who asked, and what.
    reads: BTreeMap<u64, (Reader, StoreRead)>,
    next_read: u64,
    /// Answers being sent, by request.
    answers: BTreeMap<u32, AnswerPlan>,
    /// How the server ended the connection, if it did.
    pub(crate) closed: Option<(ErrorCode, String)>,
    /// Store reads performed.
    pub(crate) store_reads: u64,
}

/// One live message the client applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seen {
    /// A delta brought a shard to this seq.
    Delta(ShardId, hoard_engine::Seq),
    /// These intents are processed and durable.
    Processed(Vec<u32>),
    /// The server's store works, or not.
    Writable(bool),
    /// This intent was refused.
    Rejected(u32),
}

impl Pair {
    /// A pair over a store holding `zone` with `shards` shared shards.
    pub(crate) fn new(zone: &str, shards: u64, seed: u64) -> Pair {
        Pair::with_store(
            Arc::new(MemoryStore::new()),
            PublishRegistry::builder().build(),
            zone,
            shards,
            seed,
        )
    }

    /// A pair over `store` (given `zone` with `shards` shared shards), whose
    /// server world publishes the components of `registry`.
    pub(crate) fn with_store(
        store: Arc<dyn WorldStore>,
        registry: PublishRegistry,
        zone: &str,
        shards: u64,
        seed: u64,
    ) -> Pair {
        let specs: Vec<ShardSpec> = (0..shards).map(|s| ShardSpec::shared(ShardId(s))).collect();
        store
            .create_zone(&ZoneId::new(zone).expect("zone"), &specs)
            .expect("create zone");
        let auth = TokenAuthority::new([9; 32]).with_dev_mode(true);
        let config = Arc::new(SessionConfig::new(SERVER, "world", REGISTRY, auth));
        let tick = TickCore::new(60.0);
        let mut pair = Pair {
            store,
            net: Net {
                now: 0.0,
                one_way: 0.0,
                loss: 0.0,
                rto: 0.2,
                rng: fastrand::Rng::with_seed(seed),
                seq: 0,
                queue: BinaryHeap::new(),
                last: BTreeMap::new(),
            },
            session: ServerSession::new(config, SESSION),
            subscriptions: Default::default(),
            tick,
            world: World::new(),
            publisher: Publisher::new(registry),
            client: ClientSync::new(ClientConfig {
                server: SERVER,
                service: "world".into(),
                perspective: "ann".into(),
                registry: REGISTRY,
                wall_clock_at_zero: chrono::Utc::now(),
                proofs: None,
            }),
            cache: BTreeMap::new(),
            ready: Vec::new(),
            progress: Vec::new(),
            entering: None,
            denied: Vec::new(),
            failures: Vec::new(),
            bytes_to_server: 0,
            bytes_to_client: 0,
            largest_to_server: 0,
            seen: Vec::new(),
            trust_copies: false,
            store_latency: 0.0,
            store_failing: false,
            reads: BTreeMap::new(),
            next_read: 0,
            answers: BTreeMap::new(),
            closed: None,
            store_reads: 0,
        };
        pair.session.handle(
            0.0,
            0,
            Message::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                registry: REGISTRY.0,
                service: "world".into(),
                token: "dev:ann".into(),
                codecs: Vec::new(),
                token_keys: false,
            }),
        );
        // One session: its sign-in takes over from nobody.
        match pair.session.poll_output() {
            Some(Output::SignedIn { perspective }) => assert_eq!(perspective, "ann"),
            other => panic!("expected the sign-in, got {other:?}"),
        }
        // Nothing to prepare for the player.
        match pair.session.poll_output() {
            Some(Output::Prepare { perspective }) => assert_eq!(perspective, "ann"),
            other => panic!("expected the preparation, got {other:?}"),
        }
        pair.session.prepared(Ok(()));
        match pair.session.poll_output() {
            Some(Output::Read(read)) => {
                let reply = pair.perform(&read);
                pair.session.read_done(reply);
            }
            other => panic!("expected the zones read, got {other:?}"),
        }
        pair.tick.prepare(&mut pair.world);
        pair.tick.handle(&mut pair.world, TickInput::Register { id: SESSION });
        match pair.session.poll_output() {
            Some(Output::Joined {
                perspective,
                bound_token,
            }) => {
                let joined = TickInput::Joined {
                    id: SESSION,
                    perspective,
                    bound_token,
                };
                pair.tick.handle(&mut pair.world, joined);
            }
            other => panic!("expected the player shown to the game, got {other:?}"),
        }
        match pair.session.poll_output() {
            Some(Output::Control(Message::Welcome(_))) => {}
            other => panic!("expected welcome, got {other:?}"),
        }
        pair
    }

    /// Commits changes through the tick core, which publishes the deltas
    /// once the commit returned.
    pub(crate) fn commit(&mut self, changes: &ChangeSet) {
        self.tick
            .commit_frame(self.net.now, changes.clone())
            .and_then(|()| self.commit_due())
            .expect("the store works");
        self.flush_tick();
    }

    /// Runs the core's due commit jobs at once, as a driver without a
    /// commit thread does.
    fn commit_due(&mut self) -> Result<(), String> {
        while let Some(job) = self.tick.poll_commit() {
            let result = run_commit(&*self.store, &job.changes, job.recover_first);
            self.tick.commit_done(self.net.now, job.id, result)?;
        }
        Ok(())
    }

    /// The tick core's end of a frame, at the pair's time.
    fn end_frame(&mut self) -> Result<(), String> {
        let now = self.net.now;
        self.tick.after_frame(
            now,
            std::time::Instant::now(),
            &mut self.world,
            &mut self.publisher,
            Vec::new(),
        )
    }

    /// Ends one frame of the server's world: its changes gathered,
    /// committed, published. What the core sent is in flight afterwards.
    pub(crate) fn frame(&mut self) -> Result<(), String> {
        let result = self.end_frame().and_then(|()| self.commit_due());
        self.flush_tick();
        result
    }

    /// Ends one frame as a pipelining driver does: changes gathered and, if
    /// no commit is in flight, made into a job the caller runs (the core's
    /// messages, if any, are put in flight).
    pub(crate) fn frame_pipelined(&mut self) -> Option<hoard_proto::sync::tick::CommitJob> {
        self.end_frame().expect("within the retry budget");
        self.flush_tick();
        self.tick.poll_commit()
    }

    /// Reports a commit job's result to the core, as a pipelining driver
    /// does when its commit thread returns, and puts what it sends in flight.
    pub(crate) fn commit_done(
        &mut self,
        job: &hoard_proto::sync::tick::CommitJob,
        result: Result<hoard_engine::store::CommitReceipt, hoard_engine::store::CommitError>,
    ) {
        self.tick
            .commit_done(self.net.now, job.id, result)
            .expect("within the retry budget");
        self.flush_tick();
    }

    /// Puts the tick core's messages in flight to the client, in order.
    fn flush_tick(&mut self) {
        while let Some(HubRead { ticket, read }) = self.tick.poll_read() {
            self.read(Reader::Tick(ticket), read);
        }
        while let Some(out) = self.tick.poll_output() {
            assert_eq!(out.to, SESSION);
            self.net.send(To::ClientDelta, &out.message);
        }
    }

    /// Starts entering a zone from the cache, as the client driver would.
    pub(crate) fn enter(&mut self, zone: &str, subscribe: bool) -> u32 {
        let zone = ZoneId::new(zone).expect("zone");
        let copies: Vec<CachedShard> = self
            .cache
            .iter()
            .filter(|(k, _)| k.zone == zone)
            .map(|(_, c)| c.clone())
            .collect();
        let heads: Vec<_> = copies.iter().map(|c| c.header.clone()).collect();
        self.entering = Some(zone.clone());
        let request = self.client.enter_zone(self.net.now, zone, &heads, subscribe);
        self.flush_client();
        let check = if self.trust_copies {
            CheckedCopy::from_verified_file
        } else {
            CheckedCopy::new
        };
        self.client
            .provide_copies(self.net.now, request, copies.into_iter().map(check).collect())
            .expect("copies");
        self.drain_effects();
        request
    }

    fn flush_client(&mut self) {
        while let Some(msg) = self.client.poll_transmit() {
            let len = msg.to_frame().len();
            self.bytes_to_server += len as u64;
            self.largest_to_server = self.largest_to_server.max(len);
            self.net.send(To::Server, &msg);
        }
    }

    fn flush_server(&mut self) {
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Control(m) => self.net.send(To::ClientControl, &m),
                Output::Read(read) => self.read(Reader::Session, read),
                Output::Answer { plan } => {
                    // The driver's job: each shard's answer built as it is
                    // sent, then the live deltas proto's rule starts.
                    self.subscriptions.answering(&plan);
                    let request = plan.request();
                    self.answers.insert(request, plan);
                    self.advance_answer(request);
                }
                Output::Unsubscribe { zone } => {
                    self.subscriptions.left(&zone);
                    self.tick
                        .handle(&mut self.world, TickInput::Unsubscribe { id: SESSION, zone });
                }
                Output::Intent {
                    perspective,
                    kind,
                    payload,
                    seq,
                    ..
                } => {
                    let intent = ReceivedIntent {
                        id: Default::default(),
                        perspective,
                        kind,
                        payload,
                    };
                    self.tick.handle(
                        &mut self.world,
                        TickInput::Intent {
                            id: SESSION,
                            seq,
                            intent,
                            signature: Vec::new(),
                        },
                    );
                }
                Output::Close { code, reason } => self.closed = Some((code, reason)),
                // The one join is the setup's (`Pair::new`).
                Output::Prepare { .. } => self.session.prepared(Ok(())),
                Output::Joined { .. } | Output::SignedIn { .. } | Output::SignedOut { .. } => {}
            }
        }
    }

    /// Performs a store read now, as the simulated store is: working or not.
    fn perform(&mut self, read: &StoreRead) -> StoreReply {
        self.store_reads += 1;
        if self.store_failing {
            let outage = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "simulated outage");
            return read.failed(ReadError::Fault(StoreFault::Backend {
                context: "reading".into(),
                source: Box::new(outage),
            }));
        }
        read.run(&*self.store)
    }

    /// A read `reader` asked for: answered at once, or `store_latency` later.
    fn read(&mut self, reader: Reader, read: StoreRead) {
        if self.store_latency == 0.0 {
            let reply = self.perform(&read);
            return self.read_done(reader, reply);
        }
        self.next_read += 1;
        self.reads.insert(self.next_read, (reader, read));
        self.net.after(self.store_latency, To::Store(self.next_read));
    }

    fn read_done(&mut self, reader: Reader, reply: StoreReply) {
        match reader {
            Reader::Session => {
                self.session.read_done(reply);
                self.flush_server();
            }
            Reader::Tick(ticket) => self.tick.read_done(ticket, reply),
            Reader::Answer(request) => {
                let Some(plan) = self.answers.get_mut(&request) else {
                    return;
                };
                match plan.supply(reply) {
                    Ok(()) => self.advance_answer(request),
                    Err(e) => self.answer_failed(request, e),
                }
            }
        }
    }

    /// As the QUIC driver does when an answer's read fails: the connection ends.
    fn answer_failed(&mut self, request: u32, e: ReadError) {
        self.answers.remove(&request);
        self.closed = Some((ErrorCode::Server, format!("reading the zone failed: {e}")));
    }

    /// Sends an answer's messages until it needs a read or is complete;
    /// once complete, starts the live deltas proto's rule says.
    fn advance_answer(&mut self, request: u32) {
        loop {
            let Some(plan) = self.answers.get_mut(&request) else {
                return;
            };
            match plan.step() {
                AnswerStep::Send(m) => self.net.send(To::ClientAnswer(request), &m),
                AnswerStep::Read(read) if self.store_latency == 0.0 => {
                    let reply = self.perform(&read);
                    let Some(plan) = self.answers.get_mut(&request) else {
                        return;
                    };
                    if let Err(e) = plan.supply(reply) {
                        return self.answer_failed(request, e);
                    }
                }
                AnswerStep::Read(read) => return self.read(Reader::Answer(request), read),
                AnswerStep::Done => {
                    let Some(plan) = self.answers.remove(&request) else {
                        return;
                    };
                    if let Some((zone, shards)) = self.subscriptions.answered(&plan) {
                        let subscribe = TickInput::Subscribe {
                            id: SESSION,
                            zone,
                            shards,
                            proofs: false,
                        };
                        self.tick.handle(&mut self.world, subscribe);
                        self.flush_tick();
                    }
                    return;
                }
            }
        }
    }

    fn drain_effects(&mut self) {
        while let Some(effect) = self.client.poll_effect() {
            match effect {
                Effect::WriteShard(s) | Effect::JournalShard { shard: s, .. } => {
                    self.cache.insert(s.header.key.clone(), (*s).clone());
                }
                Effect::ZoneReady {
                    zone, stats, shards, ..
                } => {
                    for s in &shards {
                        assert_eq!(self.cache.get(&s.header.key), Some(&**s), "written before ready");
                    }
                    self.ready.push((zone, stats));
                }
                Effect::DeltaApplied { shard, .. } => {
                    self.seen.push(Seen::Delta(shard.header.key.shard, shard.header.hwm));
                    self.cache.insert(shard.header.key.clone(), (*shard).clone());
                }
                Effect::Processed { seqs } => self.seen.push(Seen::Processed(seqs)),
                Effect::IntentRejected { seq, .. } => self.seen.push(Seen::Rejected(seq)),
                Effect::Status { writable, .. } => self.seen.push(Seen::Writable(writable)),
                Effect::ZoneDenied { zone, code, .. } => self.denied.push((zone, code)),
                Effect::Failed { code, message } => self.failures.push((code, message)),
                _ => {}
            }
        }
    }

    /// Delivers everything in flight (and what it causes), advancing the clock.
    pub(crate) fn run(&mut self) {
        self.run_until(f64::INFINITY);
    }

    /// Delivers what arrives up to `until` (and what it causes), advancing
    /// the clock to it; the rest stays in flight.
    pub(crate) fn run_until(&mut self, until: f64) {
        self.flush_client();
        self.flush_server();
        self.flush_tick();
        while let Some(Reverse((at, ..))) = self.net.queue.peek() {
            if until.is_finite() && *at > micros(until) {
                self.net.now = self.net.now.max(until);
                break;
            }
            let Some(Reverse((at, _, to, frame))) = self.net.queue.pop() else {
                break;
            };
            self.net.now = self.net.now.max(at as f64 / 1e6);
            match to {
                To::Store(id) => {
                    if let Some((reader, read)) = self.reads.remove(&id) {
                        let reply = self.perform(&read);
                        self.read_done(reader, reply);
                        self.flush_tick();
                    }
                }
                To::Server => {
                    let msg = Message::decode(frame[4], &frame[5..]).expect("valid frame");
                    self.session.handle(self.net.now, 0, msg);
                    self.flush_server();
                    self.flush_tick();
                }
                To::ClientAnswer(request) => {
                    let msg = Message::decode(frame[4], &frame[5..]).expect("valid frame");
                    self.bytes_to_client += frame.len() as u64;
                    self.client
                        .handle_answer(self.net.now, request, msg, frame.len())
                        .expect("sync");
                    if let Some(zone) = &self.entering {
                        self.progress.push(self.client.entry_progress(zone));
                    }
                }
                To::ClientControl | To::ClientDelta => {
                    let msg = Message::decode(frame[4], &frame[5..]).expect("valid frame");
                    self.bytes_to_client += frame.len() as u64;
                    self.client.handle(self.net.now, msg, frame.len()).expect("sync");
                }
            }
            self.drain_effects();
            self.flush_client();
        }
    }

    /// Asserts that the client's copy of every shard of the zone equals the server's.
    pub(crate) fn assert_in_sync(&self, zone: &str) {
        let zone = ZoneId::new(zone).expect("zone");
        for shard in self.store.zone_shards(&zone).expect("shards") {
            let snap = self.store.snapshot(shard).expect("snapshot");
            let key = ShardKey::new(SERVER, "world", None, zone.clone(), shard).expect("key");
            let copy = self
                .cache
                .get(&key)
                .unwrap_or_else(|| panic!("shard {shard} missing on the client"));
            assert_eq!(copy.header.digest, snap.head.digest, "shard {shard}: digest");
            assert_eq!(copy.header.hwm, snap.head.seq, "shard {shard}: hwm");
            let theirs: Vec<_> = snap
                .objects
                .iter()
                .map(|o| (o.id, o.version, o.state.clone()))
                .collect();
            let ours: Vec<_> = copy
                .objects
                .iter()
                .map(|o| (o.id, o.version, o.state.clone()))
                .collect();
            assert_eq!(ours, theirs, "shard {shard}: objects");
        }
    }
}
