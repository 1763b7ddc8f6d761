//! Bevy plugins for hoard. A game built on `bevy_app` registers what it
//! publishes on the App ([`HoardAppExt`]: `app.publish::<C>(..)`,
//! `app.add_intent::<I>(..)`) and serves its world with one
//! `add_hoard_server(HoardServerPlugin::new(..))`: its own schedules run its
//! systems, and hoard's run in [`server::HoardServerSet`]s around them —
//! what clients sent before the game's `Update`, the durable commit and the
//! publishing after it. A client joins with `add_plugins(HoardClientPlugin::
//! new(..))`: zones are entered by writing [`ZoneRequest`] messages, objects
//! arrive as entities, and what happens arrives as [`HoardEvent`] messages.
//! See the `hoard` crate for the guide.

pub mod app;
pub mod client;
pub mod driver;
pub mod log;
pub mod materialise;
pub mod server;
pub mod transport;

pub use app::{HoardAppExt, HoardPlugins, HoardRegistration};
pub use client::{FromServer, Hoard, HoardClientPlugin, HoardClientSet, HoardConnection, HoardEvent, ZoneRequest};
pub use log::HoardLogPlugin;
pub use materialise::{Materialiser, Replicated};
pub use server::{
    Audience, FIRST_GAME_CODE, FromClient, HoardServer, HoardServerPlugin, HoardServerSet, IntentId, IntentOutcomes,
    SeedHook, ShardCare, StartError, StartedServerPlugin, ToClients, ZoneTransients,
};
