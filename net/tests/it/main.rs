//! Integration tests of hoard-net, one binary, one module per feature.

mod bad_input;
mod e2e;
mod golden;
mod pair;
mod store_failure;
mod sync;
