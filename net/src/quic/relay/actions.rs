//! Players' actions carried to the origin. A player whose world token binds
//! their key gets their own session at the origin, opened with their own
//! token as soon as they sign in here; the origin's nonce for it is passed
//! down, and their signed intents go up unchanged (the origin checks them:
//! this relay cannot forge, alter, reorder or replay one). A relay trusted
//! with the world's token secret ([`super::RelayOptions::carry_actions`])
//! also carries unsigned intents, under tokens it issues: one upstream
//! session per acting player. Intents go up in order with the player's own
//! seqs; the origin's `Processed` and `IntentRejected` come back to the
//! player's session. The changes the actions cause reach the player through
//! the relay's followed shards like everyone's, so a `Processed` may arrive
//! before them (at the origin it comes after).

use std::collections::HashMap;
use std::time::Duration;

use hoard_engine::PublishRegistry;
use hoard_proto::auth::TokenAuthority;
use hoard_proto::sync::tick::TickInput;
use hoard_proto::wire::{ErrorCode, ErrorMsg, IntentNonce, IntentRejected, Message, Processed};
use tokio::sync::mpsc;

use crate::quic::client::{ClientEvent, ClientOptions, ClientUpdate, HoardClient};

use super::IntentTamper;

/// Intents queued for one player's upstream session; past this the
/// player is told to slow down.
const QUEUED: usize = 64;
/// Answers waiting for the relay's loop (every player's).
const ANSWERS: usize = 4096;
/// Most players' own upstream sessions at once.
const MAX_ACTORS: usize = 10_000;
/// How long a player's upstream token is valid (a new session is made
/// for a player whose session ended).
const TOKEN_HOURS: i64 = 12;

struct Forward {
    session: u64,
    seq: u32,
    kind: String,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Whose upstream session an actor is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Actor {
    /// One signed-in session's (its token binds the player's key): the
    /// upstream session's nonce is that session's.
    Session(u64),
    /// A player's, under a token this relay issued (trusted relays).
    Player(String),
}

pub(super) struct Actions {
    template: ClientOptions,
    registry: PublishRegistry,
    auth: TokenAuthority,
    /// Whether unsigned intents are carried (the relay is trusted).
    trusted: bool,
    /// How this relay tampers with intents (tests only).
    tamper: Option<IntentTamper>,
    /// Each session's player.
    players: HashMap<u64, String>,
    /// Each upstream session.
    actors: HashMap<Actor, mpsc::Sender<Forward>>,
    answers_tx: mpsc::Sender<(u64, Message)>,
    answers: mpsc::Receiver<(u64, Message)>,
}

impl Actions {
    pub(super) fn new(
        template: ClientOptions,
        registry: PublishRegistry,
        auth: TokenAuthority,
        trusted: bool,
        tamper: Option<IntentTamper>,
    ) -> Actions {
        let (answers_tx, answers) = mpsc::channel(ANSWERS);
        Actions {
            template,
            registry,
            auth,
            trusted,
            tamper,
            players: HashMap::new(),
            actors: HashMap::new(),
            answers_tx,
            answers,
        }
    }

    /// An answer for a session, if one came back.
    pub(super) fn answer(&mut self) -> Option<(u64, Message)> {
        self.answers.try_recv().ok()
    }

