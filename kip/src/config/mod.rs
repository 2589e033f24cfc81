//! Configuration: every `KIP_*` variable (and its `--flag` twin), parsed once into [`Config`].
//!
//! Clap reads raw strings (so `--help` lists each variable with its default); [`Config::from_args`]
//! then validates them all in one pass and reports every bad variable at once. Each concern has
//! its own struct, parsed from the arguments with the shared [`Checker`]: [`SourceConfig`]
//! (where image names come from), [`PullConfig`] (how they are pulled), [`RuntimeConfig`] (the
//! runtime and the containerd backend), [`AdminConfig`] and [`LoggingConfig`]. Parsing reads the
//! environment and files only through a [`Lookup`], so tests give their own.

mod parse;
mod pull;
mod runtime;
mod source;

use std::{net::SocketAddr, path::Path, time::Duration};

use clap::Parser;
pub use eg_common::config::{Checker, ConfigError, ConfigErrors, Secret};
pub use eg_common::telemetry::LogFormat;
use tracing::level_filters::LevelFilter;

pub use self::{
    pull::{PullConfig, PullPolicy},
    runtime::{
        ContainerdConfig, Endpoint, RuntimeConfig, RuntimeKind, TransferMode, detect_runtime,
    },
    source::{ConfigMapRef, FetcherKind, SourceConfig, parse_image_list},
};

/// Command line and environment of the `kip` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kip",
    version,
    about = "Kernel Image Puller: pre-pulls Jupyter kernel images on this node",
    long_about = "Kernel Image Puller: learns which kernel images Enterprise Gateway's kernelspecs \
name (or a static list, or a ConfigMap) and pulls them onto this node ahead of time, through \
Docker, containerd or any CRI runtime.\n\nEvery option can also be set through the environment \
variable shown beside it; a flag wins over its variable."
)]
pub struct Args {
    /// Run one cycle, then exit: 0 when every image is present, 1 naming each image that failed.
    #[arg(long)]
    pub once: bool,

    /// Base URL of the gateway whose kernelspecs name the images.
    #[arg(
        long,
        env = "KIP_GATEWAY_HOST",
        default_value = "http://localhost:8888"
    )]
    pub gateway_host: String,

    /// Token for the gateway, sent as `Authorization: token …`.
    #[arg(long, env = "KIP_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Verify the gateway's TLS certificate (true|false).
    #[arg(long, env = "KIP_VALIDATE_CERT", default_value = "false")]
    pub validate_cert: String,

    /// Seconds between cycles.
    #[arg(long, env = "KIP_INTERVAL", default_value = "300")]
    pub interval: String,

    /// Images pulled at the same time.
    #[arg(long, env = "KIP_NUM_PULLERS", default_value = "2")]
    pub num_pullers: String,

    /// Attempts per image and cycle (backoff with jitter between attempts).
    #[arg(long, env = "KIP_NUM_RETRIES", default_value = "3")]
    pub num_retries: String,

    /// IfNotPresent (pull only missing images) or Always (pull every cycle).
    #[arg(long, env = "KIP_PULL_POLICY", default_value = "IfNotPresent")]
    pub pull_policy: String,

    /// Runtime socket: unix:///path, /path, or tcp://host:port.
    #[arg(
        long,
        env = "KIP_CRI_ENDPOINT",
        default_value = "unix:///run/containerd/containerd.sock"
    )]
    pub cri_endpoint: String,

    /// Registry for image names that carry none (e.g. docker.io, quay.io, myreg:5000).
    #[arg(long, env = "KIP_DEFAULT_CONTAINER_REGISTRY")]
    pub default_container_registry: Option<String>,

    /// DEBUG, INFO, WARNING, ERROR, CRITICAL (any case) or Python's numbers (10…50). RUST_LOG,
    /// when set, takes precedence.
    #[arg(long, env = "KIP_LOG_LEVEL", default_value = "INFO")]
    pub log_level: String,

    /// plain or json.
    #[arg(long, env = "KIP_LOG_FORMAT", default_value = "plain")]
    pub log_format: String,

    /// KernelSpecsFetcher, StaticListFetcher, ConfigMapImagesFetcher or CombinedImagesFetcher.
    #[arg(long, env = "KIP_IMAGE_FETCHER", default_value = "KernelSpecsFetcher")]
    pub image_fetcher: String,

    /// Comma list of the fetchers CombinedImagesFetcher unites.
    #[arg(
        long,
        env = "KIP_INTERNAL_FETCHERS",
        default_value = "KernelSpecsFetcher"
    )]
    pub internal_fetchers: String,

    /// Comma list of images for StaticListFetcher.
    #[arg(long, env = "KIP_IMAGES", default_value = "")]
    pub images: String,

    /// Namespace of the ConfigMap for ConfigMapImagesFetcher.
    #[arg(long, env = "KIP_CM_NAMESPACE", default_value = "enterprise-gateway")]
    pub cm_namespace: String,

    /// Name of the ConfigMap for ConfigMapImagesFetcher.
    #[arg(long, env = "KIP_CM_NAME", default_value = "kernel-images")]
    pub cm_name: String,

    /// Key of the ConfigMap that holds a YAML list of images.
    #[arg(long, env = "KIP_CM_KEY_NAME", default_value = "image-names")]
    pub cm_key_name: String,

    /// auto (docker if the endpoint names docker, else cri; containerd is reached through its
    /// CRI plugin), docker, containerd (the native containerd backend) or cri.
    #[arg(long, env = "KIP_CONTAINER_RUNTIME", default_value = "auto")]
    pub container_runtime: String,

    /// Seconds one pull attempt may take before it is abandoned and retried.
    #[arg(long, env = "KIP_PULL_TIMEOUT", default_value = "600")]
    pub pull_timeout: String,

    /// Seconds one request for the image list may take.
    #[arg(long, env = "KIP_FETCH_TIMEOUT", default_value = "60")]
    pub fetch_timeout: String,

    /// Address of the admin endpoint (/livez, /readyz, /metrics); `off` disables it. Not served
    /// with --once.
    #[arg(long, env = "KIP_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: String,

    /// Comma list of registry credential files (`.dockerconfigjson` or `.dockercfg`, as mounted
    /// from Kubernetes pull secrets). Default: $DOCKER_CONFIG/config.json, then
    /// ~/.docker/config.json, those that exist.
    #[arg(long, env = "KIP_DOCKER_CONFIG")]
    pub docker_config: Option<String>,

    /// Seconds a watch request is held by a gateway that supports watches (0: never watch, poll
    /// every KIP_INTERVAL). Keep it below the idle timeout of proxies in between.
    #[arg(long, env = "KIP_WATCH_SECONDS", default_value = "50")]
    pub watch_seconds: String,

    /// No pulls while the runtime's image filesystem is at least this full (percent; kubelet's
    /// image GC high threshold is 85).
    #[arg(long, env = "KIP_MAX_DISK_USAGE_PERCENT", default_value = "85")]
    pub max_disk_usage_percent: String,

    /// Seconds to finish after SIGTERM/SIGINT before exiting anyway.
    #[arg(long, env = "KIP_SHUTDOWN_GRACE", default_value = "10")]
    pub shutdown_grace: String,
    /// containerd namespace the containerd backend pulls into (k8s.io is the one kubelet uses).
    #[arg(long, env = "KIP_CONTAINERD_NAMESPACE", default_value = "k8s.io")]
    pub containerd_namespace: String,

    /// containerd snapshotter the containerd backend unpacks into (kubelet's, usually overlayfs).
    #[arg(long, env = "KIP_CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    pub containerd_snapshotter: String,

    /// Comma list of registries (host or host:port) the containerd backend reaches over plain
    /// HTTP; loopback registries always are.
    #[arg(long, env = "KIP_INSECURE_REGISTRIES", default_value = "")]
    pub insecure_registries: String,

    /// Layers downloaded at the same time by the containerd backend, across all images.
    #[arg(long, env = "KIP_MAX_CONCURRENT_DOWNLOADS", default_value = "8")]
    pub max_concurrent_downloads: String,

    /// PEM bundle of extra CA certificates trusted for registries reached by the agent itself
    /// (the containerd backend's pulls, manifest HEADs for Always), on top of the system's.
    #[arg(long, env = "KIP_REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<String>,
    /// Whether the containerd backend pulls through containerd's Transfer service (1.7+/2.x):
    /// auto (where offered, if it is the faster path in this project's benchmark), on (where
    /// offered; other daemons keep the native path) or off (always the native path).
    #[arg(long, env = "KIP_CONTAINERD_TRANSFER", default_value = "auto")]
    pub containerd_transfer: String,
    /// Registry host configuration directory (hosts.toml per registry: mirrors, CAs, plain
    /// HTTP) on the node, passed to containerd's Transfer service, which reads it; empty: none.
    #[arg(
        long,
        env = "KIP_CONTAINERD_HOSTS_DIR",
        default_value = "/etc/containerd/certs.d"
    )]
    pub containerd_hosts_dir: String,
}

