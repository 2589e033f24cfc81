//! Docker Engine API (through bollard).

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::{
    ClientVersion, Docker,
    query_parameters::{CreateImageOptionsBuilder, ListImagesOptionsBuilder},
};
use futures_util::StreamExt;
use kip_shared::ImageRef;
use tracing::debug;

use super::{ErrorKind, ImageRuntime, PullOutcome, RuntimeError};
use crate::config::Endpoint;

/// The API version every supported Docker Engine (20.10 and later) speaks. Pinned rather than
/// negotiated so the client needs no round trip before the daemon is up.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};
/// bollard's own request timeout; pulls are bounded by the agent's per-attempt timeout instead.
const REQUEST_TIMEOUT_SECS: u64 = 24 * 3600;

/// Pulls through the Docker Engine API at the configured socket.
pub struct DockerRuntime {
    client: Docker,
}

impl DockerRuntime {
    pub fn connect(endpoint: &Endpoint) -> Result<Self, RuntimeError> {
        let client = match endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                REQUEST_TIMEOUT_SECS,
                &API_VERSION,
            ),
            Endpoint::Tcp(url) => {
                Docker::connect_with_http(url, REQUEST_TIMEOUT_SECS, &API_VERSION)
            }
        }
        .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("docker client: {e}")))?;
        Ok(Self { client })
    }
}

fn docker_error(e: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => {
            let kind = match status_code {
                404 => ErrorKind::NotFound,
                401 | 403 => ErrorKind::Unauthorized,
                _ => super::classify(&message),
            };
            RuntimeError::new(kind, message)
        }
        E::RequestTimeoutError => RuntimeError::new(ErrorKind::Timeout, "docker request timed out"),
        E::DockerStreamError { error } => RuntimeError::classified(error),
        E::IOError { err } => RuntimeError::new(ErrorKind::Unavailable, format!("docker: {err}")),
        E::HyperLegacyError { err } => {
            RuntimeError::new(ErrorKind::Unavailable, format!("docker: {err:?}"))
        }
        E::SocketNotFoundError(path) => RuntimeError::new(
            ErrorKind::Unavailable,
            format!("docker socket not found: {path}"),
        ),
        other => RuntimeError::classified(format!("docker: {other}")),
    }
}

#[async_trait]
impl ImageRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        let v = self.client.version().await.map_err(docker_error)?;
        Ok(format!(
            "docker {} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }

    async fn list_images(&self) -> Result<Vec<String>, RuntimeError> {
        let images = self
            .client
            .list_images(Some(ListImagesOptionsBuilder::default().all(false).build()))
            .await
            .map_err(docker_error)?;
        Ok(images
            .into_iter()
            .flat_map(|i| i.repo_tags.into_iter().chain(i.repo_digests))
            .collect())
    }

    async fn pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
        // The tag is always set: an empty tag would pull every tag of the repository. Docker
        // accepts a digest in its place.
        let options = CreateImageOptionsBuilder::default()
            .from_image(&image.name())
            .tag(image.tag_or_digest())
            .build();
        let mut stream = self.client.create_image(Some(options), None, None);
        let mut layer_sizes: HashMap<String, u64> = HashMap::new();
        let mut image_id = None;
        // Read the progress stream to its end: the pull is complete only then.
        while let Some(item) = stream.next().await {
            let info = item.map_err(docker_error)?;
            if let Some(detail) = info.error_detail {
                return Err(RuntimeError::classified(
                    detail.message.unwrap_or_else(|| "pull failed".to_owned()),
                ));
            }
            let status = info.status.unwrap_or_default();
            if status == "Downloading"
                && let (Some(id), Some(total)) =
                    (info.id.as_ref(), info.progress_detail.and_then(|p| p.total))
            {
                layer_sizes.insert(id.clone(), u64::try_from(total).unwrap_or(0));
            }
            if let Some(digest) = status.strip_prefix("Digest: ") {
                image_id = Some(digest.to_owned());
            }
            debug!(image = %image, id = info.id.as_deref().unwrap_or(""), status, "docker pull progress");
        }
        Ok(PullOutcome {
            image_id,
            bytes: Some(layer_sizes.values().sum()),
        })
    }
}
