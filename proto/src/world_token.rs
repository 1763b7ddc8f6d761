//! World tokens: PASETO v4.public tokens signed with the world's private
//! token key and checked with its public ones, so that anyone holding the
//! world's public token keys (its servers, its relays, relays of relays) can
//! check a token and none of them can mint one.
//!
//! A token is `v4.public.<base64url(claims ‖ signature)>.<base64url(footer)>`
//! (PASETO v4: Ed25519 over `PAE("v4.public.", claims, footer, "")`). The
//! claims are JSON: `sub` the player, `aud` the world's identity in hex, `exp`
//! the expiry in RFC 3339, and optionally `key`, the player's own Ed25519
//! key as a PASERK `k4.public.…`, which binds the player's signed intents to
//! the token (see [`crate::intent_sig`]). The footer is JSON `{"kid": …}`
//! naming the token key by its PASERK id (`k4.pid.…`), so a world can accept
//! several keys while it rotates them. The PASETO and PASERK work is the
//! `pasetors` crate's; this module fixes the claims and the checks.

use std::fmt;

use ct_codecs::{Base64UrlSafeNoPadding, Decoder, Encoder};
use hoard_engine::ServerIdentity;
use hoard_engine::ids::validate_name;
use pasetors::keys::{AsymmetricPublicKey, AsymmetricSecretKey};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};

/// What every world token starts with.
pub const WORLD_TOKEN_PREFIX: &str = "v4.public.";
/// Longest token accepted (claims, signature, footer and their base64).
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Most token keys a world accepts at once (and a `Welcome` lists).
pub const MAX_TOKEN_KEYS: usize = 16;

/// The prefix of the signed token-key list.
pub const TOKEN_KEYS_CONTEXT: &[u8] = b"hoard-token-keys-v1";

/// The bytes the world's key signs for the token keys it accepts:
/// `"hoard-token-keys-v1" ‖ world (32) ‖ u8(n) ‖ key_1 (32) ‖ … ‖ key_n (32)`.
pub fn token_keys_statement(world: &ServerIdentity, keys: &[[u8; 32]]) -> Vec<u8> {
    let keys = &keys[..keys.len().min(MAX_TOKEN_KEYS)];
    let mut out = Vec::with_capacity(TOKEN_KEYS_CONTEXT.len() + 33 + 32 * keys.len());
    out.extend_from_slice(TOKEN_KEYS_CONTEXT);
    out.extend_from_slice(&world.0);
    out.push(keys.len() as u8);
    for key in keys {
        out.extend_from_slice(key);
    }
    out
}

/// Why a world token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorldTokenError {
    /// Not a PASETO v4.public token of the form above.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// Its footer names a key this world does not accept.
    #[error("token is signed with key {0}, which this world does not accept (retired, or another world's)")]
    UnknownKey(String),
    /// The signature does not verify with the key it names.
    #[error("token is forged: its signature does not verify")]
    Forged,
    /// Issued for another world.
    #[error("token is for another world")]
    OtherWorld,
    /// Past its expiry.
    #[error("token expired at {expiry} (unix seconds)")]
    Expired {
        /// When it expired.
        expiry: i64,
    },
}

/// A public token key: an Ed25519 public key, known by its PASERK id.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    bytes: [u8; 32],
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey({})", self.id())
    }
}

impl TokenKey {
    /// The key of these 32 bytes (not checked to be a curve point here;
    /// a key that is not verifies nothing).
    pub fn from_bytes(bytes: [u8; 32]) -> TokenKey {
        TokenKey { bytes }
    }

    /// Reads a PASERK `k4.public.…`.
    pub fn from_paserk(paserk: &str) -> Result<TokenKey, WorldTokenError> {
        let key = AsymmetricPublicKey::<V4>::try_from(paserk.trim())
            .map_err(|_| WorldTokenError::Malformed("not a PASERK k4.public key"))?;
        let bytes: [u8; 32] = key
            .as_bytes()
            .try_into()
            .map_err(|_| WorldTokenError::Malformed("not a 32-byte key"))?;
        Ok(TokenKey { bytes })
    }

