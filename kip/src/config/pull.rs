//! How images are pulled: policy, concurrency, retries, timeouts, the disk guard and the
//! registry credentials.

use std::{path::PathBuf, time::Duration};

use super::Lookup;
use crate::credentials::Keyring;
pub use crate::ports::PullPolicy;

/// How images are pulled.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// Time between cycles.
    pub interval: Duration,
    /// Images pulled at the same time.
    pub num_pullers: usize,
    /// Attempts per image and cycle (and reads of the image list).
    pub num_retries: usize,
    pub policy: PullPolicy,
    /// Time one attempt may take.
    pub timeout: Duration,
    /// No pulls while the image filesystem is at least this full (percent).
    pub max_disk_usage_percent: f64,
    /// Registry credentials from KIP_DOCKER_CONFIG (or the default files).
    pub keyring: Keyring,
}

/// Loads the named credential files, or the default ones that exist
/// (`$DOCKER_CONFIG/config.json`, then `~/.docker/config.json`).
pub(super) fn load_keyring(paths: Option<&str>, lookup: &dyn Lookup) -> Result<Keyring, String> {
    let paths: Vec<PathBuf> = match paths.map(str::trim).filter(|p| !p.is_empty()) {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
        None => [
            lookup
                .var("DOCKER_CONFIG")
                .map(|d| PathBuf::from(d).join("config.json")),
            lookup
                .var("HOME")
                .map(|h| PathBuf::from(h).join(".docker/config.json")),
        ]
        .into_iter()
        .flatten()
        .filter(|p| lookup.is_file(p))
        .collect(),
    };
    Keyring::load_with(&paths, |p| lookup.read(p)).map_err(|e| e.to_string())
}
