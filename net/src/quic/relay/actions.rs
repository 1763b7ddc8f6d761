//! Players' actions carried to the origin: the driver of proto's
//! [`ActionRoutes`] (which upstream session carries each player's intents,
//! and what a player is told) and [`ActorBook`] (which player's session
//! sent each seq). Each upstream session is a [`HoardClient`] on a task of
//! its own, fed by a bounded queue; the origin's `Processed`,
//! `IntentRejected` and nonce come back to the player's session. The
//! changes the actions cause reach the player through the relay's followed
//! shards like everyone's, so a `Processed` may arrive before them (at the
//! origin it comes after).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use hoard_engine::PublishRegistry;
use hoard_proto::auth::TokenAuthority;
use hoard_proto::relay::actions::{ActionRoutes, ActionStep, Actor, ActorBook, Forward, UpstreamToken};
use hoard_proto::sync::tick::TickInput;
use hoard_proto::wire::Message;
use tokio::sync::mpsc;

use crate::quic::client::{ClientOptions, ClientUpdate, HoardClient};

use super::IntentTamper;

/// Intents queued for one player's upstream session; past this the
/// player is told to slow down.
const QUEUED: usize = 64;
/// Answers waiting for the relay's loop (every player's).
const ANSWERS: usize = 4096;
/// How long a player's upstream token is valid (a new session is made
/// for a player whose session ended).
const TOKEN_HOURS: i64 = 12;

pub(super) struct Actions {
    routes: ActionRoutes,
    template: ClientOptions,
    registry: PublishRegistry,
    auth: TokenAuthority,
    /// How this relay tampers with intents (tests only).
    tamper: Option<IntentTamper>,
    /// Each upstream session's queue.
    actors: HashMap<Actor, mpsc::Sender<Forward>>,
    /// What the routes told players in the last `take`s, for the relay's
    /// loop to send (it takes them after each batch of commands, so this
    /// holds at most a batch's worth).
    told: VecDeque<(u64, Message)>,
    /// The upstream sessions' answers (they wait for room: never dropped).
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
            routes: ActionRoutes::new(trusted),
            template,
            registry,
            auth,
            tamper,
            actors: HashMap::new(),
            told: VecDeque::new(),
            answers_tx,
            answers,
        }
    }

    /// An answer for a session, if one is waiting: the routes' own first,
    /// then those that came back from upstream.
    pub(super) fn answer(&mut self) -> Option<(u64, Message)> {
        self.told.pop_front().or_else(|| self.answers.try_recv().ok())
    }

    /// Takes what concerns actions (a player known, an intent, a session
    /// gone) and carries out what the routes decide; gives back what the
    /// relay's core handles.
    pub(super) fn take(&mut self, input: TickInput) -> Option<TickInput> {
        let rest = self.routes.take(input);
        while let Some(step) = self.routes.poll_step() {
            match step {
                ActionStep::Open {
                    actor,
                    player,
                    token,
                    nonce_to,
                } => self.open(actor, &player, token, nonce_to),
                ActionStep::Forward { actor, intent } => {
                    let Some(queue) = self.actors.get(&actor) else {
                        self.routes.gone(&actor, &intent);
                        continue;
                    };
                    match queue.try_send(intent) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(intent)) => self.routes.busy(&intent),
                        Err(mpsc::error::TrySendError::Closed(intent)) => {
                            self.actors.remove(&actor);
                            self.routes.gone(&actor, &intent);
                        }
                    }
                }
                // Its upstream session ends with its queue.
                ActionStep::Close { actor } => drop(self.actors.remove(&actor)),
                ActionStep::Answer { to, message } => self.told.push_back((to, message)),
            }
        }
        rest
    }

    /// Opens `actor`'s upstream session as `player`; the nonce it is given
    /// goes down to `nonce_to`.
    fn open(&mut self, actor: Actor, player: &str, token: UpstreamToken, nonce_to: Option<u64>) {
        let token = match token {
            UpstreamToken::Player(token) => token,
            UpstreamToken::Issue => self
                .auth
                .issue(player, chrono::Utc::now().timestamp() + TOKEN_HOURS * 3600)
                .unwrap_or_default(),
        };
        let mut options = self.template.clone();
        options.proofs = false;
        options.token_keys = false;
        options.token = token;
        // Its own cache folder: it enters no zone, and must not hold the
        // relay's cache lock.
        let folder = match &actor {
            Actor::Session(id) => format!("{player}-{id}"),
            Actor::Player(_) => player.to_owned(),
        };
        options.cache_dir = options.cache_dir.join("actors").join(folder);
        let (tx, rx) = mpsc::channel(QUEUED);
        let book = ActorBook::new(nonce_to);
        tokio::spawn(act(
            options,
            self.registry.clone(),
            rx,
            self.answers_tx.clone(),
            book,
            self.tamper,
        ));
        self.actors.insert(actor, tx);
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
        Some(IntentTamper::Replay) => vec![f.clone(), f],
    }
}

/// One player's upstream session: sends their intents, brings the
/// origin's answers back (as `book` says where each goes).
async fn act(
    options: ClientOptions,
    registry: PublishRegistry,
    mut intents: mpsc::Receiver<Forward>,
    answers: mpsc::Sender<(u64, Message)>,
    mut book: ActorBook,
    tamper: Option<IntentTamper>,
) {
    let client = match HoardClient::connect(options, registry).await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "the world's server refused a player's session through this relay");
            let why = e.to_string();
            if let Some(answer) = book.refused(&why) {
                let _ = answers.send(answer).await;
            }
            while let Some(f) = intents.recv().await {
                let _ = answers.send(book.refused_intent(&f, &why)).await;
            }
            return;
        }
    };
    let mut held = None;
    let mut told = Vec::new();
    loop {
        tokio::select! {
            next = intents.recv() => {
                let Some(f) = next else { break };
                if let Some(answer) = book.sending(&f) {
                    let _ = answers.send(answer).await;
                    continue;
                }
                for Forward { session, seq, kind, payload, signature } in tampered(tamper, f, &mut held) {
                    if let Err(e) = client.send_signed_intent(seq, &kind, payload, signature).await {
                        let _ = answers.send(book.not_sent(session, seq, &e.to_string())).await;
                    }
                }
            }
            () = client.changed() => {
                let mut ended = false;
                for update in client.take_updates() {
                    if let ClientUpdate::Event(event) = update {
                        ended |= book.event(event, &mut told);
                    }
                }
                for answer in told.drain(..) {
                    let _ = answers.send(answer).await;
                }
                if ended {
                    return;
                }
            }
        }
    }
    client.close_and_wait(Duration::from_secs(1)).await;
}
