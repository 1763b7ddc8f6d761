//! Integration tests of hoard-net, one binary, one module per feature: the
//! QUIC drivers on loopback.

mod answer_slots;
mod bad_input;
mod commit_pipeline;
mod e2e;
mod relay;
mod signed;
mod store_failure;
mod web;
mod wire_order;
mod zero_rtt;
