//! Where the image names come from: the gateway (`KIP_GATEWAY_HOST`, its token and
//! certificate check, watches), a static list, a ConfigMap, or a union of those.

use std::time::Duration;

use eg_common::{
    ImageRef,
    config::{Checker, Secret, parse_positive},
};

use super::Args;

/// Where the list of images comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetcherKind {
    KernelSpecs,
    StaticList,
    ConfigMap,
    Combined,
}

impl FetcherKind {
    fn parse(s: &str) -> Option<Self> {
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
    /// Checks the source settings, recording every problem in `c`.
    pub fn parse(args: &Args, c: &mut Checker) -> Option<Self> {
        let gateway_url = c.check(
            "KIP_GATEWAY_HOST",
            &args.gateway_host,
            parse_gateway_url(&args.gateway_host),
        );
        let validate_cert = c.check(
            "KIP_VALIDATE_CERT",
            &args.validate_cert,
            parse_bool(&args.validate_cert),
        );
        let default_registry = args
            .default_container_registry
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        let default_registry = c.check(
            "KIP_DEFAULT_CONTAINER_REGISTRY",
            default_registry.unwrap_or_default(),
            match default_registry {
                Some(registry) => ImageRef::parse_with_default_registry("x", Some(registry))
                    .map(|_| Some(registry.to_owned()))
                    .map_err(|e| e.to_string()),
                None => Ok(None),
            },
        );
        let fetcher = c.check(
            "KIP_IMAGE_FETCHER",
            &args.image_fetcher,
            FetcherKind::parse(&args.image_fetcher).ok_or_else(|| {
                "expected KernelSpecsFetcher, StaticListFetcher, ConfigMapImagesFetcher or \
                 CombinedImagesFetcher"
                    .to_owned()
            }),
        );
        let internal_fetchers = c.check(
            "KIP_INTERNAL_FETCHERS",
            &args.internal_fetchers,
            parse_internal_fetchers(&args.internal_fetchers),
        );
        let images = c.check(
            "KIP_IMAGES",
            &args.images,
            parse_image_list(&args.images, default_registry.clone().flatten().as_deref()),
        );
        let mut configmap_ok = true;
        for (var, value) in [
            ("KIP_CM_NAMESPACE", &args.cm_namespace),
            ("KIP_CM_NAME", &args.cm_name),
            ("KIP_CM_KEY_NAME", &args.cm_key_name),
        ] {
            configmap_ok &= c
                .check(
                    var,
                    value,
                    if value.trim().is_empty() {
                        Err("must not be empty".to_owned())
                    } else {
                        Ok(())
                    },
                )
                .is_some();
        }
        let fetch_timeout = c.check(
            "KIP_FETCH_TIMEOUT",
            &args.fetch_timeout,
            parse_positive(&args.fetch_timeout).map(Duration::from_secs),
        );
        let watch_wait = c.check(
            "KIP_WATCH_SECONDS",
            &args.watch_seconds,
            args.watch_seconds
                .trim()
                .parse::<u64>()
                .map(|s| (s > 0).then(|| Duration::from_secs(s)))
                .map_err(|_| {
                    "expected a whole number of seconds (0 turns watching off)".to_owned()
                }),
        );
        configmap_ok.then_some(())?;
        Some(Self {
            gateway_url: gateway_url?,
            auth_token: Secret::non_empty(args.auth_token.clone()),
            validate_cert: validate_cert?,
            default_registry: default_registry?,
            fetcher: fetcher?,
            internal_fetchers: internal_fetchers?,
            images: images?,
            configmap: ConfigMapRef {
                namespace: args.cm_namespace.trim().to_owned(),
                name: args.cm_name.trim().to_owned(),
                key: args.cm_key_name.trim().to_owned(),
            },
            fetch_timeout: fetch_timeout?,
            watch_wait: watch_wait?,
        })
    }

    /// The fetchers actually in use (the internal ones for CombinedImagesFetcher).
    pub fn fetchers_in_use(&self) -> Vec<FetcherKind> {
        match self.fetcher {
            FetcherKind::Combined => self.internal_fetchers.clone(),
            other => vec![other],
        }
    }
}

fn parse_gateway_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL with a host".to_owned());
    }
    Ok(url)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

fn parse_internal_fetchers(s: &str) -> Result<Vec<FetcherKind>, String> {
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
