//! Pure planning: which references to pull, given what the sources named and what the node has.

use std::collections::{BTreeMap, HashMap, HashSet};

use eg_common::{ImageRef, ImageRefError};

use crate::ports::PullPolicy;

/// An image name as a source gave it, with where it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub image: String,
    pub origin: String,
}

impl Candidate {
    pub fn new(image: impl Into<String>, origin: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            origin: origin.into(),
        }
    }
}

/// A candidate whose image name is not a valid reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {image:?}: {error}")]
pub struct InvalidCandidate {
    pub image: String,
    pub origin: String,
    pub error: ImageRefError,
}

/// The desired image set: normalised, de-duplicated, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub images: Vec<ImageRef>,
    pub invalid: Vec<InvalidCandidate>,
}

/// Normalises every candidate (applying the default registry where a name has none) and removes
/// duplicates by [`ImageRef::key`]; invalid names are kept aside with their origin.
pub fn resolve(candidates: &[Candidate], default_registry: Option<&str>) -> Desired {
    let mut by_key: BTreeMap<String, ImageRef> = BTreeMap::new();
    let mut invalid = Vec::new();
    for c in candidates {
        match ImageRef::parse_with_default_registry(&c.image, default_registry) {
            Ok(r) => {
                by_key.entry(r.key()).or_insert(r);
            }
            Err(error) => invalid.push(InvalidCandidate {
                image: c.image.clone(),
                origin: c.origin.clone(),
                error,
            }),
        }
    }
    Desired {
        images: by_key.into_values().collect(),
        invalid,
    }
}

/// The images a runtime reports, as reference keys, and which digests each tag points to.
#[derive(Debug, Clone, Default)]
pub struct Present(HashSet<String>, HashMap<String, HashSet<String>>);

impl Present {
    /// Builds the set from the runtime's tag and digest references (`python:3`,
    /// `docker.io/library/python@sha256:…`); names that do not parse (`<none>:<none>`) are ignored.
    pub fn from_references<I, S>(references: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self(
            references
                .into_iter()
                .filter_map(|r| ImageRef::parse(r.as_ref()).ok())
                .map(|r| r.key())
                .collect(),
            HashMap::new(),
        )
    }

    /// Builds the set from the runtime's images, each a group of its tag and digest references
    /// (`["python:3", "python@sha256:…"]`): a tag then points to the digests of its group.
    pub fn from_records<I, R, S>(records: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut present = Self::default();
        for record in records {
            let refs: Vec<ImageRef> = record
                .into_iter()
                .filter_map(|r| ImageRef::parse(r.as_ref()).ok())
                .collect();
            for r in &refs {
                present.0.insert(r.key());
                if r.digest().is_none() {
                    let digests = refs
                        .iter()
                        .filter(|d| d.name() == r.name())
                        .filter_map(|d| d.digest().map(str::to_owned));
                    present.1.entry(r.key()).or_default().extend(digests);
                }
            }
        }
        present
    }

    /// Whether the node's image for this tag is the one with `digest`.
    pub fn tag_points_to(&self, image: &ImageRef, digest: &str) -> bool {
        image.digest().is_none()
            && self
                .1
                .get(&image.key())
                .is_some_and(|digests| digests.contains(digest))
    }

