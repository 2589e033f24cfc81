//! Configuration: every `KIP_*` variable (and its `--flag` twin), parsed once into [`Config`].
//!
//! Clap reads raw strings (so `--help` lists each variable with its default); [`Config::from_args`]
//! then validates them all in one pass and reports every bad variable at once.

use std::{fmt, path::PathBuf, time::Duration};

use clap::Parser;
use eg_common::ImageRef;

use crate::credentials::Keyring;
pub use crate::ports::PullPolicy;
use tracing::level_filters::LevelFilter;

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

/// Where the runtime listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// An `http://host:port` URL.
    Tcp(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(url) => f.write_str(url),
        }
    }
}

/// The API the agent speaks to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Docker,
    Containerd,
    Cri,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
            Self::Cri => "cri",
        }
    }
}

/// Whether the containerd backend pulls through containerd's Transfer service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferMode {
    /// Where the daemon offers it, if it is the faster path (see the runtime module).
    Auto,
    /// Wherever the daemon offers it.
    On,
    /// Never: always the native path.
    Off,
}

impl TransferMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// Where the list of images comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetcherKind {
    KernelSpecs,
    StaticList,
    ConfigMap,
    Combined,
}

impl FetcherKind {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "KernelSpecsFetcher" => Some(Self::KernelSpecs),
            "StaticListFetcher" => Some(Self::StaticList),
            "ConfigMapImagesFetcher" => Some(Self::ConfigMap),
            "CombinedImagesFetcher" => Some(Self::Combined),
            _ => None,
        }
    }
}

/// The ConfigMap that ConfigMapImagesFetcher reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub once: bool,
    pub gateway_url: reqwest::Url,
    pub auth_token: Option<Secret>,
    pub validate_cert: bool,
    pub interval: Duration,
    pub num_pullers: usize,
    pub num_retries: usize,
    pub pull_policy: PullPolicy,
    pub endpoint: Endpoint,
    pub runtime: RuntimeKind,
    pub default_registry: Option<String>,
    pub log_level: LevelFilter,
    pub log_format: LogFormat,
    pub fetcher: FetcherKind,
    /// The fetchers CombinedImagesFetcher unites (only meaningful for that fetcher).
    pub internal_fetchers: Vec<FetcherKind>,
    /// KIP_IMAGES, trimmed, empties dropped, each a valid reference.
    pub images: Vec<String>,
    pub configmap: ConfigMapRef,
    pub pull_timeout: Duration,
    pub fetch_timeout: Duration,
    /// `None` when disabled.
    pub admin_addr: Option<std::net::SocketAddr>,
    pub shutdown_grace: Duration,
    /// Registry credentials from KIP_DOCKER_CONFIG (or the default files).
    pub keyring: Keyring,
    /// How long a watch is held; `None` when watching is off.
    pub watch_wait: Option<Duration>,
    pub max_disk_usage_percent: f64,
    pub containerd: ContainerdConfig,
}

/// Settings of the native containerd backend.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerdConfig {
    pub namespace: String,
    pub snapshotter: String,
    /// Registries (host or host:port, lower case) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub max_concurrent_downloads: usize,
    /// Extra CA certificates (a PEM bundle read from `KIP_REGISTRY_CA_FILE`, checked to parse).
    pub registry_ca_pem: Option<Vec<u8>>,
    /// `KIP_MAX_DISK_USAGE_PERCENT`, for the room check once a manifest tells the layer sizes.
    pub max_disk_percent: Option<f64>,
    pub transfer: TransferMode,
    /// `KIP_CONTAINERD_HOSTS_DIR`: the node's hosts.toml root, for the Transfer service
    /// (`None`: not passed).
    pub hosts_dir: Option<String>,
}

pub use eg_common::config::{Checker, ConfigError, ConfigErrors, Secret};
use eg_common::config::{parse_admin_addr, parse_log_level, parse_positive, parse_seconds};
pub use eg_common::telemetry::LogFormat;

