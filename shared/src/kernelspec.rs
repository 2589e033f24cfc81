//! The kernelspec model: `kernel.json` on disk and the `GET /api/kernelspecs` response, plus the
//! extraction of kernel images from kernelspec metadata.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Response header with which a gateway says that `GET /api/kernelspecs?wait=SECONDS` with
/// `If-None-Match` is held until the listing changes (or the wait ends with 304).
pub const WATCH_HEADER: &str = "x-kernelspecs-watch";

/// The metadata stanzas that carry image names, in the order upstream's puller reads them.
pub const IMAGE_STANZAS: [&str; 2] = ["process_proxy", "kernel_provisioner"];
/// The keys under `<stanza>.config` that name images.
pub const IMAGE_KEYS: [&str; 2] = ["image_name", "executor_image_name"];

/// The longest wait, in seconds, a gateway holds a watch request; longer waits are clamped.
pub const MAX_WATCH_SECONDS: u64 = 300;

/// The content of a `kernel.json` file, as jupyter_client normalises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelSpec {
    // Missing fields take jupyter_client's defaults (empty), as upstream serves them.
    #[serde(default)]
    pub argv: Vec<String>,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_interrupt_mode")]
    pub interrupt_mode: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

fn default_interrupt_mode() -> String {
    "signal".to_owned()
}

/// One entry of the `kernelspecs` map in `GET /api/kernelspecs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelSpecEntry {
    pub name: String,
    pub spec: KernelSpec,
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
}

/// The body of `GET /api/kernelspecs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelSpecsResponse {
    pub default: Option<String>,
    pub kernelspecs: BTreeMap<String, KernelSpecEntry>,
}

/// An image name found in a kernelspec, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMention {
    /// The kernelspec it came from.
    pub kernelspec: String,
    /// The JSON path of the field, e.g. `metadata.process_proxy.config.image_name`.
    pub field: String,
    /// The raw image name, as written.
    pub image: String,
}

/// A kernelspec entry, or one of its fields, that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernelspec {kernelspec:?}: {field}: {reason}")]
pub struct EntryError {
    pub kernelspec: String,
    pub field: String,
    pub reason: String,
}

/// The kernelspec listing as a whole could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    #[error("response is not JSON: {0}")]
    NotJson(String),
    #[error("response has no \"kernelspecs\" object")]
    NoKernelspecs,
}

/// What [`images_in_listing`] found: the images, and the entries it had to skip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListingImages {
    pub images: Vec<ImageMention>,
    pub errors: Vec<EntryError>,
}

