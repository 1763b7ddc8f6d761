//! One connection, accepted: its handshake and `Hello` deadline, the
//! per-address count, and the control loop that feeds the connection's
//! [`ServerSession`] and carries out its outputs (answers, subscriptions,
//! intents, sign-ins, closes).

use super::*;

/// Bytes of queued deltas written to a connection's delta stream at once,
/// at most (a batch may pass it by one message).
pub(super) const DELTA_BATCH_BYTES: usize = 64 * 1024;
/// A tick's batch for one connection is packed (for a client that asked)
/// only from this size: a smaller one fits a datagram or two either way,
/// and compressing it cost the server about 6% of its CPU at 600 bots
/// (0.39 cores against 0.37) for no fewer packets.
const DELTA_PACK_MIN_BYTES: usize = 4 * 1024;
/// A connection's batch buffer is kept between writes up to this size.
const KEPT_BATCH_BYTES: usize = 16 * 1024;

pub(super) async fn serve(
    incoming: quinn::Incoming,
    shared: &Arc<Shared>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let deadline = tokio::time::Instant::now() + shared.options.hello_timeout;
    let peer = incoming.remote_address();
    let connecting = incoming.accept()?;
    // The connection is used before its handshake completes, so a returning
    // client's 0-RTT `Hello` and `EnterZone` are answered at once (in 0.5-RTT
    // data); until the handshake completes the session is early
    // (`ServerSession::early`: no takeover, no intents), and the handshake
    // must complete by the hello deadline.
    let (conn, handshake) = match connecting.into_0rtt() {
        Ok((conn, accepted)) => (conn, Some(accepted)),
        Err(connecting) => {
            let Ok(conn) = tokio::time::timeout_at(deadline, connecting).await else {
                return hello_late(shared, peer, "handshake not finished in time; dropped");
            };
            (conn?, None)
        }
    };
    serve_link(Link::quic(conn), handshake, deadline, shared).await
}

/// A browser's connection: the QUIC handshake, then HTTP/3's SETTINGS and
/// the extended CONNECT of a WebTransport session to [`WEB_PATH`] (anything
/// else is answered 404), all by the hello deadline; then the same hoard
/// session as on raw QUIC, on the session's streams.
pub(super) async fn serve_web(
    incoming: quinn::Incoming,
    shared: &Arc<Shared>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let deadline = tokio::time::Instant::now() + shared.options.hello_timeout;
    let peer = incoming.remote_address();
    let accepted = tokio::time::timeout_at(deadline, async {
        let conn = incoming.accept()?.await?;
        let request = web_transport_quinn::Request::accept(conn).await?;
        if request.connect().url.path() != WEB_PATH {
            let path = request.connect().url.path().to_owned();
            tracing::info!(%peer, %path, "WebTransport session to another path; refused");
            request.reject(web_transport_quinn::http::StatusCode::NOT_FOUND).await?;
            return Ok(None);
        }
        let conn = request.conn().clone();
        let session = request.ok().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Some(Link::web(conn, session)))
    })
    .await;
    match accepted {
        Err(_) => hello_late(shared, peer, "WebTransport session not set up in time; dropped"),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(link))) => serve_link(link, None, deadline, shared).await,
    }
}

/// Counts a connection that did not come to its `Hello` in time.
fn hello_late(shared: &Shared, peer: SocketAddr, what: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    shared.stats.hello_timeouts.fetch_add(1, Ordering::Relaxed);
    shared.metrics.disconnect("hello_timeout");
    tracing::info!(%peer, "{what}");
    Ok(())
}

