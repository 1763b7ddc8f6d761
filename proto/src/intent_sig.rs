//! Signed intents: a player's client signs each intent with the key its
//! world token binds (`key` claim), so the origin can check that an intent
//! carried by any relay — trusted or not — is the player's, unaltered, in
//! order and not replayed.
//!
//! The origin gives each session whose token binds a key a fresh 16-byte
//! nonce (`IntentNonce`); a relay passes its upstream session's nonce down.
//! The client numbers its intents 1, 2, 3, … from that nonce and signs
//!
//! `"hoard-intent-v1" ‖ world (32) ‖ nonce (16) ‖ u8(len(player)) ‖ player ‖
//! u32le(seq) ‖ u8(len(kind)) ‖ kind ‖ u32le(len(payload)) ‖ payload`
//!
//! with Ed25519. The origin takes an intent only if its signature verifies
//! and its seq is the next one: an altered intent fails the signature, a
//! replayed one (an old seq, or one from another session: another nonce)
//! and a reordered or dropped one break the sequence. The nonce makes each
//! session's sequence its own without the origin remembering old sessions.

use std::fmt;

use hoard_engine::ServerIdentity;

/// The prefix of every signed intent statement.
pub const INTENT_CONTEXT: &[u8] = b"hoard-intent-v1";
/// Bytes of an intent nonce.
pub const NONCE_BYTES: usize = 16;
/// Bytes of an intent signature (Ed25519).
pub const INTENT_SIGNATURE_BYTES: usize = 64;

/// The bytes a player signs for one intent (see the module's text).
pub fn intent_statement(
    world: &ServerIdentity,
    nonce: &[u8; NONCE_BYTES],
    player: &str,
    seq: u32,
    kind: &str,
    payload: &[u8],
) -> Vec<u8> {
    let player = &player.as_bytes()[..player.len().min(255)];
    let kind = &kind.as_bytes()[..kind.len().min(255)];
    let mut out = Vec::with_capacity(
        INTENT_CONTEXT.len() + 32 + NONCE_BYTES + 1 + player.len() + 4 + 1 + kind.len() + 4 + payload.len(),
    );
    out.extend_from_slice(INTENT_CONTEXT);
    out.extend_from_slice(&world.0);
    out.extend_from_slice(nonce);
    out.push(player.len() as u8);
    out.extend_from_slice(player);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind.len() as u8);
    out.extend_from_slice(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A player's intent key (Ed25519). Its public half goes into the player's
/// world token (`key` claim); the private half never leaves the client.
#[derive(Clone)]
pub struct PlayerKey {
    pair: ed25519_compact::KeyPair,
}

impl fmt::Debug for PlayerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PlayerKey({})",
            crate::world_token::TokenKey::from_bytes(self.public()).paserk()
        )
    }
}

impl PlayerKey {
    /// A new random key.
    pub fn generate() -> PlayerKey {
        PlayerKey {
            pair: ed25519_compact::KeyPair::generate(),
        }
    }

    /// The key of this seed.
    pub fn from_seed(seed: [u8; 32]) -> PlayerKey {
        PlayerKey {
            pair: ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed)),
        }
    }

    /// The seed (keep it secret; it is the key).
    pub fn seed(&self) -> [u8; 32] {
        *self.pair.sk.seed()
    }

    /// The key as a PASERK `k4.secret.…` (an Ed25519 key, as PASETO v4
    /// spells one; keep it secret).
    pub fn paserk(&self) -> String {
        crate::world_token::TokenSigningKey::from_seed(self.seed()).paserk()
    }

    /// Reads a PASERK `k4.secret.…`.
    pub fn from_paserk(paserk: &str) -> Result<PlayerKey, crate::world_token::WorldTokenError> {
        let key = crate::world_token::TokenSigningKey::from_paserk(paserk)?;
        Ok(PlayerKey::from_seed(key.seed()))
    }

    /// The public key as a PASERK `k4.public.…` (what an account service
    /// binds in the player's token).
    pub fn public_paserk(&self) -> String {
        crate::world_token::TokenKey::from_bytes(self.public()).paserk()
    }

    /// The public key (what a token's `key` claim binds).
    pub fn public(&self) -> [u8; 32] {
        *self.pair.pk
    }

    /// Signs a statement made by [`intent_statement`]. Deterministic.
    pub fn sign(&self, statement: &[u8]) -> [u8; INTENT_SIGNATURE_BYTES] {
        *self.pair.sk.sign(statement, None)
    }
}

/// Whether `signature` is `public`'s over `statement`.
pub fn verify_intent(public: &[u8; 32], statement: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = ed25519_compact::Signature::from_slice(signature) else {
        return false;
    };
    ed25519_compact::PublicKey::new(*public)
        .verify(statement, &signature)
        .is_ok()
}

/// Why a signed intent is refused (the session then ends: an intent the
/// player sent was altered, lost, reordered or replayed on the way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntentCheckError {
    /// No signature, or one that does not verify with the player's key.
    #[error("intent {seq} is not signed by the player's key (altered on the way, or forged)")]
    BadSignature {
        /// The intent's seq.
        seq: u32,
    },
    /// Not the next seq: an intent was dropped, reordered or replayed.
    #[error("intent {seq} came when {expected} was next (an intent was lost, reordered or replayed on the way)")]
    OutOfOrder {
        /// The intent's seq.
        seq: u32,
        /// The seq the session waited for.
        expected: u32,
    },
}

