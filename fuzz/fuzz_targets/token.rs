//! Fuzzes the token checker (`TokenAuthority::check`): typed errors only,
//! never a panic. A MAC token it accepts has one spelling — the one `issue`
//! writes for the same player and expiry (or `dev:<name>` in dev mode); a
//! world token (PASETO v4.public) it accepts names the player `named_player`
//! reads, and is refused at its expiry. The seed corpus holds tokens of
//! this target's keys.
#![no_main]

use hoard_proto::auth::TokenAuthority;
use libfuzzer_sys::fuzz_target;

/// The key the seed corpus's MAC tokens were issued with.
const KEY: [u8; 32] = [7; 32];
/// The seed of the token key the corpus's world tokens were minted with,
/// for the world `[7; 32]`.
const TOKEN_KEY_SEED: [u8; 32] = [2; 32];

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let world = hoard_engine::ServerIdentity([7; 32]);
    let token_key = hoard_proto::world_token::TokenSigningKey::from_seed(TOKEN_KEY_SEED);
    let keys = hoard_proto::world_token::TokenKeys::new(world, vec![token_key.public().clone()]);
    if let Ok(verified) = TokenAuthority::world_tokens(keys.clone()).check(token, 0) {
        assert!(token.starts_with("v4.public."));
        assert_eq!(hoard_proto::auth::named_player(token).as_deref(), Some(verified.player.as_str()));
        assert!(keys.verify(token, verified.expiry).is_err(), "expired at its expiry");
    }
    let authority = TokenAuthority::new(KEY);
    // Before its expiry, and at 0 (every seed expires later).
    if let Ok(player) = authority.verify(token, 0) {
        let expiry: i64 = token
            .split('.')
            .nth(2)
            .and_then(|e| e.parse().ok())
            .expect("an accepted token names its expiry");
        assert_eq!(authority.issue(&player, expiry).as_deref(), Ok(token), "one spelling per token");
        assert!(authority.verify(token, expiry).is_err(), "expired at its expiry");
    }
    if let Ok(player) = authority.clone().with_dev_mode(true).verify(token, 0)
        && let Some(name) = token.strip_prefix("dev:")
    {
        assert_eq!(player, name);
    }
    let _ = hoard_proto::auth::named_player(token);
});
