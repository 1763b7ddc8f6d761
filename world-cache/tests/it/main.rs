//! Integration tests of hoard-world-cache, one binary, one module per feature.

mod bad_files;
mod crash;
mod faults;
mod golden;
mod journal;
mod known;
mod lock;
mod memory;
mod model;
mod power_loss;
mod support;
mod tools;
