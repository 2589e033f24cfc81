//! One cancellation root for a whole process: SIGTERM or SIGINT cancels it; a second signal exits
//! at once with [`FORCED_EXIT_CODE`].

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Exit code for a forced exit on a second signal (128 + SIGINT, as shells report it).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Spawns the signal watcher and returns the root token it cancels. `draining` says, in the log
/// line of the first signal, what the process does while it stops (e.g. "stopping new pulls").
pub fn install(draining: &'static str) -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let root = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutdown requested; {draining}");
        root.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        };
        warn!("second signal: exiting at once");
        std::process::exit(FORCED_EXIT_CODE);
    });
    Ok(token)
}