    /// The key's 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    fn pasetors(&self) -> Option<AsymmetricPublicKey<V4>> {
        AsymmetricPublicKey::<V4>::from(&self.bytes).ok()
    }

    /// The key as a PASERK `k4.public.…`.
    pub fn paserk(&self) -> String {
        let mut out = String::from("k4.public.");
        out.push_str(&b64(&self.bytes));
        out
    }

    /// The key's PASERK id, `k4.pid.…` (what a token's footer names).
    pub fn id(&self) -> String {
        match self.pasetors() {
            Some(key) => paserk_string(&Id::from(&key)),
            None => String::from("k4.pid.invalid"),
        }
    }
}

/// A private token key: mints world tokens. An origin keeps one in its data
/// directory; an account service may hold its own (its public half listed
/// in the world's accepted keys).
#[derive(Clone)]
pub struct TokenSigningKey {
    secret: AsymmetricSecretKey<V4>,
    public: TokenKey,
}

impl fmt::Debug for TokenSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSigningKey({})", self.public.id())
    }
}

impl TokenSigningKey {
    /// A new random key.
    pub fn generate() -> TokenSigningKey {
        let pair = ed25519_compact::KeyPair::generate();
        TokenSigningKey::from_seed(*pair.sk.seed())
    }

    /// The key of this Ed25519 seed (deterministic: tests and golden files).
    pub fn from_seed(seed: [u8; 32]) -> TokenSigningKey {
        let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        let public = TokenKey::from_bytes(*pair.pk);
        // A 64-byte Ed25519 secret key is always accepted.
        let secret = AsymmetricSecretKey::<V4>::from(&pair.sk[..]).unwrap_or_else(|_| unreachable_key());
        TokenSigningKey { secret, public }
    }

    /// Reads a PASERK `k4.secret.…`.
    pub fn from_paserk(paserk: &str) -> Result<TokenSigningKey, WorldTokenError> {
        let secret = AsymmetricSecretKey::<V4>::try_from(paserk.trim())
            .map_err(|_| WorldTokenError::Malformed("not a PASERK k4.secret key"))?;
        let seed: [u8; 32] = secret.as_bytes()[..32]
            .try_into()
            .map_err(|_| WorldTokenError::Malformed("not a 64-byte secret key"))?;
        let key = TokenSigningKey::from_seed(seed);
        // The PASERK's public half must be the seed's.
        if key.secret.as_bytes() != secret.as_bytes() {
            return Err(WorldTokenError::Malformed("the secret key's two halves disagree"));
        }
        Ok(key)
    }

    /// The key as a PASERK `k4.secret.…` (keep it secret).
    pub fn paserk(&self) -> String {
        paserk_string(&self.secret)
    }

    /// Its public half.
    pub fn public(&self) -> &TokenKey {
        &self.public
    }

    /// The Ed25519 seed (the key's secret part).
    pub fn seed(&self) -> [u8; 32] {
        let mut seed = [0; 32];
        seed.copy_from_slice(&self.secret.as_bytes()[..32]);
        seed
    }

    /// Mints a token for `player` of `world`, valid until `expiry` (Unix
    /// seconds; a later one than RFC 3339 can write, 9999-12-31T23:59:59Z,
    /// is that), binding `player_key` (the player's intent key) if given.
    pub fn mint(
        &self,
        world: &ServerIdentity,
        player: &str,
        expiry: i64,
        player_key: Option<&[u8; 32]>,
    ) -> Result<String, hoard_engine::ids::NameError> {
        validate_name(player)?;
        let exp = chrono::DateTime::from_timestamp(expiry.min(LAST_RFC3339_SECOND), 0)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut claims = serde_json::json!({
            "sub": player,
            "aud": world.to_string(),
            "exp": exp,
        });
        if let Some(key) = player_key {
            claims["key"] = serde_json::Value::String(TokenKey::from_bytes(*key).paserk());
        }
        let footer = serde_json::json!({ "kid": self.public.id() }).to_string();
        // Signing a non-empty message with a valid key cannot fail.
        Ok(PublicToken::sign(
            &self.secret,
            claims.to_string().as_bytes(),
            Some(footer.as_bytes()),
            None,
        )
        .unwrap_or_default())
    }
}

