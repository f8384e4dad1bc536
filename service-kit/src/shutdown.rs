//! Waiting for the signal to stop.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on SIGTERM (what `docker stop` and systemd send) or SIGINT (Ctrl-C).
pub async fn signal_received() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot listen for SIGTERM/SIGINT; only SIGKILL will stop this service");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    log::info!("{name} received: shutting down");
}
