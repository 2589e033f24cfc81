//! A small OCI distribution client, used by the containerd backend's pulls and by every
//! runtime's `Always` digest checks: resolves a reference to the node's manifest and streams
//! blobs. Authentication follows the registry's challenge: Basic with the keyring's credential,
//! or the Bearer-token flow Docker Hub, GHCR and Harbor use (the token endpoint is asked with the
//! credential as Basic auth, anonymously without one).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use eg_common::ImageRef;
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use tracing::debug;

mod auth;
mod manifest;

use self::auth::{Auth, Challenge, is_basic_challenge, parse_bearer_challenge};
pub(crate) use self::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Fetched, Index, Manifest, OCI_INDEX, OCI_MANIFEST,
    Resolved, node_platform, select_platform, sha256_digest,
};
use crate::{
    credentials::{Credential, Keyring},
    ports::{ErrorKind, RuntimeError},
};

/// Largest manifest or config accepted into memory.
const MAX_SMALL_BLOB: u64 = 4 * 1024 * 1024;

/// Whether a registry host is a loopback one (HTTPS first, plain HTTP when it does not speak TLS,
/// as containerd does for localhost).
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The registry client; cheap to clone, shares connections and tokens.
#[derive(Clone)]
pub(crate) struct Registry {
    http: reqwest::Client,
    insecure: Arc<Vec<String>>,
    keyring: Arc<Keyring>,
    /// What a challenge asked for, by `host repository`.
    auth: Arc<Mutex<HashMap<String, Auth>>>,
    /// Loopback hosts found to answer plain HTTP.
    plain: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// Whether a request failed because the server answered the TLS handshake in plain HTTP.
fn answered_plain_http(e: &reqwest::Error) -> bool {
    std::error::Error::source(e).is_some_and(is_plain_http_reply)
}

/// Looks for rustls' "not a TLS record" through the error chain, including into io::Errors
/// (whose `source()` skips the error they wrap, and which may wrap one another).
fn is_plain_http_reply(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.downcast_ref::<rustls::Error>().is_some_and(|t| {
        matches!(
            t,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
        )
    }) {
        return true;
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && is_plain_http_reply(inner)
    {
        return true;
    }
    e.source().is_some_and(is_plain_http_reply)
}

fn unavailable(what: &str, e: &reqwest::Error) -> RuntimeError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    // reqwest's top error says little; the source chain names the cause (refused, DNS…).
    let mut message = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    RuntimeError::new(kind, message)
}

fn status_error(what: &str, status: StatusCode, body: &str) -> RuntimeError {
    let kind = match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS => ErrorKind::Unavailable,
        s if s.is_server_error() => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    };
    let body: String = body.trim().chars().take(300).collect();
    RuntimeError::new(kind, format!("{what}: registry answered {status}: {body}"))
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl Registry {
    /// A client for registries: `insecure` ones over plain HTTP, the certificates of `ca_pem`
    /// (a PEM bundle) trusted besides the system's, credentials from `keyring`.
    pub(crate) fn new(
        insecure: Vec<String>,
        ca_pem: Option<&[u8]>,
        keyring: Arc<Keyring>,
    ) -> Result<Self, RuntimeError> {
        let client_error = |e: reqwest::Error| {
            RuntimeError::new(ErrorKind::Other, format!("registry HTTP client: {e}"))
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("kip/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(client_error)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build().map_err(client_error)?,
            insecure: Arc::new(insecure),
            keyring,
            auth: Arc::default(),
            plain: Arc::default(),
        })
    }

    /// The API host for a registry name (Docker Hub's API lives on registry-1.docker.io).
    fn api_host(registry: &str) -> &str {
        if registry == "docker.io" || registry == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        }
    }

    /// Whether containerd's own resolver should reach the image's registry over plain HTTP
    /// (loopback or listed insecure; containerd falls back to plain HTTP for localhost itself).
    pub(crate) fn is_plain_http(&self, image: &ImageRef) -> bool {
        let host = Self::api_host(image.registry());
        is_loopback(host) || self.insecure.contains(&host.to_ascii_lowercase())
    }