impl Config {
    /// Validates every field; on failure lists all invalid variables.
    pub fn from_args(args: Args) -> Result<Self, ConfigErrors> {
        let mut c = Checker::default();
        let gateway_url = c.check(
            "KIP_GATEWAY_HOST",
            &args.gateway_host,
            parse_gateway_url(&args.gateway_host),
        );
        let validate_cert = c.check(
            "KIP_VALIDATE_CERT",
            &args.validate_cert,
            parse_bool(&args.validate_cert),
        );
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
        let pull_policy = c.check(
            "KIP_PULL_POLICY",
            &args.pull_policy,
            match args.pull_policy.as_str() {
                "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
                "Always" => Ok(PullPolicy::Always),
                _ => Err("expected IfNotPresent or Always".to_owned()),
            },
        );
        let endpoint = c.check(
            "KIP_CRI_ENDPOINT",
            &args.cri_endpoint,
            parse_endpoint(&args.cri_endpoint),
        );
        let runtime = c.check(
            "KIP_CONTAINER_RUNTIME",
            &args.container_runtime,
            match args.container_runtime.as_str() {
                "auto" => Ok(None),
                "docker" => Ok(Some(RuntimeKind::Docker)),
                "containerd" => Ok(Some(RuntimeKind::Containerd)),
                "cri" => Ok(Some(RuntimeKind::Cri)),
                _ => Err("expected auto, docker, containerd or cri".to_owned()),
            },
        );
        let default_registry = args
            .default_container_registry
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        let default_registry = c
            .check(
                "KIP_DEFAULT_CONTAINER_REGISTRY",
                default_registry.unwrap_or_default(),
                match default_registry {
                    Some(registry) => ImageRef::parse_with_default_registry("x", Some(registry))
                        .map(|_| Some(registry.to_owned()))
                        .map_err(|e| e.to_string()),
                    None => Ok(None),
                },
            )
            .flatten();
        let log_level = c.check(
            "KIP_LOG_LEVEL",
            &args.log_level,
            parse_log_level(&args.log_level),
        );
        let log_format = c.check(
            "KIP_LOG_FORMAT",
            &args.log_format,
            LogFormat::parse(&args.log_format),
        );
        let fetcher = c.check(
            "KIP_IMAGE_FETCHER",
            &args.image_fetcher,
            FetcherKind::parse(&args.image_fetcher).ok_or_else(|| {
                "expected KernelSpecsFetcher, StaticListFetcher, ConfigMapImagesFetcher or \
                 CombinedImagesFetcher"
                    .to_owned()
            }),
        );
        let internal_fetchers = c.check(
            "KIP_INTERNAL_FETCHERS",
            &args.internal_fetchers,
            parse_internal_fetchers(&args.internal_fetchers),
        );
        let images = c.check(
            "KIP_IMAGES",
            &args.images,
            parse_image_list(&args.images, default_registry.as_deref()),
        );
        for (var, value) in [
            ("KIP_CM_NAMESPACE", &args.cm_namespace),
            ("KIP_CM_NAME", &args.cm_name),
            ("KIP_CM_KEY_NAME", &args.cm_key_name),
        ] {
            c.check(
                var,
                value,
                if value.trim().is_empty() {
                    Err("must not be empty".to_owned())
                } else {
                    Ok(())
                },
            );
        }
        let pull_timeout = c.check(
            "KIP_PULL_TIMEOUT",
            &args.pull_timeout,
            parse_positive(&args.pull_timeout).map(Duration::from_secs),
        );
        let fetch_timeout = c.check(
            "KIP_FETCH_TIMEOUT",
            &args.fetch_timeout,
            parse_positive(&args.fetch_timeout).map(Duration::from_secs),
        );
        let admin_addr = c.check(
            "KIP_ADMIN_ADDR",
            &args.admin_addr,
            parse_admin_addr(&args.admin_addr),
        );
        let shutdown_grace = c.check(
            "KIP_SHUTDOWN_GRACE",
            &args.shutdown_grace,
            parse_seconds(&args.shutdown_grace, true),
        );
        let watch_wait = c.check(
            "KIP_WATCH_SECONDS",
            &args.watch_seconds,
            args.watch_seconds
                .trim()
                .parse::<u64>()
                .map(|s| (s > 0).then(|| Duration::from_secs(s)))
                .map_err(|_| {
                    "expected a whole number of seconds (0 turns watching off)".to_owned()
                }),
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
            load_keyring(args.docker_config.as_deref()),
        );
        let containerd_namespace = c.check(
            "KIP_CONTAINERD_NAMESPACE",
            &args.containerd_namespace,
            parse_namespace(&args.containerd_namespace),
        );
        let containerd_snapshotter = c.check(
            "KIP_CONTAINERD_SNAPSHOTTER",
            &args.containerd_snapshotter,
            parse_snapshotter(&args.containerd_snapshotter),
        );
        let insecure_registries = c.check(
            "KIP_INSECURE_REGISTRIES",
            &args.insecure_registries,
            parse_registry_list(&args.insecure_registries),
        );
        let max_concurrent_downloads = c.check(
            "KIP_MAX_CONCURRENT_DOWNLOADS",
            &args.max_concurrent_downloads,
            parse_positive(&args.max_concurrent_downloads).map(|n| n as usize),
        );
        let registry_ca_pem = c.check(
            "KIP_REGISTRY_CA_FILE",
            args.registry_ca_file.as_deref().unwrap_or_default(),
            load_ca_bundle(args.registry_ca_file.as_deref()),
        );
        let containerd_transfer = c.check(
            "KIP_CONTAINERD_TRANSFER",
            &args.containerd_transfer,
            match args
                .containerd_transfer
                .trim()
                .to_ascii_lowercase()
                .as_str()
            {
                "auto" => Ok(TransferMode::Auto),
                "on" => Ok(TransferMode::On),
                "off" => Ok(TransferMode::Off),
                _ => Err("expected auto, on or off".to_owned()),
            },
        );
        let containerd_hosts_dir = c.check(
            "KIP_CONTAINERD_HOSTS_DIR",
            &args.containerd_hosts_dir,
            parse_hosts_dir(&args.containerd_hosts_dir),
        );

        let (
            Some(gateway_url),
            Some(validate_cert),
            Some(interval),
            Some(num_pullers),
            Some(num_retries),
            Some(pull_policy),
            Some(endpoint),
            Some(runtime),
            Some(log_level),
            Some(log_format),
            Some(fetcher),
            Some(internal_fetchers),
            Some(images),
            Some(pull_timeout),
            Some(fetch_timeout),
            Some(admin_addr),
            Some(shutdown_grace),
            Some(keyring),
            Some(watch_wait),
            Some(max_disk_usage_percent),
            Some(containerd_namespace),
            Some(containerd_snapshotter),
            Some(insecure_registries),
            Some(max_concurrent_downloads),
            Some(registry_ca_pem),
            Some(containerd_transfer),
            Some(containerd_hosts_dir),
            true,
        ) = (
            gateway_url,
            validate_cert,
            interval,
            num_pullers,
            num_retries,
            pull_policy,
            endpoint,
            runtime,
            log_level,
            log_format,
            fetcher,
            internal_fetchers,
            images,
            pull_timeout,
            fetch_timeout,
            admin_addr,
            shutdown_grace,
            keyring,
            watch_wait,
            max_disk_usage_percent,
            containerd_namespace,
            containerd_snapshotter,
            insecure_registries,
            max_concurrent_downloads,
            registry_ca_pem,
            containerd_transfer,
            containerd_hosts_dir,
            c.0.is_empty(),
        )
        else {
            return Err(ConfigErrors(c.0));
        };
        let runtime = runtime.unwrap_or_else(|| detect_runtime(&endpoint));
        Ok(Self {
            once: args.once,
            gateway_url,
            auth_token: Secret::non_empty(args.auth_token),
            validate_cert,
            interval,
            num_pullers,
            num_retries,
            pull_policy,
            endpoint,
            runtime,
            default_registry,
            log_level,
            log_format,
            fetcher,
            internal_fetchers,
            images,
            configmap: ConfigMapRef {
                namespace: args.cm_namespace.trim().to_owned(),
                name: args.cm_name.trim().to_owned(),
                key: args.cm_key_name.trim().to_owned(),
            },
            pull_timeout,
            fetch_timeout,
            admin_addr,
            shutdown_grace,
            keyring,
            watch_wait,
            max_disk_usage_percent,
            containerd: ContainerdConfig {
                namespace: containerd_namespace,
                snapshotter: containerd_snapshotter,
                insecure_registries,
                max_concurrent_downloads,
                registry_ca_pem,
                max_disk_percent: Some(max_disk_usage_percent),
                transfer: containerd_transfer,
                hosts_dir: containerd_hosts_dir,
            },
        })
    }

