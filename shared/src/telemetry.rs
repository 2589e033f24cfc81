//! Logging: tracing to stderr, plain or JSON lines, at the configured level unless `RUST_LOG` is
//! set.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// Plain text or JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

impl LogFormat {
    /// `plain` or `json`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "plain" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            _ => Err("expected plain or json".to_owned()),
        }
    }
}

/// The filter used when `RUST_LOG` is unset: dependencies at `warn`, the named crates (and this
/// one) at `level`.
pub fn default_filter(level: LevelFilter, crates: &[&str]) -> String {
    let mut filter = format!(
        "warn,{}={level}",
        module_path!().split("::").next().unwrap_or("")
    );
    for krate in crates {
        filter.push_str(&format!(",{krate}={level}"));
    }
    filter
}

/// Installs the global subscriber, writing to stderr. Dependencies log at `warn` unless
/// `RUST_LOG` says otherwise; `crates` (the binary's own) log at `level`.
pub fn init(level: LevelFilter, format: LogFormat, crates: &[&str]) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default_filter(level, crates)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into log collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_filter() {
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("plain"), Ok(LogFormat::Plain));
        assert!(LogFormat::parse("JSON").is_err());
        assert_eq!(
            default_filter(LevelFilter::DEBUG, &["kip"]),
            "warn,eg_common=debug,kip=debug"
        );
    }
}
