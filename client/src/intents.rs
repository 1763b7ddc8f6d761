//! A session's intents as every driver sends them. [`IntentSigning`] is the
//! one rule for an intent's signature: none when the token binds no player
//! key; with the player's key, an Ed25519 signature over the session's
//! nonce, world, player, seq, kind and payload
//! ([`intent_statement`](hoard_proto::intent_sig::intent_statement)); and
//! a refusal when the token binds a key the client was not given (the
//! server would end the session at the first unsigned intent).
//! [`IntentQueue`] numbers intents from 1 in the order they are written and
//! holds signed ones until the session's nonce comes — at most
//! [`INTENT_QUEUE`] of them, for at most [`NONCE_WAIT`] — for a driver that
//! must never wait (a game's frame).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hoard_engine::ServerIdentity;
use hoard_proto::client::ClientError;
use hoard_proto::intent_sig::PlayerKey;
use hoard_proto::wire::{Intent, Message};

use crate::SessionSettings;

/// Signed intents held for the session's nonce, at most; more are refused.
pub const INTENT_QUEUE: usize = 256;

/// How long signed intents wait for the session's nonce before they fail
/// (a server that does not take tokens binding a key sends none).
pub const NONCE_WAIT: Duration = Duration::from_secs(10);

/// Why signed intents cannot go: the server gave no nonce within
/// [`NONCE_WAIT`] (also for a driver that waits for it itself).
pub fn nonce_missing() -> ClientError {
    ClientError::Lost(
        "the server gave no nonce to sign intents under (does it take world tokens binding a player key?)".into(),
    )
}

/// Who signs a session's intents, and how (see the module docs).
#[derive(Clone, Debug)]
pub struct IntentSigning {
    world: ServerIdentity,
    perspective: String,
    key: Option<PlayerKey>,
    token_binds_key: bool,
}

impl IntentSigning {
    /// The signer of the session `settings` opened with the world `world`
    /// as `perspective` (the player `Welcome` confirmed).
    pub fn new(settings: &SessionSettings, world: ServerIdentity, perspective: &str) -> IntentSigning {
        IntentSigning {
            world,
            perspective: perspective.to_owned(),
            key: settings.player_key.clone(),
            token_binds_key: hoard_proto::world_token::bound_key(&settings.token).is_some(),
        }
    }

    /// Whether intents are signed (and so wait for the session's nonce);
    /// an error when the token binds a key the client was not given.
    pub fn signs(&self) -> Result<bool, ClientError> {
        match (&self.key, self.token_binds_key) {
            (Some(_), _) => Ok(true),
            (None, true) => Err(ClientError::Lost(
                "the token binds a player key: give the client the player's key (its settings' player_key) to sign intents with it"
                    .into(),
            )),
            (None, false) => Ok(false),
        }
    }

    /// The intent `seq` as it goes on the wire: signed under `nonce` when
    /// this signer signs, with an empty signature otherwise.
    pub fn intent(&self, nonce: &[u8; 16], seq: u32, kind: &str, payload: Vec<u8>) -> Message {
        let signature = match &self.key {
            Some(key) => {
                let statement = hoard_proto::intent_sig::intent_statement(
                    &self.world,
                    nonce,
                    &self.perspective,
                    seq,
                    kind,
                    &payload,
                );
                key.sign(&statement).to_vec()
            }
            None => Vec::new(),
        };
        Message::Intent(Intent {
            seq,
            kind: kind.to_owned(),
            payload,
            signature,
        })
    }
}

/// Intents numbered in order, signed ones held until the session's nonce
/// comes (see the module docs). Time is an argument: the queue reads no
/// clock.
#[derive(Debug)]
pub struct IntentQueue {
    signer: IntentSigning,
    /// The seq given out last (the first is 1).
    last: u32,
    nonce: Option<[u8; 16]>,
    /// Signed intents waiting for the nonce, and since when.
    waiting: VecDeque<(u32, String, Vec<u8>)>,
    since: Option<Instant>,
    /// Why intents can no longer be sent, once that is so.
    failed: Option<ClientError>,
}

impl IntentQueue {
    /// An empty queue of `signer`'s intents.
    pub fn new(signer: IntentSigning) -> IntentQueue {
        IntentQueue {
            signer,
            last: 0,
            nonce: None,
            waiting: VecDeque::new(),
            since: None,
            failed: None,
        }
    }

    /// Takes the next intent at `now`: returns its seq and what to send
    /// now (the intent, or nothing while it waits for the nonce; everything
    /// that waited once the nonce is known).
    pub fn push(&mut self, now: Instant, kind: &str, payload: Vec<u8>) -> Result<(u32, Vec<Message>), ClientError> {
        if let Some(failed) = &self.failed {
            return Err(failed.clone());
        }
        let seq = self.last + 1;
        let out = if self.signer.signs()? {
            if self.waiting.len() >= INTENT_QUEUE {
                return Err(ClientError::Lost(format!(
                    "more than {INTENT_QUEUE} intents waiting for the session's nonce"
                )));
            }
            self.since.get_or_insert(now);
            self.waiting.push_back((seq, kind.to_owned(), payload));
            self.release()
        } else {
            vec![self.signer.intent(&[0; 16], seq, kind, payload)]
        };
        self.last = seq;
        Ok((seq, out))
    }

