//! Integration tests of hoard-net, one binary, one module per feature.

mod pair;
mod sync;
