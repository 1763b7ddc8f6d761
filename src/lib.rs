//! hoard keeps an online game's world persistent on the server and on every
//! player's disk. This facade re-exports the crates; most games only need
//! [`prelude`].
//!
//! - [`engine`]: the object model, publishing bevy_ecs components, the world store.

pub use hoard_engine as engine;

/// The names a game needs most.
pub mod prelude {
    pub use hoard_engine::prelude::*;
}
