//! ConfigMapImagesFetcher: a YAML list of images under one key of a ConfigMap.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use tokio::sync::OnceCell;

use super::{FetchError, Fetched, ImageSource};
use crate::{config::ConfigMapRef, plan::Candidate};

/// Reads the ConfigMap through the Kubernetes API (in-cluster configuration by default).
pub struct ConfigMapSource {
    target: ConfigMapRef,
    client: OnceCell<Client>,
}

impl ConfigMapSource {
    /// Uses the pod's service account; the client is built on first fetch, so a missing
    /// in-cluster configuration is reported per fetch rather than stopping the agent.
    pub fn in_cluster(target: ConfigMapRef) -> Self {
        Self {
            target,
            client: OnceCell::new(),
        }
    }

    /// Uses the given client (tests, or a kubeconfig-based client).
    pub fn with_client(target: ConfigMapRef, client: Client) -> Self {
        Self {
            target,
            client: OnceCell::new_with(Some(client)),
        }
    }

    fn error(&self, message: impl Into<String>) -> FetchError {
        FetchError::ConfigMap {
            namespace: self.target.namespace.clone(),
            name: self.target.name.clone(),
            message: message.into(),
        }
    }
}

/// Parses the value under the key: a YAML (or JSON) list of image-name strings.
pub(crate) fn parse_image_yaml(text: &str) -> Result<Vec<String>, String> {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let list = match value {
        serde_yaml_ng::Value::Sequence(list) => list,
        serde_yaml_ng::Value::Null => return Ok(Vec::new()),
        _ => return Err("expected a YAML list of image names".to_owned()),
    };
    // An item that is no string is skipped (logged); the others are still pulled.
    Ok(list
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            serde_yaml_ng::Value::String(s) if s.trim().is_empty() => None,
            serde_yaml_ng::Value::String(s) => Some(s.trim().to_owned()),
            other => {
                tracing::warn!(
                    item = i,
                    value = ?other,
                    "ConfigMap list item is not an image name string; skipped"
                );
                None
            }
        })
        .collect())
}

#[async_trait]
impl ImageSource for ConfigMapSource {
    fn name(&self) -> &'static str {
        "ConfigMapImagesFetcher"
    }

    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let client = self
            .client
            .get_or_try_init(Client::try_default)
            .await
            .map_err(|e| self.error(format!("no Kubernetes client: {e}")))?;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &self.target.namespace);
        let cm = api.get(&self.target.name).await.map_err(|e| match e {
            kube::Error::Api(s) => self.error(format!("HTTP {}: {}", s.code, s.message)),
            other => self.error(other.to_string()),
        })?;
        let key = &self.target.key;
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| self.error(format!("has no key {key:?} (KIP_CM_KEY_NAME)")))?;
        let images = parse_image_yaml(text).map_err(|e| self.error(format!("key {key:?}: {e}")))?;
        let origin = format!(
            "ConfigMap {}/{} key {key}",
            self.target.namespace, self.target.name
        );
        Ok(Fetched::Images(
            images
                .into_iter()
                .map(|i| Candidate::new(i, origin.clone()))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_lists() {
        let ok = [
            ("- a:1\n- b:2\n", vec!["a:1", "b:2"]),
            ("[\"a:1\", \" b:2 \", \"\"]", vec!["a:1", "b:2"]),
            ("", vec![]),
            ("~", vec![]),
        ];
        for (text, want) in ok {
            assert_eq!(parse_image_yaml(text).unwrap(), want, "{text:?}");
        }
        // A plain string is not iterated character by character.
        assert!(parse_image_yaml("a:1").unwrap_err().contains("list"));
        assert_eq!(
            parse_image_yaml("- a\n- [x]\n- image: b\n- 3\n- c\n").unwrap(),
            vec!["a", "c"]
        );
        assert!(
            parse_image_yaml("- a\n  b: [")
                .unwrap_err()
                .starts_with("not YAML")
        );
    }
}
