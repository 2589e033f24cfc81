//! What the registry serves: OCI and Docker manifests, indexes and their descriptors, the
//! choice of the node's platform, and content digests.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An OCI descriptor, as manifests carry them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An index or manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub manifests: Vec<Descriptor>,
}

/// A document fetched from the registry with its descriptor.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
}

/// A resolved reference: the node's manifest, and the index it was chosen from, if any.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub index: Option<Fetched>,
    pub manifest: Fetched,
    pub parsed: Manifest,
}

impl Resolved {
    /// What the image record points at: the index if there was one, else the manifest.
    pub(crate) fn target(&self) -> &Descriptor {
        self.index
            .as_ref()
            .map_or(&self.manifest.descriptor, |i| &i.descriptor)
    }
}

/// The node's platform in OCI words.
pub(crate) fn node_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

/// Picks the manifest for `os`/`arch` from an index: an exact variant match first (arm64
/// images say `v8`), then any entry of that os and architecture. Attestation manifests carry
/// platform `unknown/unknown` and are never chosen.
pub(crate) fn select_platform<'a>(
    manifests: &'a [Descriptor],
    os: &str,
    arch: &str,
    variant: Option<&str>,
) -> Option<&'a Descriptor> {
    let candidates = || {
        manifests.iter().filter(|d| {
            matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | "")
                && d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == os && p.architecture == arch)
        })
    };
    candidates()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_deref()) == variant)
        .or_else(|| candidates().next())
}

/// `sha256:<hex>` of bytes.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(
        media_type: &str,
        digest: &str,
        platform: Option<(&str, &str, Option<&str>)>,
    ) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size: 1,
            platform: platform.map(|(os, arch, variant)| Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn selects_the_node_platform() {
        let index = vec![
            desc(OCI_MANIFEST, "arm", Some(("linux", "arm", Some("v7")))),
            desc(OCI_MANIFEST, "att", Some(("unknown", "unknown", None))),
            desc(OCI_MANIFEST, "arm64-plain", Some(("linux", "arm64", None))),
            desc(
                OCI_MANIFEST,
                "arm64-v8",
                Some(("linux", "arm64", Some("v8"))),
            ),
            desc(OCI_MANIFEST, "win", Some(("windows", "amd64", None))),
            desc(DOCKER_MANIFEST, "amd64", Some(("linux", "amd64", None))),
            desc(OCI_INDEX, "nested", Some(("linux", "s390x", None))),
        ];
        let table: [(&str, &str, Option<&str>, Option<&str>); 6] = [
            ("linux", "amd64", None, Some("amd64")),
            ("linux", "arm64", Some("v8"), Some("arm64-v8")),
            ("linux", "arm64", None, Some("arm64-plain")),
            ("linux", "arm", Some("v6"), Some("arm")),
            ("linux", "s390x", None, None),
            ("linux", "riscv64", None, None),
        ];
        for (os, arch, variant, want) in table {
            let got = select_platform(&index, os, arch, variant).map(|d| d.digest.as_str());
            assert_eq!(got, want, "{os}/{arch}/{variant:?}");
        }
        assert_eq!(select_platform(&[], "linux", "amd64", None), None);
    }

    #[test]
    fn digests() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
