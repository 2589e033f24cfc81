//! Logging: tracing to stderr, level from `EG_LOG_LEVEL` unless `RUST_LOG` is set.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Dependencies log at `warn` unless `RUST_LOG` says otherwise.
pub fn init(level: LevelFilter) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,gateway={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