/// Reads the image names out of a `GET /api/kernelspecs` body.
///
/// Every entry is read on its own: a malformed entry is reported in `errors` and the others are
/// still read. Only a body that is not JSON, or has no `kernelspecs` object, fails as a whole.
pub fn images_in_listing(body: &[u8]) -> Result<ListingImages, ListingError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ListingError::NotJson(e.to_string()))?;
    let specs = value
        .get("kernelspecs")
        .and_then(Value::as_object)
        .ok_or(ListingError::NoKernelspecs)?;
    let mut out = ListingImages::default();
    // By kernelspec name, whatever order the listing has.
    let mut specs: Vec<_> = specs.iter().collect();
    specs.sort_by(|a, b| a.0.cmp(b.0));
    for (name, entry) in specs {
        let error = |field: &str, reason: &str| EntryError {
            kernelspec: name.clone(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(spec) = entry.get("spec").and_then(Value::as_object) else {
            out.errors.push(error("spec", "missing or not an object"));
            continue;
        };
        let metadata = match spec.get("metadata") {
            None | Some(Value::Null) => continue,
            Some(Value::Object(metadata)) => metadata,
            Some(_) => {
                out.errors.push(error("spec.metadata", "not an object"));
                continue;
            }
        };
        let (images, errors) = images_in_metadata(name, metadata);
        out.images.extend(images);
        out.errors.extend(errors);
    }
    Ok(out)
}

/// Reads `image_name` and `executor_image_name` from `process_proxy.config` and
/// `kernel_provisioner.config` of one kernelspec's metadata.
pub fn images_in_metadata(
    kernelspec: &str,
    metadata: &Map<String, Value>,
) -> (Vec<ImageMention>, Vec<EntryError>) {
    let mut images = Vec::new();
    let mut errors = Vec::new();
    for stanza in IMAGE_STANZAS {
        let Some(config) = metadata.get(stanza).and_then(|s| s.get("config")) else {
            continue;
        };
        let Some(config) = config.as_object() else {
            if !config.is_null() {
                errors.push(EntryError {
                    kernelspec: kernelspec.to_owned(),
                    field: format!("metadata.{stanza}.config"),
                    reason: "not an object".to_owned(),
                });
            }
            continue;
        };
        for key in IMAGE_KEYS {
            let field = format!("metadata.{stanza}.config.{key}");
            match config.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(Value::String(s)) => images.push(ImageMention {
                    kernelspec: kernelspec.to_owned(),
                    field,
                    image: s.trim().to_owned(),
                }),
                Some(_) => errors.push(EntryError {
                    kernelspec: kernelspec.to_owned(),
                    field,
                    reason: "not a string".to_owned(),
                }),
            }
        }
    }
    (images, errors)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn listing(specs: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"default": "python3", "kernelspecs": specs})).unwrap()
    }

    fn images(found: &ListingImages) -> Vec<(&str, &str, &str)> {
        found
            .images
            .iter()
            .map(|m| (m.kernelspec.as_str(), m.field.as_str(), m.image.as_str()))
            .collect()
    }

    #[test]
    fn reads_both_stanzas_and_both_keys() {
        let body = listing(json!({
            "python_kubernetes": {"name": "python_kubernetes", "spec": {"argv": [], "display_name": "P",
                "metadata": {"process_proxy": {"class_name": "k8s", "config": {"image_name": "elyra/kernel-py:3.2.3"}}}}},
            "spark_python": {"name": "spark_python", "spec": {"argv": [], "display_name": "S",
                "metadata": {"process_proxy": {"config": {"image_name": "elyra/kernel-spark-py:1", "executor_image_name": "elyra/spark-exec:1"}}}}},
            "prov": {"name": "prov", "spec": {"argv": [], "display_name": "K",
                "metadata": {"kernel_provisioner": {"config": {"image_name": " quay.io/k:1 "}}}}},
            "python3": {"name": "python3", "spec": {"argv": [], "display_name": "Local", "metadata": {}}},
            "nometa": {"name": "nometa", "spec": {"argv": [], "display_name": "N"}},
        }));
        let found = images_in_listing(&body).unwrap();
        assert_eq!(
            images(&found),
            vec![
                (
                    "prov",
                    "metadata.kernel_provisioner.config.image_name",
                    "quay.io/k:1"
                ),
                (
                    "python_kubernetes",
                    "metadata.process_proxy.config.image_name",
                    "elyra/kernel-py:3.2.3"
                ),
                (
                    "spark_python",
                    "metadata.process_proxy.config.image_name",
                    "elyra/kernel-spark-py:1"
                ),
                (
                    "spark_python",
                    "metadata.process_proxy.config.executor_image_name",
                    "elyra/spark-exec:1"
                ),
            ]
        );
        assert!(found.errors.is_empty(), "{:?}", found.errors);
    }

    #[test]
    fn malformed_entries_are_reported_and_others_kept() {
        let body = listing(json!({
            "good": {"spec": {"metadata": {"process_proxy": {"config": {"image_name": "a:1"}}}}},
            "nospec": {"name": "nospec"},
            "badmeta": {"spec": {"metadata": "x"}},
            "badconfig": {"spec": {"metadata": {"process_proxy": {"config": ["x"]}}}},
            "numimage": {"spec": {"metadata": {"process_proxy": {"config": {"image_name": 7, "executor_image_name": "b:2"}}}}},
            "empty": {"spec": {"metadata": {"process_proxy": {"config": {"image_name": ""}}}}},
        }));
        let found = images_in_listing(&body).unwrap();
        assert_eq!(
            images(&found),
            vec![
                ("good", "metadata.process_proxy.config.image_name", "a:1"),
                (
                    "numimage",
                    "metadata.process_proxy.config.executor_image_name",
                    "b:2"
                ),
            ]
        );
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "kernelspec \"badconfig\": metadata.process_proxy.config: not an object",
                "kernelspec \"badmeta\": spec.metadata: not an object",
                "kernelspec \"nospec\": spec: missing or not an object",
                "kernelspec \"numimage\": metadata.process_proxy.config.image_name: not a string",
            ]
        );
    }

    #[test]
    fn whole_listing_errors() {
        assert!(matches!(
            images_in_listing(b"<html>"),
            Err(ListingError::NotJson(_))
        ));
        assert_eq!(images_in_listing(b"{}"), Err(ListingError::NoKernelspecs));
        assert_eq!(
            images_in_listing(br#"{"kernelspecs": []}"#),
            Err(ListingError::NoKernelspecs)
        );
    }

    #[test]
    fn kernel_json_round_trip_with_defaults() {
        let spec: KernelSpec = serde_json::from_value(json!({
            "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3",
            "metadata": {"process_proxy": {"class_name": "x", "config": {"image_name": "a"}}},
        }))
        .unwrap();
        assert_eq!(spec.interrupt_mode, "signal");
        assert_eq!(spec.language, "");
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            back["metadata"]["process_proxy"]["config"]["image_name"],
            "a"
        );
        assert_eq!(back["interrupt_mode"], "signal");
    }
}
