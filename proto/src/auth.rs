//! Who a session is: the token checks a server makes at `Hello`.
//!
//! Three kinds of token are taken. **World tokens** (`v4.public.…`, see
//! [`crate::world_token`]) are signed with the world's private token key and
//! checked with its public ones, so relays check them without a secret;
//! they may bind the player's intent key. **MAC tokens**
//! (`v1.<player>.<expiry>.<mac>`, `mac` blake3's keyed hash under the
//! server's secret of the name and expiry) are the previous protocol
//! version's: still accepted where the server holds the secret, for this
//! protocol version only. **Dev-mode names** (`dev:ann`) only on a server in
//! dev mode.

use hoard_engine::ids::validate_name;

use crate::world_token::{TokenKeys, TokenSigningKey, VerifiedToken, WorldTokenError};

const DOMAIN: &[u8] = b"hoard-token-v1\0";
/// Prefix of dev-mode names (`dev:ann`), accepted only when dev mode is on.
pub const DEV_PREFIX: &str = "dev:";

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not of the token form.
    #[error("token is malformed")]
    Malformed,
    /// The MAC does not verify: forged, or issued by another server.
    #[error("token is forged or from another server")]
    Forged,
    /// Past its expiry.
    #[error("token expired at {expiry} (unix seconds)")]
    Expired {
        /// When it expired.
        expiry: i64,
    },
    /// A dev-mode name while dev mode is off.
    #[error("dev-mode names are refused: the server is not in dev mode")]
    DevModeOff,
    /// A world token that does not check out.
    #[error(transparent)]
    World(WorldTokenError),
    /// A kind of token this server does not take (a MAC token where the
    /// server holds no secret, a world token where it knows no token keys).
    #[error("this server does not take {0} tokens")]
    NotTaken(&'static str),
}

impl TokenError {
    /// The expiry, if the token was refused only for being past it.
    pub fn expired_at(&self) -> Option<i64> {
        match self {
            TokenError::Expired { expiry } | TokenError::World(WorldTokenError::Expired { expiry }) => Some(*expiry),
            _ => None,
        }
    }
}

/// The player a token names, as [`TokenAuthority::verify`] would return it
/// if the token is valid: the name of a dev-mode token (`dev:NAME`) or of a
/// signed one (`v1.NAME.…`). Nothing is checked but the form, so a client
/// can read its own perspective before the server confirms it.
pub fn named_player(token: &str) -> Option<String> {
    if let Some(name) = token.strip_prefix(DEV_PREFIX) {
        return validate_name(name).is_ok().then(|| name.to_owned());
    }
    if token.starts_with(crate::world_token::WORLD_TOKEN_PREFIX) {
        return crate::world_token::named_player(token);
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next()) {
        (Some("v1"), Some(name)) => validate_name(name).is_ok().then(|| name.to_owned()),
        _ => None,
    }
}

/// Why a token could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// Not a player name.
    #[error(transparent)]
    Name(#[from] hoard_engine::ids::NameError),
    /// A key binding needs a world token, and this authority has no token key.
    #[error("binding a player key needs a world token key, and this authority has none")]
    NoTokenKey,
    /// The authority holds neither a token key nor a MAC secret.
    #[error("this authority holds no key to issue tokens with (a relay checks tokens, it does not mint them)")]
    NoKey,
}

/// Checks tokens (and issues them where it holds a key to).
#[derive(Clone)]
pub struct TokenAuthority {
    /// The MAC secret of the previous protocol version's tokens.
    key: Option<[u8; 32]>,
    dev_mode: bool,
    /// The world token keys accepted.
    world: Option<TokenKeys>,
    /// The private token key `issue` mints world tokens with.
    minter: Option<TokenSigningKey>,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("dev_mode", &self.dev_mode)
            .field("mac_tokens", &self.key.is_some())
            .field("world_tokens", &self.world)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// An authority taking MAC tokens under this secret key (and issuing
    /// them, until [`TokenAuthority::with_minter`] gives it a token key).
    pub fn new(key: [u8; 32]) -> TokenAuthority {
        TokenAuthority {
            key: Some(key),
            dev_mode: false,
            world: None,
            minter: None,
        }
    }

    /// An authority taking world tokens signed with `keys` only (a relay
    /// that holds no secret).
    pub fn world_tokens(keys: TokenKeys) -> TokenAuthority {
        TokenAuthority {
            key: None,
            dev_mode: false,
            world: Some(keys),
            minter: None,
        }
    }

    /// Also takes world tokens signed with `keys`.
    #[must_use]
    pub fn with_world_tokens(mut self, keys: TokenKeys) -> TokenAuthority {
        self.world = Some(keys);
        self
    }

    /// Issues world tokens with `minter` (whose public half should be among
    /// the accepted keys).
    #[must_use]
    pub fn with_minter(mut self, minter: TokenSigningKey) -> TokenAuthority {
        self.minter = Some(minter);
        self
    }

    /// The world token keys accepted, if any.
    pub fn token_keys(&self) -> Option<&TokenKeys> {
        self.world.as_ref()
    }

    /// Accepts `dev:<name>` as a token for any name. Logs loudly: for local
    /// development only.
    #[must_use]
    pub fn with_dev_mode(mut self, on: bool) -> TokenAuthority {
        if on {
            tracing::warn!(
                "DEV MODE: any client may claim any player name with a dev:<name> token; never use this on a public server"
            );
        }
        self.dev_mode = on;
        self
    }

