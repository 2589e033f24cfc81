//! The agent's ports: the types the pull loop and the runtime adapters share (the pull policy,
//! the runtime trait, the tag resolver, runtime errors and outcomes, filesystem usage). Adapters
//! (`runtime`, `registry`) and the loop (`plan`, `puller`, `agent`) depend on this module; it
//! depends on none of them.

use async_trait::async_trait;
use eg_common::ImageRef;

/// Whether to pull images that are already on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    IfNotPresent,
    Always,
}

/// Tells the digest a tag points to in its registry now (a manifest HEAD), for `Always`.
#[async_trait]
pub trait TagResolver: Send + Sync {
    async fn digest(&self, image: &ImageRef) -> Result<String, RuntimeError>;
}

/// What a successful pull reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOutcome {
    /// The runtime's id or digest for the pulled image, when it reports one.
    pub image_id: Option<String>,
    /// Bytes downloaded, when the runtime reports them.
    pub bytes: Option<u64>,
}

/// How a runtime call failed, which decides whether it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image or repository does not exist: not retried within a cycle.
    NotFound,
    /// The registry refused the credentials (or their absence): not retried within a cycle.
    Unauthorized,
    /// The runtime or registry could not be reached.
    Unavailable,
    /// The attempt took longer than its timeout.
    Timeout,
    /// The pull would fill the image filesystem past `KIP_MAX_DISK_USAGE_PERCENT`: skipped,
    /// not retried within a cycle.
    DiskPressure,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Every kind, for metrics that start at zero.
    pub const ALL: [Self; 6] = [
        Self::NotFound,
        Self::Unauthorized,
        Self::Unavailable,
        Self::Timeout,
        Self::DiskPressure,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::DiskPressure => "skipped_disk_pressure",
            Self::Other => "error",
        }
    }

    /// Whether another attempt in the same cycle may succeed.
    pub fn is_retryable(self) -> bool {
        !matches!(
            self,
            Self::NotFound | Self::Unauthorized | Self::DiskPressure
        )
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed runtime call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RuntimeError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RuntimeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// An error whose kind is read from the runtime's message.
    pub fn classified(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            kind: classify(&message),
            message,
        }
    }
}

/// Reads an error kind out of a runtime or registry message (Docker, containerd and CRI-O word
/// them alike, since they share the distribution client code).
pub fn classify(message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if any(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "access denied",
        "denied: ",
        "401 ",
        "403 forbidden",
        "insufficient_scope",
    ]) {
        ErrorKind::Unauthorized
    } else if any(&[
        "not found",
        "manifest unknown",
        "name unknown",
        "does not exist",
        "no matching manifest",
    ]) {
        ErrorKind::NotFound
    } else if any(&["deadline exceeded", "timeout", "timed out"]) {
        ErrorKind::Timeout
    } else if any(&[
        "connection refused",
        "no such host",
        "connection reset",
        "broken pipe",
        "no such file or directory",
        "transport error",
        "unavailable",
        "503 service",
        "502 bad gateway",
        "too many requests",
        "eof",
    ]) {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Other
    }
}

/// Usage of a filesystem, as `df` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub used_bytes: u64,
    /// Used plus available to unprivileged writers.
    pub capacity_bytes: u64,
}

impl FsUsage {
    pub fn percent(&self) -> f64 {
        if self.capacity_bytes == 0 {
            return 0.0;
        }
        self.used_bytes as f64 * 100.0 / self.capacity_bytes as f64
    }

    /// The usage after `bytes` more are written, in percent.
    pub fn percent_after(&self, bytes: u64) -> f64 {
        Self {
            used_bytes: self.used_bytes.saturating_add(bytes),
            capacity_bytes: self.capacity_bytes,
        }
        .percent()
    }

    /// Reads the usage of the filesystem holding `path`.
    pub fn of(path: &std::path::Path) -> std::io::Result<Self> {
        let st = rustix::fs::statvfs(path)?;
        let block = st.f_frsize.max(1);
        let used = st.f_blocks.saturating_sub(st.f_bfree) * block;
        Ok(Self {
            used_bytes: used,
            capacity_bytes: used + st.f_bavail * block,
        })
    }
}

