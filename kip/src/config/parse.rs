//! Every variable checked, concern by concern: each settings struct parsed from the arguments
//! with the shared [`Checker`], which records every problem before any concern gives up.

use std::time::Duration;

use eg_common::{
    ImageRef,
    config::{
        Checker, Secret, parse_admin_addr, parse_bool, parse_log_level, parse_positive,
        parse_seconds,
    },
};

use super::{
    AdminConfig, Args, ConfigMapRef, ContainerdConfig, FetcherKind, LogFormat, LoggingConfig,
    Lookup, PullConfig, PullPolicy, RuntimeConfig, RuntimeKind, SourceConfig, TransferMode,
    detect_runtime, parse_image_list,
    pull::load_keyring,
    runtime::{
        load_ca_bundle, parse_endpoint, parse_hosts_dir, parse_namespace, parse_registry_list,
        parse_snapshotter,
    },
    source::{parse_gateway_url, parse_internal_fetchers},
};

/// A whole number of seconds greater than 0.
fn positive_seconds(raw: &str) -> Result<Duration, String> {
    parse_positive(raw).map(Duration::from_secs)
}

/// A whole number greater than 0, as a count.
fn count(raw: &str) -> Result<usize, String> {
    parse_positive(raw).map(|n| n as usize)
}

/// Anything but blank.
fn not_empty(raw: &str) -> Result<String, String> {
    match raw.trim() {
        "" => Err("must not be empty".to_owned()),
        s => Ok(s.to_owned()),
    }
}

/// `0` (watching off) or the seconds a watch is held.
fn watch_seconds(raw: &str) -> Result<Option<Duration>, String> {
    raw.trim()
        .parse::<u64>()
        .map(|s| (s > 0).then(|| Duration::from_secs(s)))
        .map_err(|_| "expected a whole number of seconds (0 turns watching off)".to_owned())
}

/// A registry for names that carry none.
fn default_registry(raw: &str) -> Result<String, String> {
    let registry = raw.trim();
    ImageRef::parse_with_default_registry("x", Some(registry))
        .map(|_| registry.to_owned())
        .map_err(|e| e.to_string())
}

fn pull_policy(raw: &str) -> Result<PullPolicy, String> {
    match raw {
        "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
        "Always" => Ok(PullPolicy::Always),
        _ => Err("expected IfNotPresent or Always".to_owned()),
    }
}

fn percentage(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err("expected a percentage greater than 0, at most 100".to_owned()),
    }
}

/// `auto` (`None`: told from the endpoint) or the runtime's name.
fn runtime_kind(raw: &str) -> Result<Option<RuntimeKind>, String> {
    match raw {
        "auto" => Ok(None),
        "docker" => Ok(Some(RuntimeKind::Docker)),
        "containerd" => Ok(Some(RuntimeKind::Containerd)),
        "cri" => Ok(Some(RuntimeKind::Cri)),
        _ => Err("expected auto, docker, containerd or cri".to_owned()),
    }
}

fn transfer_mode(raw: &str) -> Result<TransferMode, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(TransferMode::Auto),
        "on" => Ok(TransferMode::On),
        "off" => Ok(TransferMode::Off),
        _ => Err("expected auto, on or off".to_owned()),
    }
}

fn fetcher_kind(raw: &str) -> Result<FetcherKind, String> {
    FetcherKind::parse(raw).ok_or_else(|| {
        "expected KernelSpecsFetcher, StaticListFetcher, ConfigMapImagesFetcher or \
         CombinedImagesFetcher"
            .to_owned()
    })
}

impl SourceConfig {
    /// Checks the source settings, recording every problem in `c`.
    pub fn parse(args: &Args, c: &mut Checker) -> Option<Self> {
        let gateway_url = c.read(&args.gateway_host, parse_gateway_url);
        let validate_cert = c.read(&args.validate_cert, parse_bool);
        let registry = args.default_container_registry.as_ref();
        let registry = c.read_set(registry, default_registry);
        let fetcher = c.read(&args.image_fetcher, fetcher_kind);
        let internal = c.read(&args.internal_fetchers, parse_internal_fetchers);
        let in_registry = registry.clone().flatten();
        let images = c.read(&args.images, |raw| {
            parse_image_list(raw, in_registry.as_deref())
        });
        let cm_namespace = c.read(&args.cm_namespace, not_empty);
        let cm_name = c.read(&args.cm_name, not_empty);
        let cm_key = c.read(&args.cm_key_name, not_empty);
        let fetch_timeout = c.read(&args.fetch_timeout, positive_seconds);
        let watch_wait = c.read(&args.watch_seconds, watch_seconds);
        Some(Self {
            gateway_url: gateway_url?,
            auth_token: Secret::non_empty(args.auth_token.as_ref().map(|t| t.raw.clone())),
            validate_cert: validate_cert?,
            default_registry: registry?,
            fetcher: fetcher?,
            internal_fetchers: internal?,
            images: images?,
            configmap: ConfigMapRef {
                namespace: cm_namespace?,
                name: cm_name?,
                key: cm_key?,
            },
            fetch_timeout: fetch_timeout?,
            watch_wait: watch_wait?,
        })
    }
}

