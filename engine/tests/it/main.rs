//! Integration tests of hoard-engine, one binary (linking is the slow part),
//! one module per feature.

mod bad_files;
mod crash;
mod load;
mod model;
mod postgres;
mod power_loss;
mod schema;
mod store;
mod support;
