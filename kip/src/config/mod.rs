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

eg_common::settings! {
    /// Command line and environment of the `kip` binary.
    #[derive(Debug, Clone, Parser)]
    #[command(
        name = "kip",
        version,
        about = "Kernel Image Puller: pre-pulls Jupyter kernel images on this node",
        long_about = "Kernel Image Puller: learns which kernel images Enterprise Gateway's \
            kernelspecs name (or a static list, or a ConfigMap) and pulls them onto this node ahead \
            of time, through Docker, containerd or any CRI runtime.\n\n\
            Every option can also be set through the environment variable shown beside it; a flag \
            wins over its variable."
    )]
    pub struct Args {
        /// Run one cycle, then exit: 0 when every image is present, 1 naming each image that
        /// failed.
        #[arg(long)]
        pub once: bool,

        /// Base URL of the gateway whose kernelspecs name the images.
        gateway_host: "KIP_GATEWAY_HOST" default "http://localhost:8888",

        /// Token for the gateway, sent as `Authorization: token …`.
        #[arg(hide_env_values = true)]
        auth_token: "KIP_AUTH_TOKEN",

        /// Verify the gateway's TLS certificate (true|false).
        validate_cert: "KIP_VALIDATE_CERT" default "false",

        /// Seconds between cycles.
        interval: "KIP_INTERVAL" default "300",

        /// Images pulled at the same time.
        num_pullers: "KIP_NUM_PULLERS" default "2",

        /// Attempts per image and cycle (backoff with jitter between attempts).
        num_retries: "KIP_NUM_RETRIES" default "3",

        /// IfNotPresent (pull only missing images) or Always (pull every cycle).
        pull_policy: "KIP_PULL_POLICY" default "IfNotPresent",

        /// Runtime socket: unix:///path, /path, or tcp://host:port.
        cri_endpoint: "KIP_CRI_ENDPOINT" default "unix:///run/containerd/containerd.sock",

        /// Registry for image names that carry none (e.g. docker.io, quay.io, myreg:5000).
        default_container_registry: "KIP_DEFAULT_CONTAINER_REGISTRY",

        /// DEBUG, INFO, WARNING, ERROR, CRITICAL (any case) or Python's numbers (10…50). RUST_LOG,
        /// when set, takes precedence.
        log_level: "KIP_LOG_LEVEL" default "INFO",

        /// plain or json.
        log_format: "KIP_LOG_FORMAT" default "plain",

        /// KernelSpecsFetcher, StaticListFetcher, ConfigMapImagesFetcher or CombinedImagesFetcher.
        image_fetcher: "KIP_IMAGE_FETCHER" default "KernelSpecsFetcher",

        /// Comma list of the fetchers CombinedImagesFetcher unites.
        internal_fetchers: "KIP_INTERNAL_FETCHERS" default "KernelSpecsFetcher",

        /// Comma list of images for StaticListFetcher.
        images: "KIP_IMAGES" default "",

        /// Namespace of the ConfigMap for ConfigMapImagesFetcher.
        cm_namespace: "KIP_CM_NAMESPACE" default "enterprise-gateway",

        /// Name of the ConfigMap for ConfigMapImagesFetcher.
        cm_name: "KIP_CM_NAME" default "kernel-images",

        /// Key of the ConfigMap that holds a YAML list of images.
        cm_key_name: "KIP_CM_KEY_NAME" default "image-names",

        /// auto (docker if the endpoint names docker, else cri; containerd is reached through its
        /// CRI plugin), docker, containerd (the native containerd backend) or cri.
        container_runtime: "KIP_CONTAINER_RUNTIME" default "auto",

        /// Seconds one pull attempt may take before it is abandoned and retried.
        pull_timeout: "KIP_PULL_TIMEOUT" default "600",

        /// Seconds one request for the image list may take.
        fetch_timeout: "KIP_FETCH_TIMEOUT" default "60",

        /// Address of the admin endpoint (/livez, /readyz, /metrics); `off` disables it. Not served
        /// with --once.
        admin_addr: "KIP_ADMIN_ADDR" default "0.0.0.0:9090",

        /// Comma list of registry credential files (`.dockerconfigjson` or `.dockercfg`, as mounted
        /// from Kubernetes pull secrets). Default: $DOCKER_CONFIG/config.json, then
        /// ~/.docker/config.json, those that exist.
        docker_config: "KIP_DOCKER_CONFIG",

        /// Seconds a watch request is held by a gateway that supports watches (0: never watch, poll
        /// every KIP_INTERVAL). Keep it below the idle timeout of proxies in between.
        watch_seconds: "KIP_WATCH_SECONDS" default "50",

        /// No pulls while the runtime's image filesystem is at least this full (percent; kubelet's
        /// image GC high threshold is 85).
        max_disk_usage_percent: "KIP_MAX_DISK_USAGE_PERCENT" default "85",

        /// Seconds to finish after SIGTERM/SIGINT before exiting anyway.
        shutdown_grace: "KIP_SHUTDOWN_GRACE" default "10",

        /// containerd namespace the containerd backend pulls into (k8s.io is the one kubelet uses).
        containerd_namespace: "KIP_CONTAINERD_NAMESPACE" default "k8s.io",

        /// containerd snapshotter the containerd backend unpacks into (kubelet's, usually
        /// overlayfs).
        containerd_snapshotter: "KIP_CONTAINERD_SNAPSHOTTER" default "overlayfs",

        /// Comma list of registries (host or host:port) the containerd backend reaches over plain
        /// HTTP; loopback registries always are.
        insecure_registries: "KIP_INSECURE_REGISTRIES" default "",

        /// Layers downloaded at the same time by the containerd backend, across all images.
        max_concurrent_downloads: "KIP_MAX_CONCURRENT_DOWNLOADS" default "8",

        /// PEM bundle of extra CA certificates trusted for registries reached by the agent itself
        /// (the containerd backend's pulls, manifest HEADs for Always), on top of the system's.
        registry_ca_file: "KIP_REGISTRY_CA_FILE",

        /// Whether the containerd backend pulls through containerd's Transfer service (1.7+/2.x):
        /// auto (where offered, if it is the faster path in this project's benchmark), on (where
        /// offered; other daemons keep the native path) or off (always the native path).
        containerd_transfer: "KIP_CONTAINERD_TRANSFER" default "auto",

        /// Registry host configuration directory (hosts.toml per registry: mirrors, CAs, plain
        /// HTTP) on the node, passed to containerd's Transfer service, which reads it; empty: none.
        containerd_hosts_dir: "KIP_CONTAINERD_HOSTS_DIR" default "/etc/containerd/certs.d",
    }
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
        let runtime = RuntimeConfig::parse(args, &mut c, lookup);
        let admin = AdminConfig::parse(args, &mut c);
        let logging = LoggingConfig::parse(args, &mut c);
        let (Some(source), Some(pull), Some(mut runtime), Some(admin), Some(logging)) =
            (source, pull, runtime, admin, logging)
        else {
            c.finish()?;
            unreachable!("a concern that failed to parse recorded its problem");
        };
        c.finish()?;
        // The containerd backend applies the pull's disk guard too, once a manifest tells the
        // layer sizes.
        runtime.containerd.max_disk_percent = Some(pull.max_disk_usage_percent);
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
