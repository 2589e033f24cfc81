//! Docker Engine API. Version and image list go through bollard; the pull is one
//! `POST /images/create` sent directly, because it must carry `X-Registry-Auth` in URL-safe
//! base64 (bollard 0.21 sends standard base64, which Docker silently ignores when it holds `+` or
//! `/`).

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE};
use bollard::{ClientVersion, Docker, query_parameters::ListImagesOptionsBuilder};
use bytes::{Buf, Bytes, BytesMut};
use eg_common::ImageRef;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

use crate::ports::{ErrorKind, ImageRuntime, PullOutcome, RuntimeError};
use crate::{
    config::Endpoint,
    credentials::{Credential, Keyring},
};

/// The API version every supported Docker Engine (20.10 and later) speaks. Pinned rather than
/// negotiated so the client needs no round trip before the daemon is up.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};
const API_PREFIX: &str = "/v1.41";
/// bollard's own request timeout; pulls are bounded by the agent's per-attempt timeout instead.
const REQUEST_TIMEOUT_SECS: u64 = 24 * 3600;

/// Pulls through the Docker Engine API at the configured socket.
pub struct DockerRuntime {
    client: Docker,
    endpoint: Endpoint,
    keyring: Arc<Keyring>,
}

impl DockerRuntime {
    pub fn connect(endpoint: &Endpoint, keyring: Arc<Keyring>) -> Result<Self, RuntimeError> {
        let client = match endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                REQUEST_TIMEOUT_SECS,
                &API_VERSION,
            ),
            Endpoint::Tcp(url) => {
                Docker::connect_with_http(url, REQUEST_TIMEOUT_SECS, &API_VERSION)
            }
        }
        .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("docker client: {e}")))?;
        Ok(Self {
            client,
            endpoint: endpoint.clone(),
            keyring,
        })
    }

    /// Sends one request on a fresh connection to the daemon.
    async fn send(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RuntimeError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            RuntimeError::new(
                ErrorKind::Unavailable,
                format!("docker at {}: {e}", self.endpoint),
            )
        };
        macro_rules! over {
            ($stream:expr) => {{
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new($stream))
                        .await
                        .map_err(|e| unavailable(&e))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
                    .send_request(request)
                    .await
                    .map_err(|e| unavailable(&e))
            }};
        }
        match &self.endpoint {
            Endpoint::Unix(path) => over!(
                UnixStream::connect(path)
                    .await
                    .map_err(|e| unavailable(&e))?
            ),
            Endpoint::Tcp(url) => {
                let hostport = url.trim_start_matches("http://").trim_end_matches('/');
                over!(
                    TcpStream::connect(hostport)
                        .await
                        .map_err(|e| unavailable(&e))?
                )
            }
        }
    }
}

/// `X-Registry-Auth`: the credential as JSON, in URL-safe base64 as Docker decodes it.
pub(crate) fn registry_auth_header(credential: &Credential, server: &str) -> String {
    let json = match &credential.identity_token {
        Some(token) => serde_json::json!({"identitytoken": token, "serveraddress": server}),
        None => serde_json::json!({
            "username": credential.username,
            "password": credential.password,
            "serveraddress": server,
        }),
    };
    URL_SAFE.encode(json.to_string())
}

/// Percent-encodes a query value (references only hold a few reserved characters).
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One line of Docker's pull progress stream.
#[derive(Debug, Default, Deserialize)]
struct Progress {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "progressDetail")]
    progress_detail: Option<ProgressDetail>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct ProgressDetail {
    #[serde(default)]
    total: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
}

/// Reads the progress stream: bytes per layer, the digest, or the error it ends with.
#[derive(Default)]
struct ProgressReader {
    layer_sizes: HashMap<String, u64>,
    digest: Option<String>,
}

impl ProgressReader {
    fn line(&mut self, image: &ImageRef, line: &[u8]) -> Result<(), RuntimeError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let p: Progress = serde_json::from_slice(line).map_err(|e| {
            RuntimeError::new(
                ErrorKind::Other,
                format!("docker sent an unreadable progress line: {e}"),
            )
        })?;
        if let Some(message) = p.error_detail.and_then(|d| d.message).or(p.error) {
            return Err(RuntimeError::classified(message));
        }
        let status = p.status.unwrap_or_default();
        if status == "Downloading"
            && let (Some(id), Some(total)) =
                (p.id.as_ref(), p.progress_detail.and_then(|d| d.total))
        {
            self.layer_sizes
                .insert(id.clone(), u64::try_from(total).unwrap_or(0));
        }
        if let Some(digest) = status.strip_prefix("Digest: ") {
            self.digest = Some(digest.to_owned());
        }
        debug!(image = %image, id = p.id.as_deref().unwrap_or(""), status, "docker pull progress");
        Ok(())
    }
}

