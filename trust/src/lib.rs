//! hoard-trust: who a server is and what its world signs, whatever carries
//! the bytes. The server's long-lived TLS key and the identity clients pin
//! ([`tls`]: trust on first use in a `known_servers` file, or a fingerprint
//! given), signing and checking shard heads with that key ([`heads`]), and
//! the world's token keys with the signed list of them a server hands to
//! relays ([`token_keys`]), and the certificates of the WebTransport
//! endpoint browsers reach ([`web`]). The QUIC drivers (`hoard-net`) and any other
//! transport use it; it opens no socket.

pub mod heads;
pub mod tls;
pub mod token_keys;
pub mod web;
