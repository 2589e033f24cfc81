//! The native containerd backend: pulls straight into containerd's content store over its gRPC
//! API, unpacks into the snapshotter kubelet uses and registers the image where CRI looks.
//!
//! A pull runs under a lease (so containerd's GC leaves half-done work alone and collects it if
//! the agent dies): resolve against the registry, fetch config and layers concurrently (a
//! semaphore shared by all images bounds the downloads), unpack each layer as soon as it and the
//! ones below it are in, label everything for GC, create or update the image record, drop the
//! lease. Interrupted downloads stay as ingests and are resumed with HTTP Range next time.
//!
//! Where the daemon offers the Transfer service (containerd 1.7+/2.x) and
//! `KIP_CONTAINERD_TRANSFER` allows it, a pull is instead one Transfer call: the daemon fetches
//! and unpacks itself ([`transfer`]), reading the node's registry host directory
//! (`KIP_CONTAINERD_HOSTS_DIR`) for mirrors and CAs. Which path is used is decided once, on the
//! first pull.
//!
//! - [`ctx`]: what every call of one pull shares, and the leases.
//! - [`native`]: the native pull; [`content`] (resumable blob writes) and [`unpack`] serve it.
//! - [`transfer`]: the Transfer-service pull.
//! - [`room`]: whether a pull fits on the image filesystem.
//! - [`images`]: image records and the listing of usable images.

mod content;
mod ctx;
mod images;
mod native;
mod room;
mod transfer;
mod unpack;

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use containerd_client::services::v1::{
    PluginsRequest, introspection_client::IntrospectionClient, version_client::VersionClient,
};
use eg_common::ImageRef;
use tokio::sync::Semaphore;
use tonic::{Status, transport::Channel};
use tracing::{info, warn};

use self::ctx::Ctx;
use crate::{
    config::{ContainerdConfig, Endpoint, TransferMode},
    credentials::Keyring,
    ports::{ImageRuntime, PullOutcome, RuntimeError},
    registry::Registry,
};

/// gRPC messages (image and content lists) can be large on busy nodes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Label CRI puts on the images it manages.
const CRI_IMAGE_LABEL: &str = "io.cri-containerd.image";
/// Whether `KIP_CONTAINERD_TRANSFER=auto` pulls through the Transfer service where the daemon
/// offers it: only if that is the faster path in `bench/pull-bench.sh` (see bench/RESULTS.md).
const AUTO_USES_TRANSFER: bool = true;

/// Maps a containerd gRPC status to an error kind, naming what failed.
pub(crate) fn grpc_error(what: &str, status: Status) -> RuntimeError {
    let kind = super::grpc_kind(&status);
    RuntimeError::new(kind, format!("containerd: {what}: {}", status.message()))
}

/// Pulls natively through containerd's content, snapshots, diff, images and leases services.
pub struct ContainerdRuntime {
    channel: Channel,
    config: ContainerdConfig,
    registry: Registry,
    /// Blob downloads in flight, across all images.
    downloads: Arc<Semaphore>,
    /// One lock per blob being written: images sharing a layer write it once, and the others
    /// wait for it (holding no download slot) instead of colliding on containerd's ingest lock.
    blob_turns: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    keyring: Arc<Keyring>,
    /// Whether pulls go through the Transfer service; decided on the first pull.
    use_transfer: tokio::sync::OnceCell<bool>,
    /// The snapshotter's root, asked of containerd once.
    image_fs: tokio::sync::OnceCell<Option<std::path::PathBuf>>,
}

impl ContainerdRuntime {
    /// Builds a lazily connecting channel to containerd's socket.
    pub fn connect(
        endpoint: &Endpoint,
        config: &ContainerdConfig,
        keyring: Arc<Keyring>,
    ) -> Result<Self, RuntimeError> {
        let channel = super::grpc_channel(endpoint, "containerd")?;
        Ok(Self {
            channel,
            registry: Registry::new(
                config.insecure_registries.clone(),
                config.registry_ca_pem.as_deref(),
                keyring.clone(),
            )?,
            downloads: Arc::new(Semaphore::new(config.max_concurrent_downloads)),
            blob_turns: Arc::default(),
            keyring,
            use_transfer: tokio::sync::OnceCell::new(),
            image_fs: tokio::sync::OnceCell::new(),
            config: config.clone(),
        })
    }

