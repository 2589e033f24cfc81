//! The native pull: the agent resolves against the registry, downloads config and layers into
//! containerd's content store (resuming interrupted ones), unpacks each layer as soon as it and
//! the ones below it are in, labels everything for GC and creates or updates the image record,
//! all under a lease.

use std::{collections::HashMap, sync::Arc, time::Instant};

use containerd_client::services::v1::{
    CreateImageRequest, Image, UpdateImageRequest, images_client::ImagesClient,
};
use eg_common::ImageRef;
use futures_util::future::try_join_all;
use tonic::Code;
use tracing::{debug, info};

use super::{
    CRI_IMAGE_LABEL, ContainerdRuntime, Ctx,
    content::{Written, ensure_blob, ensure_bytes},
    ctx::{LeaseGuard, image_resume_lease},
    grpc_error,
    unpack::{ImageConfig, chain_ids, snapshot_exists, unpack_layer},
};
use crate::{
    ports::{ErrorKind, PullOutcome, RuntimeError},
    registry::{Descriptor, Index, Manifest},
};

impl ContainerdRuntime {
    /// Waits until no other pull of this agent writes `digest`, then holds it until dropped.
    pub(super) async fn blob_turn(&self, digest: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut turns = self.blob_turns.lock().unwrap_or_else(|e| e.into_inner());
            // Entries nobody holds or waits for any more.
            turns.retain(|_, l| Arc::strong_count(l) > 1);
            turns.entry(digest.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Pulls through the content, snapshots, diff, images and leases services.
    pub(super) async fn native_pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
        let lease = LeaseGuard::create(&self.ctx(None)).await?;
        let ctx = self.ctx(Some(lease.id.clone()));
        let result = self.do_pull(&ctx, image).await;
        let keep = image_resume_lease(image);
        match &result {
            Ok(_) => self.ctx(None).delete_lease(&keep).await,
            // A refusal for disk pressure comes before any download: nothing to keep.
            Err(error) if error.kind == ErrorKind::DiskPressure => {}
            Err(_) => {
                let kept = lease.keep_as(&keep).await;
                if kept > 0 {
                    info!(image = %image, lease = keep, resources = kept, "failed pull's committed work kept for the next attempt");
                }
            }
        }
        lease.release().await;
        result
    }

    async fn do_pull(&self, ctx: &Ctx, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
        let started = Instant::now();
        let resolved = self.registry.resolve(image).await?;
        let resolve_ms = started.elapsed().as_millis() as u64;
        let manifest: &Manifest = &resolved.parsed;
        if let Some((limit, usage)) = self.disk_limit_and_usage().await {
            self.check_room(ctx, image, manifest, limit, &usage).await?;
        }
        let source_label = (
            format!("containerd.io/distribution.source.{}", image.registry()),
            image.repository().to_owned(),
        );

        // The config first: its diff IDs drive the unpack, which runs while layers download.
        let config_desc = &manifest.config;
        {
            let _turn = self.blob_turn(&config_desc.digest).await;
            let _permit = self.downloads.acquire().await.map_err(closed)?;
            ensure_blob(
                ctx,
                &config_desc.digest,
                config_desc.size,
                HashMap::from([source_label.clone()]),
                |from| self.registry.blob(image, &config_desc.digest, from),
            )
            .await?;
        }
        let config_bytes = ctx.read(&config_desc.digest).await?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
            RuntimeError::new(ErrorKind::Other, format!("{image}: image config: {e}"))
        })?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(RuntimeError::new(
                ErrorKind::Other,
                format!(
                    "{image}: config lists {} diff IDs for {} layers",
                    diff_ids.len(),
                    manifest.layers.len()
                ),
            ));
        }
        let chains = chain_ids(diff_ids);

        let n = manifest.layers.len();
        let (done_tx, done_rx) = tokio::sync::watch::channel(vec![false; n]);
        let downloads = try_join_all(manifest.layers.iter().enumerate().map(|(i, layer)| {
            let done_tx = &done_tx;
            let labels = HashMap::from([
                source_label.clone(),
                ("containerd.io/uncompressed".to_owned(), diff_ids[i].clone()),
            ]);
            async move {
                let _turn = self.blob_turn(&layer.digest).await;
                let _permit = self.downloads.acquire().await.map_err(closed)?;
                let written = ensure_blob(ctx, &layer.digest, layer.size, labels, |from| {
                    self.registry.blob(image, &layer.digest, from)
                })
                .await?;
                done_tx.send_modify(|v| v[i] = true);
                Ok::<_, RuntimeError>(written)
            }
        }));
        let unpack_all = async {
            let mut rx = done_rx.clone();
            let mut unpacked = 0usize;
            for (i, layer) in manifest.layers.iter().enumerate() {
                if snapshot_exists(ctx, &chains[i]).await? {
                    continue;
                }
                rx.wait_for(|v| v[i]).await.map_err(|_| {
                    RuntimeError::new(ErrorKind::Other, format!("{image}: layer {i} not fetched"))
                })?;
                let parent = i.checked_sub(1).map(|p| chains[p].as_str());
                let at_ms = started.elapsed().as_millis() as u64;
                let t = Instant::now();
                let applied = unpack_layer(ctx, layer, &diff_ids[i], parent, &chains[i]).await?;
                let unpack_ms = t.elapsed().as_millis() as u64;
                debug!(%image, layer = i, at_ms, unpack_ms, applied, "layer unpacked");
                if applied {
                    unpacked += 1;
                }
            }
            Ok::<_, RuntimeError>(unpacked)
        };
        let (written, unpacked) = tokio::try_join!(downloads, unpack_all)?;
        let fetched_ms = started.elapsed().as_millis() as u64;
        let bytes: u64 = written
            .iter()
            .map(|w| match w {
                Written::Downloaded(n) => *n,
                _ => 0,
            })
            .sum();

        // GC references: manifest → config and layers, config → top snapshot, index → manifest.
        if let Some(top) = chains.last() {
            ctx.update_content_labels(
                &config_desc.digest,
                HashMap::from([(
                    format!("containerd.io/gc.ref.snapshot.{}", ctx.snapshotter),
                    top.clone(),
                )]),
            )
            .await?;
        }
        let mut manifest_labels = HashMap::from([
            source_label.clone(),
            (
                "containerd.io/gc.ref.content.config".to_owned(),
                config_desc.digest.clone(),
            ),
        ]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        ensure_bytes(
            ctx,
            &resolved.manifest.descriptor.digest,
            &resolved.manifest.bytes,
            manifest_labels,
        )
        .await?;
        if let Some(index) = &resolved.index {
            let parsed: Index = serde_json::from_slice(&index.bytes)
                .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("{image}: index: {e}")))?;
            let mut labels = HashMap::from([source_label.clone()]);
            for (i, child) in parsed.manifests.iter().enumerate() {
                if child.digest == resolved.manifest.descriptor.digest {
                    labels.insert(
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        child.digest.clone(),
                    );
                }
            }
            ensure_bytes(ctx, &index.descriptor.digest, &index.bytes, labels).await?;
        }

        self.register_image(ctx, image, resolved.target()).await?;
        info!(
            image = %image,
            path = "native",
            manifest = %resolved.manifest.descriptor.digest,
            layers = n,
            unpacked,
            bytes,
            resolve_ms,
            fetch_unpack_ms = fetched_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "containerd pull done"
        );
        Ok(PullOutcome {
            image_id: Some(config_desc.digest.clone()),
            bytes: Some(bytes),
        })
    }

    /// Creates the image record, or points the existing one at the new target.
    async fn register_image(
        &self,
        ctx: &Ctx,
        image: &ImageRef,
        target: &Descriptor,
    ) -> Result<(), RuntimeError> {
        let record = Image {
            name: image.to_string(),
            labels: HashMap::from([(CRI_IMAGE_LABEL.to_owned(), "managed".to_owned())]),
            target: Some(containerd_client::types::Descriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let what = format!("image record {image}");
        match images
            .create(ctx.request(CreateImageRequest {
                image: Some(record.clone()),
                source_date_epoch: None,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => images
                .update(ctx.request(UpdateImageRequest {
                    image: Some(record),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".to_owned(), format!("labels.{CRI_IMAGE_LABEL}")],
                    }),
                    source_date_epoch: None,
                }))
                .await
                .map(|_| ())
                .map_err(|s| grpc_error(&what, s)),
            Err(s) => Err(grpc_error(&what, s)),
        }
    }
}

fn closed(_: tokio::sync::AcquireError) -> RuntimeError {
    RuntimeError::new(ErrorKind::Other, "download limiter closed")
}
