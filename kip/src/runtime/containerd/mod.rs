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

mod content;
mod transfer;
mod unpack;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use containerd_client::services::v1::{
    AbortRequest, AddResourceRequest, CreateImageRequest, GetImageRequest, Image, InfoRequest,
    ListContentRequest, ListImagesRequest, ListResourcesRequest, ListStatusesRequest,
    PluginsRequest, ReadContentRequest, Resource, UpdateImageRequest, UpdateRequest,
    content_client::ContentClient, images_client::ImagesClient,
    introspection_client::IntrospectionClient, leases_client::LeasesClient,
    version_client::VersionClient,
};
use eg_common::ImageRef;
use futures_util::{StreamExt, future::try_join_all};
use tokio::sync::Semaphore;
use tonic::{Code, Status, metadata::MetadataValue, transport::Channel};
use tracing::{debug, info, warn};

use self::{
    content::{Written, ensure_blob, ensure_bytes},
    unpack::{ImageConfig, chain_ids, snapshot_exists, unpack_layer},
};
use crate::ports::{ErrorKind, FsUsage, ImageRuntime, PullOutcome, RuntimeError, image_fs_usage};
use crate::{
    config::{ContainerdConfig, Endpoint, TransferMode},
    credentials::Keyring,
    registry::{
        self, DOCKER_LIST, Descriptor, Index, Manifest, OCI_INDEX, Registry, node_platform,
        select_platform,
    },
};

/// gRPC messages (image and content lists) can be large on busy nodes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long containerd keeps a pull's lease if the agent dies before deleting it.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);
/// Ingests of ours untouched this long are aborted (younger ones are resumed by the next pull).
const STALE_INGEST: Duration = Duration::from_secs(24 * 3600);
/// How many times its compressed size a layer is taken to need once unpacked (a typical gzip
/// ratio for image layers), when checking the room a pull needs.
const UNPACK_FACTOR: u64 = 2;
/// How close (in percentage points) the image filesystem must be to `KIP_MAX_DISK_USAGE_PERCENT`
/// before a Transfer-service pull reads the manifest first to check the room it needs.
const ROOM_CHECK_MARGIN: f64 = 10.0;
/// Label CRI puts on the images it manages.
const CRI_IMAGE_LABEL: &str = "io.cri-containerd.image";
/// Whether `KIP_CONTAINERD_TRANSFER=auto` pulls through the Transfer service where the daemon
/// offers it: only if that is the faster path in `bench/pull-bench.sh` (see bench/RESULTS.md).
const AUTO_USES_TRANSFER: bool = true;

/// Maps a containerd gRPC status to an error kind, naming what failed.
pub(crate) fn grpc_error(what: &str, status: Status) -> RuntimeError {
    let kind = match status.code() {
        Code::NotFound => ErrorKind::NotFound,
        Code::Unauthenticated | Code::PermissionDenied => ErrorKind::Unauthorized,
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::Unavailable => ErrorKind::Unavailable,
        _ => super::classify(status.message()),
    };
    RuntimeError::new(kind, format!("containerd: {what}: {}", status.message()))
}

/// What every containerd call of one pull shares: channel, namespace, snapshotter, lease.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub channel: Channel,
    pub namespace: String,
    pub snapshotter: String,
    pub lease: Option<String>,
}