    /// Takes what concerns actions (a player known, an intent, a
    /// session gone); gives back what the relay's core handles.
    pub(super) fn take(&mut self, input: TickInput) -> Option<TickInput> {
        match input {
            TickInput::Joined {
                id,
                perspective,
                bound_token,
            } => {
                self.players.insert(id, perspective.clone());
                if let Some(token) = &bound_token {
                    // Opened now, so the origin's nonce reaches the
                    // player before their first action.
                    self.open(Actor::Session(id), &perspective, token.clone(), Some(id));
                }
                Some(TickInput::Joined {
                    id,
                    perspective,
                    bound_token,
                })
            }
            TickInput::Remove { id } => {
                self.actors.remove(&Actor::Session(id));
                if let Some(player) = self.players.remove(&id)
                    && !self.players.values().any(|p| *p == player)
                {
                    // Its upstream session ends with its queue.
                    self.actors.remove(&Actor::Player(player));
                }
                Some(TickInput::Remove { id })
            }
            TickInput::Intent {
                id,
                seq,
                intent,
                signature,
            } => {
                let Some(player) = self.players.get(&id).cloned() else {
                    self.reject(id, seq, ErrorCode::Unavailable, "your session is not ready to act yet");
                    return None;
                };
                let forward = Forward {
                    session: id,
                    seq,
                    kind: intent.kind,
                    payload: intent.payload,
                    signature,
                };
                let actor = if let Some(tx) = self.actors.get(&Actor::Session(id)) {
                    tx.clone()
                } else if self.trusted {
                    self.player_actor(&player)
                } else {
                    self.reject(
                        id,
                        seq,
                        ErrorCode::Unavailable,
                        "this relay carries signed actions only (a world token binding your key); act at the world's server",
                    );
                    return None;
                };
                if let Err(e) = actor.try_send(forward) {
                    let (code, message) = match e {
                        mpsc::error::TrySendError::Full(_) => {
                            (ErrorCode::RateLimited, "too many actions in flight; slow down")
                        }
                        mpsc::error::TrySendError::Closed(_) => {
                            self.actors.remove(&Actor::Session(id));
                            self.actors.remove(&Actor::Player(player));
                            (
                                ErrorCode::Unavailable,
                                "this relay lost your session at the world's server; sign in again",
                            )
                        }
                    };
                    self.reject(id, seq, code, message);
                }
                None
            }
            other => Some(other),
        }
    }

    fn reject(&self, to: u64, seq: u32, code: ErrorCode, message: &str) {
        let _ = self.answers_tx.try_send((
            to,
            Message::IntentRejected(IntentRejected {
                seq,
                code: code as u16,
                message: message.to_owned(),
            }),
        ));
    }

    /// A trusted relay's upstream session for `player`, opened on first
    /// use under a token it issues.
    fn player_actor(&mut self, player: &str) -> mpsc::Sender<Forward> {
        let key = Actor::Player(player.to_owned());
        if let Some(tx) = self.actors.get(&key).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let token = self
            .auth
            .issue(player, chrono::Utc::now().timestamp() + TOKEN_HOURS * 3600)
            .unwrap_or_default();
        self.open(key, player, token, None)
    }