/// 9999-12-31T23:59:59Z: the last time RFC 3339 (four-digit years) can
/// write, so the latest expiry a token can carry.
const LAST_RFC3339_SECOND: i64 = 253_402_300_799;

fn unreachable_key() -> AsymmetricSecretKey<V4> {
    // `from` accepts any 64 bytes; this is never reached.
    panic!("a 64-byte Ed25519 secret key was refused")
}

/// A token that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The player (`sub`).
    pub player: String,
    /// When it expires (Unix seconds).
    pub expiry: i64,
    /// The player's intent key, if the token binds one (`key`).
    pub player_key: Option<[u8; 32]>,
}

/// The token keys a world accepts, and the world they are for.
#[derive(Clone, Debug)]
pub struct TokenKeys {
    world: ServerIdentity,
    keys: Vec<TokenKey>,
    /// Each key's PASERK id, computed once.
    ids: Vec<String>,
}

impl TokenKeys {
    /// Accepts tokens for `world` signed with any of `keys` (the first
    /// [`MAX_TOKEN_KEYS`]).
    pub fn new(world: ServerIdentity, mut keys: Vec<TokenKey>) -> TokenKeys {
        keys.dedup();
        keys.truncate(MAX_TOKEN_KEYS);
        let ids = keys.iter().map(TokenKey::id).collect();
        TokenKeys { world, keys, ids }
    }

    /// The keys accepted.
    pub fn keys(&self) -> &[TokenKey] {
        &self.keys
    }

    /// The world.
    pub fn world(&self) -> &ServerIdentity {
        &self.world
    }

    /// Checks `token` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, WorldTokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(WorldTokenError::Malformed("longer than 1024 bytes"));
        }
        let Some(body) = token.strip_prefix(WORLD_TOKEN_PREFIX) else {
            return Err(WorldTokenError::Malformed("not a v4.public token"));
        };
        let mut parts = body.split('.');
        let (Some(message), Some(footer), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(WorldTokenError::Malformed(
                "a world token has claims and a footer naming its key",
            ));
        };
        // One spelling per token: base64url without padding, as encoded.
        canonical_b64(message)?;
        let footer_bytes = canonical_b64(footer)?;
        let kid = read_footer(&footer_bytes)?;
        let key = self
            .ids
            .iter()
            .position(|id| *id == kid)
            .and_then(|i| self.keys.get(i))
            .ok_or_else(|| WorldTokenError::UnknownKey(kid.clone()))?;
        let public = key.pasetors().ok_or(WorldTokenError::Forged)?;
        let untrusted = UntrustedToken::<pasetors::Public, V4>::try_from(token)
            .map_err(|_| WorldTokenError::Malformed("not a v4.public token"))?;
        let trusted = PublicToken::verify(&public, &untrusted, None, None).map_err(|_| WorldTokenError::Forged)?;
        let claims = read_claims(trusted.payload())?;
        if claims.world != self.world.to_string() {
            return Err(WorldTokenError::OtherWorld);
        }
        if now >= claims.expiry {
            return Err(WorldTokenError::Expired { expiry: claims.expiry });
        }
        Ok(VerifiedToken {
            player: claims.player,
            expiry: claims.expiry,
            player_key: claims.player_key,
        })
    }
}

/// The player a world token names, read without checking anything (a
/// client reads its own perspective before the server confirms it).
pub fn named_player(token: &str) -> Option<String> {
    unverified_claims(token).map(|c| c.player)
}

/// The player intent key a world token binds, read without checking
/// anything (a client makes sure it holds the key its token binds).
pub fn bound_key(token: &str) -> Option<[u8; 32]> {
    unverified_claims(token)?.player_key
}