    /// Takes the session's nonce; returns what waited for it, signed.
    pub fn nonce(&mut self, nonce: [u8; 16]) -> Vec<Message> {
        self.nonce = Some(nonce);
        self.release()
    }

    /// At `now`, fails the intents that waited for the nonce longer than
    /// [`NONCE_WAIT`] (and every later one); returns the error once.
    pub fn overdue(&mut self, now: Instant) -> Option<ClientError> {
        let since = self.since?;
        if now.saturating_duration_since(since) < NONCE_WAIT {
            return None;
        }
        let error = nonce_missing();
        self.waiting.clear();
        self.since = None;
        self.failed = Some(error.clone());
        Some(error)
    }

    /// The waiting intents, signed, once the nonce is known.
    fn release(&mut self) -> Vec<Message> {
        let Some(nonce) = self.nonce else {
            return Vec::new();
        };
        self.since = None;
        let signer = &self.signer;
        self.waiting
            .drain(..)
            .map(|(seq, kind, payload)| signer.intent(&nonce, seq, &kind, payload))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: Option<PlayerKey>) -> SessionSettings {
        let mut settings = SessionSettings::new(std::env::temp_dir(), "player:ann".into());
        settings.service = "demo".into();
        settings.player_key = key;
        settings
    }

    fn seqs(messages: &[Message]) -> Vec<(u32, usize)> {
        messages
            .iter()
            .map(|m| match m {
                Message::Intent(i) => (i.seq, i.signature.len()),
                other => panic!("not an intent: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn unsigned_intents_go_at_once_numbered_from_one() {
        let signer = IntentSigning::new(&settings(None), ServerIdentity([1; 32]), "ann");
        let mut queue = IntentQueue::new(signer);
        let now = Instant::now();
        let (seq, out) = queue.push(now, "walk", vec![1]).expect("sent");
        assert_eq!((seq, seqs(&out)), (1, vec![(1, 0)]));
        let (seq, out) = queue.push(now, "walk", vec![2]).expect("sent");
        assert_eq!((seq, seqs(&out)), (2, vec![(2, 0)]));
    }

    #[test]
    fn signed_intents_wait_for_the_nonce_and_go_in_order_signed_under_it() {
        let key = PlayerKey::generate();
        let world = ServerIdentity([1; 32]);
        let signer = IntentSigning::new(&settings(Some(key.clone())), world, "ann");
        let mut queue = IntentQueue::new(signer);
        let now = Instant::now();
        assert!(queue.push(now, "walk", vec![1]).expect("held").1.is_empty());
        assert!(queue.push(now, "take", vec![2]).expect("held").1.is_empty());
        let nonce = [7; 16];
        let out = queue.nonce(nonce);
        assert_eq!(seqs(&out).iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2]);
        let Message::Intent(first) = &out[0] else {
            unreachable!()
        };
        let statement = hoard_proto::intent_sig::intent_statement(&world, &nonce, "ann", 1, "walk", &[1]);
        assert!(
            hoard_proto::intent_sig::verify_intent(&key.public(), &statement, &first.signature),
            "signed by the player's key over the statement"
        );
        // Later ones go at once.
        let (seq, out) = queue.push(now, "walk", vec![3]).expect("sent");
        assert_eq!((seq, out.len()), (3, 1));
    }

    #[test]
    fn a_token_binding_a_key_the_client_lacks_sends_no_intent() {
        let world = ServerIdentity([1; 32]);
        let player = PlayerKey::generate();
        let token = hoard_proto::world_token::TokenSigningKey::generate()
            .mint(&world, "ann", 4_000_000_000, Some(&player.public()))
            .expect("token");
        let mut settings = settings(None);
        settings.token = token;
        let mut queue = IntentQueue::new(IntentSigning::new(&settings, world, "ann"));
        let refused = queue.push(Instant::now(), "walk", Vec::new()).expect_err("refused");
        assert!(refused.to_string().contains("player_key"), "{refused}");
        assert!(queue.nonce([1; 16]).is_empty(), "and nothing goes once the nonce comes");
    }

    #[test]
    fn intents_waiting_too_long_or_too_many_fail() {
        let signer = IntentSigning::new(&settings(Some(PlayerKey::generate())), ServerIdentity([1; 32]), "ann");
        let mut queue = IntentQueue::new(signer);
        let start = Instant::now();
        for _ in 0..INTENT_QUEUE {
            queue.push(start, "walk", Vec::new()).expect("held");
        }
        assert!(queue.push(start, "walk", Vec::new()).is_err(), "the queue is bounded");
        assert!(queue.overdue(start + NONCE_WAIT / 2).is_none());
        assert!(queue.overdue(start + NONCE_WAIT).is_some(), "failed once overdue");
        assert!(queue.overdue(start + NONCE_WAIT * 2).is_none(), "said once");
        assert!(queue.push(start, "walk", Vec::new()).is_err(), "and no more are taken");
        assert!(queue.nonce([1; 16]).is_empty(), "nothing that failed goes out");
    }
}