    fn base_url(&self, image: &ImageRef) -> String {
        let host = Self::api_host(image.registry());
        let lower = host.to_ascii_lowercase();
        let scheme =
            if self.insecure.contains(&lower) || self.plain.lock().unwrap().contains(&lower) {
                "http"
            } else {
                "https"
            };
        format!("{scheme}://{host}/v2/{}", image.repository())
    }

    /// Sends one request, answering a 401 challenge once (Bearer: a token from the realm, asked
    /// with the keyring's credential when there is one; Basic: the credential).
    async fn send(
        &self,
        method: Method,
        image: &ImageRef,
        url: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
        what: &str,
    ) -> Result<reqwest::Response, RuntimeError> {
        let key = format!("{} {}", image.registry(), image.repository());
        let credential = self.keyring.lookup(image);
        let mut answered = false;
        let mut url = url.to_owned();
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(accept) = accept {
                req = req.header(header::ACCEPT, accept);
            }
            if let Some(from) = range_from {
                req = req.header(header::RANGE, format!("bytes={from}-"));
            }
            let auth = self.auth.lock().unwrap().get(&key).cloned();
            match (auth, credential) {
                (Some(Auth::Bearer(token)), _) => req = req.bearer_auth(token),
                (Some(Auth::Basic), Some(c)) => {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                _ => {}
            }
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) => {
                    let host = Self::api_host(image.registry()).to_ascii_lowercase();
                    let fallback = url
                        .strip_prefix("https://")
                        .map(|rest| format!("http://{rest}"));
                    match fallback {
                        Some(plain_url) if is_loopback(&host) && answered_plain_http(&e) => {
                            debug!(registry = %host, "loopback registry answers plain HTTP");
                            self.plain.lock().unwrap().insert(host);
                            url = plain_url;
                            continue;
                        }
                        _ => return Err(unavailable(what, &e)),
                    }
                }
            };
            if resp.status() != StatusCode::UNAUTHORIZED || answered {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let auth = if let Some(bearer) = parse_bearer_challenge(&challenge) {
                Auth::Bearer(self.fetch_token(image, &bearer, credential, what).await?)
            } else if is_basic_challenge(&challenge) && credential.is_some() {
                Auth::Basic
            } else {
                return Ok(resp);
            };
            self.auth.lock().unwrap().insert(key.clone(), auth);
            answered = true;
        }
    }

    /// A token for pulling the image's repository: with the credential as Basic auth if there
    /// is one, else anonymous.
    async fn fetch_token(
        &self,
        image: &ImageRef,
        challenge: &Challenge,
        credential: Option<&Credential>,
        what: &str,
    ) -> Result<String, RuntimeError> {
        let scope = format!("repository:{}:pull", image.repository());
        let mut query: Vec<(&str, &str)> = vec![("scope", &scope)];
        if let Some(service) = &challenge.service {
            query.push(("service", service));
        }
        debug!(
            realm = %challenge.realm,
            scope,
            with_credential = credential.is_some(),
            "fetching registry token"
        );
        let what = format!("{what}: token from {}", challenge.realm);
        let url = reqwest::Url::parse_with_params(&challenge.realm, &query)
            .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("{what}: bad realm: {e}")))?;
        let mut req = self.http.get(url);
        if let Some(c) = credential {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let resp = req.send().await.map_err(|e| unavailable(&what, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(status_error(&what, status, &body));
        }
        let reply: TokenReply = resp
            .json()
            .await
            .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("{what}: {e}")))?;
        reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RuntimeError::new(ErrorKind::Other, format!("{what}: no token")))
    }

    /// Reads a small document fully (manifests, configs), refusing oversized ones.
    async fn read_small(resp: reqwest::Response, what: &str) -> Result<Vec<u8>, RuntimeError> {
        if resp.content_length().is_some_and(|n| n > MAX_SMALL_BLOB) {
            return Err(RuntimeError::new(
                ErrorKind::Other,
                format!("{what}: larger than {MAX_SMALL_BLOB} bytes"),
            ));
        }
        let bytes = resp.bytes().await.map_err(|e| unavailable(what, &e))?;
        Ok(bytes.to_vec())
    }

    /// Fetches one manifest (by tag or digest) with the accepted media types.
    async fn fetch_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<Fetched, RuntimeError> {
        let what = format!("{image}: manifest {reference}");
        let url = format!("{}/manifests/{reference}", self.base_url(image));
        let accept = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");
        let resp = self
            .send(Method::GET, image, &url, Some(&accept), None, &what)
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(status_error(&what, status, &body));
        }
        let header_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
        let bytes = Self::read_small(resp, &what).await?;
        let digest = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RuntimeError::new(
                ErrorKind::Other,
                format!("{what}: content has digest {digest}"),
            ));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("{what}: {e}")))?;
        let media_type = probe
            .media_type
            .or(header_type.filter(|t| !t.is_empty() && t != "application/json"))
            .unwrap_or_else(|| {
                if probe.manifests.is_some() {
                    OCI_INDEX
                } else {
                    OCI_MANIFEST
                }
                .to_owned()
            });
        Ok(Fetched {
            descriptor: Descriptor {
                media_type,
                digest,
                size: bytes.len() as i64,
                platform: None,
            },
            bytes,
        })
    }

    /// The digest the reference's tag points to now, from a manifest HEAD: no manifest or blob is
    /// downloaded, and Docker Hub does not count a HEAD as a pull.
    pub(crate) async fn head_digest(&self, image: &ImageRef) -> Result<String, RuntimeError> {
        let what = format!("{image}: manifest HEAD");
        let url = format!(
            "{}/manifests/{}",
            self.base_url(image),
            image.tag_or_digest()
        );
        let accept = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");
        let resp = self
            .send(Method::HEAD, image, &url, Some(&accept), None, &what)
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&what, resp.status(), ""));
        }
        resp.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| d.starts_with("sha256:") || d.starts_with("sha512:"))
            .map(str::to_owned)
            .ok_or_else(|| {
                RuntimeError::new(
                    ErrorKind::Other,
                    format!("{what}: no Docker-Content-Digest"),
                )
            })
    }

    /// Resolves the reference to the node platform's manifest.
    pub(crate) async fn resolve(&self, image: &ImageRef) -> Result<Resolved, RuntimeError> {
        let top = self.fetch_manifest(image, image.tag_or_digest()).await?;
        let (index, manifest) = match top.descriptor.media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let index: Index = serde_json::from_slice(&top.bytes).map_err(|e| {
                    RuntimeError::new(ErrorKind::Other, format!("{image}: index: {e}"))
                })?;
                let (os, arch) = node_platform();
                let variant = (arch == "arm64").then_some("v8");
                let child =
                    select_platform(&index.manifests, os, arch, variant).ok_or_else(|| {
                        RuntimeError::new(
                            ErrorKind::NotFound,
                            format!("{image}: no matching manifest for {os}/{arch} in the index"),
                        )
                    })?;
                let digest = child.digest.clone();
                (Some(top), self.fetch_manifest(image, &digest).await?)
            }
            OCI_MANIFEST | DOCKER_MANIFEST => (None, top),
            other => {
                return Err(RuntimeError::new(
                    ErrorKind::Other,
                    format!("{image}: unsupported manifest media type {other:?}"),
                ));
            }
        };
        let parsed: Manifest = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| RuntimeError::new(ErrorKind::Other, format!("{image}: manifest: {e}")))?;
        Ok(Resolved {
            index,
            manifest,
            parsed,
        })
    }

    /// Starts a blob download, from `range_from` when set. A 206 answer continues there; a 200
    /// answer (the registry ignored the range) starts at 0: check [`reqwest::Response::status`].
    pub(crate) async fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, RuntimeError> {
        let what = format!("{image}: blob {digest}");
        let url = format!("{}/blobs/{digest}", self.base_url(image));
        let resp = self
            .send(Method::GET, image, &url, None, range_from, &what)
            .await?;
        let status = resp.status();
        if status.is_success() {
            Ok(resp)
        } else {
            let body = resp.text().await.unwrap_or_default();
            Err(status_error(&what, status, &body))
        }
    }
}

#[cfg(test)]
mod tests;
