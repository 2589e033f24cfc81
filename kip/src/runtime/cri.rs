//! CRI ImageService over gRPC (containerd's CRI plugin, CRI-O, cri-dockerd): what `crictl`
//! does, without the binary.

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;
use eg_common::ImageRef;
use k8s_cri::v1::{
    AuthConfig, ImageFsInfoRequest, ImageSpec, ListImagesRequest, PullImageRequest, VersionRequest,
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
};
use tonic::{Status, transport::Channel};

use crate::ports::{ErrorKind, ImageRuntime, PullOutcome, RuntimeError};
use crate::{config::Endpoint, credentials::Keyring};

/// gRPC messages from ListImages can be large on busy nodes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Pulls through the CRI ImageService at the configured socket.
pub struct CriRuntime {
    channel: Channel,
    keyring: Arc<Keyring>,
}

impl CriRuntime {
    /// Builds a lazily connecting channel: the socket is dialled on first use and re-dialled after
    /// failures, so the agent can start before the runtime.
    pub fn connect(endpoint: &Endpoint, keyring: Arc<Keyring>) -> Result<Self, RuntimeError> {
        let channel = super::grpc_channel(endpoint, "CRI")?;
        Ok(Self { channel, keyring })
    }

    fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn cri_error(status: Status) -> RuntimeError {
    let kind = super::grpc_kind(&status);
    // containerd reports registry failures as Unknown with the registry's words; read them.
    let kind = match (kind, super::classify(status.message())) {
        (
            ErrorKind::Other | ErrorKind::Unavailable,
            k @ (ErrorKind::NotFound | ErrorKind::Unauthorized),
        ) => k,
        (k, _) => k,
    };
    RuntimeError::new(kind, status.message().to_owned())
}

#[async_trait]
impl ImageRuntime for CriRuntime {
    fn name(&self) -> &'static str {
        "cri"
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        let v = RuntimeServiceClient::new(self.channel.clone())
            .version(VersionRequest {
                version: "v1".to_owned(),
            })
            .await
            .map_err(cri_error)?
            .into_inner();
        Ok(format!(
            "{} {} (CRI {})",
            v.runtime_name, v.runtime_version, v.runtime_api_version
        ))
    }

    async fn list_image_records(&self) -> Result<Vec<Vec<String>>, RuntimeError> {
        let images = self
            .images()
            .list_images(ListImagesRequest { filter: None })
            .await
            .map_err(cri_error)?
            .into_inner()
            .images;
        Ok(images
            .into_iter()
            .map(|i| i.repo_tags.into_iter().chain(i.repo_digests).collect())
            .collect())
    }

    async fn image_fs_path(&self) -> Result<Option<PathBuf>, RuntimeError> {
        let info = self
            .images()
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .map_err(cri_error)?
            .into_inner();
        Ok(info
            .image_filesystems
            .into_iter()
            .filter_map(|fs| fs.fs_id)
            .map(|id| PathBuf::from(id.mountpoint))
            .find(|p| !p.as_os_str().is_empty()))
    }

    async fn pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
        let reply = self
            .images()
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                auth: self.keyring.lookup(image).map(|c| AuthConfig {
                    username: c.username.clone(),
                    password: c.password.clone(),
                    identity_token: c.identity_token.clone().unwrap_or_default(),
                    // Left empty: containerd then uses the credential for the hosts this pull
                    // contacts (for Docker Hub, registry-1.docker.io rather than docker.io);
                    // a bare host:port here is rejected as an invalid URL.
                    server_address: String::new(),
                    ..Default::default()
                }),
                sandbox_config: None,
            })
            .await
            .map_err(cri_error)?
            .into_inner();
        Ok(PullOutcome {
            image_id: Some(reply.image_ref).filter(|r| !r.is_empty()),
            bytes: None,
        })
    }
}
