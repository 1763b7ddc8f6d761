//! Perspective tokens: `v1.<player>.<expiry>.<mac>`, where `mac` is
//! blake3's keyed hash (under the server's secret, kept in its data dir) of
//! the player name and the expiry (Unix seconds). No cipher of our own: the
//! keyed hash is blake3's MAC mode.

use hoard_engine::ids::validate_name;

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
}

/// The player a token names, as [`TokenAuthority::verify`] would return it
/// if the token is valid: the name of a dev-mode token (`dev:NAME`) or of a
/// signed one (`v1.NAME.…`). Nothing is checked but the form, so a client
/// can read its own perspective before the server confirms it.
pub fn named_player(token: &str) -> Option<&str> {
    if let Some(name) = token.strip_prefix(DEV_PREFIX) {
        return validate_name(name).is_ok().then_some(name);
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next()) {
        (Some("v1"), Some(name)) => validate_name(name).is_ok().then_some(name),
        _ => None,
    }
}

/// Issues and checks tokens with the server's secret key.
#[derive(Clone)]
pub struct TokenAuthority {
    key: [u8; 32],
    dev_mode: bool,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("dev_mode", &self.dev_mode)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// An authority with this secret key.
    pub fn new(key: [u8; 32]) -> TokenAuthority {
        TokenAuthority { key, dev_mode: false }
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

    fn mac(&self, player: &str, expiry: i64) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(DOMAIN);
        h.update(player.as_bytes());
        h.update(&[0]);
        h.update(&expiry.to_le_bytes());
        h.finalize()
    }

    /// Issues a token for `player` valid until `expiry` (Unix seconds).
    pub fn issue(&self, player: &str, expiry: i64) -> Result<String, hoard_engine::ids::NameError> {
        validate_name(player)?;
        Ok(format!("v1.{player}.{expiry}.{}", self.mac(player, expiry).to_hex()))
    }

    /// Checks a token at time `now` (Unix seconds); returns the player.
    pub fn verify(&self, token: &str, now: i64) -> Result<String, TokenError> {
        if let Some(name) = token.strip_prefix(DEV_PREFIX) {
            if !self.dev_mode {
                return Err(TokenError::DevModeOff);
            }
            validate_name(name).map_err(|_| TokenError::Malformed)?;
            return Ok(name.to_owned());
        }
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
        if mac != self.mac(player, expiry) {
            return Err(TokenError::Forged);
        }
        if now >= expiry {
            return Err(TokenError::Expired { expiry });
        }
        Ok(player.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_player_is_the_one_verify_returns() {
        let auth = TokenAuthority::new([3; 32]).with_dev_mode(true);
        let token = auth.issue("ann", 2_000_000_000).expect("issue");
        assert_eq!(named_player(&token), Some("ann"));
        assert_eq!(auth.verify(&token, 0).as_deref(), Ok("ann"));
        assert_eq!(named_player("dev:bob"), Some("bob"));
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