fn unverified_claims(token: &str) -> Option<Claims> {
    let body = token.strip_prefix(WORLD_TOKEN_PREFIX)?;
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let message = Base64UrlSafeNoPadding::decode_to_vec(body.split('.').next()?, None).ok()?;
    let claims = message.get(..message.len().checked_sub(64)?)?;
    read_claims(std::str::from_utf8(claims).ok()?).ok()
}

struct Claims {
    player: String,
    world: String,
    expiry: i64,
    player_key: Option<[u8; 32]>,
}

fn read_claims(payload: &str) -> Result<Claims, WorldTokenError> {
    let value: serde_json::Value =
        serde_json::from_str(payload).map_err(|_| WorldTokenError::Malformed("the claims are not JSON"))?;
    let object = value
        .as_object()
        .ok_or(WorldTokenError::Malformed("the claims are not a JSON object"))?;
    let text = |name: &str, missing: &'static str| {
        object
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or(WorldTokenError::Malformed(missing))
    };
    let player = text("sub", "no sub (player) claim")?;
    validate_name(player).map_err(|_| WorldTokenError::Malformed("the sub claim is not a player name"))?;
    let world = text("aud", "no aud (world) claim")?;
    let exp = text("exp", "no exp claim")?;
    let expiry = chrono::DateTime::parse_from_rfc3339(exp)
        .map_err(|_| WorldTokenError::Malformed("the exp claim is not an RFC 3339 time"))?
        .timestamp();
    let player_key = match object.get("key") {
        None => None,
        Some(v) => {
            let paserk = v
                .as_str()
                .ok_or(WorldTokenError::Malformed("the key claim is not a string"))?;
            Some(*TokenKey::from_paserk(paserk)?.bytes())
        }
    };
    Ok(Claims {
        player: player.to_owned(),
        world: world.to_owned(),
        expiry,
        player_key,
    })
}

fn read_footer(footer: &[u8]) -> Result<String, WorldTokenError> {
    let value: serde_json::Value =
        serde_json::from_slice(footer).map_err(|_| WorldTokenError::Malformed("the footer is not JSON"))?;
    value
        .get("kid")
        .and_then(|k| k.as_str())
        .map(str::to_owned)
        .ok_or(WorldTokenError::Malformed("the footer names no kid"))
}

/// Decodes base64url without padding, refusing any other spelling of the
/// same bytes (non-zero trailing bits).
fn canonical_b64(text: &str) -> Result<Vec<u8>, WorldTokenError> {
    let bytes =
        Base64UrlSafeNoPadding::decode_to_vec(text, None).map_err(|_| WorldTokenError::Malformed("not base64url"))?;
    if b64(&bytes) != text {
        return Err(WorldTokenError::Malformed("not base64url as encoded"));
    }
    Ok(bytes)
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap_or_default()
}