    /// The fetchers actually in use (the internal ones for CombinedImagesFetcher).
    pub fn fetchers_in_use(&self) -> Vec<FetcherKind> {
        match self.fetcher {
            FetcherKind::Combined => self.internal_fetchers.clone(),
            other => vec![other],
        }
    }
}

/// Loads the named credential files, or the default ones that exist.
/// Reads a PEM bundle and checks it holds at least one certificate; unset or empty: none.
fn load_ca_bundle(path: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    let Some(path) = path.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{path}: not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificate in it"));
    }
    Ok(Some(pem))
}

fn load_keyring(paths: Option<&str>) -> Result<Keyring, String> {
    let paths: Vec<PathBuf> = match paths.map(str::trim).filter(|p| !p.is_empty()) {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
        None => [
            std::env::var_os("DOCKER_CONFIG").map(|d| PathBuf::from(d).join("config.json")),
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
        ]
        .into_iter()
        .flatten()
        .filter(|p| p.is_file())
        .collect(),
    };
    Keyring::load(&paths).map_err(|e| e.to_string())
}

fn parse_gateway_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL with a host".to_owned());
    }
    Ok(url)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let s = s.trim();
    if let Some(path) = s.strip_prefix("unix://") {
        if path.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        return Err(
            "unix:// needs an absolute path, e.g. unix:///run/containerd/containerd.sock"
                .to_owned(),
        );
    }
    if s.starts_with('/') {
        return Ok(Endpoint::Unix(PathBuf::from(s)));
    }
    if let Some(rest) = s
        .strip_prefix("tcp://")
        .or_else(|| s.strip_prefix("http://"))
        && !rest.is_empty()
    {
        return Ok(Endpoint::Tcp(format!("http://{rest}")));
    }
    Err("expected unix:///path/to.sock, /path/to.sock or tcp://host:port".to_owned())
}