    fn mac(&self, key: &[u8; 32], player: &str, expiry: i64) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(DOMAIN);
        h.update(player.as_bytes());
        h.update(&[0]);
        h.update(&expiry.to_le_bytes());
        h.finalize()
    }

    /// Issues a token for `player` valid until `expiry` (Unix seconds): a
    /// world token when the authority has a token key, else a MAC token.
    pub fn issue(&self, player: &str, expiry: i64) -> Result<String, IssueError> {
        self.issue_with_key(player, expiry, None)
    }

    /// Issues a token for `player`, binding `player_key` (their intent key)
    /// when given; a key is bound only in a world token, so with one this
    /// needs a token key ([`TokenAuthority::with_minter`]).
    pub fn issue_with_key(
        &self,
        player: &str,
        expiry: i64,
        player_key: Option<&[u8; 32]>,
    ) -> Result<String, IssueError> {
        validate_name(player)?;
        if let (Some(minter), Some(keys)) = (&self.minter, &self.world) {
            return Ok(minter.mint(keys.world(), player, expiry, player_key)?);
        }
        let key = match (player_key, &self.key) {
            (None, Some(key)) => key,
            (Some(_), _) => return Err(IssueError::NoTokenKey),
            (None, None) => return Err(IssueError::NoKey),
        };
        Ok(format!(
            "v1.{player}.{expiry}.{}",
            self.mac(key, player, expiry).to_hex()
        ))
    }

    /// Checks a token at time `now` (Unix seconds); returns the player.
    pub fn verify(&self, token: &str, now: i64) -> Result<String, TokenError> {
        self.check(token, now).map(|v| v.player)
    }

    /// Checks a token at time `now` (Unix seconds): the player, and the
    /// intent key it binds if any.
    pub fn check(&self, token: &str, now: i64) -> Result<VerifiedToken, TokenError> {
        if let Some(name) = token.strip_prefix(DEV_PREFIX) {
            if !self.dev_mode {
                return Err(TokenError::DevModeOff);
            }
            validate_name(name).map_err(|_| TokenError::Malformed)?;
            return Ok(VerifiedToken {
                player: name.to_owned(),
                expiry: i64::MAX,
                player_key: None,
            });
        }
        if token.starts_with(crate::world_token::WORLD_TOKEN_PREFIX) {
            let Some(keys) = &self.world else {
                return Err(TokenError::NotTaken("world"));
            };
            return keys.verify(token, now).map_err(TokenError::World);
        }
        let Some(key) = &self.key else {
            return Err(if token.starts_with("v1.") {
                TokenError::NotTaken("MAC (v1)")
            } else {
                TokenError::Malformed
            });
        };
        if token.len() > 256 {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some("v1"), Some(player), Some(expiry), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        validate_name(player).map_err(|_| TokenError::Malformed)?;
        // One valid spelling per token: the expiry exactly as `issue`
        // writes it (no `+`, no leading zeros) and the MAC in lower-case hex.
        let expiry: i64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        if token.split('.').nth(2) != Some(expiry.to_string().as_str()) {
            return Err(TokenError::Malformed);
        }
        if mac.len() != 64 || !mac.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(TokenError::Malformed);
        }
        let mac = blake3::Hash::from_hex(mac).map_err(|_| TokenError::Malformed)?;
        // blake3::Hash compares in constant time.
        if mac != self.mac(key, player, expiry) {
            return Err(TokenError::Forged);
        }
        if now >= expiry {
            return Err(TokenError::Expired { expiry });
        }
        Ok(VerifiedToken {
            player: player.to_owned(),
            expiry,
            player_key: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_player_is_the_one_verify_returns() {
        let auth = TokenAuthority::new([3; 32]).with_dev_mode(true);
        let token = auth.issue("ann", 2_000_000_000).expect("issue");
        assert_eq!(named_player(&token).as_deref(), Some("ann"));
        assert_eq!(auth.verify(&token, 0).as_deref(), Ok("ann"));
        assert_eq!(named_player("dev:bob").as_deref(), Some("bob"));
        assert_eq!(auth.verify("dev:bob", 0).as_deref(), Ok("bob"));
        for bad in ["", "v1", "v2.ann.1.00", "dev:", "v1.Ann.1.00", "garbage"] {
            assert_eq!(named_player(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_verify_expire_and_resist_forgery() {
        let auth = TokenAuthority::new([3; 32]);
        let token = auth.issue("ann", 1000).expect("valid name");
        assert_eq!(auth.verify(&token, 999), Ok("ann".into()));
        assert_eq!(auth.verify(&token, 1000), Err(TokenError::Expired { expiry: 1000 }));
        let forged = token.replace("v1.ann.", "v1.bob.");
        assert_eq!(auth.verify(&forged, 0), Err(TokenError::Forged));
        // Other spellings of the same token are refused, not accepted.
        let (head, mac) = token.rsplit_once('.').expect("mac");
        assert_eq!(
            auth.verify(&format!("{head}.{}", mac.to_uppercase()), 999),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            auth.verify(&token.replace(".1000.", ".+1000."), 999),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            auth.verify(&token.replace(".1000.", ".01000."), 999),
            Err(TokenError::Malformed)
        );
        let extended = token.replace(".1000.", ".9999.");
        assert_eq!(auth.verify(&extended, 0), Err(TokenError::Forged));
        assert_eq!(TokenAuthority::new([4; 32]).verify(&token, 0), Err(TokenError::Forged));
        assert_eq!(auth.verify("garbage", 0), Err(TokenError::Malformed));
        assert_eq!(auth.verify("dev:ann", 0), Err(TokenError::DevModeOff));
        assert_eq!(auth.clone().with_dev_mode(true).verify("dev:ann", 0), Ok("ann".into()));
    }
}