    /// Whether the node has this image: by digest when the reference is pinned, else by tag.
    pub fn contains(&self, image: &ImageRef) -> bool {
        self.0.contains(&image.key())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits the desired images into (to pull, already present) for a policy.
pub fn to_pull<'a>(
    desired: &'a [ImageRef],
    present: &Present,
    policy: PullPolicy,
) -> (Vec<&'a ImageRef>, Vec<&'a ImageRef>) {
    match policy {
        PullPolicy::Always => (desired.iter().collect(), Vec::new()),
        PullPolicy::IfNotPresent => desired.iter().partition(|r| !present.contains(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn cands(names: &[&str]) -> Vec<Candidate> {
        names.iter().map(|n| Candidate::new(*n, "test")).collect()
    }

    fn strings(d: &Desired) -> Vec<String> {
        d.images.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn resolve_normalises_and_dedupes() {
        let d = resolve(
            &cands(&[
                "python:3",
                "docker.io/library/python:3",
                "index.docker.io/python:3",
                "python",
                "python:latest",
                "quay.io/x:1",
                "quay.io/x:1",
            ]),
            None,
        );
        assert_eq!(
            strings(&d),
            vec![
                "docker.io/library/python:3",
                "docker.io/library/python:latest",
                "quay.io/x:1"
            ]
        );
        assert!(d.invalid.is_empty());
    }

    #[test]
    fn resolve_applies_default_registry_only_without_registry() {
        let d = resolve(
            &cands(&[
                "elyra/kernel-py:1",
                "myreg:5000/x:1",
                "localhost/y:2",
                "myreg:5000/elyra/kernel-py:1",
            ]),
            Some("myreg:5000"),
        );
        assert_eq!(
            strings(&d),
            vec![
                "localhost/y:2",
                "myreg:5000/elyra/kernel-py:1",
                "myreg:5000/x:1"
            ]
        );
    }

    #[test]
    fn resolve_keeps_invalid_aside_with_origin() {
        let d = resolve(
            &[
                Candidate::new("ok:1", "KIP_IMAGES"),
                Candidate::new(
                    "Bad:1",
                    "kernelspec \"k\": metadata.process_proxy.config.image_name",
                ),
            ],
            None,
        );
        assert_eq!(strings(&d), vec!["docker.io/library/ok:1"]);
        assert_eq!(d.invalid.len(), 1);
        assert_eq!(
            d.invalid[0].to_string(),
            "kernelspec \"k\": metadata.process_proxy.config.image_name: \"Bad:1\": repository \
             name \"Bad\" must be lowercase"
        );
    }

    #[test]
    fn digest_pins_dedupe_with_their_tagged_form() {
        let d = resolve(
            &cands(&[&format!("python:3@{D}"), &format!("python@{D}")]),
            None,
        );
        assert_eq!(d.images.len(), 1);
    }

    #[test]
    fn presence_by_tag_and_digest() {
        // What Docker reports (short names) and what CRI reports (full names).
        let present = Present::from_references([
            "python:3".to_owned(),
            format!("busybox@{D}"),
            "127.0.0.1:5000/test/a:1".to_owned(),
            "docker.io/library/alpine:3.19".to_owned(),
            "<none>:<none>".to_owned(),
            "<none>@<none>".to_owned(),
        ]);
        assert_eq!(present.len(), 4);
        let table = [
            ("python:3", true),
            ("docker.io/library/python:3", true),
            ("python:3.11", false),
            ("python", false),
            ("alpine:3.19", true),
            (&format!("busybox@{D}"), true),
            (&format!("busybox:1@{D}"), true),
            ("busybox:1", false),
            ("127.0.0.1:5000/test/a:1", true),
            ("127.0.0.1:5000/test/a:2", false),
            ("127.0.0.1:5001/test/a:1", false),
        ];
        for (image, want) in table {
            let r = ImageRef::parse(image).unwrap();
            assert_eq!(present.contains(&r), want, "{image}");
        }
    }

    #[test]
    fn policy_decides_what_to_pull() {
        let desired = resolve(&cands(&["a:1", "b:1", "c:1"]), None).images;
        let present = Present::from_references(["b:1"]);
        let (pull, have) = to_pull(&desired, &present, PullPolicy::IfNotPresent);
        let names = |v: Vec<&ImageRef>| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(pull),
            vec!["docker.io/library/a:1", "docker.io/library/c:1"]
        );
        assert_eq!(names(have), vec!["docker.io/library/b:1"]);
        let (pull, have) = to_pull(&desired, &present, PullPolicy::Always);
        assert_eq!(pull.len(), 3);
        assert!(have.is_empty());
    }

    #[test]
    fn tags_point_to_the_digests_of_their_image() {
        let d2 = D.replace("0123", "4567");
        let present = Present::from_records([
            vec!["python:3".to_owned(), format!("python@{D}")],
            vec![
                "busybox:1".to_owned(),
                format!("busybox@{d2}"),
                format!("other@{D}"),
            ],
            vec![format!("loose@{d2}")],
        ]);
        let table = [
            ("python:3", D, true),
            ("python:3", d2.as_str(), false),
            ("docker.io/library/python:3", D, true),
            ("busybox:1", d2.as_str(), true),
            // A digest of another repository in the same record does not count.
            ("busybox:1", D, false),
            ("python:4", D, false),
            ("loose:latest", d2.as_str(), false),
        ];
        for (image, digest, want) in table {
            let r = ImageRef::parse(image).unwrap();
            assert_eq!(
                present.tag_points_to(&r, digest),
                want,
                "{image} -> {digest}"
            );
        }
        assert!(present.contains(&ImageRef::parse("python:3").unwrap()));
        assert!(present.contains(&ImageRef::parse(&format!("loose@{d2}")).unwrap()));
    }
}
