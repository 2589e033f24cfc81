//! The room check: whether a pull's layers fit on the image filesystem under
//! `KIP_MAX_DISK_USAGE_PERCENT`. The verdict is pure ([`fits`], [`refuse_unless_room`],
//! [`near_limit`]); the runtime's methods gather the usage and which layers are missing.

use eg_common::ImageRef;
use tracing::{debug, warn};

use super::{ContainerdRuntime, Ctx};
use crate::{
    ports::{ErrorKind, FsUsage, RuntimeError, image_fs_usage},
    registry::{Descriptor, Manifest},
};

/// How many times its compressed size a layer is taken to need once unpacked (a typical gzip
/// ratio for image layers), when checking the room a pull needs.
const UNPACK_FACTOR: u64 = 2;
/// How close (in percentage points) the image filesystem must be to `KIP_MAX_DISK_USAGE_PERCENT`
/// before a Transfer-service pull reads the manifest first to check the room it needs.
const ROOM_CHECK_MARGIN: f64 = 10.0;

/// The bytes layers of `compressed` bytes take: once as blobs, [`UNPACK_FACTOR`] times unpacked.
fn room_needed(compressed: u64) -> u64 {
    compressed.saturating_mul(1 + UNPACK_FACTOR)
}

/// Whether layers of `compressed` bytes fit under `limit` (percent) from `usage`.
pub(super) fn fits(usage: &FsUsage, limit: f64, compressed: u64) -> bool {
    usage.percent_after(room_needed(compressed)) <= limit
}

/// Whether the filesystem is within [`ROOM_CHECK_MARGIN`] points of `limit`, so that a Transfer
/// pull reads the manifest first to check the room it needs.
pub(super) fn near_limit(usage: &FsUsage, limit: f64) -> bool {
    usage.percent() + ROOM_CHECK_MARGIN >= limit
}

/// Refuses (as [`ErrorKind::DiskPressure`]) a pull of `image` whose `missing` compressed bytes
/// would take the filesystem past `limit` from `usage`.
pub(super) fn refuse_unless_room(
    image: &ImageRef,
    usage: &FsUsage,
    limit: f64,
    missing: u64,
) -> Result<(), RuntimeError> {
    if missing == 0 {
        return Ok(());
    }
    let estimate = room_needed(missing);
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

impl ContainerdRuntime {
    /// The Transfer service does not tell an image's size before pulling it: when the image
    /// filesystem is within [`ROOM_CHECK_MARGIN`] points of the limit, the manifest is read here
    /// first (one more manifest request, no blob) and the pull refused if it would not fit.
    pub(super) async fn check_room_before_transfer(
        &self,
        ctx: &Ctx,
        image: &ImageRef,
    ) -> Result<(), RuntimeError> {
        let Some((limit, usage)) = self.disk_limit_and_usage().await else {
            return Ok(());
        };
        if !near_limit(&usage, limit) {
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

    /// `KIP_MAX_DISK_USAGE_PERCENT` and the image filesystem's usage now; `None` when there is
    /// no limit or the usage cannot be read (then no room check runs).
    pub(super) async fn disk_limit_and_usage(&self) -> Option<(f64, FsUsage)> {
        let limit = self.config.max_disk_percent?;
        Some((limit, image_fs_usage(self).await?))
    }

    /// Refuses a pull whose layers would take the image filesystem past `limit`
    /// (`KIP_MAX_DISK_USAGE_PERCENT`) from `usage`: the layers not yet in the content store
    /// count once as blobs and [`UNPACK_FACTOR`] times unpacked.
    pub(super) async fn check_room(
        &self,
        ctx: &Ctx,
        image: &ImageRef,
        manifest: &Manifest,
        limit: f64,
        usage: &FsUsage,
    ) -> Result<(), RuntimeError> {
        let layer_size = |layer: &Descriptor| layer.size.max(0) as u64;
        // Room for every layer: no need to ask containerd which ones it already has.
        let all: u64 = manifest.layers.iter().map(layer_size).sum();
        if fits(usage, limit, all) {
            return Ok(());
        }
        let mut missing = 0u64;
        for layer in &manifest.layers {
            if !ctx.content_exists(&layer.digest).await? {
                missing = missing.saturating_add(layer_size(layer));
            }
        }
        refuse_unless_room(image, usage, limit, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_verdicts() {
        let gib = 1u64 << 30;
        let image: ImageRef = "127.0.0.1:5000/kernel:1".parse().unwrap();
        let usage = |used: u64| FsUsage {
            used_bytes: used * gib,
            capacity_bytes: 100 * gib,
        };
        // used GiB, limit %, compressed GiB: fits, near the limit, refused when all missing
        let table = [
            (50, 85.0, 5, true, false, false),
            (50, 85.0, 11, true, false, false),
            (50, 85.0, 12, false, false, true),
            (75, 85.0, 3, true, true, false),
            (75, 85.0, 4, false, true, true),
            (80, 85.0, 0, true, true, false),
            (84, 85.0, 1, false, true, true),
            (10, 100.0, 30, true, false, false),
        ];
        for (used, limit, compressed, fit, near, refused) in table {
            let u = usage(used);
            let row = format!("{used} GiB used, limit {limit}, {compressed} GiB");
            assert_eq!(fits(&u, limit, compressed * gib), fit, "{row}");
            assert_eq!(near_limit(&u, limit), near, "{row}");
            let verdict = refuse_unless_room(&image, &u, limit, compressed * gib);
            assert_eq!(verdict.is_err(), refused, "{row}");
            if let Err(e) = verdict {
                assert_eq!(e.kind, ErrorKind::DiskPressure);
                assert!(
                    e.message.contains("KIP_MAX_DISK_USAGE_PERCENT"),
                    "{}",
                    e.message
                );
            }
        }
        // Nothing missing: never refused, however full.
        assert!(refuse_unless_room(&image, &usage(99), 85.0, 0).is_ok());
    }
}