    /// Opens an upstream session for `player` with `token`; the nonce it
    /// is given goes down to `nonce_to`.
    fn open(&mut self, key: Actor, player: &str, token: String, nonce_to: Option<u64>) -> mpsc::Sender<Forward> {
        let (tx, rx) = mpsc::channel(QUEUED);
        if self.actors.len() >= MAX_ACTORS {
            tracing::warn!(%player, "too many players acting through this relay; refusing another");
            return tx;
        }
        let mut options = self.template.clone();
        options.proofs = false;
        options.token_keys = false;
        options.token = token;
        // Its own cache folder: it enters no zone, and must not hold the
        // relay's cache lock.
        let folder = match &key {
            Actor::Session(id) => format!("{player}-{id}"),
            Actor::Player(_) => player.to_owned(),
        };
        options.cache_dir = options.cache_dir.join("actors").join(folder);
        tokio::spawn(act(
            options,
            self.registry.clone(),
            rx,
            self.answers_tx.clone(),
            nonce_to,
            self.tamper,
        ));
        self.actors.insert(key, tx.clone());
        tx
    }
}

/// What goes up for `f`: `f` itself, unless this relay tampers (tests).
#[cfg(not(feature = "testing"))]
fn tampered(_: Option<IntentTamper>, f: Forward, _: &mut Option<Forward>) -> Vec<Forward> {
    vec![f]
}

/// What goes up for `f`, as `tamper` has it (tests): `held` keeps an
/// intent back for reordering.
#[cfg(feature = "testing")]
fn tampered(tamper: Option<IntentTamper>, mut f: Forward, held: &mut Option<Forward>) -> Vec<Forward> {
    let copy = |f: &Forward| Forward {
        session: f.session,
        seq: f.seq,
        kind: f.kind.clone(),
        payload: f.payload.clone(),
        signature: f.signature.clone(),
    };
    match tamper {
        None => vec![f],
        Some(IntentTamper::Alter) => {
            match f.payload.last_mut() {
                Some(b) => *b ^= 1,
                None => f.payload.push(0),
            }
            vec![f]
        }
        Some(IntentTamper::Drop) if f.seq == 1 => Vec::new(),
        Some(IntentTamper::Drop) => vec![f],
        Some(IntentTamper::Reorder) if f.seq == 1 => {
            *held = Some(f);
            Vec::new()
        }
        Some(IntentTamper::Reorder) => std::iter::once(f).chain(held.take()).collect(),
        Some(IntentTamper::Replay) => vec![copy(&f), f],
    }
}

/// One player's upstream session: sends their intents, brings the
/// origin's answers back.
async fn act(
    options: ClientOptions,
    registry: PublishRegistry,
    mut intents: mpsc::Receiver<Forward>,
    answers: mpsc::Sender<(u64, Message)>,
    nonce_to: Option<u64>,
    tamper: Option<IntentTamper>,
) {
    let reject = |session: u64, seq: u32, code: u16, message: String| {
        let answers = answers.clone();
        async move {
            let _ = answers
                .send((session, Message::IntentRejected(IntentRejected { seq, code, message })))
                .await;
        }
    };
    // A signed player's session here cannot act without its session
    // upstream (its nonce is that session's): when that one is refused
    // or ends, the player's is ended too, with the reason, so their
    // client signs in again instead of waiting for a nonce.
    let end_player = |reason: String| {
        let answers = answers.clone();
        async move {
            if let Some(session) = nonce_to {
                let error = Message::Error(ErrorMsg {
                    code: ErrorCode::Unavailable as u16,
                    message: reason,
                });
                let _ = answers.send((session, error)).await;
            }
        }
    };
    let client = match HoardClient::connect(options, registry).await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "the world's server refused a player's session through this relay");
            end_player(format!(
                "the world's server refused your session through this relay: {e}"
            ))
            .await;
            while let Some(f) = intents.recv().await {
                reject(
                    f.session,
                    f.seq,
                    ErrorCode::Unavailable as u16,
                    format!("the world's server refused your session through this relay: {e}"),
                )
                .await;
            }
            return;
        }
    };
    let mut sessions: HashMap<u32, u64> = HashMap::new();
    let mut held = None;
    loop {
        tokio::select! {
            next = intents.recv() => {
                let Some(f) = next else { break };
                if sessions.len() >= QUEUED * 16 {
                    reject(f.session, f.seq, ErrorCode::Unavailable as u16, "too many actions unanswered by the world's server".into()).await;
                    continue;
                }
                sessions.insert(f.seq, f.session);
                for f in tampered(tamper, f, &mut held) {
                    if let Err(e) = client.send_signed_intent(f.seq, &f.kind, f.payload, f.signature).await {
                        reject(f.session, f.seq, ErrorCode::Unavailable as u16, format!("could not reach the world's server: {e}")).await;
                    }
                }
            }
            () = client.changed() => {
                for update in client.take_updates() {
                    match update {
                        // The origin's code (the game's own, say) goes back
                        // to the player as it is.
                        ClientUpdate::Event(ClientEvent::IntentRejected { seq, code, message }) => {
                            if let Some(session) = sessions.remove(&seq) {
                                reject(session, seq, code, message).await;
                            }
                        }
                        // The origin's nonce for the player's session: the
                        // player signs under it.
                        ClientUpdate::Event(ClientEvent::IntentNonce { nonce }) => {
                            if let Some(session) = nonce_to {
                                let _ = answers.send((session, Message::IntentNonce(IntentNonce { nonce }))).await;
                            }
                        }
                        ClientUpdate::Event(ClientEvent::IntentsProcessed { seqs }) => {
                            let mut by_session: HashMap<u64, Vec<u32>> = HashMap::new();
                            for seq in seqs {
                                if let Some(session) = sessions.remove(&seq) {
                                    by_session.entry(session).or_default().push(seq);
                                }
                            }
                            for (session, seqs) in by_session {
                                let _ = answers.send((session, Message::Processed(Processed { seqs }))).await;
                            }
                        }
                        ClientUpdate::Event(ClientEvent::Disconnected { reason }) => {
                            for (seq, session) in sessions.drain() {
                                reject(session, seq, ErrorCode::Unavailable as u16, format!("the world's server closed your session: {reason}")).await;
                            }
                            end_player(format!("the world's server closed your session through this relay: {reason}; sign in again")).await;
                            return;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    client.close_and_wait(Duration::from_secs(1)).await;
}
