//! Shared pieces of hoard's benchmarks: the deterministic reference zone,
//! which the engine, cache and network benches all measure against.

pub mod reference;
