//! The signals that stop a server or a relay cleanly: SIGINT (Ctrl-C) and
//! SIGTERM (what systemd, docker and Kubernetes send) take the same path —
//! what is pending is committed, leases are given back, clients are told.
//! A second signal while that runs ends the process at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Waits for SIGINT or SIGTERM; returns its name.
pub(crate) async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server cleanly");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Sets `flag` on the first stop signal; a second one exits at once (code 1).
pub(crate) async fn stop_on_signal(flag: Arc<AtomicBool>) {
    let first = stop_signal().await;
    tracing::info!(signal = first, "stopping cleanly (a second signal stops at once)");
    flag.store(true, Ordering::SeqCst);
    let second = stop_signal().await;
    eprintln!("hoard-demo: {second} again: stopping at once, without finishing");
    std::process::exit(1);
}