fn paserk_string(value: &dyn FormatAsPaserk) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = value.fmt(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> ServerIdentity {
        ServerIdentity([7; 32])
    }

    #[test]
    fn minted_tokens_verify_with_the_public_key_only() {
        let signing = TokenSigningKey::from_seed([1; 32]);
        let keys = TokenKeys::new(world(), vec![signing.public().clone()]);
        let token = signing.mint(&world(), "ann", 2_000, Some(&[9; 32])).expect("mint");
        assert!(token.starts_with("v4.public."));
        assert_eq!(named_player(&token).as_deref(), Some("ann"));
        assert_eq!(bound_key(&token), Some([9; 32]));
        let verified = keys.verify(&token, 1_999).expect("verifies");
        assert_eq!(verified.player, "ann");
        assert_eq!(verified.expiry, 2_000);
        assert_eq!(verified.player_key, Some([9; 32]));
        assert_eq!(
            keys.verify(&token, 2_000),
            Err(WorldTokenError::Expired { expiry: 2_000 })
        );
        // An expiry past what RFC 3339 writes is its last second, not a
        // token no server can read.
        let forever = signing.mint(&world(), "ann", i64::MAX, Some(&[9; 32])).expect("mint");
        assert_eq!(keys.verify(&forever, 0).expect("verifies").expiry, LAST_RFC3339_SECOND);
        assert_eq!(bound_key(&forever), Some([9; 32]));
        let unbound = signing.mint(&world(), "bob", 2_000, None).expect("mint");
        assert_eq!(keys.verify(&unbound, 0).expect("verifies").player_key, None);
    }

    #[test]
    fn forged_foreign_and_respelled_tokens_are_refused() {
        let signing = TokenSigningKey::from_seed([1; 32]);
        let other = TokenSigningKey::from_seed([2; 32]);
        let keys = TokenKeys::new(world(), vec![signing.public().clone()]);
        let token = signing.mint(&world(), "ann", 2_000, None).expect("mint");
        // Another key (named in its footer): unknown here.
        let foreign = other.mint(&world(), "ann", 2_000, None).expect("mint");
        assert!(matches!(keys.verify(&foreign, 0), Err(WorldTokenError::UnknownKey(_))));
        // Another world's token, with an accepted key.
        let elsewhere = signing
            .mint(&ServerIdentity([8; 32]), "ann", 2_000, None)
            .expect("mint");
        assert_eq!(keys.verify(&elsewhere, 0), Err(WorldTokenError::OtherWorld));
        // A changed byte of the claims.
        let (head, footer) = token.rsplit_once('.').expect("footer");
        let mut message = Base64UrlSafeNoPadding::decode_to_vec(&head[WORLD_TOKEN_PREFIX.len()..], None).expect("b64");
        let at = message.iter().position(|&b| b == b'a').expect("an a");
        message[at] = b'b';
        let forged = format!("{WORLD_TOKEN_PREFIX}{}.{footer}", b64(&message));
        assert_eq!(keys.verify(&forged, 0), Err(WorldTokenError::Forged));
        // The footer swapped for another key's id: that key's signature fails.
        let keys2 = TokenKeys::new(world(), vec![signing.public().clone(), other.public().clone()]);
        let other_footer = b64(serde_json::json!({"kid": other.public().id()}).to_string().as_bytes());
        let swapped = format!("{head}.{other_footer}");
        assert_eq!(keys2.verify(&swapped, 0), Err(WorldTokenError::Forged));
        // No footer, a padded spelling, garbage, too long.
        assert!(matches!(keys.verify(head, 0), Err(WorldTokenError::Malformed(_))));
        assert!(matches!(
            keys.verify(&format!("{token}="), 0),
            Err(WorldTokenError::Malformed(_))
        ));
        assert!(matches!(
            keys.verify("v4.public.", 0),
            Err(WorldTokenError::Malformed(_))
        ));
        assert!(matches!(
            keys.verify(&"v".repeat(2000), 0),
            Err(WorldTokenError::Malformed(_))
        ));
        assert_eq!(keys.verify(&token, 0).expect("the original verifies").player, "ann");
    }

    #[test]
    fn keys_round_trip_through_paserk_and_rotate() {
        let signing = TokenSigningKey::from_seed([3; 32]);
        let again = TokenSigningKey::from_paserk(&signing.paserk()).expect("reads");
        assert_eq!(again.public(), signing.public());
        assert_eq!(
            TokenKey::from_paserk(&signing.public().paserk()).expect("reads"),
            *signing.public()
        );
        assert!(signing.public().id().starts_with("k4.pid."));
        assert!(TokenKey::from_paserk("k4.public.short").is_err());
        assert!(TokenSigningKey::from_paserk(&signing.public().paserk()).is_err());
        // Rotation: the old key stays accepted beside the new one, then goes.
        let new = TokenSigningKey::from_seed([4; 32]);
        let old_token = signing.mint(&world(), "ann", 2_000, None).expect("mint");
        let both = TokenKeys::new(world(), vec![new.public().clone(), signing.public().clone()]);
        assert!(both.verify(&old_token, 0).is_ok());
        let new_only = TokenKeys::new(world(), vec![new.public().clone()]);
        assert!(matches!(
            new_only.verify(&old_token, 0),
            Err(WorldTokenError::UnknownKey(_))
        ));
    }
}
