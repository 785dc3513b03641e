//! Logging through `tracing`: human-readable lines on a terminal, one JSON object per line when
//! `log.format = "json"` (`LOTE__LOG__FORMAT=json`) for log collectors. Logs go to stderr so that
//! stdout stays free for command output (`lote config`, `lote run`).

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber. A second call (tests start several servers in one process)
/// leaves the first in place.
pub fn init(settings: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directive| EnvFilter::try_new(directive).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _already_set = match settings.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}
