//! Which runtime the agent pulls through and where it listens, and the settings of the native
//! containerd backend.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use super::Lookup;

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

/// The runtime the agent pulls through.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    pub endpoint: Endpoint,
    pub kind: RuntimeKind,
    pub containerd: ContainerdConfig,
}

/// Reads a PEM bundle (through `lookup`) and checks it holds at least one certificate.
pub(super) fn load_ca_bundle(path: &str, lookup: &dyn Lookup) -> Result<Vec<u8>, String> {
    let path = path.trim();
    let pem = lookup
        .read(Path::new(path))
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{path}: not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificate in it"));
    }
    Ok(pem)
}

pub(super) fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
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
pub(super) fn parse_namespace(s: &str) -> Result<String, String> {
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

pub(super) fn parse_snapshotter(s: &str) -> Result<String, String> {
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
pub(super) fn parse_hosts_dir(s: &str) -> Result<Option<String>, String> {
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
pub(super) fn parse_registry_list(s: &str) -> Result<Vec<String>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
