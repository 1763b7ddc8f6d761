//! How a relay carries its players' actions to the origin, decided without
//! I/O. A player whose world token binds their key gets an upstream session
//! of their own, opened with their own token as soon as they sign in (the
//! origin's nonce for it goes down to them; their signed intents go up
//! unchanged, so the relay cannot forge, alter, reorder or replay one). A
//! relay trusted with the world's token secret also carries unsigned
//! intents, under tokens it issues: one upstream session per acting player.
//!
//! [`ActionRoutes`] decides, for what the relay's sessions do (a player
//! signed in, an intent, a session gone), which upstream session carries
//! what and what a player is told ([`ActionStep`]); the driver opens the
//! sessions, moves the intents and reports a session it found gone.
//! [`ActorBook`] is one upstream session's memory: which player's session
//! sent each seq, so the origin's answers go back to it.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::client::ClientEvent;
use crate::sync::tick::TickInput;
use crate::wire::{ErrorCode, ErrorMsg, IntentNonce, IntentRejected, Message, Processed};

/// Most upstream sessions of players at once.
pub const MAX_ACTORS: usize = 10_000;

/// Intents one upstream session may have unanswered by the origin, at most.
pub const MAX_UNANSWERED: usize = 1024;

/// Whose upstream session an actor is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    /// One signed-in session's (its token binds the player's key): the
    /// upstream session's nonce is that session's.
    Session(u64),
    /// A player's, under a token this relay issues (trusted relays).
    Player(String),
}

/// An intent on its way up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The relay's session it came from.
    pub session: u64,
    /// The player's seq for it.
    pub seq: u32,
    /// The registered intent name.
    pub kind: String,
    /// Its MessagePack payload.
    pub payload: Vec<u8>,
    /// The player's signature (empty for an unsigned intent).
    pub signature: Vec<u8>,
}

/// The token an upstream session signs in with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamToken {
    /// The player's own token (it binds their key).
    Player(String),
    /// One the relay issues for the player (trusted relays).
    Issue,
}

/// What the driver does for [`ActionRoutes`], in order.
#[derive(Debug, PartialEq, Eq)]
pub enum ActionStep {
    /// Open `actor`'s upstream session as `player`, signing in with
    /// `token`; the origin's nonce for it goes down to session `nonce_to`.
    Open {
        /// Whose session.
        actor: Actor,
        /// The player it acts as.
        player: String,
        /// How it signs in.
        token: UpstreamToken,
        /// The relay's session its nonce is for.
        nonce_to: Option<u64>,
    },
    /// Send `intent` up through `actor`'s session (opened before). A queue
    /// that is full or gone is reported back ([`ActionRoutes::busy`],
    /// [`ActionRoutes::gone`]).
    Forward {
        /// Whose session carries it.
        actor: Actor,
        /// The intent.
        intent: Forward,
    },
    /// End `actor`'s upstream session (its player left).
    Close {
        /// Whose session.
        actor: Actor,
    },
    /// Send `message` to the relay's session `to`.
    Answer {
        /// The relay's session.
        to: u64,
        /// What it is told.
        message: Message,
    },
}

/// Which upstream session carries each player's actions (see the module
/// docs). Bounded by the relay's sessions and [`MAX_ACTORS`].
#[derive(Debug, Default)]
pub struct ActionRoutes {
    /// Whether unsigned intents are carried (the relay is trusted).
    trusted: bool,
    /// Each signed-in session's player.
    players: HashMap<u64, String>,
    /// The upstream sessions open.
    actors: HashSet<Actor>,
    steps: VecDeque<ActionStep>,
}

fn rejected(to: u64, seq: u32, code: ErrorCode, message: &str) -> ActionStep {
    ActionStep::Answer {
        to,
        message: Message::IntentRejected(IntentRejected {
            seq,
            code: code as u16,
            message: message.to_owned(),
        }),
    }
}

