//! The process's shutdown trigger: the first SIGINT or SIGTERM. The server takes any future as its
//! trigger (see [`crate::server::Server::serve`]), so tests use a oneshot channel instead.
//!
//! The handlers are installed when [`Signals::install`] is called, not when the trigger is first
//! polled: a signal that arrives between "serving" and the server's first poll is still a clean
//! shutdown, never the default action (death by signal).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM handlers, installed.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM, naming which.
    pub async fn received(mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
