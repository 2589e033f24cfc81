//! The `main` both binaries share: the settings are checked before anything starts (exit 2,
//! naming every invalid variable), then logging and the async runtime are set up and the
//! binary's `run` is driven to its exit code; a fatal error is logged and printed (exit 1).

use std::{fmt::Display, process::ExitCode};

use tracing::{error, level_filters::LevelFilter};

use crate::{
    config::ConfigErrors,
    telemetry::{self, LogFormat},
};

/// Runs the binary `name` (also the crate whose logs `logging` levels) on a multi-thread runtime
/// with `worker_threads` (`None`: one per core).
pub fn main<C, F, E>(
    name: &'static str,
    worker_threads: Option<usize>,
    config: Result<C, ConfigErrors>,
    logging: impl FnOnce(&C) -> (LevelFilter, LogFormat),
    run: impl FnOnce(C) -> F,
) -> ExitCode
where
    F: Future<Output = Result<ExitCode, E>>,
    E: Display,
{
    let config = match config {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{name}: {errors}");
            return ExitCode::from(2);
        }
    };
    let (level, format) = logging(&config);
    telemetry::init(level, format, &[name]);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    let tokio = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match tokio.block_on(run(config)) {
        Ok(code) => code,
        Err(e) => {
            error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