/// Runs one connection's hoard session, raw QUIC or WebTransport alike.
async fn serve_link(
    link: Link,
    handshake: Option<quinn::ZeroRttAccepted>,
    deadline: tokio::time::Instant,
    shared: &Arc<Shared>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let conn = link.conn().clone();
    let peer = conn.remote_address();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let Ok(control) = tokio::time::timeout_at(deadline, link.accept_control()).await else {
        link.close(ErrorCode::Timeout, b"no hello in time");
        return hello_late(shared, peer, "no control stream in time; closing");
    };
    let (mut send, recv) = control?;
    let mut reader = FrameReader::new(recv, MAX_CONTROL_FRAME);
    let mut session = if handshake.is_some() {
        ServerSession::early(shared.config.clone(), id)
    } else {
        ServerSession::new(shared.config.clone(), id)
    };
    if let Ok(mut conns) = shared.conns.lock() {
        conns.insert(id, link.clone());
    }
    let (delta_tx, mut delta_rx) = mpsc::channel::<Frames>(shared.delta_queue);
    let _ = shared.commands.send(Command::Register {
        id,
        deltas: delta_tx,
        link: Box::new(link.clone()),
    });
    // Live deltas (and transient states) on their own stream, opened on
    // first use. What a tick queued for the connection goes out as one
    // write (up to `DELTA_BATCH_BYTES`): one wake-up of the connection, and
    // as few datagrams as the bytes need rather than one per message.
    let delta_link = link.clone();
    let delta_metrics = shared.metrics.clone();
    // The session's codec, once its `Hello` names one: a tick's batch of
    // at least `DELTA_PACK_MIN_BYTES` goes packed (a catch-up, a busy zone).
    let codec: Arc<OnceLock<u8>> = Arc::default();
    let delta_codec = codec.clone();
    tokio::spawn(async move {
        let mut stream = None;
        let mut batch = Vec::new();
        while let Some(first) = delta_rx.recv().await {
            if stream.is_none() {
                match delta_link.open_uni().await {
                    Ok(s) => stream = Some(s),
                    Err(_) => return,
                }
            }
            batch.clear();
            let mut next = Some(first);
            while let Some(frames) = next.take() {
                for frame in frames.iter() {
                    batch.extend_from_slice(frame);
                }
                if batch.len() < DELTA_BATCH_BYTES {
                    next = delta_rx.try_recv().ok();
                }
            }
            let Some(s) = stream.as_mut() else { return };
            let written = match delta_codec.get() {
                Some(&codec) if batch.len() >= DELTA_PACK_MIN_BYTES => {
                    let frames = std::mem::take(&mut batch);
                    let wire = if frames.len() > DELTA_BATCH_BYTES {
                        // A large catch-up: compressed off the async workers.
                        match tokio::task::spawn_blocking(move || packed(Some(codec), frames)).await {
                            Ok(wire) => wire,
                            Err(_) => return, // the runtime is shutting down
                        }
                    } else {
                        packed(Some(codec), frames)
                    };
                    let ok = s.write_all(&wire).await.is_ok();
                    ok.then_some(wire.len())
                }
                _ => s.write_all(&batch).await.is_ok().then_some(batch.len()),
            };
            let Some(written) = written else { return };
            delta_metrics.sent("delta", written);
            if batch.capacity() > KEPT_BATCH_BYTES {
                // A large catch-up passed through: a thousand idle
                // connections do not each keep its buffer.
                batch = Vec::new();
            }
        }
    });
    let control_link = ControlLink {
        link: &link,
        shared,
        id,
        hello_deadline: deadline,
        codec,
    };
    let result = control_loop(&control_link, &mut send, &mut reader, &mut session, handshake).await;
    shared
        .stats
        .mtu_probes
        .fetch_add(conn.stats().path.sent_plpmtud_probes, Ordering::Relaxed);
    if conn.close_reason().is_none() {
        // The control stream ended or failed: say so, rather than let the
        // connection close without a reason when its last handle goes.
        let reason = match &result {
            Ok(()) => "the control stream ended".to_owned(),
            Err(e) => format!("the control stream failed: {e}"),
        };
        tracing::debug!(%peer, %reason, "closing the connection");
        link.close(ErrorCode::Protocol, reason.as_bytes());
    }
    // Ends the server chose (slow consumer, timeout, refusal, replacement)
    // were counted where it chose them; the rest are the client's doing.
    match conn.close_reason() {
        Some(quinn::ConnectionError::LocallyClosed) => {}
        Some(quinn::ConnectionError::ApplicationClosed(_)) | None => shared.metrics.disconnect("closed"),
        Some(_) => shared.metrics.disconnect("lost"),
    }
    session.closed();
    while let Some(output) = session.poll_output() {
        if let Output::SignedOut { perspective } = output {
            lock(&shared.live).sign_out(&perspective, id);
        }
    }
    if let Ok(mut conns) = shared.conns.lock() {
        conns.remove(&id);
    }
    if let (Some(hook), Some(perspective)) = (&shared.on_leave, session.perspective()) {
        let (hook, perspective) = (hook.clone(), perspective.to_owned());
        // The hook may touch the store: off the async workers.
        tokio::task::spawn_blocking(move || hook(&perspective));
    }
    let _ = shared.commands.send(Command::Tick(TickInput::Remove { id }));
    result
}