/// The usage of the runtime's image filesystem, when the runtime says where it is and the agent
/// can read it (why not is logged at debug level).
pub async fn image_fs_usage<R: ImageRuntime + ?Sized>(runtime: &R) -> Option<FsUsage> {
    let name = runtime.name();
    match runtime.image_fs_path().await {
        Ok(Some(path)) => FsUsage::of(&path)
            .inspect_err(|error| {
                tracing::debug!(runtime = name, path = %path.display(), %error, "image filesystem not readable; disk check skipped");
            })
            .ok(),
        Ok(None) => None,
        Err(error) => {
            tracing::debug!(runtime = name, %error, "image filesystem unknown; disk check skipped");
            None
        }
    }
}

/// A container runtime the agent pulls through.
#[async_trait]
pub trait ImageRuntime: Send + Sync {
    /// Short name for logs and metrics (`docker`, `containerd`, `cri`).
    fn name(&self) -> &'static str;

    /// The runtime's name and version; proves it answers.
    async fn version(&self) -> Result<String, RuntimeError>;

    /// The images on the node, each as the group of its tag and digest references, so that the
    /// digest a tag points to can be told. Runtimes that cannot group them return one reference
    /// per group (then no tag is known to point to any digest, and `Always` pulls).
    async fn list_image_records(&self) -> Result<Vec<Vec<String>>, RuntimeError>;

    /// Every tag and digest reference of the images on the node, as the runtime words them.
    async fn list_images(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .list_image_records()
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Where the runtime keeps its images (CRI's image filesystem, Docker's root directory), when
    /// it says; the agent checks that filesystem's usage before pulling.
    async fn image_fs_path(&self) -> Result<Option<std::path::PathBuf>, RuntimeError> {
        Ok(None)
    }

    /// Pulls one image. Dropping the future abandons the pull.
    async fn pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_usage_after_a_pull() {
        let gib = 1u64 << 30;
        let table = [
            // used, capacity, added, percent after
            (0, 0, gib, 0.0),
            (50 * gib, 100 * gib, 0, 50.0),
            (80 * gib, 100 * gib, 5 * gib, 85.0),
            (80 * gib, 100 * gib, 6 * gib, 86.0),
            (100 * gib, 100 * gib, gib, 101.0),
            (u64::MAX - 1, u64::MAX, 10, 100.0),
        ];
        for (used, capacity, added, want) in table {
            let usage = FsUsage {
                used_bytes: used,
                capacity_bytes: capacity,
            };
            let got = usage.percent_after(added);
            assert!(
                (got - want).abs() < 1e-9,
                "{used}/{capacity}+{added}: {got}"
            );
        }
    }

    #[test]
    fn classifies_runtime_messages() {
        use ErrorKind::*;
        let table = [
            // Docker Engine
            (
                "manifest for 127.0.0.1:5000/x:1 not found: manifest unknown: manifest unknown",
                NotFound,
            ),
            (
                "pull access denied for nosuch, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
                Unauthorized,
            ),
            (
                "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host",
                Unavailable,
            ),
            (
                "Head \"https://r.example/v2/x/manifests/1\": no basic auth credentials",
                Unauthorized,
            ),
            ("unauthorized: authentication required", Unauthorized),
            // containerd CRI
            (
                "failed to pull and unpack image \"127.0.0.1:5000/x:1\": failed to resolve reference \"127.0.0.1:5000/x:1\": 127.0.0.1:5000/x:1: not found",
                NotFound,
            ),
            (
                "failed to resolve reference: pulling from host r: 401 Unauthorized",
                Unauthorized,
            ),
            (
                "failed to do request: Head \"http://127.0.0.1:1/v2/x/manifests/1\": dial tcp 127.0.0.1:1: connect: connection refused",
                Unavailable,
            ),
            ("context deadline exceeded", Timeout),
            ("transport error", Unavailable),
            ("something odd", Other),
        ];
        for (message, want) in table {
            assert_eq!(classify(message), want, "{message}");
        }
        assert!(!NotFound.is_retryable());
        assert!(!Unauthorized.is_retryable());
        assert!(Unavailable.is_retryable());
        assert!(Timeout.is_retryable());
        assert!(Other.is_retryable());
    }
}
