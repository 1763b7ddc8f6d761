//! Fuzzes the world-token checker (`TokenAuthority::verify`): typed errors
//! only, never a panic; a token it accepts has one spelling — the one
//! `issue` writes for the same player and expiry (or `dev:<name>` in dev
//! mode). The seed corpus holds tokens of this target's key.
#![no_main]

use hoard_proto::auth::TokenAuthority;
use libfuzzer_sys::fuzz_target;

/// The key the seed corpus's tokens were issued with.
const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
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
