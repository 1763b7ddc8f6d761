//! Whole-stack tests of the `hoard` facade, one binary, written only against
//! `hoard::prelude` and the plugins, the way a game uses them: a server App
//! and client Apps in one process on loopback.

mod apps;
mod browser;
mod journeys;