impl ActionRoutes {
    /// Routes for a relay that carries unsigned intents too (`trusted`) or
    /// signed ones only.
    pub fn new(trusted: bool) -> ActionRoutes {
        ActionRoutes {
            trusted,
            ..ActionRoutes::default()
        }
    }

    /// Takes what concerns actions (a player signed in, an intent, a
    /// session gone); gives back what the relay's core handles. Steps are
    /// then in [`ActionRoutes::poll_step`].
    pub fn take(&mut self, input: TickInput) -> Option<TickInput> {
        match input {
            TickInput::Joined {
                id,
                perspective,
                bound_token,
            } => {
                self.players.insert(id, perspective.clone());
                if let Some(token) = &bound_token {
                    // Opened now, so the origin's nonce reaches the player
                    // before their first action.
                    self.open(
                        Actor::Session(id),
                        &perspective,
                        UpstreamToken::Player(token.clone()),
                        Some(id),
                    );
                }
                Some(TickInput::Joined {
                    id,
                    perspective,
                    bound_token,
                })
            }
            TickInput::Remove { id } => {
                self.close(Actor::Session(id));
                if let Some(player) = self.players.remove(&id)
                    && !self.players.values().any(|p| *p == player)
                {
                    self.close(Actor::Player(player));
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
                    self.steps.push_back(rejected(
                        id,
                        seq,
                        ErrorCode::Unavailable,
                        "your session is not ready to act yet",
                    ));
                    return None;
                };
                let actor = if self.actors.contains(&Actor::Session(id)) {
                    Actor::Session(id)
                } else if self.trusted {
                    let actor = Actor::Player(player.clone());
                    if !self.actors.contains(&actor) {
                        self.open(actor.clone(), &player, UpstreamToken::Issue, None);
                    }
                    actor
                } else {
                    self.steps.push_back(rejected(
                        id,
                        seq,
                        ErrorCode::Unavailable,
                        "this relay carries signed actions only (a world token binding your key); act at the world's server",
                    ));
                    return None;
                };
                if !self.actors.contains(&actor) {
                    // Refused for want of room (see `open`).
                    self.steps.push_back(rejected(
                        id,
                        seq,
                        ErrorCode::Unavailable,
                        "this relay carries too many players' actions; act at the world's server",
                    ));
                    return None;
                }
                let intent = Forward {
                    session: id,
                    seq,
                    kind: intent.kind,
                    payload: intent.payload,
                    signature,
                };
                self.steps.push_back(ActionStep::Forward { actor, intent });
                None
            }
            other => Some(other),
        }
    }

    /// The next step for the driver.
    pub fn poll_step(&mut self) -> Option<ActionStep> {
        self.steps.pop_front()
    }

    /// `actor`'s queue was full when `intent` was forwarded: the player is
    /// told to slow down.
    pub fn busy(&mut self, intent: &Forward) {
        self.steps.push_back(rejected(
            intent.session,
            intent.seq,
            ErrorCode::RateLimited,
            "too many actions in flight; slow down",
        ));
    }

    /// `actor`'s upstream session was found gone when `intent` was
    /// forwarded: forgotten (a trusted relay opens a new one for the
    /// player's next action), and the player told.
    pub fn gone(&mut self, actor: &Actor, intent: &Forward) {
        self.actors.remove(actor);
        self.steps.push_back(rejected(
            intent.session,
            intent.seq,
            ErrorCode::Unavailable,
            "this relay lost your session at the world's server; sign in again",
        ));
    }

    fn open(&mut self, actor: Actor, player: &str, token: UpstreamToken, nonce_to: Option<u64>) {
        if self.actors.len() >= MAX_ACTORS {
            tracing::warn!(%player, "too many players acting through this relay; refusing another");
            return;
        }
        self.actors.insert(actor.clone());
        self.steps.push_back(ActionStep::Open {
            actor,
            player: player.to_owned(),
            token,
            nonce_to,
        });
    }