/// What the control loop of one connection works with.
pub(super) struct ControlLink<'a> {
    link: &'a Link,
    shared: &'a Arc<Shared>,
    id: SessionId,
    /// `Hello` (and the handshake) must have come by then.
    hello_deadline: tokio::time::Instant,
    /// The session's codec for its delta stream, set once `Hello` names one.
    codec: Arc<OnceLock<u8>>,
}

impl ControlLink<'_> {
    /// The next control message; before `Hello`, bounded by the hello
    /// deadline (a timeout fails the session). Cancel-safe.
    async fn next_message(
        &self,
        reader: &mut FrameReader,
        session: &mut ServerSession,
    ) -> Result<Option<Message>, Box<dyn std::error::Error + Send + Sync>> {
        let next = if session.perspective().is_none() {
            match tokio::time::timeout_at(self.hello_deadline, reader.next()).await {
                Ok(next) => next,
                Err(_) => {
                    self.shared.stats.hello_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %self.link.conn().remote_address(), "no hello in time; closing");
                    session.fail(ErrorCode::Timeout, "no hello in time");
                    return Ok(None);
                }
            }
        } else {
            reader.next().await
        };
        match next {
            Ok(Some((msg, _))) => Ok(Some(msg)),
            Ok(None) => Err(StreamEnded.into()),
            Err(StreamError::Read(e)) => Err(e.into()),
            Err(e) => {
                session.fail(ErrorCode::Protocol, e.to_string());
                Ok(None)
            }
        }
    }

    /// Waits (until the hello deadline) for the connection's handshake;
    /// `false` if it failed or did not complete in time, and the session is
    /// then failed. (`accepted` resolves on a server once the handshake
    /// ends either way; its value says whether the client used 0-RTT.)
    async fn complete_handshake(&self, accepted: quinn::ZeroRttAccepted, session: &mut ServerSession) -> bool {
        match tokio::time::timeout_at(self.hello_deadline, accepted).await {
            Ok(_) if self.link.conn().close_reason().is_none() => {
                session.handshake_complete();
                true
            }
            _ => {
                self.shared.stats.hello_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %self.link.conn().remote_address(), "handshake not finished in time; closing");
                session.fail(ErrorCode::Timeout, "the handshake did not complete in time");
                false
            }
        }
    }
}

/// What the control loop waits for.
pub(super) enum ControlEvent {
    /// The connection's handshake ended (completed: `true`).
    Handshake(bool),
    /// A message was read (`None`: the session failed instead).
    Read(Result<Option<Message>, Box<dyn std::error::Error + Send + Sync>>),
}

/// The control stream ended cleanly (the client finished it).
#[derive(Debug, thiserror::Error)]
#[error("the control stream ended")]
pub(super) struct StreamEnded;