/// A containerd namespace: letters and digits in groups joined by one `.`, `_` or `-`
/// (containerd's own rule), at most 76 characters.
fn parse_namespace(s: &str) -> Result<String, String> {
    let s = s.trim();
    let groups_ok = s
        .split(['.', '_', '-'])
        .all(|g| !g.is_empty() && g.chars().all(|c| c.is_ascii_alphanumeric()));
    if s.is_empty() || s.len() > 76 || !groups_ok {
        return Err(
            "expected a containerd namespace: letters and digits, groups joined by . _ or - \
             (e.g. k8s.io)"
                .to_owned(),
        );
    }
    Ok(s.to_owned())
}

fn parse_snapshotter(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("expected a snapshotter name such as overlayfs or native".to_owned());
    }
    Ok(s.to_owned())
}

/// An absolute directory on the node, or empty for none. It is not checked to exist: the
/// daemon reads it, in its own filesystem.
fn parse_hosts_dir(s: &str) -> Result<Option<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if !s.starts_with('/') || s.contains([',', ':']) || s.chars().any(char::is_control) {
        return Err(
            "expected one absolute directory (such as /etc/containerd/certs.d), or empty for none"
                .to_owned(),
        );
    }
    Ok(Some(s.to_owned()))
}

/// Comma list of `host` or `host:port`, lower-cased, empties dropped.
fn parse_registry_list(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, port) = match entry.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || entry.starts_with('[') => (h, Some(p)),
            _ => (entry, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
        if host_ok && port_ok {
            out.push(entry.to_ascii_lowercase());
        } else {
            bad.push(format!("{entry:?}"));
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "expected host or host:port entries, bad: {}",
            bad.join(", ")
        ))
    }
}

/// `auto`: docker if the endpoint names docker (but not cri-dockerd, which speaks CRI),
/// containerd if it names containerd, else generic CRI.
///
/// A containerd endpoint is reached through its CRI plugin for now: the containerd backend
/// (`KIP_CONTAINER_RUNTIME=containerd`) is slower than CRI on containerd 1.6 in this project's
/// benchmark (its Transfer path on 2.x is level with CRI or faster), so it is opt-in.
pub fn detect_runtime(endpoint: &Endpoint) -> RuntimeKind {
    let text = endpoint.to_string().to_ascii_lowercase();
    if text.contains("docker") && !text.contains("cri-dockerd") {
        RuntimeKind::Docker
    } else {
        RuntimeKind::Cri
    }
}

