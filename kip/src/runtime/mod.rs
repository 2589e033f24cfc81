//! Container runtimes behind one trait: presence listing and pulling.
//!
//! The runtime is chosen once at start ([`connect`]); the pull loop knows only [`ImageRuntime`].

mod containerd;
mod cri;
mod docker;

use std::sync::Arc;

use async_trait::async_trait;
use eg_common::ImageRef;

pub use self::{containerd::ContainerdRuntime, cri::CriRuntime, docker::DockerRuntime};
pub use crate::ports::{
    ErrorKind, FsUsage, ImageRuntime, PullOutcome, RuntimeError, TagResolver, classify,
    image_fs_usage,
};
use crate::{
    config::{ContainerdConfig, Endpoint, RuntimeKind},
    credentials::Keyring,
};

/// The error kind of a runtime's gRPC status (containerd's and CRI's alike): from its code, else
/// from its message.
pub(crate) fn grpc_kind(status: &tonic::Status) -> ErrorKind {
    use tonic::Code;
    match status.code() {
        Code::NotFound => ErrorKind::NotFound,
        Code::Unauthenticated | Code::PermissionDenied => ErrorKind::Unauthorized,
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::Unavailable => ErrorKind::Unavailable,
        _ => classify(status.message()),
    }
}

/// A lazily connecting gRPC channel to a runtime socket: dialled on first use and re-dialled after
/// failures, so the agent can start before its runtime. `what` names the API in errors.
pub(crate) fn grpc_channel(
    endpoint: &Endpoint,
    what: &str,
) -> Result<tonic::transport::Channel, RuntimeError> {
    use tonic::transport::{Endpoint as TonicEndpoint, Uri};
    let invalid = |e: tonic::transport::Error| {
        RuntimeError::new(ErrorKind::Other, format!("{what} endpoint {endpoint}: {e}"))
    };
    Ok(match endpoint {
        Endpoint::Unix(path) => {
            let path = path.clone();
            TonicEndpoint::try_from("http://[::1]:0")
                .map_err(invalid)?
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
        }
        Endpoint::Tcp(url) => TonicEndpoint::try_from(url.clone())
            .map_err(invalid)?
            .connect_lazy(),
    })
}

/// Builds the runtime client for the configured kind. Nothing is dialled until the first call,
/// so an agent can start before its runtime.
pub fn connect(
    kind: RuntimeKind,
    endpoint: &Endpoint,
    keyring: Arc<Keyring>,
    containerd: &ContainerdConfig,
) -> Result<Arc<dyn ImageRuntime>, RuntimeError> {
    Ok(match kind {
        RuntimeKind::Docker => Arc::new(DockerRuntime::connect(endpoint, keyring)?),
        RuntimeKind::Containerd => {
            Arc::new(ContainerdRuntime::connect(endpoint, containerd, keyring)?)
        }
        RuntimeKind::Cri => Arc::new(CriRuntime::connect(endpoint, keyring)?),
    })
}

/// Resolves tags with a manifest HEAD against their registry (plain HTTP for loopback and the
/// insecure registries), for `KIP_PULL_POLICY=Always`.
struct RegistryTagResolver(crate::registry::Registry);

#[async_trait]
impl TagResolver for RegistryTagResolver {
    async fn digest(&self, image: &ImageRef) -> Result<String, RuntimeError> {
        self.0.head_digest(image).await
    }
}

/// The resolver `Always` uses to pull only tags that moved.
pub fn tag_resolver(
    config: &ContainerdConfig,
    keyring: Arc<Keyring>,
) -> Result<Arc<dyn TagResolver>, RuntimeError> {
    Ok(Arc::new(RegistryTagResolver(
        crate::registry::Registry::new(
            config.insecure_registries.clone(),
            config.registry_ca_pem.as_deref(),
            keyring,
        )?,
    )))
}
