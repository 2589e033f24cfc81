//! Where the image names come from: the gateway (`KIP_GATEWAY_HOST`, its token and
//! certificate check, watches), a static list, a ConfigMap, or a union of those.

use std::time::Duration;

use eg_common::{ImageRef, config::Secret};

/// Where the list of images comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetcherKind {
    KernelSpecs,
    StaticList,
    ConfigMap,
    Combined,
}

impl FetcherKind {
    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "KernelSpecsFetcher" => Some(Self::KernelSpecs),
            "StaticListFetcher" => Some(Self::StaticList),
            "ConfigMapImagesFetcher" => Some(Self::ConfigMap),
            "CombinedImagesFetcher" => Some(Self::Combined),
            _ => None,
        }
    }
}

/// The ConfigMap that ConfigMapImagesFetcher reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Where the image names come from, and how they are read.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub gateway_url: reqwest::Url,
    pub auth_token: Option<Secret>,
    pub validate_cert: bool,
    /// Registry for names that carry none (`KIP_DEFAULT_CONTAINER_REGISTRY`).
    pub default_registry: Option<String>,
    pub fetcher: FetcherKind,
    /// The fetchers CombinedImagesFetcher unites (only meaningful for that fetcher).
    pub internal_fetchers: Vec<FetcherKind>,
    /// KIP_IMAGES, trimmed, empties dropped, each a valid reference.
    pub images: Vec<String>,
    pub configmap: ConfigMapRef,
    pub fetch_timeout: Duration,
    /// How long a watch is held; `None` when watching is off.
    pub watch_wait: Option<Duration>,
}

impl SourceConfig {
    /// The fetchers actually in use (the internal ones for CombinedImagesFetcher).
    pub fn fetchers_in_use(&self) -> Vec<FetcherKind> {
        match self.fetcher {
            FetcherKind::Combined => self.internal_fetchers.clone(),
            other => vec![other],
        }
    }
}

pub(super) fn parse_gateway_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL with a host".to_owned());
    }
    Ok(url)
}

pub(super) fn parse_internal_fetchers(s: &str) -> Result<Vec<FetcherKind>, String> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match FetcherKind::parse(name) {
            Some(FetcherKind::Combined) => {
                return Err("CombinedImagesFetcher cannot contain itself".to_owned());
            }
            Some(kind) if !out.contains(&kind) => out.push(kind),
            Some(_) => {}
            None => {
                return Err(format!(
                    "unknown fetcher {name:?}; expected KernelSpecsFetcher, StaticListFetcher \
                     or ConfigMapImagesFetcher"
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("names no fetcher".to_owned());
    }
    Ok(out)
}

/// Splits a comma list of images: trimmed, empties dropped, every entry checked.
pub fn parse_image_list(s: &str, default_registry: Option<&str>) -> Result<Vec<String>, String> {
    let mut images = Vec::new();
    let mut bad = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match ImageRef::parse_with_default_registry(entry, default_registry) {
            Ok(_) => images.push(entry.to_owned()),
            Err(e) => bad.push(format!("{entry:?}: {e}")),
        }
    }
    if bad.is_empty() {
        Ok(images)
    } else {
        Err(bad.join("; "))
    }
}