/// What parsing may read besides the arguments: environment variables and files.
pub trait Lookup {
    /// A variable of the environment.
    fn var(&self, name: &str) -> Option<String>;
    /// Whether `path` is a regular file.
    fn is_file(&self, path: &Path) -> bool;
    /// The contents of a file.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// The process environment and filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct System;

impl Lookup for System {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// The admin endpoint and shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `None` when disabled.
    pub addr: Option<SocketAddr>,
    /// Time to finish after SIGTERM/SIGINT before exiting anyway.
    pub shutdown_grace: Duration,
}

/// Logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggingConfig {
    pub level: LevelFilter,
    pub format: LogFormat,
}

/// Validated configuration, one struct per concern.
#[derive(Debug, Clone)]
pub struct Config {
    /// Run one cycle, then exit.
    pub once: bool,
    pub source: SourceConfig,
    pub pull: PullConfig,
    pub runtime: RuntimeConfig,
    pub admin: AdminConfig,
    pub logging: LoggingConfig,
}

impl Config {
    /// Validates every field against the process environment and filesystem; on failure lists
    /// all invalid variables.
    pub fn from_args(args: Args) -> Result<Self, ConfigErrors> {
        Self::from_args_with(&args, &System)
    }

    /// As [`Config::from_args`], reading the environment and files through `lookup`.
    pub fn from_args_with(args: &Args, lookup: &dyn Lookup) -> Result<Self, ConfigErrors> {
        let mut c = Checker::default();
        let source = SourceConfig::parse(args, &mut c);
        let pull = PullConfig::parse(args, &mut c, lookup);
        let max_disk_percent = pull.as_ref().map(|p| p.max_disk_usage_percent);
        let runtime = RuntimeConfig::parse(args, &mut c, lookup, max_disk_percent);
        let admin = AdminConfig::parse(args, &mut c);
        let logging = LoggingConfig::parse(args, &mut c);
        let (Some(source), Some(pull), Some(runtime), Some(admin), Some(logging)) =
            (source, pull, runtime, admin, logging)
        else {
            c.finish()?;
            unreachable!("a concern that failed to parse recorded its problem");
        };
        c.finish()?;
        Ok(Self {
            once: args.once,
            source,
            pull,
            runtime,
            admin,
            logging,
        })
    }
}

#[cfg(test)]
mod tests;