fn docker_error(e: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::new(status_kind(status_code, &message), message),
        E::RequestTimeoutError => RuntimeError::new(ErrorKind::Timeout, "docker request timed out"),
        E::IOError { err } => RuntimeError::new(ErrorKind::Unavailable, format!("docker: {err}")),
        E::HyperLegacyError { err } => {
            RuntimeError::new(ErrorKind::Unavailable, format!("docker: {err:?}"))
        }
        E::SocketNotFoundError(path) => RuntimeError::new(
            ErrorKind::Unavailable,
            format!("docker socket not found: {path}"),
        ),
        other => RuntimeError::classified(format!("docker: {other}")),
    }
}

fn status_kind(status: u16, message: &str) -> ErrorKind {
    match status {
        404 => ErrorKind::NotFound,
        401 | 403 => ErrorKind::Unauthorized,
        _ => super::classify(message),
    }
}

#[async_trait]
impl ImageRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        let v = self.client.version().await.map_err(docker_error)?;
        Ok(format!(
            "docker {} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }

    async fn list_image_records(&self) -> Result<Vec<Vec<String>>, RuntimeError> {
        let images = self
            .client
            .list_images(Some(ListImagesOptionsBuilder::default().all(false).build()))
            .await
            .map_err(docker_error)?;
        Ok(images
            .into_iter()
            .map(|i| i.repo_tags.into_iter().chain(i.repo_digests).collect())
            .collect())
    }

    async fn image_fs_path(&self) -> Result<Option<std::path::PathBuf>, RuntimeError> {
        let info = self.client.info().await.map_err(docker_error)?;
        Ok(info
            .docker_root_dir
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from))
    }

    async fn pull(&self, image: &ImageRef) -> Result<PullOutcome, RuntimeError> {
        // The tag is always set: an empty tag would pull every tag of the repository. Docker
        // accepts a digest in its place.
        let uri = format!(
            "{API_PREFIX}/images/create?fromImage={}&tag={}",
            query_value(&image.name()),
            query_value(image.tag_or_digest())
        );
        let mut request = Request::post(uri).header(header::HOST, "docker");
        if let Some(credential) = self.keyring.lookup(image) {
            let mut value =
                header::HeaderValue::try_from(registry_auth_header(credential, image.registry()))
                    .map_err(|_| {
                    RuntimeError::new(ErrorKind::Other, "credential is not a valid header")
                })?;
            value.set_sensitive(true);
            request = request.header("X-Registry-Auth", value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| RuntimeError::new(ErrorKind::Other, e.to_string()))?;
        let response = self.send(request).await?;
        let status = response.status();
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(RuntimeError::new(
                status_kind(status.as_u16(), &message),
                message,
            ));
        }
        // Read the progress stream to its end: the pull is complete only then.
        let mut reader = ProgressReader::default();
        let mut pending = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                RuntimeError::new(
                    ErrorKind::Unavailable,
                    format!("docker progress stream: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line = pending.split_to(end + 1);
                reader.line(image, &line)?;
            }
        }
        if pending.has_remaining() {
            reader.line(image, &pending)?;
        }
        Ok(PullOutcome {
            image_id: reader.digest,
            bytes: Some(reader.layer_sizes.values().sum()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_header_is_url_safe_base64_of_the_credential() {
        let c = Credential {
            username: "kip".into(),
            password: "a~b?c>d??>>".into(),
            identity_token: None,
        };
        let header = registry_auth_header(&c, "127.0.0.1:5001");
        assert!(!header.contains('+') && !header.contains('/'), "{header}");
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE.decode(&header).unwrap()).unwrap();
        assert_eq!(json["password"], "a~b?c>d??>>");
        assert_eq!(json["serveraddress"], "127.0.0.1:5001");
        // Standard base64 of the same JSON has '+' or '/': what Docker drops.
        let standard =
            base64::engine::general_purpose::STANDARD.encode(URL_SAFE.decode(&header).unwrap());
        assert!(
            standard.contains('+') || standard.contains('/'),
            "{standard}"
        );
    }

    #[test]
    fn progress_lines() {
        let image = ImageRef::parse("x:1").unwrap();
        let mut r = ProgressReader::default();
        for line in [
            r#"{"status":"Pulling from library/x","id":"1"}"#,
            r#"{"status":"Downloading","progressDetail":{"current":10,"total":100},"id":"aaa"}"#,
            r#"{"status":"Downloading","progressDetail":{"current":90,"total":100},"id":"aaa"}"#,
            r#"{"status":"Downloading","progressDetail":{"current":5,"total":50},"id":"bbb"}"#,
            r#"{"status":"Digest: sha256:abc"}"#,
            "",
        ] {
            r.line(&image, line.as_bytes()).unwrap();
        }
        assert_eq!(r.layer_sizes.values().sum::<u64>(), 150);
        assert_eq!(r.digest.as_deref(), Some("sha256:abc"));
        let err = r
            .line(
                &image,
                br#"{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}"#,
            )
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(r.line(&image, b"{not json").is_err());
    }

    #[test]
    fn query_values() {
        assert_eq!(query_value("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(query_value("[::1]:5000/x"), "%5B::1%5D:5000/x");
    }
}
