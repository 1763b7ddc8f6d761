//! Integration tests of hoard-bevy, one binary, one module per feature.

mod client_plugin;
mod server_plugin;
mod transport;