impl PullConfig {
    /// Checks the pull settings, recording every problem in `c`; credential files are read
    /// through `lookup`.
    pub fn parse(args: &Args, c: &mut Checker, lookup: &dyn Lookup) -> Option<Self> {
        let interval = c.read(&args.interval, positive_seconds);
        let num_pullers = c.read(&args.num_pullers, count);
        let num_retries = c.read(&args.num_retries, count);
        let policy = c.read(&args.pull_policy, pull_policy);
        let timeout = c.read(&args.pull_timeout, positive_seconds);
        let max_disk_usage_percent = c.read(&args.max_disk_usage_percent, percentage);
        let files = args.docker_config.as_ref().map(|f| f.raw.as_str());
        let keyring = c.check(
            "KIP_DOCKER_CONFIG",
            files.unwrap_or_default(),
            load_keyring(files, lookup),
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

impl RuntimeConfig {
    /// Checks the runtime settings, recording every problem in `c`; the CA bundle is read
    /// through `lookup`. The containerd backend's disk guard is left unset: it is the pull's,
    /// which [`Config`](super::Config) hands over.
    pub fn parse(args: &Args, c: &mut Checker, lookup: &dyn Lookup) -> Option<Self> {
        let endpoint = c.read(&args.cri_endpoint, parse_endpoint);
        let kind = c.read(&args.container_runtime, runtime_kind);
        let containerd = ContainerdConfig::parse(args, c, lookup);
        let endpoint = endpoint?;
        Some(Self {
            kind: kind?.unwrap_or_else(|| detect_runtime(&endpoint)),
            endpoint,
            containerd: containerd?,
        })
    }
}

impl ContainerdConfig {
    fn parse(args: &Args, c: &mut Checker, lookup: &dyn Lookup) -> Option<Self> {
        let namespace = c.read(&args.containerd_namespace, parse_namespace);
        let snapshotter = c.read(&args.containerd_snapshotter, parse_snapshotter);
        let insecure_registries = c.read(&args.insecure_registries, parse_registry_list);
        let max_concurrent_downloads = c.read(&args.max_concurrent_downloads, count);
        let ca_file = args.registry_ca_file.as_ref();
        let registry_ca_pem = c.read_set(ca_file, |path| load_ca_bundle(path, lookup));
        let transfer = c.read(&args.containerd_transfer, transfer_mode);
        let hosts_dir = c.read(&args.containerd_hosts_dir, parse_hosts_dir);
        Some(Self {
            namespace: namespace?,
            snapshotter: snapshotter?,
            insecure_registries: insecure_registries?,
            max_concurrent_downloads: max_concurrent_downloads?,
            registry_ca_pem: registry_ca_pem?,
            max_disk_percent: None,
            transfer: transfer?,
            hosts_dir: hosts_dir?,
        })
    }
}

impl AdminConfig {
    /// Checks the admin settings, recording every problem in `c`.
    pub fn parse(args: &Args, c: &mut Checker) -> Option<Self> {
        let addr = c.read(&args.admin_addr, parse_admin_addr);
        let grace = c.read(&args.shutdown_grace, |raw| parse_seconds(raw, true));
        Some(Self {
            addr: addr?,
            shutdown_grace: grace?,
        })
    }
}

impl LoggingConfig {
    /// Checks the logging settings, recording every problem in `c`.
    pub fn parse(args: &Args, c: &mut Checker) -> Option<Self> {
        let level = c.read(&args.log_level, parse_log_level);
        let format = c.read(&args.log_format, LogFormat::parse);
        Some(Self {
            level: level?,
            format: format?,
        })
    }
}
