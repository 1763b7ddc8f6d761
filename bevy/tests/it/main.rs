//! Integration tests of hoard-bevy, one binary, one module per feature.

mod server_plugin;