/// One session's check of its player's signed intents.
#[derive(Clone, Debug)]
pub struct IntentChecker {
    world: ServerIdentity,
    player: String,
    key: [u8; 32],
    nonce: [u8; NONCE_BYTES],
    next: u32,
}

impl IntentChecker {
    /// Checks intents of `player` of `world` signed with `key` under `nonce`.
    pub fn new(world: ServerIdentity, player: &str, key: [u8; 32], nonce: [u8; NONCE_BYTES]) -> IntentChecker {
        IntentChecker {
            world,
            player: player.to_owned(),
            key,
            nonce,
            next: 1,
        }
    }

    /// The session's nonce.
    pub fn nonce(&self) -> &[u8; NONCE_BYTES] {
        &self.nonce
    }

    /// Takes the next intent if it is the player's and in order.
    pub fn check(&mut self, seq: u32, kind: &str, payload: &[u8], signature: &[u8]) -> Result<(), IntentCheckError> {
        if seq != self.next {
            return Err(IntentCheckError::OutOfOrder {
                seq,
                expected: self.next,
            });
        }
        let statement = intent_statement(&self.world, &self.nonce, &self.player, seq, kind, payload);
        if signature.len() != INTENT_SIGNATURE_BYTES || !verify_intent(&self.key, &statement, signature) {
            return Err(IntentCheckError::BadSignature { seq });
        }
        self.next = self.next.wrapping_add(1);
        Ok(())
    }
}

/// A client's signing of its own intents, once its nonce came.
#[derive(Clone, Debug)]
pub struct IntentSigner {
    world: ServerIdentity,
    player: String,
    key: PlayerKey,
    nonce: [u8; NONCE_BYTES],
    next: u32,
}

impl IntentSigner {
    /// Signs `player`'s intents of `world` with `key` under `nonce`.
    pub fn new(world: ServerIdentity, player: &str, key: PlayerKey, nonce: [u8; NONCE_BYTES]) -> IntentSigner {
        IntentSigner {
            world,
            player: player.to_owned(),
            key,
            nonce,
            next: 1,
        }
    }

    /// The next intent's seq and signature.
    pub fn sign_next(&mut self, kind: &str, payload: &[u8]) -> (u32, [u8; INTENT_SIGNATURE_BYTES]) {
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        let statement = intent_statement(&self.world, &self.nonce, &self.player, seq, kind, payload);
        (seq, self.key.sign(&statement))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORLD: ServerIdentity = ServerIdentity([5; 32]);

    #[test]
    fn signed_intents_pass_in_order_and_nothing_else_does() {
        let key = PlayerKey::from_seed([1; 32]);
        let mut signer = IntentSigner::new(WORLD, "ann", key.clone(), [2; 16]);
        let mut checker = IntentChecker::new(WORLD, "ann", key.public(), [2; 16]);
        let (s1, sig1) = signer.sign_next("action", b"\x01");
        let (s2, sig2) = signer.sign_next("action", b"\x02");
        let (s3, sig3) = signer.sign_next("action", b"\x03");
        assert_eq!((s1, s2, s3), (1, 2, 3));
        // Altered payload, kind, or a signature cut short.
        assert_eq!(
            checker.check(1, "action", b"\x09", &sig1),
            Err(IntentCheckError::BadSignature { seq: 1 })
        );
        assert_eq!(
            checker.check(1, "say", b"\x01", &sig1),
            Err(IntentCheckError::BadSignature { seq: 1 })
        );
        assert_eq!(
            checker.check(1, "action", b"\x01", &sig1[..63]),
            Err(IntentCheckError::BadSignature { seq: 1 })
        );
        assert_eq!(
            checker.check(1, "action", b"\x01", &[]),
            Err(IntentCheckError::BadSignature { seq: 1 })
        );
        assert_eq!(checker.check(1, "action", b"\x01", &sig1), Ok(()));
        // Dropped (3 before 2), replayed (1 again).
        assert_eq!(
            checker.check(3, "action", b"\x03", &sig3),
            Err(IntentCheckError::OutOfOrder { seq: 3, expected: 2 })
        );
        assert_eq!(
            checker.check(1, "action", b"\x01", &sig1),
            Err(IntentCheckError::OutOfOrder { seq: 1, expected: 2 })
        );
        assert_eq!(checker.check(2, "action", b"\x02", &sig2), Ok(()));
        assert_eq!(checker.check(3, "action", b"\x03", &sig3), Ok(()));
        // Another session (nonce), another player, another world: refused.
        for mut other in [
            IntentChecker::new(WORLD, "ann", key.public(), [3; 16]),
            IntentChecker::new(WORLD, "bob", key.public(), [2; 16]),
            IntentChecker::new(ServerIdentity([6; 32]), "ann", key.public(), [2; 16]),
            IntentChecker::new(WORLD, "ann", PlayerKey::from_seed([9; 32]).public(), [2; 16]),
        ] {
            assert_eq!(
                other.check(1, "action", b"\x01", &sig1),
                Err(IntentCheckError::BadSignature { seq: 1 })
            );
        }
    }

    #[test]
    fn the_statement_is_laid_out_as_documented() {
        let s = intent_statement(&WORLD, &[2; 16], "ann", 0x0102_0304, "say", b"hi");
        let mut want = b"hoard-intent-v1".to_vec();
        want.extend([5; 32]);
        want.extend([2; 16]);
        want.extend(b"\x03ann\x04\x03\x02\x01\x03say\x02\x00\x00\x00hi");
        assert_eq!(s, want);
    }
}