    fn close(&mut self, actor: Actor) {
        if self.actors.remove(&actor) {
            self.steps.push_back(ActionStep::Close { actor });
        }
    }
}

/// One upstream session's memory: which relay session sent each seq, so
/// the origin's answers go back to it. Bounded by [`MAX_UNANSWERED`].
#[derive(Debug, Default)]
pub struct ActorBook {
    /// The relay's session the origin's nonce goes down to.
    nonce_to: Option<u64>,
    sessions: HashMap<u32, u64>,
}

impl ActorBook {
    /// The memory of an upstream session whose nonce goes to `nonce_to`.
    pub fn new(nonce_to: Option<u64>) -> ActorBook {
        ActorBook {
            nonce_to,
            sessions: HashMap::new(),
        }
    }

    /// `intent` is about to go up: remembered (`None`), or — too many
    /// unanswered — the rejection its session is sent instead.
    pub fn sending(&mut self, intent: &Forward) -> Option<(u64, Message)> {
        if self.sessions.len() >= MAX_UNANSWERED {
            return Some(self.reject(
                intent.session,
                intent.seq,
                ErrorCode::Unavailable as u16,
                "too many actions unanswered by the world's server".into(),
            ));
        }
        self.sessions.insert(intent.seq, intent.session);
        None
    }

    /// The intent `seq` of `session` could not be sent up (`why`): the
    /// rejection for its session.
    pub fn not_sent(&mut self, session: u64, seq: u32, why: &str) -> (u64, Message) {
        self.sessions.remove(&seq);
        self.reject(
            session,
            seq,
            ErrorCode::Unavailable as u16,
            format!("could not reach the world's server: {why}"),
        )
    }

    /// The upstream session could not be opened (`why`): what its player's
    /// session is told — it cannot act without it (its nonce is that
    /// session's), so it is ended and signs in again.
    pub fn refused(&self, why: &str) -> Option<(u64, Message)> {
        let message = format!("the world's server refused your session through this relay: {why}");
        self.nonce_to.map(|to| (to, unavailable(message)))
    }

    /// The rejection of an intent that came for an upstream session that
    /// could not be opened (`why`).
    pub fn refused_intent(&self, intent: &Forward, why: &str) -> (u64, Message) {
        self.reject(
            intent.session,
            intent.seq,
            ErrorCode::Unavailable as u16,
            format!("the world's server refused your session through this relay: {why}"),
        )
    }

    /// What the origin said, as answers for the relay's sessions; `true`
    /// when the upstream session ended (every unanswered intent is then
    /// rejected, and the nonce's session ended: its player signs in again).
    pub fn event(&mut self, event: ClientEvent, answers: &mut Vec<(u64, Message)>) -> bool {
        match event {
            // The origin's code (the game's own, say) goes back to the
            // player as it is.
            ClientEvent::IntentRejected { seq, code, message } => {
                if let Some(session) = self.sessions.remove(&seq) {
                    answers.push(self.reject(session, seq, code, message));
                }
            }
            // The origin's nonce for the player's session: the player signs
            // under it.
            ClientEvent::IntentNonce { nonce } => {
                if let Some(session) = self.nonce_to {
                    answers.push((session, Message::IntentNonce(IntentNonce { nonce })));
                }
            }
            ClientEvent::IntentsProcessed { seqs } => {
                let mut by_session: Vec<(u64, Vec<u32>)> = Vec::new();
                for seq in seqs {
                    let Some(session) = self.sessions.remove(&seq) else {
                        continue;
                    };
                    match by_session.iter_mut().find(|(s, _)| *s == session) {
                        Some((_, seqs)) => seqs.push(seq),
                        None => by_session.push((session, vec![seq])),
                    }
                }
                for (session, seqs) in by_session {
                    answers.push((session, Message::Processed(Processed { seqs })));
                }
            }
            ClientEvent::Disconnected { reason } => {
                let mut unanswered: Vec<(u32, u64)> = self.sessions.drain().collect();
                unanswered.sort_unstable();
                for (seq, session) in unanswered {
                    answers.push(self.reject(
                        session,
                        seq,
                        ErrorCode::Unavailable as u16,
                        format!("the world's server closed your session: {reason}"),
                    ));
                }
                if let Some(to) = self.nonce_to {
                    answers.push((
                        to,
                        unavailable(format!(
                            "the world's server closed your session through this relay: {reason}; sign in again"
                        )),
                    ));
                }
                return true;
            }
            _ => {}
        }
        false
    }

