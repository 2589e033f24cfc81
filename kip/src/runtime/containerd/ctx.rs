//! What every containerd call of one pull shares ([`Ctx`]: channel, namespace, snapshotter,
//! lease) and the leases that keep a pull's work from containerd's GC.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use containerd_client::services::v1::{
    AddResourceRequest, InfoRequest, ListResourcesRequest, ReadContentRequest, Resource,
    UpdateRequest, content_client::ContentClient, leases_client::LeasesClient,
};
use eg_common::ImageRef;
use futures_util::StreamExt;
use tonic::{Code, metadata::MetadataValue, transport::Channel};
use tracing::{debug, warn};

use super::{MAX_MESSAGE_BYTES, content, grpc_error};
use crate::{ports::RuntimeError, registry};

/// How long containerd keeps a pull's lease if the agent dies before deleting it.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);

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

    pub(super) fn content(&self) -> ContentClient<Channel> {
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
            rfc3339(SystemTime::now() + LEASE_EXPIRY),
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
    pub(super) async fn read(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
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

/// Formats a time as RFC 3339 UTC to the second (`2026-11-24T09:00:00Z`), as containerd's
/// `gc.expire` label takes it.
fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A lease for one pull, deleted by [`LeaseGuard::release`]. A pull that is dropped (timeout,
/// shutdown) leaves its lease to expire (gc.expire), which keeps its partial downloads for the
/// next attempt to resume.
pub(super) struct LeaseGuard {
    ctx: Ctx,
    pub(super) id: String,
}

impl LeaseGuard {
    pub(super) async fn create(ctx: &Ctx) -> Result<Self, RuntimeError> {
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

    pub(super) async fn release(self) {
        self.ctx.delete_lease(&self.id).await;
    }

    /// After a failed attempt: moves what the attempt committed (blobs, snapshots) to the
    /// image's resume lease `keep` (expiring like this one), so that deleting this lease does
    /// not let GC remove work the next attempt can reuse. Returns how many resources were kept.
    pub(super) async fn keep_as(&self, keep: &str) -> usize {
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
pub(super) fn image_resume_lease(image: &ImageRef) -> String {
    let digest = registry::sha256_digest(image.key().as_bytes());
    format!("kip-resume-image-{}", &digest["sha256:".len()..][..16])
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
            assert_eq!(
                rfc3339(UNIX_EPOCH + Duration::from_secs(secs)),
                want,
                "{secs}"
            );
        }
    }
}
