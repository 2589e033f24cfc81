//! Unpacking layers into a snapshotter: chain IDs, Prepare → Diff.Apply → Commit.

use std::collections::HashMap;

use containerd_client::{
    services::v1::{
        ApplyRequest,
        diff_client::DiffClient,
        snapshots::{
            CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
            StatSnapshotRequest, snapshots_client::SnapshotsClient,
        },
    },
    types::Descriptor as PbDescriptor,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tonic::Code;

use super::{Ctx, grpc_error};
use crate::ports::{ErrorKind, RuntimeError};
use crate::registry::Descriptor;

/// The part of an image config that unpacking needs.
#[derive(Debug, Deserialize)]
pub(crate) struct ImageConfig {
    pub rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    pub diff_ids: Vec<String>,
}

/// Chain IDs of the layer stack: the first is its diff ID, each next one is
/// `sha256(parent_chain + " " + diff_id)`.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

fn nonce() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}

/// Whether the snapshot `chain_id` exists in the configured snapshotter.
pub(crate) async fn snapshot_exists(ctx: &Ctx, chain_id: &str) -> Result<bool, RuntimeError> {
    ctx.hold(&format!("snapshots/{}", ctx.snapshotter), chain_id)
        .await?;
    let req = ctx.request(StatSnapshotRequest {
        snapshotter: ctx.snapshotter.clone(),
        key: chain_id.to_owned(),
    });
    match SnapshotsClient::new(ctx.channel.clone()).stat(req).await {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(grpc_error(&format!("snapshot {chain_id}"), s)),
    }
}

/// Applies one layer on top of `parent` and commits it as `chain_id`, unless it exists.
pub(crate) async fn unpack_layer(
    ctx: &Ctx,
    layer: &Descriptor,
    diff_id: &str,
    parent: Option<&str>,
    chain_id: &str,
) -> Result<bool, RuntimeError> {
    if snapshot_exists(ctx, chain_id).await? {
        return Ok(false);
    }
    let what = format!("unpack {} as {chain_id}", layer.digest);
    let key = format!("extract-kip-{} {chain_id}", nonce());
    let mut snapshots = SnapshotsClient::new(ctx.channel.clone());
    let prepared = snapshots
        .prepare(ctx.request(PrepareSnapshotRequest {
            snapshotter: ctx.snapshotter.clone(),
            key: key.clone(),
            parent: parent.unwrap_or_default().to_owned(),
            labels: HashMap::new(),
        }))
        .await
        .map_err(|s| grpc_error(&what, s))?
        .into_inner();
    let result = async {
        let applied = DiffClient::new(ctx.channel.clone())
            .apply(ctx.request(ApplyRequest {
                diff: Some(PbDescriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                    annotations: HashMap::new(),
                }),
                mounts: prepared.mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            }))
            .await
            .map_err(|s| grpc_error(&what, s))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if applied != diff_id {
            return Err(RuntimeError::new(
                ErrorKind::Other,
                format!("{what}: applied diff {applied}, config says {diff_id}"),
            ));
        }
        match snapshots
            .commit(ctx.request(CommitSnapshotRequest {
                snapshotter: ctx.snapshotter.clone(),
                name: chain_id.to_owned(),
                key: key.clone(),
                labels: HashMap::new(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            // Another pull committed the same chain meanwhile.
            Err(s) if s.code() == Code::AlreadyExists => Ok(false),
            Err(s) => Err(grpc_error(&what, s)),
        }
    }
    .await;
    if !matches!(result, Ok(true)) {
        // The active snapshot is ours alone; leaving it would only waste space until GC.
        let _ = snapshots
            .remove(ctx.request(RemoveSnapshotRequest {
                snapshotter: ctx.snapshotter.clone(),
                key,
            }))
            .await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let d = |s: &str| format!("sha256:{s}");
        // Expected values computed independently: printf '%s' "<parent> <diff>" | sha256sum
        let table: [(Vec<String>, Vec<String>); 3] = [
            (vec![], vec![]),
            (vec![d("aa")], vec![d("aa")]),
            (
                vec![d("aa"), d("bb"), d("cc")],
                vec![
                    d("aa"),
                    d("b68ad689d6d1ec110ea1c13617437ad6f3766d4b3b309f6a603a222e07a0164f"),
                    d("ced946a3b9b1c697ead0fa9bf9ad36e03198566077f3950076f64a4760acde1b"),
                ],
            ),
        ];
        for (input, want) in table {
            assert_eq!(chain_ids(&input), want, "{input:?}");
        }
    }
}