impl Ctx {
    /// A request carrying the namespace (and the lease, if any) as containerd metadata.
    pub(crate) fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        let md = req.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(self.namespace.as_str()) {
            md.insert("containerd-namespace", v);
        }
        if let Some(lease) = &self.lease
            && let Ok(v) = MetadataValue::try_from(lease.as_str())
        {
            md.insert("containerd-lease", v);
        }
        req
    }

    fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Adds a resource to the pull's lease, so GC keeps it until the image references it
    /// (content or snapshots left by an earlier, failed pull are otherwise unreferenced).
    pub(crate) async fn hold(&self, kind: &str, id: &str) -> Result<(), RuntimeError> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        let mut plain = self.clone();
        plain.lease = None;
        LeasesClient::new(self.channel.clone())
            .add_resource(plain.request(AddResourceRequest {
                id: lease.clone(),
                resource: Some(Resource {
                    id: id.to_owned(),
                    r#type: kind.to_owned(),
                }),
            }))
            .await
            .map_err(|s| grpc_error(&format!("lease {kind} {id}"), s))?;
        Ok(())
    }

    /// A context whose calls add to the lease `id`, created here unless it exists; `None` (the
    /// failure logged) when it can be neither created nor found.
    pub(crate) async fn keeper(&self, id: &str) -> Option<Ctx> {
        if let Err(e) = self.create_lease(id).await
            && !e.message.contains("exists")
        {
            warn!(lease = id, error = %e, "could not create a lease to keep work in");
            return None;
        }
        let mut keeper = self.clone();
        keeper.lease = Some(id.to_owned());
        Some(keeper)
    }

    /// Creates a lease that containerd's GC removes after [`LEASE_EXPIRY`].
    pub(crate) async fn create_lease(&self, id: &str) -> Result<(), RuntimeError> {
        let labels = HashMap::from([(
            "containerd.io/gc.expire".to_owned(),
            rfc3339(unix_now() + LEASE_EXPIRY.as_secs()),
        )]);
        let mut plain = self.clone();
        plain.lease = None;
        LeasesClient::new(self.channel.clone())
            .create(
                plain.request(containerd_client::services::v1::CreateRequest {
                    id: id.to_owned(),
                    labels,
                }),
            )
            .await
            .map_err(|s| grpc_error("create lease", s))?;
        Ok(())
    }

    /// Deletes a lease (best effort: it expires anyway).
    pub(crate) async fn delete_lease(&self, id: &str) {
        let mut plain = self.clone();
        plain.lease = None;
        if let Err(s) = LeasesClient::new(self.channel.clone())
            .delete(
                plain.request(containerd_client::services::v1::DeleteRequest {
                    id: id.to_owned(),
                    sync: false,
                }),
            )
            .await
            && s.code() != Code::NotFound
        {
            warn!(lease = id, error = %s.message(), "could not delete lease; it expires by itself");
        }
    }

    /// Whether the blob is in the namespace; held by the lease from now on.
    pub(crate) async fn content_exists(&self, digest: &str) -> Result<bool, RuntimeError> {
        self.hold("content", digest).await?;
        let req = self.request(InfoRequest {
            digest: digest.to_owned(),
        });
        match self.content().info(req).await {
            Ok(_) => Ok(true),
            Err(s) if content::is_not_found(s.code()) => Ok(false),
            Err(s) => Err(grpc_error(&format!("content {digest}"), s)),
        }
    }

    /// Sets labels on existing content (only the given keys change).
    pub(crate) async fn update_content_labels(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let req = self.request(UpdateRequest {
            info: Some(containerd_client::services::v1::Info {
                digest: digest.to_owned(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        });
        self.content()
            .update(req)
            .await
            .map_err(|s| grpc_error(&format!("label content {digest}"), s))?;
        Ok(())
    }

    /// Reads a small blob from the content store.
    async fn read(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let what = format!("read content {digest}");
        let req = self.request(ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: 0,
        });
        let mut stream = self
            .content()
            .read(req)
            .await
            .map_err(|s| grpc_error(&what, s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(part) = stream.next().await {
            out.extend(part.map_err(|s| grpc_error(&what, s))?.data);
        }
        Ok(out)
    }
}

/// Formats seconds since the epoch as RFC 3339 UTC (`2026-11-24T09:00:00Z`).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A lease for one pull, deleted by [`LeaseGuard::release`]. A pull that is dropped (timeout,
/// shutdown) leaves its lease to expire (gc.expire), which keeps its partial downloads for the
/// next attempt to resume.
struct LeaseGuard {
    ctx: Ctx,
    id: String,
}

impl LeaseGuard {
    async fn create(ctx: &Ctx) -> Result<Self, RuntimeError> {
        let id = format!(
            "kip-{:x}-{}-{:x}",
            unix_now(),
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        ctx.create_lease(&id).await?;
        Ok(Self {
            ctx: ctx.clone(),
            id,
        })
    }

    async fn release(self) {
        self.ctx.delete_lease(&self.id).await;
    }

    /// After a failed attempt: moves what the attempt committed (blobs, snapshots) to the
    /// image's resume lease `keep` (expiring like this one), so that deleting this lease does
    /// not let GC remove work the next attempt can reuse. Returns how many resources were kept.
    async fn keep_as(&self, keep: &str) -> usize {
        let mut plain = self.ctx.clone();
        plain.lease = None;
        let resources = match LeasesClient::new(self.ctx.channel.clone())
            .list_resources(plain.request(ListResourcesRequest {
                id: self.id.clone(),
            }))
            .await
        {
            Ok(r) => r.into_inner().resources,
            Err(s) => {
                debug!(lease = %self.id, error = %s.message(), "lease resources");
                return 0;
            }
        };
        if resources.is_empty() {
            return 0;
        }
        let Some(keeper) = plain.keeper(keep).await else {
            return 0;
        };
        let mut kept = 0;
        for r in &resources {
            match keeper.hold(&r.r#type, &r.id).await {
                Ok(()) => kept += 1,
                Err(e) => debug!(lease = keep, resource = %r.id, error = %e, "keep resource"),
            }
        }
        kept
    }
}

/// The lease that keeps a failed pull's committed work for the image's next attempt; deleted
/// once the image is pulled (the image record then references everything).
fn image_resume_lease(image: &ImageRef) -> String {
    let digest = registry::sha256_digest(image.key().as_bytes());
    format!("kip-resume-image-{}", &digest["sha256:".len()..][..16])
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

    /// The Transfer service does not tell an image's size before pulling it: when the image
    /// filesystem is within [`ROOM_CHECK_MARGIN`] points of the limit, the manifest is read here
    /// first (one more manifest request, no blob) and the pull refused if it would not fit.
    async fn check_room_before_transfer(
        &self,
        ctx: &Ctx,
        image: &ImageRef,
    ) -> Result<(), RuntimeError> {
        let Some((limit, usage)) = self.disk_limit_and_usage().await else {
            return Ok(());
        };
        if usage.percent() + ROOM_CHECK_MARGIN < limit {
            return Ok(());
        }
        // The daemon may reach registries the agent cannot (mirrors from the hosts directory):
        // then the current usage, checked before every pull, is all there is to go by.
        match self.registry.resolve(image).await {
            Ok(resolved) => {
                self.check_room(ctx, image, &resolved.parsed, limit, &usage)
                    .await
            }
            Err(error) => {
                warn!(
                    image = %image,
                    %error,
                    "room check skipped: the agent cannot read the manifest itself"
                );
                Ok(())
            }
        }
    }

    /// Pulls through the daemon's Transfer service, then checks that the image was unpacked for
    /// our snapshotter: a daemon whose transfer `unpack_config` lacks it fetches without
    /// unpacking, and the native path then unpacks what was fetched.
    async fn transfer_pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
        let started = Instant::now();
        let ctx = self.ctx(None);
        self.check_room_before_transfer(&ctx, image).await?;
        transfer::pull(
            &ctx,
            image,
            self.keyring.lookup(image),
            self.registry.is_plain_http(image),
            self.config.hosts_dir.as_deref(),
        )
        .await?;
        let transfer_ms = started.elapsed().as_millis() as u64;
        match self.unpacked_config(&ctx, image).await? {
            Some(config) => {
                info!(
                    image = %image,
                    path = "transfer",
                    config = %config,
                    total_ms = transfer_ms,
                    "containerd pull done"
                );
                Ok(PullOutcome {
                    image_id: Some(config),
                    bytes: None,
                })
            }
            None => {
                warn!(
                    image = %image,
                    snapshotter = %self.config.snapshotter,
                    "containerd's Transfer service did not unpack the image for this snapshotter \
                     (not in its unpack_config); unpacking natively"
                );
                self.native_pull(image).await
            }
        }
    }

    /// The config digest of the image record `image`, if its node manifest is unpacked for our
    /// snapshotter (content read from the store, so it must be there).
    async fn unpacked_config(
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

    /// Waits until no other pull of this agent writes `digest`, then holds it until dropped.
    async fn blob_turn(&self, digest: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut turns = self.blob_turns.lock().unwrap_or_else(|e| e.into_inner());
            // Entries nobody holds or waits for any more.
            turns.retain(|_, l| Arc::strong_count(l) > 1);
            turns.entry(digest.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    fn ctx(&self, lease: Option<String>) -> Ctx {
        Ctx {
            channel: self.channel.clone(),
            namespace: self.config.namespace.clone(),
            snapshotter: self.config.snapshotter.clone(),
            lease,
        }
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

    /// `KIP_MAX_DISK_USAGE_PERCENT` and the image filesystem's usage now; `None` when there is
    /// no limit or the usage cannot be read (then no room check runs).
    async fn disk_limit_and_usage(&self) -> Option<(f64, FsUsage)> {
        let limit = self.config.max_disk_percent?;
        Some((limit, image_fs_usage(self).await?))
    }

    /// Refuses a pull whose layers would take the image filesystem past `limit`
    /// (`KIP_MAX_DISK_USAGE_PERCENT`) from `usage`: the layers not yet in the content store
    /// count once as blobs and [`UNPACK_FACTOR`] times unpacked.
    async fn check_room(
        &self,
        ctx: &Ctx,
        image: &ImageRef,
        manifest: &Manifest,
        limit: f64,
        usage: &FsUsage,
    ) -> Result<(), RuntimeError> {
        let need = |bytes: u64| bytes.saturating_mul(1 + UNPACK_FACTOR);
        let layer_size = |layer: &Descriptor| layer.size.max(0) as u64;
        // Room for every layer: no need to ask containerd which ones it already has.
        let all: u64 = manifest.layers.iter().map(layer_size).sum();
        if usage.percent_after(need(all)) <= limit {
            return Ok(());
        }
        let mut missing = 0u64;
        for layer in &manifest.layers {
            if !ctx.content_exists(&layer.digest).await? {
                missing = missing.saturating_add(layer_size(layer));
            }
        }
        if missing == 0 {
            return Ok(());
        }
        let estimate = need(missing);
        let after = usage.percent_after(estimate);
        if after > limit {
            return Err(RuntimeError::new(
                ErrorKind::DiskPressure,
                format!(
                    "{image}: about {} MiB more would take the image filesystem from {:.1}% to {after:.1}%, past KIP_MAX_DISK_USAGE_PERCENT={limit}",
                    estimate >> 20,
                    usage.percent()
                ),
            ));
        }
        debug!(%image, estimate_bytes = estimate, used_percent = usage.percent(), after_percent = after, "room for the pull");
        Ok(())
    }

    /// Pulls through the content, snapshots, diff, images and leases services.
    async fn native_pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
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

/// The index entry for the node's platform.
fn node_manifest(index: &Index) -> Option<&Descriptor> {
    let (os, arch) = node_platform();
    let variant = (arch == "arm64").then_some("v8");
    select_platform(&index.manifests, os, arch, variant)
}

fn closed(_: tokio::sync::AcquireError) -> RuntimeError {
    RuntimeError::new(ErrorKind::Other, "download limiter closed")
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

    #[test]
    fn rfc3339_dates() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (1_795_511_045, "2026-11-24T09:04:05Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
        ] {
            assert_eq!(rfc3339(secs), want, "{secs}");
        }
    }

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