    fn ctx(&self, lease: Option<String>) -> Ctx {
        Ctx {
            channel: self.channel.clone(),
            namespace: self.config.namespace.clone(),
            snapshotter: self.config.snapshotter.clone(),
            lease,
        }
    }

    /// Whether pulls go through the Transfer service: asked of the daemon once (a failed
    /// question is asked again on the next pull), then kept for the agent's life.
    async fn use_transfer(&self) -> Result<bool, RuntimeError> {
        let mode = self.config.transfer;
        if mode == TransferMode::Off {
            return Ok(false);
        }
        self.use_transfer
            .get_or_try_init(|| async {
                let offered = transfer::offered(&self.ctx(None)).await?;
                let use_it = offered && (mode == TransferMode::On || AUTO_USES_TRANSFER);
                let path = if use_it { "transfer" } else { "native" };
                if mode == TransferMode::On && !offered {
                    warn!(
                        mode = mode.as_str(),
                        path,
                        "KIP_CONTAINERD_TRANSFER=on, but this containerd offers no Transfer \
                         service (containerd 1.6 or older): pulling natively"
                    );
                } else {
                    info!(
                        mode = mode.as_str(),
                        offered, path, "containerd pull path chosen"
                    );
                }
                Ok::<_, RuntimeError>(use_it)
            })
            .await
            .copied()
    }
}

#[async_trait]
impl ImageRuntime for ContainerdRuntime {
    fn name(&self) -> &'static str {
        "containerd"
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        let v = VersionClient::new(self.channel.clone())
            .version(())
            .await
            .map_err(|s| grpc_error("version", s))?
            .into_inner();
        Ok(format!(
            "containerd {} (namespace {}, snapshotter {})",
            v.version, self.config.namespace, self.config.snapshotter
        ))
    }

    /// Each usable image as its name and, for a tag, `repository@target-digest`: the digest a
    /// registry's manifest HEAD answers for the tag when it has not moved.
    async fn list_image_records(&self) -> Result<Vec<Vec<String>>, RuntimeError> {
        self.image_records().await
    }

    /// The configured snapshotter's root directory, as containerd's introspection exports it:
    /// where unpacked layers (most of an image's footprint) are written. Asked once: it is fixed
    /// by the daemon's configuration.
    async fn image_fs_path(&self) -> Result<Option<std::path::PathBuf>, RuntimeError> {
        self.image_fs
            .get_or_try_init(|| async {
                let plugins = IntrospectionClient::new(self.channel.clone())
                    .plugins(PluginsRequest {
                        filters: vec![format!(
                            "type==io.containerd.snapshotter.v1,id=={}",
                            self.config.snapshotter
                        )],
                    })
                    .await
                    .map_err(|s| grpc_error("introspection plugins", s))?
                    .into_inner()
                    .plugins;
                Ok(plugins
                    .into_iter()
                    .find_map(|p| p.exports.get("root").cloned())
                    .filter(|root| !root.is_empty())
                    .map(std::path::PathBuf::from))
            })
            .await
            .cloned()
    }

    async fn pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
        // The Transfer service trusts only containerd's own CA configuration (hosts.toml): with
        // KIP_REGISTRY_CA_FILE set, pulls take the native path, which trusts its CAs.
        if self.config.registry_ca_pem.is_none() && self.use_transfer().await? {
            self.transfer_pull(image).await
        } else {
            self.native_pull(image).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ErrorKind;

    #[test]
    fn grpc_errors_name_what_failed() {
        let e = grpc_error("create lease", Status::unavailable("connection refused"));
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert_eq!(e.message, "containerd: create lease: connection refused");
        let e = grpc_error("x", Status::not_found("content sha256:1: not found"));
        assert_eq!(e.kind, ErrorKind::NotFound);
        let e = grpc_error("x", Status::unknown("failed size validation: 0 != 827"));
        assert_eq!(e.kind, ErrorKind::Other);
    }
}
