//! How images are pulled: policy, concurrency, retries, timeouts, the disk guard and the
//! registry credentials.

use std::{path::PathBuf, time::Duration};

use eg_common::config::{Checker, parse_positive};

use super::{Args, Lookup};
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

impl PullConfig {
    /// Checks the pull settings, recording every problem in `c`; credential files are read
    /// through `lookup`.
    pub fn parse(args: &Args, c: &mut Checker, lookup: &dyn Lookup) -> Option<Self> {
        let interval = c.check(
            "KIP_INTERVAL",
            &args.interval,
            parse_positive(&args.interval).map(Duration::from_secs),
        );
        let num_pullers = c.check(
            "KIP_NUM_PULLERS",
            &args.num_pullers,
            parse_positive(&args.num_pullers).map(|n| n as usize),
        );
        let num_retries = c.check(
            "KIP_NUM_RETRIES",
            &args.num_retries,
            parse_positive(&args.num_retries).map(|n| n as usize),
        );
        let policy = c.check(
            "KIP_PULL_POLICY",
            &args.pull_policy,
            match args.pull_policy.as_str() {
                "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
                "Always" => Ok(PullPolicy::Always),
                _ => Err("expected IfNotPresent or Always".to_owned()),
            },
        );
        let timeout = c.check(
            "KIP_PULL_TIMEOUT",
            &args.pull_timeout,
            parse_positive(&args.pull_timeout).map(Duration::from_secs),
        );
        let max_disk_usage_percent = c.check(
            "KIP_MAX_DISK_USAGE_PERCENT",
            &args.max_disk_usage_percent,
            match args.max_disk_usage_percent.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
                _ => Err("expected a percentage greater than 0, at most 100".to_owned()),
            },
        );
        let keyring = c.check(
            "KIP_DOCKER_CONFIG",
            args.docker_config.as_deref().unwrap_or_default(),
            load_keyring(args.docker_config.as_deref(), lookup),
        );
        Some(Self {
            interval: interval?,
            num_pullers: num_pullers?,
            num_retries: num_retries?,
            policy: policy?,
            timeout: timeout?,
            max_disk_usage_percent: max_disk_usage_percent?,
            keyring: keyring?,
        })
    }
}

/// Loads the named credential files, or the default ones that exist
/// (`$DOCKER_CONFIG/config.json`, then `~/.docker/config.json`).
fn load_keyring(paths: Option<&str>, lookup: &dyn Lookup) -> Result<Keyring, String> {
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
