//! The subcommands of `hoard-demo`, one module each.

pub(crate) mod app;
pub(crate) mod bots;
pub(crate) mod cache;
pub(crate) mod client;
pub(crate) mod logging;
pub(crate) mod netsim;
pub(crate) mod play;
pub(crate) mod progress;
pub(crate) mod relay;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod signals;
pub(crate) mod store;
pub(crate) mod web;
pub(crate) mod world;