    fn reject(&self, session: u64, seq: u32, code: u16, message: String) -> (u64, Message) {
        (session, Message::IntentRejected(IntentRejected { seq, code, message }))
    }
}

/// An `Error` that ends a player's session as unavailable.
fn unavailable(message: String) -> Message {
    Message::Error(ErrorMsg {
        code: ErrorCode::Unavailable as u16,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intents::ReceivedIntent;

    fn intent(id: u64, seq: u32) -> TickInput {
        TickInput::Intent {
            id,
            seq,
            intent: ReceivedIntent {
                id: Default::default(),
                perspective: "ann".into(),
                kind: "move".into(),
                payload: vec![1],
            },
            signature: vec![9],
        }
    }

    fn joined(id: u64, bound: bool) -> TickInput {
        TickInput::Joined {
            id,
            perspective: "ann".into(),
            bound_token: bound.then(|| "v4.public.token".to_owned()),
        }
    }

    fn steps(routes: &mut ActionRoutes) -> Vec<ActionStep> {
        std::iter::from_fn(|| routes.poll_step()).collect()
    }

    fn rejection_code(step: &ActionStep) -> Option<u16> {
        match step {
            ActionStep::Answer {
                message: Message::IntentRejected(r),
                ..
            } => Some(r.code),
            _ => None,
        }
    }

    #[test]
    fn a_bound_player_gets_their_own_session_at_once_and_their_intents_go_up_through_it() {
        let mut routes = ActionRoutes::new(false);
        assert!(
            routes.take(joined(7, true)).is_some(),
            "the core learns of the player too"
        );
        let opened = steps(&mut routes);
        assert_eq!(
            opened,
            vec![ActionStep::Open {
                actor: Actor::Session(7),
                player: "ann".into(),
                token: UpstreamToken::Player("v4.public.token".into()),
                nonce_to: Some(7),
            }]
        );
        assert!(routes.take(intent(7, 1)).is_none(), "intents are the routes'");
        match steps(&mut routes).as_slice() {
            [ActionStep::Forward { actor, intent }] => {
                assert_eq!(actor, &Actor::Session(7));
                assert_eq!(
                    (intent.session, intent.seq, intent.signature.as_slice()),
                    (7, 1, &[9][..])
                );
            }
            other => panic!("expected one forward, got {other:?}"),
        }
        routes.take(TickInput::Remove { id: 7 });
        assert_eq!(
            steps(&mut routes),
            vec![ActionStep::Close {
                actor: Actor::Session(7)
            }]
        );
    }

    #[test]
    fn an_untrusted_relay_refuses_unsigned_actions_and_a_trusted_one_opens_a_player_session() {
        let mut untrusted = ActionRoutes::new(false);
        untrusted.take(joined(1, false));
        untrusted.take(intent(1, 1));
        let refused = steps(&mut untrusted);
        assert_eq!(refused.len(), 1);
        assert_eq!(rejection_code(&refused[0]), Some(ErrorCode::Unavailable as u16));

        let mut trusted = ActionRoutes::new(true);
        trusted.take(joined(1, false));
        trusted.take(joined(2, false));
        trusted.take(intent(1, 1));
        trusted.take(intent(2, 1));
        let routed = steps(&mut trusted);
        assert!(
            matches!(&routed[0], ActionStep::Open { actor: Actor::Player(p), token: UpstreamToken::Issue, .. } if p == "ann")
        );
        assert_eq!(
            routed.iter().filter(|s| matches!(s, ActionStep::Open { .. })).count(),
            1,
            "one upstream session per player, whatever their sessions here"
        );
        assert_eq!(
            routed
                .iter()
                .filter(|s| matches!(s, ActionStep::Forward { .. }))
                .count(),
            2
        );
        // The player's session upstream ends with their last session here.
        trusted.take(TickInput::Remove { id: 1 });
        assert!(steps(&mut trusted).is_empty());
        trusted.take(TickInput::Remove { id: 2 });
        assert_eq!(
            steps(&mut trusted),
            vec![ActionStep::Close {
                actor: Actor::Player("ann".into())
            }]
        );
    }

    #[test]
    fn an_intent_before_sign_in_or_to_a_lost_session_is_rejected_and_a_full_queue_asks_to_slow_down() {
        let mut routes = ActionRoutes::new(true);
        routes.take(intent(3, 1));
        assert_eq!(
            rejection_code(&steps(&mut routes)[0]),
            Some(ErrorCode::Unavailable as u16)
        );
        routes.take(joined(3, false));
        routes.take(intent(3, 2));
        let forward = match steps(&mut routes).pop() {
            Some(ActionStep::Forward { intent, .. }) => intent,
            other => panic!("expected a forward, got {other:?}"),
        };
        routes.busy(&forward);
        assert_eq!(
            rejection_code(&steps(&mut routes)[0]),
            Some(ErrorCode::RateLimited as u16)
        );
        routes.gone(&Actor::Player("ann".into()), &forward);
        assert_eq!(
            rejection_code(&steps(&mut routes)[0]),
            Some(ErrorCode::Unavailable as u16)
        );
        // The next action opens a new session.
        routes.take(intent(3, 3));
        assert!(matches!(steps(&mut routes)[0], ActionStep::Open { .. }));
    }

    #[test]
    fn the_origins_answers_go_back_to_the_session_that_sent_each_seq() {
        let mut book = ActorBook::new(Some(5));
        let sent = |session, seq| Forward {
            session,
            seq,
            kind: "move".into(),
            payload: Vec::new(),
            signature: Vec::new(),
        };
        for (session, seq) in [(5, 1), (6, 2), (5, 3), (6, 4)] {
            assert!(book.sending(&sent(session, seq)).is_none(), "room");
        }
        let mut answers = Vec::new();
        assert!(!book.event(ClientEvent::IntentsProcessed { seqs: vec![1, 2, 3] }, &mut answers));
        assert!(!book.event(ClientEvent::IntentNonce { nonce: [4; 16] }, &mut answers));
        let processed: Vec<(u64, Vec<u32>)> = answers
            .iter()
            .filter_map(|(to, m)| match m {
                Message::Processed(p) => Some((*to, p.seqs.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(processed, vec![(5, vec![1, 3]), (6, vec![2])]);
        assert!(matches!(answers.last(), Some((5, Message::IntentNonce(_)))));
        answers.clear();
        assert!(book.event(ClientEvent::Disconnected { reason: "gone".into() }, &mut answers));
        assert!(matches!(answers[0], (6, Message::IntentRejected(ref r)) if r.seq == 4));
        assert!(
            matches!(answers[1], (5, Message::Error(_))),
            "the player's session ends"
        );
    }

    #[test]
    fn an_upstream_session_holds_a_bounded_number_of_unanswered_intents() {
        let mut book = ActorBook::new(None);
        for seq in 0..MAX_UNANSWERED as u32 {
            let f = Forward {
                session: 1,
                seq,
                kind: String::new(),
                payload: Vec::new(),
                signature: Vec::new(),
            };
            assert!(book.sending(&f).is_none(), "room");
        }
        let one_more = Forward {
            session: 1,
            seq: u32::MAX,
            kind: String::new(),
            payload: Vec::new(),
            signature: Vec::new(),
        };
        assert!(book.sending(&one_more).is_some());
    }
}
