//! The binaries' logs: a tracing subscriber writing one line per event,
//! filtered by `RUST_LOG` (default: `info` for the server, `warn` for the
//! tools), to stderr — or, for the terminal UI, which owns the screen, to a
//! file beside its data.

use std::path::Path;

use tracing_subscriber::EnvFilter;

/// The filter: `RUST_LOG` if set, else `default`.
fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Logs to stderr at `default` unless `RUST_LOG` says otherwise; in colour
/// only when stderr is a terminal (a log redirected to a file or a pipe
/// gets plain text), and never when `NO_COLOR` is set.
pub(crate) fn to_stderr(default: &str) {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logs to `path` (appending), for commands whose terminal is a UI. Falls
/// back to stderr, saying so, if the file cannot be opened.
pub(crate) fn to_file(path: &Path, default: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter(default))
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init();
        }
        Err(e) => {
            eprintln!(
                "hoard-demo: cannot write the log {}: {e}; logging to stderr",
                path.display()
            );
            to_stderr(default);
        }
    }
}
