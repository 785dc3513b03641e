//! The process's shutdown trigger: the first SIGINT or SIGTERM. The server takes any future as its
//! trigger (see [`crate::server::Server::serve`]), so tests use a oneshot channel instead.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on SIGINT or SIGTERM, naming which.
pub async fn signal_received() -> &'static str {
    let (Ok(mut interrupt), Ok(mut terminate)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::error!("cannot install signal handlers; stop lote with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
