//! [`HoardLogPlugin`]: hoard's logs (and the game's own `tracing` events)
//! on stderr, for a game that installs no `tracing` subscriber of its own.
//! Opt-in: a game with its own logging leaves it out.

use bevy_app::prelude::*;

/// Installs a `tracing` subscriber writing one line per event to stderr,
/// filtered by `RUST_LOG` (default: [`HoardLogPlugin::default_filter`]),
/// in colour only when stderr is a terminal and `NO_COLOR` is unset. Does
/// nothing if the process already has a global subscriber.
///
/// ```
/// # use bevy_app::App;
/// use hoard_bevy::HoardLogPlugin;
/// App::new().add_plugins(HoardLogPlugin::default());
/// ```
#[derive(Clone, Debug)]
pub struct HoardLogPlugin {
    /// The filter used when `RUST_LOG` is unset, in `RUST_LOG`'s syntax.
    pub default_filter: String,
}

impl Default for HoardLogPlugin {
    fn default() -> HoardLogPlugin {
        HoardLogPlugin {
            default_filter: "info,quinn=warn,rustls=warn".into(),
        }
    }
}

impl Plugin for HoardLogPlugin {
    fn build(&self, _app: &mut App) {
        use std::io::IsTerminal;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&self.default_filter));
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let installed = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .try_init();
        if installed.is_err() {
            tracing::debug!("a tracing subscriber is already installed; HoardLogPlugin leaves it");
        }
    }
}