pub(super) async fn control_loop(
    control: &ControlLink<'_>,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    session: &mut ServerSession,
    mut handshake: Option<quinn::ZeroRttAccepted>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (link, shared, id) = (control.link, control.shared, control.id);
    let conn = link.conn();
    let stall = shared.options.answer_stall;
    let answers = Arc::new(Semaphore::new(shared.options.answers_in_flight.max(1)));
    // The zones this connection wants live deltas of, and the entry (request)
    // whose answer will start them.
    let wanted: Wanted = Arc::new(std::sync::Mutex::new(Subscriptions::default()));
    loop {
        // The handshake completing is an event of its own (an early
        // session's perspective takes over then); messages are read
        // meanwhile, so early data is answered at once.
        let event = match handshake.as_mut() {
            Some(accepted) => tokio::select! {
                biased;
                // On a server it resolves once the handshake ends, completed
                // or not (its value says whether the client used 0-RTT).
                done = tokio::time::timeout_at(control.hello_deadline, accepted) => {
                    ControlEvent::Handshake(done.is_ok() && conn.close_reason().is_none())
                }
                next = control.next_message(reader, session) => ControlEvent::Read(next),
            },
            None => ControlEvent::Read(control.next_message(reader, session).await),
        };
        let mut msg = match event {
            ControlEvent::Handshake(ok) => {
                handshake = None;
                if ok {
                    session.handshake_complete();
                } else {
                    shared.stats.hello_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %conn.remote_address(), "handshake not finished in time; closing");
                    session.fail(ErrorCode::Timeout, "the handshake did not complete in time");
                }
                None
            }
            ControlEvent::Read(Ok(msg)) => msg,
            ControlEvent::Read(Err(e)) if e.is::<StreamEnded>() => return Ok(()),
            ControlEvent::Read(Err(e)) => return Err(e),
        };
        // An intent is never acted on from early data: it waits for the
        // handshake (a client sends none before, so this is at most the
        // moment between the handshake's end and its event).
        if matches!(msg, Some(Message::Intent(_)))
            && let Some(accepted) = handshake.take()
            && !control.complete_handshake(accepted, session).await
        {
            msg = None;
        }
        // A request that builds an answer first takes an answer slot (this
        // connection's and the server's), so answers being built count
        // towards the bounds too, and a client that does not read its
        // answers is not read from either.
        let mut slot = None;
        let mut entry_kind = None;
        if let Some(msg) = msg {
            // What kind of entry a request is, for the metrics, and when it came.
            entry_kind = match &msg {
                Message::EnterZone(e) if e.have.is_empty() && e.held.is_empty() => Some("cold"),
                Message::EnterZone(_) => Some("warm"),
                Message::Repair(_) => Some("repair"),
                _ => None,
            }
            .map(|kind| (kind, Instant::now()));
            if matches!(msg, Message::EnterZone(_) | Message::Repair(_)) && session.perspective().is_some() {
                // This connection's slot, then a light one of the server's
                // within this address's share (see `slots`).
                let ip = conn.remote_address().ip();
                let taken = tokio::time::timeout(stall, async {
                    let mine = answers.clone().acquire_owned().await.ok()?;
                    let light = shared.slots.light.take(ip).await;
                    Some((mine, light))
                })
                .await;
                let Ok(Some(taken)) = taken else {
                    shared.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    shared.metrics.disconnect("slow_consumer");
                    static UNREAD: LogLimit = LogLimit::new();
                    if let Some(left_out) = UNREAD.allow() {
                        tracing::warn!(peer = %conn.remote_address(), left_out, "client does not read its zone answers; disconnecting");
                    }
                    link.close(ErrorCode::SlowConsumer, b"slow consumer: answers not read");
                    return Ok(());
                };
                slot = Some(taken);
            }
            let now = shared.started.elapsed().as_secs_f64();
            let unix = chrono::Utc::now().timestamp();
            session.set_writable(shared.writable.load(Ordering::SeqCst));
            session.handle(now, unix, msg);
            if let Some(codec) = session.codec() {
                let _ = control.codec.set(codec);
            }
        }
        while let Some(out) = session.poll_output() {
            match out {
                Output::Control(m) => {
                    if let Message::IntentRejected(rejected) = &m {
                        count_rejection(shared, rejected.code);
                    }
                    let bytes = write_message(send, &m).await?;
                    shared.metrics.sent("control", bytes);
                }
                Output::Read(read) => {
                    // The store may be a database round trip away: keep the
                    // runtime's other connections moving meanwhile.
                    let store = shared.store.clone();
                    let reply = tokio::task::block_in_place(|| read.run(&*store));
                    session.read_done(reply);
                }
                Output::Answer { plan } => {
                    // The slot taken before the request was handled travels
                    // with its answer until the client has taken it.
                    let slot = slot.take();
                    lock(&wanted).answering(&plan);
                    let sender = AnswerSender {
                        link: link.clone(),
                        bulk: shared.slots.bulk.clone(),
                        store: shared.store.clone(),
                        stats: shared.stats.clone(),
                        metrics: shared.metrics.clone(),
                        entry: entry_kind,
                        commands: shared.commands.clone(),
                        wanted: wanted.clone(),
                        stall,
                        id,
                        codec: session.codec(),
                    };
                    tokio::spawn(async move {
                        let (_mine, light) = slot.unzip();
                        sender.send(plan, light).await;
                    });
                }
                Output::Unsubscribe { zone } => {
                    // Under the lock an answer task subscribes under: a zone
                    // left while its answer is still being sent stays left.
                    let mut wanted = lock(&wanted);
                    wanted.left(&zone);
                    let _ = shared.commands.send(Command::Tick(TickInput::Unsubscribe { id, zone }));
                }
                Output::Intent {
                    perspective,
                    kind,
                    payload,
                    seq,
                    signature,
                } => {
                    let _ = shared.commands.send(Command::Tick(TickInput::Intent {
                        id,
                        seq,
                        intent: ReceivedIntent {
                            id: Default::default(),
                            perspective,
                            kind,
                            payload,
                        },
                        signature,
                    }));
                }
                Output::Prepare { perspective } => {
                    // The game's join hook may touch the store: keep the
                    // runtime's other connections moving meanwhile.
                    let prepared = match &shared.on_join {
                        Some(hook) => tokio::task::block_in_place(|| hook(&perspective, &*shared.store)),
                        None => Ok(()),
                    };
                    session.prepared(prepared);
                }
                // Prepared and past the handshake (a replayed early `Hello`
                // never shows as a player).
                Output::Joined {
                    perspective,
                    bound_token,
                } => {
                    let _ = shared.commands.send(Command::Tick(TickInput::Joined {
                        id,
                        perspective,
                        bound_token,
                    }));
                }
                Output::SignedIn { perspective } => {
                    let previous = lock(&shared.live).sign_in(&perspective, session.id());
                    if let Some(old) = previous.and_then(|s| lock(&shared.conns).get(&s).cloned()) {
                        shared.metrics.disconnect("replaced");
                        old.close(ErrorCode::TokenInUse, b"signed in again from another connection");
                    }
                }
                Output::SignedOut { perspective } => lock(&shared.live).sign_out(&perspective, session.id()),
                Output::Close { code, reason } => {
                    if code == ErrorCode::BadIntent {
                        shared.stats.bad_intents.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.metrics.disconnect(match code {
                        ErrorCode::Timeout => "hello_timeout",
                        ErrorCode::BadIntent => "bad_intent",
                        _ => "refused",
                    });
                    // Let the Error frame reach the client before closing
                    // (closing discards unsent stream data); bounded wait.
                    let _ = send.finish();
                    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
                    link.close(code, reason.as_bytes());
                    return Ok(());
                }
            }
        }
    }
}

/// Counts an intent the session rejected, by why (its code).
fn count_rejection(shared: &Shared, code: u16) {
    let reason = match code {
        c if c == ErrorCode::Unavailable as u16 => {
            shared.stats.unavailable_intents.fetch_add(1, Ordering::Relaxed);
            "unavailable"
        }
        c if c == ErrorCode::Protocol as u16 => "unknown",
        c if c == ErrorCode::RateLimited as u16 => "rate_limited",
        _ => "too_large",
    };
    shared.metrics.reject(reason);
}
