//! Image records: the listing of usable images (complete content, unpacked for our snapshotter)
//! and the checks behind it.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use containerd_client::services::v1::{
    AbortRequest, GetImageRequest, ListContentRequest, ListImagesRequest, ListStatusesRequest,
    images_client::ImagesClient,
};
use eg_common::ImageRef;
use futures_util::StreamExt;
use tracing::{debug, warn};

use super::{
    ContainerdRuntime, Ctx, MAX_MESSAGE_BYTES,
    ctx::unix_now,
    grpc_error,
    unpack::{ImageConfig, chain_ids, snapshot_exists},
};
use crate::{
    ports::{ErrorKind, RuntimeError},
    registry::{
        DOCKER_LIST, Descriptor, Index, Manifest, OCI_INDEX, node_platform, select_platform,
    },
};

/// Ingests of ours untouched this long are aborted (younger ones are resumed by the next pull).
const STALE_INGEST: Duration = Duration::from_secs(24 * 3600);

impl ContainerdRuntime {
    /// Each usable image as its name and, for a tag, `repository@target-digest`: the digest a
    /// registry's manifest HEAD answers for the tag when it has not moved.
    pub(super) async fn image_records(&self) -> Result<Vec<Vec<String>>, RuntimeError> {
        let ctx = self.ctx(None);
        self.abort_stale_ingests(&ctx).await;
        let images = ImagesClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .list(ctx.request(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(|s| grpc_error("list images", s))?
            .into_inner()
            .images;
        let have: HashSet<String> = ctx
            .content()
            .list(ctx.request(ListContentRequest { filters: vec![] }))
            .await
            .map_err(|s| grpc_error("list content", s))?
            .into_inner()
            .map(|r| r.map(|r| r.info.into_iter().map(|i| i.digest).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|s| grpc_error("list content", s))?
            .into_iter()
            .flatten()
            .collect();
        let mut usable_by_target: HashMap<String, bool> = HashMap::new();
        let mut out = Vec::new();
        for image in images {
            // CRI also names images by their config digest; those are no references.
            if image.name.starts_with("sha256:") {
                continue;
            }
            let Some(target) = image.target else { continue };
            let usable = match usable_by_target.get(&target.digest) {
                Some(u) => *u,
                None => {
                    let desc = Descriptor {
                        media_type: target.media_type.clone(),
                        digest: target.digest.clone(),
                        size: target.size,
                        platform: None,
                    };
                    // One record that cannot be read (deleted meanwhile, content missing on
                    // disk) counts as not present; it never fails the whole listing.
                    let u = match self.is_usable(&ctx, &desc, &have).await {
                        Ok(u) => u,
                        Err(error) => {
                            warn!(image = %image.name, %error, "image record unreadable; counted as not present");
                            false
                        }
                    };
                    usable_by_target.insert(target.digest.clone(), u);
                    u
                }
            };
            if usable {
                let mut record = vec![image.name.clone()];
                if let Ok(r) = ImageRef::parse(&image.name)
                    && r.digest().is_none()
                {
                    record.push(format!("{}@{}", r.name(), target.digest));
                }
                out.push(record);
            } else {
                debug!(image = %image.name, "present in containerd but incomplete or not unpacked");
            }
        }
        Ok(out)
    }

    /// The config digest of the image record `image`, if its node manifest is unpacked for our
    /// snapshotter (content read from the store, so it must be there).
    pub(super) async fn unpacked_config(
        &self,
        ctx: &Ctx,
        image: &ImageRef,
    ) -> Result<Option<String>, RuntimeError> {
        let what = format!("image record {image}");
        let record = ImagesClient::new(self.channel.clone())
            .get(ctx.request(GetImageRequest {
                name: image.to_string(),
            }))
            .await
            .map_err(|s| grpc_error(&what, s))?
            .into_inner()
            .image
            .and_then(|i| i.target)
            .ok_or_else(|| RuntimeError::new(ErrorKind::Other, format!("{what}: no target")))?;
        let manifest_digest = match record.media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let index: Index = serde_json::from_slice(&ctx.read(&record.digest).await?)
                    .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("{what}: {e}")))?;
                match node_manifest(&index) {
                    Some(d) => d.digest.clone(),
                    None => return Ok(None),
                }
            }
            _ => record.digest,
        };
        let manifest: Manifest = serde_json::from_slice(&ctx.read(&manifest_digest).await?)
            .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("{what}: {e}")))?;
        let config: ImageConfig = serde_json::from_slice(&ctx.read(&manifest.config.digest).await?)
            .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("{what}: {e}")))?;
        let unpacked = match chain_ids(&config.rootfs.diff_ids).last() {
            Some(top) => snapshot_exists(ctx, top).await?,
            None => true,
        };
        Ok(unpacked.then_some(manifest.config.digest))
    }

    /// Whether an image record points at complete content unpacked for our snapshotter.
    async fn is_usable(
        &self,
        ctx: &Ctx,
        target: &Descriptor,
        have: &HashSet<String>,
    ) -> Result<bool, RuntimeError> {
        if !have.contains(&target.digest) {
            return Ok(false);
        }
        let manifest_digest = match target.media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let Ok(index) = serde_json::from_slice::<Index>(&ctx.read(&target.digest).await?)
                else {
                    return Ok(false);
                };
                match node_manifest(&index) {
                    Some(d) if have.contains(&d.digest) => d.digest.clone(),
                    _ => return Ok(false),
                }
            }
            _ => target.digest.clone(),
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&ctx.read(&manifest_digest).await?)
        else {
            return Ok(false);
        };
        if !have.contains(&manifest.config.digest)
            || manifest.layers.iter().any(|l| !have.contains(&l.digest))
        {
            return Ok(false);
        }
        let Ok(config) =
            serde_json::from_slice::<ImageConfig>(&ctx.read(&manifest.config.digest).await?)
        else {
            return Ok(false);
        };
        match chain_ids(&config.rootfs.diff_ids).last() {
            Some(top) => snapshot_exists(ctx, top).await,
            None => Ok(true),
        }
    }

    /// Aborts ingests of ours that nobody touched for [`STALE_INGEST`].
    async fn abort_stale_ingests(&self, ctx: &Ctx) {
        let Ok(reply) = ctx
            .content()
            .list_statuses(ctx.request(ListStatusesRequest {
                filters: vec![r#"ref~="^kip-""#.to_owned()],
            }))
            .await
        else {
            return;
        };
        let cutoff = unix_now().saturating_sub(STALE_INGEST.as_secs()) as i64;
        for status in reply.into_inner().statuses {
            let updated = status.updated_at.map_or(0, |t| t.seconds);
            if updated < cutoff {
                debug!(ingest = %status.r#ref, "aborting stale ingest");
                let _ = ctx
                    .content()
                    .abort(ctx.request(AbortRequest {
                        r#ref: status.r#ref,
                    }))
                    .await;
            }
        }
    }
}

/// The index entry for the node's platform.
fn node_manifest(index: &Index) -> Option<&Descriptor> {
    let (os, arch) = node_platform();
    let variant = (arch == "arm64").then_some("v8");
    select_platform(&index.manifests, os, arch, variant)
}
