//! The Kubernetes API as the launcher uses it: create the objects of a kernel, delete them, and
//! count every request by verb. Errors keep the API server's code, reason and message.

use std::sync::Arc;

use axum::http::Request;
use k8s_openapi::api::{
    core::v1::{
        ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
    },
    rbac::v1::RoleBinding,
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, PostParams},
    client::{Body, ClientBuilder},
};
use serde_json::Value;
use tower::util::MapRequestLayer;

use crate::metrics::Metrics;

/// An API request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API server answered with a `Status`.
    #[error("{message} ({code} {reason})")]
    Status {
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer: connection, TLS, decoding.
    #[error("{0}")]
    Transport(String),
}

impl ApiError {
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status { code, .. } => Some(*code),
            ApiError::Transport(_) => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => ApiError::Status {
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => ApiError::Transport(other.to_string()),
        }
    }
}

/// The verb of a Kubernetes API request, from its method, path and query (for metrics).
pub fn verb(method: &str, path: &str, query: &str) -> &'static str {
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=1" || kv == "watch=true");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/{group}/{version}/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _v, rest @ ..] => rest,
        ["apis", _g, _v, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    let collection = rest.len() <= 1;
    match method {
        "GET" if watch => "watch",
        "GET" if collection => "list",
        "GET" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if collection && !rest.is_empty() && rest[0] != "namespaces" => "deletecollection",
        "DELETE" => "delete",
        _ => "other",
    }
}

/// A client for the cluster the gateway runs in (in-cluster service account, or `KUBECONFIG`),
/// counting its requests.
pub async fn client(metrics: Arc<Metrics>) -> Result<Client, ApiError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| ApiError::Transport(format!("no Kubernetes configuration: {e}")))?;
    let count = MapRequestLayer::new(move |req: Request<Body>| {
        let uri = req.uri();
        metrics.kube_request(verb(
            req.method().as_str(),
            uri.path(),
            uri.query().unwrap_or(""),
        ));
        req
    });
    let builder = ClientBuilder::try_from(config).map_err(ApiError::from)?;
    Ok(builder.with_layer(&count).build())
}

/// What the launcher creates and deletes.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
}

/// The kinds a kernel's template may create, and where they live.
fn resource(kind: &str) -> Option<(ApiResource, bool)> {
    Some(match kind {
        "Pod" => (ApiResource::erase::<Pod>(&()), true),
        "Secret" => (ApiResource::erase::<Secret>(&()), true),
        "PersistentVolumeClaim" => (ApiResource::erase::<PersistentVolumeClaim>(&()), true),
        "PersistentVolume" => (ApiResource::erase::<PersistentVolume>(&()), false),
        "Service" => (ApiResource::erase::<Service>(&()), true),
        "ConfigMap" => (ApiResource::erase::<ConfigMap>(&()), true),
        _ => return None,
    })
}

impl Cluster {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates a typed object from its JSON body.
    async fn create_typed<K>(&self, api: Api<K>, body: &Value) -> Result<(), ApiError>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(body.clone())
            .map_err(|e| ApiError::Transport(format!("{} body: {e}", K::kind(&()))))?;
        api.create(&PostParams::default(), &obj).await?;
        Ok(())
    }

    pub async fn create_namespace(&self, body: &Value) -> Result<(), ApiError> {
        self.create_typed(Api::<Namespace>::all(self.client.clone()), body)
            .await
    }

    pub async fn create_role_binding(&self, namespace: &str, body: &Value) -> Result<(), ApiError> {
        let api = Api::<RoleBinding>::namespaced(self.client.clone(), namespace);
        self.create_typed(api, body).await
    }

    /// Creates one rendered document; returns the created object (with its uid).
    pub async fn create_document(
        &self,
        namespace: &str,
        kind: &str,
        doc: &Value,
    ) -> Result<DynamicObject, ApiError> {
        let (ar, namespaced) = resource(kind)
            .ok_or_else(|| ApiError::Transport(format!("kind {kind} cannot be created")))?;
        let obj: DynamicObject = serde_json::from_value(doc.clone())
            .map_err(|e| ApiError::Transport(format!("{kind} document: {e}")))?;
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        Ok(api.create(&PostParams::default(), &obj).await?)
    }

    /// Deletes an object at once (grace 0, dependents in the background); one already gone is
    /// success.
    async fn delete<K>(&self, api: Api<K>, name: &str) -> Result<(), ApiError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        match api
            .delete(name, &DeleteParams::background().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match ApiError::from(e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Deletes one object a template created.
    pub async fn delete_document(
        &self,
        namespace: &str,
        kind: gateway_core::k8s::Kind,
        name: &str,
    ) -> Result<(), ApiError> {
        let Some((ar, namespaced)) = resource(kind.as_str()) else {
            return Ok(());
        };
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        self.delete(api, name).await
    }

    pub async fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        self.delete(Api::<Pod>::namespaced(self.client.clone(), namespace), name)
            .await
    }

    /// Deletes a namespace and, with it, everything in it.
    pub async fn delete_namespace(&self, name: &str) -> Result<(), ApiError> {
        self.delete(Api::<Namespace>::all(self.client.clone()), name)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::verb;

    #[test]
    fn verbs() {
        for (request, want) in [
            ("GET /api/v1/pods?labelSelector=a", "list"),
            ("GET /api/v1/pods?watch=true&resourceVersion=5", "watch"),
            ("GET /api/v1/namespaces/ns/pods", "list"),
            ("GET /api/v1/namespaces/ns/pods/p", "get"),
            ("GET /api/v1/namespaces/ns", "get"),
            ("GET /api/v1/namespaces", "list"),
            ("POST /api/v1/namespaces", "create"),
            ("POST /api/v1/namespaces/ns/pods", "create"),
            (
                "POST /apis/rbac.authorization.k8s.io/v1/namespaces/ns/rolebindings",
                "create",
            ),
            ("DELETE /api/v1/namespaces/ns/pods/p", "delete"),
            ("DELETE /api/v1/namespaces/ns", "delete"),
            ("DELETE /api/v1/namespaces/ns/pods", "deletecollection"),
            ("PATCH /api/v1/namespaces/ns/pods/p", "patch"),
            ("PUT /api/v1/namespaces/ns/pods/p", "update"),
            ("HEAD /version", "other"),
        ] {
            let (method, target) = request.split_once(' ').unwrap();
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            assert_eq!(verb(method, path, query), want, "{request}");
        }
    }
}