fn parse_internal_fetchers(s: &str) -> Result<Vec<FetcherKind>, String> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match FetcherKind::parse(name) {
            Some(FetcherKind::Combined) => {
                return Err("CombinedImagesFetcher cannot contain itself".to_owned());
            }
            Some(kind) if !out.contains(&kind) => out.push(kind),
            Some(_) => {}
            None => {
                return Err(format!(
                    "unknown fetcher {name:?}; expected KernelSpecsFetcher, StaticListFetcher \
                     or ConfigMapImagesFetcher"
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("names no fetcher".to_owned());
    }
    Ok(out)
}

/// Splits a comma list of images: trimmed, empties dropped, every entry checked.
pub fn parse_image_list(s: &str, default_registry: Option<&str>) -> Result<Vec<String>, String> {
    let mut images = Vec::new();
    let mut bad = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match ImageRef::parse_with_default_registry(entry, default_registry) {
            Ok(_) => images.push(entry.to_owned()),
            Err(e) => bad.push(format!("{entry:?}: {e}")),
        }
    }
    if bad.is_empty() {
        Ok(images)
    } else {
        Err(bad.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> Args {
        let mut argv = vec!["kip".to_owned()];
        for (flag, value) in pairs {
            argv.push(format!("--{flag}={value}"));
        }
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_match_upstream() {
        let c = Config::from_args(args(&[])).unwrap();
        assert_eq!(c.gateway_url.as_str(), "http://localhost:8888/");
        assert_eq!(c.auth_token, None);
        assert!(!c.validate_cert);
        assert_eq!(c.interval, Duration::from_secs(300));
        assert_eq!(c.num_pullers, 2);
        assert_eq!(c.num_retries, 3);
        assert_eq!(c.pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(
            c.endpoint,
            Endpoint::Unix("/run/containerd/containerd.sock".into())
        );
        assert_eq!(c.runtime, RuntimeKind::Cri);
        assert_eq!(c.default_registry, None);
        assert_eq!(c.log_level, LevelFilter::INFO);
        assert_eq!(c.fetcher, FetcherKind::KernelSpecs);
        assert_eq!(c.internal_fetchers, vec![FetcherKind::KernelSpecs]);
        assert!(c.images.is_empty());
        assert_eq!(
            c.configmap,
            ConfigMapRef {
                namespace: "enterprise-gateway".into(),
                name: "kernel-images".into(),
                key: "image-names".into()
            }
        );
        assert!(!c.once);
        assert_eq!(c.admin_addr, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        let c = Config::from_args(args(&[("admin-addr", "off")])).unwrap();
        assert_eq!(c.admin_addr, None);
        let err = Config::from_args(args(&[
            ("admin-addr", "localhost"),
            ("shutdown-grace", "x"),
        ]))
        .unwrap_err();
        let vars: Vec<&str> = err.0.iter().map(|e| e.var).collect();
        assert_eq!(vars, vec!["KIP_ADMIN_ADDR", "KIP_SHUTDOWN_GRACE"]);
        assert_eq!(
            c.containerd,
            ContainerdConfig {
                namespace: "k8s.io".into(),
                snapshotter: "overlayfs".into(),
                insecure_registries: vec![],
                max_concurrent_downloads: 8,
                registry_ca_pem: None,
                max_disk_percent: Some(85.0),
                transfer: TransferMode::Auto,
                hosts_dir: Some("/etc/containerd/certs.d".into()),
            }
        );
    }

    #[test]
    fn containerd_settings() {
        let c = Config::from_args(args(&[
            ("containerd-namespace", "kip-test_1.a"),
            ("containerd-snapshotter", "native"),
            ("insecure-registries", " Reg.Local:5000, ,10.0.0.1,myreg "),
            ("max-concurrent-downloads", "3"),
            ("containerd-transfer", " On"),
            ("containerd-hosts-dir", " /etc/kip/certs.d/ "),
        ]))
        .unwrap();
        assert_eq!(c.containerd.transfer, TransferMode::On);
        assert_eq!(c.containerd.hosts_dir.as_deref(), Some("/etc/kip/certs.d/"));
        let none = Config::from_args(args(&[("containerd-hosts-dir", " ")])).unwrap();
        assert_eq!(none.containerd.hosts_dir, None);
        assert_eq!(c.containerd.namespace, "kip-test_1.a");
        assert_eq!(c.containerd.snapshotter, "native");
        assert_eq!(
            c.containerd.insecure_registries,
            vec!["reg.local:5000", "10.0.0.1", "myreg"]
        );
        assert_eq!(c.containerd.max_concurrent_downloads, 3);

        let not_pem = std::env::temp_dir().join(format!("kip-not-pem-{}", std::process::id()));
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let not_pem = not_pem.to_str().unwrap();
        let table: [(&str, &str, &str); 14] = [
            ("containerd-transfer", "yes", "KIP_CONTAINERD_TRANSFER"),
            (
                "containerd-hosts-dir",
                "etc/containerd/certs.d",
                "KIP_CONTAINERD_HOSTS_DIR",
            ),
            (
                "containerd-hosts-dir",
                "/etc/containerd/certs.d,/etc/docker/certs.d",
                "KIP_CONTAINERD_HOSTS_DIR",
            ),
            ("containerd-namespace", "", "KIP_CONTAINERD_NAMESPACE"),
            (
                "registry-ca-file",
                "/nonexistent/ca.pem",
                "KIP_REGISTRY_CA_FILE",
            ),
            ("registry-ca-file", not_pem, "KIP_REGISTRY_CA_FILE"),
            (
                "containerd-namespace",
                "k8s..io",
                "KIP_CONTAINERD_NAMESPACE",
            ),
            ("containerd-namespace", "-k8s", "KIP_CONTAINERD_NAMESPACE"),
            ("containerd-namespace", "a/b", "KIP_CONTAINERD_NAMESPACE"),
            ("containerd-snapshotter", " ", "KIP_CONTAINERD_SNAPSHOTTER"),
            (
                "containerd-snapshotter",
                "over lay",
                "KIP_CONTAINERD_SNAPSHOTTER",
            ),
            (
                "insecure-registries",
                "ok:5000,bad host",
                "KIP_INSECURE_REGISTRIES",
            ),
            (
                "insecure-registries",
                "reg:99999",
                "KIP_INSECURE_REGISTRIES",
            ),
            (
                "max-concurrent-downloads",
                "0",
                "KIP_MAX_CONCURRENT_DOWNLOADS",
            ),
        ];
        for (flag, value, var) in table {
            let err = Config::from_args(args(&[(flag, value)])).unwrap_err();
            assert_eq!(err.0.len(), 1, "{flag}={value:?}: {err}");
            assert_eq!(err.0[0].var, var, "{flag}={value:?}");
        }
    }

    #[test]
    fn every_bad_variable_is_listed() {
        let err = Config::from_args(args(&[
            ("pull-policy", "Bogus"),
            ("num-pullers", "abc"),
            ("num-retries", "0"),
            ("interval", "-5"),
            ("validate-cert", "maybe"),
            ("gateway-host", "localhost:8888"),
            ("cri-endpoint", "npipe://x"),
            ("container-runtime", "podman"),
            ("log-level", "LOUD"),
            ("image-fetcher", "Nope"),
            ("internal-fetchers", "KernelSpecsFetcher,Other"),
            ("images", "ok:1, Bad:1,,"),
            ("default-container-registry", "bad host"),
            ("cm-name", " "),
            ("containerd-namespace", "a b"),
            ("max-concurrent-downloads", "-1"),
            ("containerd-transfer", "maybe"),
        ]))
        .unwrap_err();
        let vars: Vec<&str> = err.0.iter().map(|e| e.var).collect();
        assert_eq!(
            vars,
            vec![
                "KIP_GATEWAY_HOST",
                "KIP_VALIDATE_CERT",
                "KIP_INTERVAL",
                "KIP_NUM_PULLERS",
                "KIP_NUM_RETRIES",
                "KIP_PULL_POLICY",
                "KIP_CRI_ENDPOINT",
                "KIP_CONTAINER_RUNTIME",
                "KIP_DEFAULT_CONTAINER_REGISTRY",
                "KIP_LOG_LEVEL",
                "KIP_IMAGE_FETCHER",
                "KIP_INTERNAL_FETCHERS",
                "KIP_IMAGES",
                "KIP_CM_NAME",
                "KIP_CONTAINERD_NAMESPACE",
                "KIP_MAX_CONCURRENT_DOWNLOADS",
                "KIP_CONTAINERD_TRANSFER",
            ]
        );
        let text = err.to_string();
        assert!(text.contains("KIP_PULL_POLICY=\"Bogus\": expected IfNotPresent or Always"));
        assert!(text.contains("KIP_NUM_PULLERS=\"abc\""));
    }

    #[test]
    fn bad_image_in_static_list_names_the_entry() {
        let err =
            Config::from_args(args(&[("images", "a:1, Bad:1 ,b:2,c@sha256:12")])).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].var, "KIP_IMAGES");
        assert!(
            err.0[0].problem.contains("\"Bad:1\""),
            "{}",
            err.0[0].problem
        );
        assert!(
            err.0[0].problem.contains("\"c@sha256:12\""),
            "{}",
            err.0[0].problem
        );
    }

    #[test]
    fn static_list_is_trimmed_and_empties_dropped() {
        let c = Config::from_args(args(&[("images", " a:1 ,,b:2, ")])).unwrap();
        assert_eq!(c.images, vec!["a:1", "b:2"]);
        let c = Config::from_args(args(&[("images", "")])).unwrap();
        assert!(c.images.is_empty());
    }

    #[test]
    fn log_levels_accept_upstream_names_in_any_case() {
        for (input, want) in [
            ("DEBUG", LevelFilter::DEBUG),
            ("debug", LevelFilter::DEBUG),
            ("Info", LevelFilter::INFO),
            ("WARNING", LevelFilter::WARN),
            ("warning", LevelFilter::WARN),
            ("ERROR", LevelFilter::ERROR),
            ("critical", LevelFilter::ERROR),
            ("10", LevelFilter::DEBUG),
            ("30", LevelFilter::WARN),
            ("50", LevelFilter::ERROR),
        ] {
            let c = Config::from_args(args(&[("log-level", input)])).unwrap();
            assert_eq!(c.log_level, want, "{input}");
        }
    }

    #[test]
    fn runtime_detection_from_endpoint() {
        let cases = [
            ("unix:///var/run/docker.sock", RuntimeKind::Docker),
            ("/var/run/docker.sock", RuntimeKind::Docker),
            // containerd through its CRI plugin; the native backend is opt-in.
            ("unix:///run/containerd/containerd.sock", RuntimeKind::Cri),
            (
                "unix:///run/k3s/containerd/containerd.sock",
                RuntimeKind::Cri,
            ),
            ("unix:///var/run/crio/crio.sock", RuntimeKind::Cri),
            ("unix:///var/run/cri-dockerd.sock", RuntimeKind::Cri),
            ("tcp://127.0.0.1:2375", RuntimeKind::Cri),
        ];
        for (endpoint, want) in cases {
            let c = Config::from_args(args(&[("cri-endpoint", endpoint)])).unwrap();
            assert_eq!(c.runtime, want, "{endpoint}");
        }
        let c = Config::from_args(args(&[("container-runtime", "containerd")])).unwrap();
        assert_eq!(c.runtime, RuntimeKind::Containerd);
        let c = Config::from_args(args(&[
            ("cri-endpoint", "unix:///var/run/docker.sock"),
            ("container-runtime", "cri"),
        ]))
        .unwrap();
        assert_eq!(c.runtime, RuntimeKind::Cri);
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("unix:///a/b.sock"),
            Ok(Endpoint::Unix("/a/b.sock".into()))
        );
        assert_eq!(
            parse_endpoint("/a.sock"),
            Ok(Endpoint::Unix("/a.sock".into()))
        );
        assert_eq!(
            parse_endpoint("tcp://1.2.3.4:5"),
            Ok(Endpoint::Tcp("http://1.2.3.4:5".into()))
        );
        assert!(parse_endpoint("unix://relative.sock").is_err());
        assert!(parse_endpoint("tcp://").is_err());
        assert!(parse_endpoint("").is_err());
    }

    #[test]
    fn combined_fetchers_and_token() {
        let c = Config::from_args(args(&[
            ("image-fetcher", "CombinedImagesFetcher"),
            (
                "internal-fetchers",
                "KernelSpecsFetcher, StaticListFetcher,KernelSpecsFetcher",
            ),
            ("auth-token", "s3cret"),
        ]))
        .unwrap();
        assert_eq!(
            c.fetchers_in_use(),
            vec![FetcherKind::KernelSpecs, FetcherKind::StaticList]
        );
        assert_eq!(c.auth_token.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let err =
            Config::from_args(args(&[("internal-fetchers", "CombinedImagesFetcher")])).unwrap_err();
        assert_eq!(err.0[0].var, "KIP_INTERNAL_FETCHERS");
    }
}
