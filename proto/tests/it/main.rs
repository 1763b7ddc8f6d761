//! Integration tests of hoard-proto, one binary, one module per feature:
//! golden bytes of every message, and the sans-IO machines driven by a
//! two-sided simulated pair (no sockets).

mod golden;
mod pair;
mod proofs;
mod slow_store;
mod sync;
mod tick;
